//! Hostile workload files: deep nesting and large inputs are refused with an error, never a stack
//! overflow. How long each takes in a release build is printed by the ignored
//! `hostile_workload_timings` (RELIABILITY.md, "Hostile input").

use super::*;

/// A shipped workload, the base the padded cases start from.
const HOMOGENEOUS: &str = include_str!("../../../config/workloads/homogeneous.toml");

/// (name, text, whether it parses)
fn cases() -> Vec<(&'static str, String, bool)> {
    let deep = 100_000;
    let mut arrays = format!("seed = {}", "[".repeat(deep));
    arrays.push_str(&"]".repeat(deep));
    let mut tables = format!("seed = {}", "{a = ".repeat(deep));
    tables.push('1');
    tables.push_str(&"}".repeat(deep));
    // 64 KiB of agent types: parsed, then refused by validation (agent names repeat).
    let many_types = "[[agent_types]]\nname = \"w\"\ncount = 1\ncapacity = { cpu = 1 }\n";
    vec![
        ("a shipped workload", HOMOGENEOUS.to_string(), true),
        ("100k [ closed", arrays, false),
        (
            "100k [ unclosed",
            format!("seed = {}", "[".repeat(deep)),
            false,
        ),
        ("100k {a = closed", tables, false),
        (
            "100k dotted key parts",
            format!("{} = 1", vec!["a"; deep].join(".")),
            false,
        ),
        (
            "100k dotted table header",
            format!("[{}]", vec!["a"; deep].join(".")),
            false,
        ),
        (
            "64 KiB of agent types",
            format!(
                "{HOMOGENEOUS}\n{}",
                many_types.repeat(65_536 / many_types.len())
            ),
            false,
        ),
        (
            "64 KiB string of \\u escapes",
            format!("{HOMOGENEOUS}\n# end\n").replace(
                "description = \"",
                &format!("description = \"{}", r"\u0041".repeat(10_000)),
            ),
            true,
        ),
        (
            "64 KiB number",
            HOMOGENEOUS.replace("seed = 7", &format!("seed = {}", "9".repeat(65_536))),
            false,
        ),
    ]
}

#[test]
fn hostile_workloads_are_refused_without_overflowing_the_stack() {
    for (name, text, parses) in cases() {
        let outcome = Workload::parse(&text);
        assert_eq!(outcome.is_ok(), parses, "{name}: {outcome:?}");
    }
}

/// Prints how long each hostile workload takes to parse (median of 11):
/// `cargo test -p switchyard-sim --release hostile_workload_timings -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check: run it in a release build"]
fn hostile_workload_timings() {
    println!(
        "| {:<30} | {:>9} | {:>9} | {:<8} |",
        "workload", "bytes", "median µs", "outcome"
    );
    for (name, text, _) in cases() {
        let mut times: Vec<std::time::Duration> = (0..11)
            .map(|_| {
                let start = std::time::Instant::now();
                let _ = std::hint::black_box(Workload::parse(&text));
                start.elapsed()
            })
            .collect();
        times.sort();
        let median = times[times.len() / 2].as_secs_f64() * 1e6;
        let result = if Workload::parse(&text).is_ok() {
            "parsed"
        } else {
            "refused"
        };
        println!(
            "| {name:<30} | {:>9} | {median:>9.1} | {result:<8} |",
            text.len()
        );
    }
}
