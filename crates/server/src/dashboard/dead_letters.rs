//! Dead letters: list (newest first, a bounded page), inspect (headers and payload) and replay.
//!
//! A replay republishes the dead letter's payload to the subject the optimizer first received it
//! on (its `Switchyard-Subject` header), with the original headers except the dead-letter ones and
//! a new `Nats-Msg-Id` (`replay:<dead-letter sequence>`): the original id may still be in the
//! events stream's duplicate window, which would silently drop the replay, while a second click
//! on the same dead letter is dropped as the duplicate it is. The envelope's message id is kept,
//! so an event that took effect after all is answered from the optimizer's record of applied
//! events instead of being applied twice. Once JetStream has stored the replay, the dead letter
//! is deleted from its stream.

use async_nats::HeaderMap;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use serde_json::{Value, json};
use switchyard_client::error::nats_error;

use super::{Dashboard, REPLAY_HEADER, ViewError};
use crate::optimizer::http::message::{Request, Response};

/// Dead letters listed per page unless asked for fewer; and at most.
const PAGE: usize = 25;
const MAX_PAGE: usize = 100;
/// Payload bytes shown when inspecting (the rest is cut, and the cut is said).
const MAX_PAYLOAD_SHOWN: usize = 64 * 1024;
/// The header carrying the subject an event was first received on (written by
/// `optimizer::batch` when it dead-letters the event).
pub const ORIGINAL_SUBJECT_HEADER: &str = "Switchyard-Subject";
/// Headers of the dead letter itself, not of the event: not replayed.
const DEAD_LETTER_HEADERS: [&str; 3] = [
    "Switchyard-Error",
    "Switchyard-Took-Effect",
    ORIGINAL_SUBJECT_HEADER,
];

/// The dead-letter stream, `None` before any optimizer created it.
async fn stream(d: &Dashboard) -> Result<Option<Stream>, ViewError> {
    let name = d.inner.subjects.dead_letter_stream();
    match d.inner.js.get_stream(&name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) => match e.kind() {
            async_nats::jetstream::context::GetStreamErrorKind::JetStream(js)
                if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(nats_error("cannot look up the dead-letter stream", e).into()),
        },
    }
}

/// The message at `seq`, `None` when there is none (deleted, or past the stream's ends).
async fn message_at(
    stream: &Stream,
    seq: u64,
) -> Result<Option<async_nats::jetstream::message::StreamMessage>, ViewError> {
    match stream.get_raw_message(seq).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) if is_not_found(&e.kind()) => Ok(None),
        Err(e) => Err(nats_error("cannot read a dead letter", e).into()),
    }
}

fn is_not_found(kind: &LastRawMessageErrorKind) -> bool {
    matches!(kind, LastRawMessageErrorKind::JetStream(js)
        if js.error_code() == async_nats::jetstream::ErrorCode::NO_MESSAGE_FOUND)
}

/// Newest first: up to `limit` dead letters before sequence `before` (exclusive; default: all).
/// Deleted sequences (replayed letters) are skipped, looking at no more than four pages' worth.
pub(super) async fn list(d: &Dashboard, request: &Request) -> Result<Value, ViewError> {
    let limit = number(request, "limit")?.map_or(PAGE, |n| (n as usize).clamp(1, MAX_PAGE));
    let Some(mut stream) = stream(d).await? else {
        return Ok(json!({ "dead_letters": [], "total": 0 }));
    };
    let state = stream
        .info()
        .await
        .map_err(|e| nats_error("cannot read the dead-letter stream", e))?
        .state
        .clone();
    let newest = number(request, "before")?.map_or(state.last_sequence, |b| b.saturating_sub(1));
    let mut seq = newest.min(state.last_sequence);
    let mut letters = Vec::new();
    let mut probes = 0;
    while seq >= state.first_sequence.max(1) && letters.len() < limit && probes < 4 * MAX_PAGE {
        if let Some(m) = message_at(&stream, seq).await? {
            letters.push(summary(&m));
        }
        seq -= 1;
        probes += 1;
    }
    Ok(json!({
        "dead_letters": letters,
        "total": state.messages,
        // Where the next page starts, when there may be one.
        "next_before": (seq >= state.first_sequence.max(1)).then_some(seq + 1),
    }))
}

/// One dead letter: every header, the payload (as text), and whether it can be replayed.
pub(super) async fn inspect(d: &Dashboard, request: &Request) -> Result<Value, ViewError> {
    let seq = number(request, "seq")?
        .ok_or_else(|| ViewError::BadRequest("seq must be a dead letter's sequence".into()))?;
    let m = found(d, seq).await?;
    let mut headers = serde_json::Map::new();
    for (name, values) in m.headers.iter() {
        let values: Vec<String> = values.iter().map(ToString::to_string).collect();
        headers.insert(name.to_string(), json!(values));
    }
    let shown = &m.payload[..m.payload.len().min(MAX_PAYLOAD_SHOWN)];
    let mut view = summary(&m);
    if let Value::Object(map) = &mut view {
        map.insert("headers".into(), Value::Object(headers));
        map.insert(
            "payload".into(),
            json!(String::from_utf8_lossy(shown).into_owned()),
        );
        map.insert(
            "payload_cut".into(),
            json!(m.payload.len() > MAX_PAYLOAD_SHOWN),
        );
        map.insert("allow_replay".into(), json!(d.inner.allow_replay));
    }
    Ok(view)
}

async fn found(
    d: &Dashboard,
    seq: u64,
) -> Result<async_nats::jetstream::message::StreamMessage, ViewError> {
    let missing = || ViewError::NotFound(format!("no dead letter {seq}"));
    let stream = stream(d).await?.ok_or_else(missing)?;
    message_at(&stream, seq).await?.ok_or_else(missing)
}

