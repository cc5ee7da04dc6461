//! `/metrics` (Prometheus text), `/healthz` (the process answers: alive) and `/readyz` (it reaches
//! Redis and NATS now: 503 with what is missing when not) over a deliberately tiny HTTP/1.1
//! responder: three read-only GET endpoints do not justify an HTTP framework.

use std::future::Future;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Readiness;
use crate::metrics::Metrics;

/// Serves until `shutdown` resolves. Each connection answers one request and closes.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let (metrics, readiness) = (metrics.clone(), readiness.clone());
                // Bounded by the read timeout below: a slow client cannot pin the task forever.
                tokio::spawn(async move { answer(stream, &metrics, &readiness).await });
            }
            Err(e) => tracing::warn!(error = %e, "metrics accept failed"),
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics, readiness: &Readiness) {
    let Ok(Some(head)) =
        tokio::time::timeout(std::time::Duration::from_secs(5), read_head(&mut stream)).await
    else {
        return;
    };
    let request = String::from_utf8_lossy(&head);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        "/readyz" => match readiness.problem() {
            None => ("200 OK", "text/plain", "ready\n".to_string()),
            Some(problem) => (
                "503 Service Unavailable",
                "text/plain",
                format!("{problem}\n"),
            ),
        },
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads until the end of the request head (a blank line), at most 8 KiB: a request may arrive in
/// several segments.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() + n > 8192 {
            return (!head.is_empty()).then_some(head);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}
