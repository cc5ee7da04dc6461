//! Hostile payloads: oversized, deeply nested, and slow-to-parse messages within the size limit.
//! Each is refused (or, where the protocol allows it, accepted) without a stack overflow; how long
//! the worst take in a release build is printed by the ignored `hostile_payload_timings`
//! (RELIABILITY.md, "Hostile input").

use super::*;

const NOW: u64 = 1_700_000_000_000;
/// The optimizer's default `messages.max_message_bytes`.
const LIMIT: usize = 65_536;
const SUBMIT: &str = "coord.task_submit.orch";
const HANDOFF: &str = "coord.handoff_initiate.a1";

/// An envelope from `sender` around raw payload text, with `extra` raw fields in the envelope.
fn message(sender: &str, payload: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"protocol_version":1,"message_id":"6f1c2d1e-8f7a-4b7e-9a51-3d0f2f6f7a10","sender":"{sender}","type":"TASK_SUBMIT","created_at_ms":{NOW},{extra}"payload":{payload}}}"#
    )
    .into_bytes()
}

/// A handoff from `a1` whose `task_state` (any JSON, read into a `serde_json::Value`) is `state`.
fn handoff_with(state: &str) -> Vec<u8> {
    format!(
        r#"{{"protocol_version":1,"message_id":"6f1c2d1e-8f7a-4b7e-9a51-3d0f2f6f7a10","sender":"a1","type":"HANDOFF_INITIATE","created_at_ms":{NOW},"payload":{{"handoff_id":"h1","from_agent":"a1","to_agent":"a2","task_id":"t1","task_state":{state}}}}}"#
    )
    .into_bytes()
}

