//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) as carried on NATS messages: the
//! `traceparent` header (and `tracestate`, passed on as given) on TASK_SUBMIT, on the grant an
//! agent receives, and on TASK_COMPLETE. Optional everywhere: a message without it is handled
//! the same, and a malformed header is ignored (never a refusal, never a panic), so an agent in
//! any language may forward or drop it. No OpenTelemetry dependency: ids are plain bytes.

use std::fmt;

use uuid::Uuid;

/// The header carrying `version-trace_id-parent_id-flags`.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The header carrying vendor entries, passed on unchanged.
pub const TRACESTATE_HEADER: &str = "tracestate";
/// The `tracestate` entry a submitter that starts a trace itself (and exports no span of its
/// own) adds: the optimizer's `submit` span then takes the header's span id and becomes the
/// trace's root, so the trace has no missing parent. Stripped before the context goes on.
pub const ROOT_STATE_ENTRY: &str = "switchyard=root";
/// Longest `tracestate` passed on (the specification's limit is 512 characters).
const MAX_TRACESTATE: usize = 512;
const SAMPLED: u8 = 0x01;

/// A position in a trace: the trace id, the span id of the parent-to-be, the flags, and the
/// vendor state. Not part of any JSON payload; see [`crate::Envelope::trace`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The trace flags byte (bit 0: sampled).
    pub flags: u8,
    /// The `tracestate` header as received (already checked for size and characters).
    pub tracestate: Option<String>,
}

/// Why a `traceparent` header was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceParseError {
    /// Not `00-<32 hex>-<16 hex>-<2 hex>` (or a later version's longer form).
    Malformed,
    /// Version `ff`, which the specification forbids.
    ForbiddenVersion,
    /// An all-zero trace id or span id.
    ZeroId,
}

impl fmt::Display for TraceParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceParseError::Malformed => {
                "traceparent is not version-trace_id-parent_id-flags in lowercase hex"
            }
            TraceParseError::ForbiddenVersion => "traceparent version ff is invalid",
            TraceParseError::ZeroId => "traceparent has an all-zero trace id or parent id",
        })
    }
}

impl std::error::Error for TraceParseError {}

impl TraceContext {
    /// Parses a `traceparent` header value. A version above 00 is read as 00 when its first
    /// four fields are well formed (the specification's forward compatibility rule).
    pub fn parse(traceparent: &str) -> Result<TraceContext, TraceParseError> {
        let s = traceparent.trim();
        // ASCII only, so the byte offsets below never split a character.
        if !s.is_ascii() {
            return Err(TraceParseError::Malformed);
        }
        let bytes = s.as_bytes();
        if bytes.len() < 55 || (bytes.len() > 55 && bytes[55] != b'-') {
            return Err(TraceParseError::Malformed);
        }
        let version = hex_bytes::<1>(&s[0..2]).ok_or(TraceParseError::Malformed)?;
        if version[0] == 0xff {
            return Err(TraceParseError::ForbiddenVersion);
        }
        if version[0] == 0 && bytes.len() != 55 {
            return Err(TraceParseError::Malformed);
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(TraceParseError::Malformed);
        }
        let trace_id = hex_bytes::<16>(&s[3..35]).ok_or(TraceParseError::Malformed)?;
        let span_id = hex_bytes::<8>(&s[36..52]).ok_or(TraceParseError::Malformed)?;
        let flags = hex_bytes::<1>(&s[53..55]).ok_or(TraceParseError::Malformed)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(TraceParseError::ZeroId);
        }
        Ok(TraceContext {
            trace_id,
            span_id,
            flags: flags[0],
            tracestate: None,
        })
    }

    /// Reads the two headers' values: `None` when there is no `traceparent` or it is invalid. A
    /// `tracestate` that is too long or not printable ASCII is dropped, the context kept.
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Self> {
        let mut context = TraceContext::parse(traceparent?).ok()?;
        context.tracestate = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE)
            .filter(|s| s.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .map(str::to_string);
        Some(context)
    }

    /// A new trace, sampled, started by a submitter that exports no span itself: it carries
    /// [`ROOT_STATE_ENTRY`], so the optimizer's `submit` span becomes the root.
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: *Uuid::new_v4().as_bytes(),
            span_id: random_span_id(),
            flags: SAMPLED,
            tracestate: Some(ROOT_STATE_ENTRY.to_string()),
        }
    }

    /// The same trace at another span (a child of this context's span gets this one's id as
    /// its parent).
    pub fn at_span(&self, span_id: [u8; 8]) -> TraceContext {
        TraceContext {
            span_id,
            ..self.clone()
        }
    }

    /// Whether the submitter started this trace without a span of its own ([`Self::new_root`]).
    pub fn is_fresh_root(&self) -> bool {
        self.state_entries().any(|e| e == ROOT_STATE_ENTRY)
    }

    /// The context without the [`ROOT_STATE_ENTRY`] marker (what is passed on downstream).
    pub fn without_root_marker(mut self) -> TraceContext {
        let rest: Vec<&str> = self
            .state_entries()
            .filter(|e| *e != ROOT_STATE_ENTRY)
            .collect();
        self.tracestate = (!rest.is_empty()).then(|| rest.join(","));
        self
    }

    fn state_entries(&self) -> impl Iterator<Item = &str> {
        self.tracestate
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    /// Whether the trace is sampled (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The `traceparent` header value (version 00).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            self.flags
        )
    }

    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }
}

