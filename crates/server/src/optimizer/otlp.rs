//! OTLP/HTTP export of spans, JSON encoding (the OTLP specification's `application/json` form,
//! which the OpenTelemetry Collector, Jaeger and Tempo accept on `/v1/traces`). Spans wait in a
//! bounded queue ([`super::traces::Tracer`]) and go out in batches from this one task, so the
//! event path never waits for a collector; a failed export loses that batch (counted, and logged
//! rate-limited), it is not retried.
//!
//! Why not the opentelemetry SDK: every span here is made after the fact from times Redis holds,
//! with ids chosen here (the grant's is derived), so the SDK's tracer and context machinery has
//! nothing to do, and its exporters bring an HTTP client stack this service does not otherwise
//! build. What goes on the wire is the same OTLP.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::Ctx;
use super::traces::{AttrValue, SpanRecord};
use switchyard_protocol::to_hex;

/// The service name spans are exported under.
pub(crate) const SERVICE_NAME: &str = "switchyard-optimizer";

/// Where to POST: host:port and path of an `http://` URL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Endpoint {
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    /// `http://host[:port][/base]` → `/base/v1/traces` (kept when it already ends so).
    pub(crate) fn parse(url: &str) -> Option<Endpoint> {
        let rest = url.trim().strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return None;
        }
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let path = if path.ends_with("/v1/traces") {
            path.to_string()
        } else {
            format!("{path}/v1/traces")
        };
        Some(Endpoint { authority, path })
    }
}

