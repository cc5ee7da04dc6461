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

/// One parsed request head: what the endpoints need of it.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The query string's pairs, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    fn parse(head: &[u8]) -> Request {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split_whitespace();
        let method = first.next().unwrap_or("GET").to_string();
        let target = first.next().unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Request {
            method,
            path: path.to_string(),
            query: query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
            headers,
        }
    }

    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response: status line, content type and body.
pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn new(status: &'static str, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body,
        }
    }

    fn text(status: &'static str, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
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

/// `%XX` escapes and `+` (a space in a query string) decoded; a malformed escape is kept as is.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_parses_into_path_query_and_headers() {
        let r = Request::parse(
            b"POST /api/task.json?id=a%20b+c&x HTTP/1.1\r\nHost: h\r\nX-Switchyard-Dashboard: 1\r\n\r\n",
        );
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/task.json");
        assert_eq!(r.param("id"), Some("a b c"));
        assert_eq!(r.param("x"), Some(""));
        assert_eq!(r.header("x-switchyard-dashboard"), Some("1"));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
