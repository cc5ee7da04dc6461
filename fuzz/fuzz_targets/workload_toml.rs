//! Fuzzes the simulator's workload reader (`Workload::parse`: TOML, then validation).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_sim::Workload;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(workload) = Workload::parse(text) {
        // A workload that passed validation is bounded: its agents can be counted.
        let _ = workload.agent_count();
    }
});