/// Sends batches until `stop`; then sends what is still queued, once.
pub(crate) async fn run_exporter(
    ctx: Arc<Ctx>,
    mut spans: mpsc::Receiver<SpanRecord>,
    mut stop: watch::Receiver<bool>,
) {
    let t = &ctx.config.telemetry;
    let Some(endpoint) = Endpoint::parse(&t.otlp_endpoint) else {
        return;
    };
    let interval = Duration::from_millis(t.export_interval_ms);
    tracing::info!(endpoint = %t.otlp_endpoint, "exporting trace spans over OTLP/HTTP");
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            first = spans.recv() => match first {
                Some(span) => batch.push(span),
                None => return,
            },
            _ = stop.changed() => {
                while let Ok(span) = spans.try_recv() {
                    batch.push(span);
                }
                export(&ctx, &endpoint, batch).await;
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + interval;
        while batch.len() < t.max_export_batch {
            tokio::select! {
                next = spans.recv() => match next {
                    Some(span) => batch.push(span),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        export(&ctx, &endpoint, batch).await;
    }
}

/// Sends one batch (in requests of at most `max_export_batch`) and counts the outcome.
async fn export(ctx: &Ctx, endpoint: &Endpoint, spans: Vec<SpanRecord>) {
    let t = &ctx.config.telemetry;
    for chunk in spans.chunks(t.max_export_batch.max(1)) {
        let body = encode(ctx, chunk).to_string();
        let timeout = Duration::from_millis(t.export_timeout_ms);
        let sent = tokio::time::timeout(timeout, post(endpoint, body.as_bytes())).await;
        let outcome = match sent {
            Ok(Ok(())) => "exported",
            Ok(Err(e)) => {
                warn_failed(ctx, &e);
                "failed"
            }
            Err(_) => {
                warn_failed(ctx, &"timed out");
                "failed"
            }
        };
        ctx.metrics
            .trace_spans
            .with_label_values(&[outcome])
            .inc_by(chunk.len() as u64);
    }
}

fn warn_failed(ctx: &Ctx, error: &dyn std::fmt::Display) {
    if let Some(held_back) = ctx.warnings.due("trace export failed") {
        tracing::warn!(error = %error, held_back, "trace export failed; those spans are lost");
    }
}

/// One HTTP/1.1 POST; Ok when the collector answers 2xx.
async fn post(endpoint: &Endpoint, body: &[u8]) -> Result<(), String> {
    let mut stream = TcpStream::connect(&endpoint.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", endpoint.authority))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.authority,
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    // The status line is all that matters; read a bounded prefix of the answer.
    let mut answer = vec![0u8; 256];
    let mut read = 0;
    while read < 12 {
        let n = stream
            .read(&mut answer[read..])
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let status_line = String::from_utf8_lossy(&answer[..read]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!(
            "collector answered {:?}",
            status_line.lines().next().unwrap_or("")
        ))
    }
}

/// The OTLP/JSON `ExportTraceServiceRequest` of `spans`.
pub(crate) fn encode(ctx: &Ctx, spans: &[SpanRecord]) -> Value {
    let resource = json!({"attributes": [
        attribute("service.name", &AttrValue::from(SERVICE_NAME)),
        attribute("service.version", &AttrValue::from(env!("CARGO_PKG_VERSION"))),
        attribute("service.instance.id", &AttrValue::from(ctx.replica_id.as_str())),
        attribute("switchyard.subject_prefix", &AttrValue::from(ctx.config.nats.subject_prefix.as_str())),
    ]});
    json!({"resourceSpans": [{
        "resource": resource,
        "scopeSpans": [{
            "scope": {"name": "switchyard", "version": env!("CARGO_PKG_VERSION")},
            "spans": spans.iter().map(encode_span).collect::<Vec<_>>(),
        }],
    }]})
}

fn encode_span(span: &SpanRecord) -> Value {
    let mut out = json!({
        "traceId": to_hex(&span.trace_id),
        "spanId": to_hex(&span.span_id),
        "name": span.name,
        "kind": span.kind as i32,
        // 64-bit integers are strings in OTLP/JSON.
        "startTimeUnixNano": span.start_ns.to_string(),
        "endTimeUnixNano": span.end_ns.to_string(),
        "attributes": span.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
        // STATUS_CODE_ERROR = 2, UNSET = 0.
        "status": {"code": if span.error { 2 } else { 0 }},
    });
    if let Some(parent) = span.parent_span_id {
        out["parentSpanId"] = Value::from(to_hex(&parent));
    }
    if let Some(state) = &span.tracestate {
        out["traceState"] = Value::from(state.as_str());
    }
    out
}

fn attribute(key: &str, value: &AttrValue) -> Value {
    let value = match value {
        AttrValue::Str(s) => json!({"stringValue": s}),
        AttrValue::Int(n) => json!({"intValue": n.to_string()}),
        AttrValue::Float(x) if x.is_finite() => json!({"doubleValue": x}),
        AttrValue::Float(x) => json!({"stringValue": x.to_string()}),
        AttrValue::Bool(b) => json!({"boolValue": b}),
    };
    json!({"key": key, "value": value})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path() {
        let e = |url| Endpoint::parse(url).map(|e| format!("{} {}", e.authority, e.path));
        assert_eq!(
            e("http://127.0.0.1:4318").as_deref(),
            Some("127.0.0.1:4318 /v1/traces")
        );
        assert_eq!(
            e("http://collector/").as_deref(),
            Some("collector:80 /v1/traces")
        );
        assert_eq!(
            e("http://c:4318/otlp").as_deref(),
            Some("c:4318 /otlp/v1/traces")
        );
        assert_eq!(
            e("http://c:4318/v1/traces").as_deref(),
            Some("c:4318 /v1/traces")
        );
        assert_eq!(e("https://c:4318"), None);
        assert_eq!(e("http://"), None);
    }

    #[test]
    fn spans_encode_as_otlp_json() {
        let context = switchyard_protocol::TraceContext::new_root();
        let span = SpanRecord::new(
            "run",
            super::super::traces::SpanKind::Internal,
            &context,
            Some([1; 8]),
            5,
            9,
        )
        .attr("attempt", 2u64)
        .attr("agent_id", "a1")
        .error(true);
        let out = encode_span(&span);
        assert_eq!(out["traceId"], to_hex(&context.trace_id));
        assert_eq!(out["parentSpanId"], "0101010101010101");
        assert_eq!(out["startTimeUnixNano"], "5");
        assert_eq!(out["attributes"][0]["value"]["intValue"], "2");
        assert_eq!(out["attributes"][1]["value"]["stringValue"], "a1");
        assert_eq!(out["status"]["code"], 2);
        assert_eq!(out["kind"], 1);
    }
}