/// A line of the list: what the page shows before one is opened.
fn summary(m: &async_nats::jetstream::message::StreamMessage) -> Value {
    let header = |name: &str| m.headers.get(name).map(|v| v.to_string());
    let preview: String = String::from_utf8_lossy(&m.payload[..m.payload.len().min(160)]).into();
    json!({
        "seq": m.sequence,
        "subject": m.subject.to_string(),
        "time_ms": (m.time.unix_timestamp_nanos() / 1_000_000) as i64,
        "error": header("Switchyard-Error"),
        "took_effect": header("Switchyard-Took-Effect"),
        "original_subject": header(ORIGINAL_SUBJECT_HEADER),
        "replayable": header(ORIGINAL_SUBJECT_HEADER).is_some(),
        "payload_bytes": m.payload.len(),
        "preview": preview,
    })
}

/// `POST /api/dead_letter/replay?seq=N`: republishes the dead letter to its original subject and
/// deletes it. Refused (403) unless `[dashboard] allow_replay` and the request carries
/// [`REPLAY_HEADER`]; refused (409) for a dead letter without its original subject.
pub(super) async fn replay(d: &Dashboard, request: &Request) -> Response {
    let outcome = replay_outcome(d, request).await;
    let label = match &outcome {
        Ok(_) => "replayed",
        Err((status, _)) if status.starts_with('5') => "failed",
        Err(_) => "refused",
    };
    d.inner
        .metrics
        .dashboard_replays
        .with_label_values(&[label])
        .inc();
    match outcome {
        Ok(body) => Response::new("200 OK", "application/json", body.to_string()),
        Err((status, message)) => {
            tracing::warn!(status, %message, "dead-letter replay not done");
            Response::new(status, "application/json", super::error_body(&message))
        }
    }
}

type Refusal = (&'static str, String);

async fn replay_outcome(d: &Dashboard, request: &Request) -> Result<Value, Refusal> {
    if !d.inner.allow_replay {
        return Err((
            "403 Forbidden",
            "replay is off: set [dashboard] allow_replay = true (DASHBOARD_ALLOW_REPLAY)".into(),
        ));
    }
    if request.header(REPLAY_HEADER).is_none() {
        return Err((
            "403 Forbidden",
            format!("a replay request must carry the {REPLAY_HEADER} header"),
        ));
    }
    let seq = match number(request, "seq") {
        Ok(Some(seq)) => seq,
        _ => {
            return Err((
                "400 Bad Request",
                "seq must be a dead letter's sequence".into(),
            ));
        }
    };
    let m = found(d, seq).await.map_err(refusal)?;
    let subject = original_subject(d, &m)?;
    let headers = replay_headers(&m.headers, seq);
    let ack = d
        .inner
        .js
        .publish_with_headers(subject.clone(), headers, m.payload.clone())
        .await
        .map_err(|e| ("503 Service Unavailable", format!("publish failed: {e}")))?
        .await
        .map_err(|e| ("503 Service Unavailable", format!("not stored: {e}")))?;
    let deleted = match stream(d).await {
        Ok(Some(stream)) => stream.delete_message(seq).await.is_ok(),
        _ => false,
    };
    tracing::info!(seq, subject = %subject, deleted, "dead letter replayed");
    Ok(json!({
        "replayed": seq,
        "subject": subject,
        "stream": ack.stream,
        "sequence": ack.sequence,
        "duplicate": ack.duplicate,
        "deleted": deleted,
    }))
}

/// The subject to replay to: the recorded one, if it is one of this deployment's event subjects.
fn original_subject(
    d: &Dashboard,
    m: &async_nats::jetstream::message::StreamMessage,
) -> Result<String, Refusal> {
    let subject = m
        .headers
        .get(ORIGINAL_SUBJECT_HEADER)
        .map(|v| v.to_string())
        .ok_or_else(|| {
            (
                "409 Conflict",
                format!(
                    "dead letter {} has no {ORIGINAL_SUBJECT_HEADER} header (an advisory, a \
                     message between agents, or dead-lettered by an older version): replay it \
                     by hand",
                    m.sequence
                ),
            )
        })?;
    let is_event = d.inner.subjects.parse(&subject).is_some()
        && !subject.starts_with(&d.inner.subjects.dead_letter(""));
    if !is_event {
        return Err((
            "409 Conflict",
            format!("{subject} is not an event subject of this deployment"),
        ));
    }
    Ok(subject)
}

/// The original headers minus the dead-letter ones and the old message id, plus a new id.
fn replay_headers(original: &HeaderMap, seq: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in original.iter() {
        let name = name.to_string();
        let dropped = DEAD_LETTER_HEADERS
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&name))
            || name.eq_ignore_ascii_case(async_nats::header::NATS_MESSAGE_ID.as_ref());
        if dropped {
            continue;
        }
        for value in values {
            headers.append(name.as_str(), value.to_string());
        }
    }
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("replay:{seq}").as_str(),
    );
    headers.insert("Switchyard-Replay-Of", seq.to_string().as_str());
    headers
}

fn refusal(e: ViewError) -> Refusal {
    match e {
        ViewError::BadRequest(m) => ("400 Bad Request", m),
        ViewError::NotFound(m) => ("404 Not Found", m),
        ViewError::Unavailable(e) => ("503 Service Unavailable", e.to_string()),
    }
}

fn number(request: &Request, name: &str) -> Result<Option<u64>, ViewError> {
    request
        .param(name)
        .map(|raw| {
            raw.parse::<u64>()
                .map_err(|_| ViewError::BadRequest(format!("{name} must be a whole number")))
        })
        .transpose()
}
