//! `/metrics` (Prometheus text), `/healthz` (the process answers: alive), `/readyz` (it reaches
//! Redis and NATS now: 503 with what is missing when not) and, when given one, the web dashboard
//! (`/`, `/dashboard`, `/api/*`: see `crate::dashboard`) over a deliberately tiny HTTP/1.1
//! responder. A handful of GET endpoints answering JSON, plus one POST without a body, do not
//! justify an HTTP framework and its dependencies: each connection answers one request and
//! closes, the request head is bounded (8 KiB) and read under a timeout, and a request body is
//! never read.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Readiness;
use crate::dashboard::Dashboard;
use crate::metrics::Metrics;

pub mod message;

use message::{Request, Response};

/// What one listener serves.
#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// The dashboard, when `[dashboard] enabled`.
    pub dashboard: Option<Dashboard>,
}

/// Serves until `shutdown` resolves. Each connection answers one request and closes.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
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
                let endpoints = endpoints.clone();
                // Bounded by the read timeout below: a slow client cannot pin the task forever.
                tokio::spawn(async move { answer(stream, &endpoints).await });
            }
            Err(e) => tracing::warn!(error = %e, "metrics accept failed"),
        }
    }
}

async fn answer(mut stream: TcpStream, endpoints: &Endpoints) {
    let Ok(Some(head)) = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream)).await
    else {
        return;
    };
    let request = Request::parse(&head);
    let response = route(&request, endpoints).await;
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(response.body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn route(request: &Request, endpoints: &Endpoints) -> Response {
    match request.path.as_str() {
        "/metrics" => Response::new(
            "200 OK",
            "text/plain; version=0.0.4",
            endpoints.metrics.render(),
        ),
        "/healthz" => Response::text("200 OK", "ok"),
        "/readyz" => match endpoints.readiness.problem() {
            None => Response::text("200 OK", "ready"),
            Some(problem) => Response::text("503 Service Unavailable", &problem),
        },
        _ => match &endpoints.dashboard {
            Some(dashboard) => match dashboard.answer(request).await {
                Some(response) => response,
                None => Response::text("404 Not Found", "not found"),
            },
            None => Response::text("404 Not Found", "not found"),
        },
    }
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