/// A random, never zero span id (the variant bits of a v4 UUID's second half are `10`).
pub fn random_span_id() -> [u8; 8] {
    let uuid = Uuid::new_v4();
    let mut id = [0u8; 8];
    id.copy_from_slice(&uuid.as_bytes()[8..16]);
    id
}

/// Lowercase hex, as the headers and OTLP/JSON write ids.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Exactly `2 * N` lowercase hex digits as bytes (the specification forbids uppercase).
fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = (value(pair[0])? << 4) | value(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let c = TraceContext::parse(VALID).expect("valid");
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id_hex(), "00f067aa0ba902b7");
        assert!(c.sampled());
        assert_eq!(c.traceparent(), VALID);
        let unsampled = TraceContext::parse(&VALID.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.sampled());
    }

    #[test]
    fn invalid_traceparents_are_errors_never_panics() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_span = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let cases = [
            ("", TraceParseError::Malformed),
            ("garbage", TraceParseError::Malformed),
            (&VALID[..54], TraceParseError::Malformed),
            (&format!("{VALID}-extra"), TraceParseError::Malformed),
            (&VALID.to_uppercase(), TraceParseError::Malformed),
            (&VALID.replace('-', "_"), TraceParseError::Malformed),
            (
                &VALID.replacen("00", "ff", 1),
                TraceParseError::ForbiddenVersion,
            ),
            (zero_trace, TraceParseError::ZeroId),
            (zero_span, TraceParseError::ZeroId),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
                TraceParseError::Malformed,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(TraceContext::parse(input), Err(expected), "{input:?}");
        }
        // Multi-byte characters where a dash belongs must not split a character.
        for bad in [
            "ééééééééééééééééééééééééééééé",
            "00-€€€€€€€€€€€€€€€€€€€€€€€€€€€€",
        ] {
            assert!(TraceContext::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        let c = TraceContext::parse(later).expect("forward compatible");
        assert_eq!(c.traceparent(), VALID.to_string());
    }

    #[test]
    fn tracestate_is_kept_when_sane_and_dropped_otherwise() {
        let c = TraceContext::from_headers(Some(VALID), Some("vendor=x,other=y")).expect("valid");
        assert_eq!(c.tracestate.as_deref(), Some("vendor=x,other=y"));
        let long = "a=".to_string() + &"b".repeat(600);
        let c = TraceContext::from_headers(Some(VALID), Some(&long)).expect("context kept");
        assert_eq!(c.tracestate, None);
        let c = TraceContext::from_headers(Some(VALID), Some("a=\u{7}")).expect("context kept");
        assert_eq!(c.tracestate, None);
        assert_eq!(TraceContext::from_headers(Some("bad"), Some("a=b")), None);
        assert_eq!(TraceContext::from_headers(None, Some("a=b")), None);
    }

    #[test]
    fn a_fresh_root_is_marked_and_the_marker_comes_off() {
        let root = TraceContext::new_root();
        assert!(root.is_fresh_root() && root.sampled());
        assert_ne!(root.trace_id, [0; 16]);
        assert_ne!(root.span_id, [0; 8]);
        assert_eq!(root.clone().without_root_marker().tracestate, None);
        let mut mixed = root.clone();
        mixed.tracestate = Some(format!("a=1, {ROOT_STATE_ENTRY} ,b=2"));
        assert_eq!(
            mixed.without_root_marker().tracestate.as_deref(),
            Some("a=1,b=2")
        );
        let parsed = TraceContext::parse(&root.traceparent()).expect("own output parses");
        assert_eq!(parsed.trace_id, root.trace_id);
        assert!(!parsed.is_fresh_root());
    }
}