/// A submit from `orch` whose payload is `{"task_id":"t1",<field>}`.
fn submit_with(field: &str) -> Vec<u8> {
    message("orch", &format!(r#"{{"task_id":"t1",{field}}}"#), "")
}

/// `open` n times, then `close` n times.
fn nested(open: &str, close: &str, n: usize) -> String {
    let mut text = open.repeat(n);
    text.push_str(&close.repeat(n));
    text
}

/// `{"k0":1,"k1":1,...}` filled up to about `bytes`.
fn tiny_keys(bytes: usize) -> String {
    let mut text = String::from("{");
    let mut i = 0;
    while text.len() < bytes {
        text.push_str(&format!(r#""k{i}":1,"#));
        i += 1;
    }
    text.push_str(r#""k":1}"#);
    text
}

/// What a hostile message must come to: refused with this reason, or accepted (`None`).
type Expect = Option<RejectReason>;

struct Case {
    name: &'static str,
    subject: &'static str,
    bytes: Vec<u8>,
    /// The size limit passed to `decode`: above the default where the parser itself is tested.
    limit: usize,
    expect: Expect,
}

fn case(name: &'static str, bytes: Vec<u8>, limit: usize, expect: Expect) -> Case {
    let subject = if bytes.windows(8).any(|w| w == b"HANDOFF_") {
        HANDOFF
    } else {
        SUBMIT
    };
    Case {
        name,
        subject,
        bytes,
        limit,
        expect,
    }
}

/// Nesting far deeper than serde_json's recursion limit (128): refused, never a stack overflow.
/// Only a field read into a `serde_json::Value` (a handoff's `task_state`) can nest deeply in an
/// accepted message; a typed field refuses the wrong shape at its first level.
fn deep_cases() -> Vec<Case> {
    use RejectReason::*;
    let (big, deep) = (4 << 20, 100_000);
    // Closed nesting that fits the default limit: 2 bytes a level.
    let fits = (LIMIT - 300) / 2;
    let objects = nested(r#"{"a":"#, "}", deep).replace(":}", ":1}");
    vec![
        case(
            "16 MiB of [",
            vec![b'['; 16 << 20],
            LIMIT,
            Some(PayloadTooLarge),
        ),
        case("100k [", vec![b'['; deep], big, Some(MalformedJson)),
        case("64 KiB of [", vec![b'['; LIMIT], LIMIT, Some(MalformedJson)),
        case(
            "64 KiB of {\"a\":",
            r#"{"a":"#.repeat(LIMIT / 5).into_bytes(),
            LIMIT,
            Some(MalformedJson),
        ),
        case(
            "100k {\"a\":",
            r#"{"a":"#.repeat(deep).into_bytes(),
            big,
            Some(MalformedJson),
        ),
        case(
            "100k [ closed, as task_state",
            handoff_with(&nested("[", "]", deep)),
            big,
            Some(MalformedJson),
        ),
        case(
            "100k {\"a\": closed, as task_state",
            handoff_with(&objects),
            big,
            Some(MalformedJson),
        ),
        case(
            "32k [ closed, as task_state",
            handoff_with(&nested("[", "]", fits)),
            LIMIT,
            Some(MalformedJson),
        ),
        case(
            "126 [ closed, as task_state",
            handoff_with(&nested("[", "]", 126)),
            LIMIT,
            None,
        ),
        case(
            "127 [ closed, as task_state",
            handoff_with(&nested("[", "]", 127)),
            LIMIT,
            Some(MalformedJson),
        ),
        // Valid JSON, however deep, that is not an envelope: only `message_id` and `sender` are
        // read for the report, the rest is skipped.
        case(
            "100k [ closed",
            nested("[", "]", deep).into_bytes(),
            big,
            Some(InvalidEnvelope),
        ),
        case(
            "100k {\"message_id\": closed",
            nested(r#"{"message_id":"#, "}", deep)
                .replace(":}", ":1}")
                .into_bytes(),
            big,
            Some(MalformedJson),
        ),
        case(
            "100k [ closed, as a submit payload",
            message("orch", &nested("[", "]", deep), ""),
            big,
            Some(InvalidPayload),
        ),
        // A field nobody reads is skipped (iteratively) without being built: its depth costs
        // nothing and it is accepted, as any unknown field is.
        case(
            "32k [ closed, unknown payload field",
            submit_with(&format!(r#""x":{}"#, nested("[", "]", fits))),
            LIMIT,
            None,
        ),
        case(
            "32k [ closed, unknown envelope field",
            message(
                "orch",
                r#"{"task_id":"t1"}"#,
                &format!(r#""x":{},"#, nested("[", "]", fits)),
            ),
            LIMIT,
            None,
        ),
    ]
}

/// Inputs within the size limit that make a parser work hard per byte.
fn slow_cases() -> Vec<Case> {
    use RejectReason::*;
    let n = LIMIT - 300;
    vec![
        // For scale: an ordinary submit, and 64 KiB of one string nobody reads.
        case(
            "an ordinary submit",
            submit_with(
                r#""task_type":"compile","priority":8,"required_resources":{"cpu":2.0,"memory":2048.0},"dependencies":["t0"]"#,
            ),
            LIMIT,
            None,
        ),
        case(
            "64 KiB string, unknown field",
            submit_with(&format!(r#""x":"{}""#, "a".repeat(n))),
            LIMIT,
            None,
        ),
        case(
            "64 KiB of tiny resource names",
            submit_with(&format!(r#""required_resources":{}"#, tiny_keys(n))),
            LIMIT,
            Some(Resource("unknown_resource")),
        ),
        case(
            "64 KiB of tiny keys, unknown field",
            submit_with(&format!(r#""x":{}"#, tiny_keys(n))),
            LIMIT,
            None,
        ),
        case(
            "64 KiB of tiny keys as the envelope",
            tiny_keys(n).into_bytes(),
            LIMIT,
            Some(InvalidEnvelope),
        ),
        // The last of duplicate keys in a map wins; a duplicate struct field is refused.
        case(
            "64 KiB of duplicate resource keys",
            submit_with(&format!(
                r#""required_resources":{{{}"cpu":1}}"#,
                r#""cpu":1,"#.repeat(n / 8)
            )),
            LIMIT,
            None,
        ),
        case(
            "64 KiB of duplicate payload fields",
            submit_with(r#""task_id":"t1","#.repeat(n / 15).trim_end_matches(',')),
            LIMIT,
            Some(InvalidPayload),
        ),
        case(
            "exponent of 64k digits",
            submit_with(&format!(r#""estimated_duration_s":1e{}"#, "9".repeat(n))),
            LIMIT,
            Some(MalformedJson),
        ),
        case(
            "negative exponent of 64k digits",
            submit_with(&format!(r#""estimated_duration_s":1e-{}"#, "9".repeat(n))),
            LIMIT,
            None,
        ),
        case(
            "mantissa of 64k digits",
            submit_with(&format!(r#""estimated_duration_s":{}"#, "9".repeat(n))),
            LIMIT,
            Some(MalformedJson),
        ),
        case(
            "fraction of 64k digits",
            submit_with(&format!(r#""estimated_duration_s":0.{}1"#, "0".repeat(n))),
            LIMIT,
            None,
        ),
        case(
            "task_id of 10k \\u escapes",
            message(
                "orch",
                &format!(r#"{{"task_id":"{}"}}"#, r"\u0041".repeat(n / 6)),
                "",
            ),
            LIMIT,
            Some(InvalidId),
        ),
        case(
            "sender of 5k surrogate pairs",
            message(&r"\ud83d\ude00".repeat(n / 12), r#"{"task_id":"t1"}"#, ""),
            LIMIT,
            Some(InvalidId),
        ),
        case(
            "64 KiB of dependencies",
            submit_with(&format!(
                r#""dependencies":[{}"d"]"#,
                r#""d","#.repeat(n / 4)
            )),
            LIMIT,
            Some(InvalidDependencies),
        ),
        case(
            "64 KiB of empty recipients",
            message(
                "orch",
                r#"{"task_id":"t1"}"#,
                &format!(r#""recipients":[{}""],"#, r#""","#.repeat(n / 3 - 100)),
            ),
            LIMIT,
            None,
        ),
    ]
}

fn outcome(case: &Case) -> Expect {
    decode(
        &Subjects::default(),
        case.subject,
        &case.bytes,
        case.limit,
        NOW,
    )
    .err()
    .map(|r| r.reason)
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for case in deep_cases() {
        assert_eq!(outcome(&case), case.expect, "{}", case.name);
    }
}

#[test]
fn slow_to_parse_payloads_within_the_limit_are_refused_or_handled() {
    for case in slow_cases() {
        assert!(case.bytes.len() <= case.limit, "{} does not fit", case.name);
        assert_eq!(outcome(&case), case.expect, "{}", case.name);
    }
}

#[test]
fn an_invalid_envelope_is_reported_with_what_can_be_read() {
    let report = |text: &str| {
        decode(&Subjects::default(), SUBMIT, text.as_bytes(), LIMIT, NOW).expect_err("refused")
    };
    let r = report(r#"{"message_id":"not-a-uuid","sender":"orch2","type":"TASK_SUBMIT"}"#);
    assert_eq!(r.reason, RejectReason::InvalidEnvelope);
    assert_eq!(r.correlation_id.as_deref(), Some("not-a-uuid"));
    assert_eq!(r.reply_to, "orch2");
    // After 64 KiB of other keys, the last of repeated keys winning.
    let padded = tiny_keys(LIMIT - 200).replace(
        r#""k":1}"#,
        r#""sender":"x","sender":"orch3","message_id":"m1"}"#,
    );
    let r = report(&padded);
    assert_eq!(r.reason, RejectReason::InvalidEnvelope);
    assert_eq!(
        (r.correlation_id.as_deref(), r.reply_to.as_str()),
        (Some("m1"), "orch3")
    );
    // Fields that are not strings, or not valid ids, are not used; the subject's token is.
    let r = report(r#"{"message_id":{"message_id":"m2"},"sender":5}"#);
    assert_eq!((r.correlation_id, r.reply_to.as_str()), (None, "orch"));
    let r = report(r#"{"sender":"a.*"}"#);
    assert_eq!(r.reply_to, "orch");
    // A number beyond f64 in a field nobody reads is skipped with the field, here too.
    let r = report(r#"{"message_id":"m3","x":1e400}"#);
    assert_eq!(r.reason, RejectReason::InvalidEnvelope, "{}", r.message);
    for not_an_object in [r#""text""#, "[1,2]", "null", "-1.5"] {
        let r = report(not_an_object);
        assert_eq!(r.reason, RejectReason::InvalidEnvelope, "{not_an_object}");
        assert_eq!(r.correlation_id, None);
    }
    for not_json in [
        "{not json",
        r#"{"x":NaN}"#,
        r#"{"message_id":1e400}"#,
        "[1] x",
    ] {
        assert_eq!(
            report(not_json).reason,
            RejectReason::MalformedJson,
            "{not_json}"
        );
    }
}

/// Prints how long each hostile payload takes to decode (median of 21):
/// `cargo test -p switchyard-protocol --release hostile_payload_timings -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check: run it in a release build"]
fn hostile_payload_timings() {
    println!(
        "| {:<38} | {:>9} | {:>9} | {:<18} |",
        "payload", "bytes", "median µs", "outcome"
    );
    for case in deep_cases().into_iter().chain(slow_cases()) {
        let mut times: Vec<std::time::Duration> = (0..21)
            .map(|_| {
                let start = std::time::Instant::now();
                std::hint::black_box(outcome(&case));
                start.elapsed()
            })
            .collect();
        times.sort();
        let median = times[times.len() / 2].as_secs_f64() * 1e6;
        let result = outcome(&case).map_or("accepted", RejectReason::as_str);
        println!(
            "| {:<38} | {:>9} | {median:>9.1} | {result:<18} |",
            case.name,
            case.bytes.len()
        );
    }
}
