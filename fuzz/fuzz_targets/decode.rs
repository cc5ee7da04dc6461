//! Fuzzes `switchyard_protocol::decode`, the reader of every inbound event, on the subject and the
//! payload together.
//!
//! Input layout: `[selector, tail_len, tail (tail_len % 64 bytes), payload...]`. The selector picks
//! one of the real message types (so most inputs reach the payload checks of a type the optimizer
//! consumes) and how its subject is built; selector 19 (mod 20) uses the tail as the whole subject,
//! so the subject parser sees arbitrary strings too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_protocol::{MessageType, Subjects, decode};

/// The optimizer's default `messages.max_message_bytes`.
const MAX_BYTES: usize = 65_536;
/// A fixed clock, so a run is reproducible: a minute after the seeds (docs/protocol.md) were sent.
const NOW_MS: u64 = 1_767_225_660_000;

fn subject(subjects: &Subjects, selector: u8, tail: &str) -> String {
    let index = usize::from(selector % 20);
    let Some(&kind) = MessageType::ALL.get(index) else {
        return tail.to_string();
    };
    match (selector / 20) % 3 {
        0 => subjects.addressed(kind, tail),
        1 => subjects.unaddressed(kind),
        _ => format!("{}{tail}", subjects.unaddressed(kind)),
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, tail_len, rest @ ..] = data else {
        return;
    };
    let split = usize::from(tail_len % 64).min(rest.len());
    let (tail, payload) = rest.split_at(split);
    let tail = String::from_utf8_lossy(tail);
    let subjects = Subjects::default();
    let subject = subject(&subjects, *selector, &tail);
    match decode(&subjects, &subject, payload, MAX_BYTES, NOW_MS) {
        Ok(inbound) => {
            // An accepted event must be of the type its subject names.
            let parsed = subjects.parse(&subject).map(|(kind, _)| kind);
            assert_eq!(parsed, Some(inbound.message_type()));
            let _ = (inbound.message_id(), inbound.sender());
        }
        Err(rejection) => {
            assert!(!rejection.reason.as_str().is_empty());
        }
    }
});
