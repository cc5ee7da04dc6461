//! Reading nats-server's HTTP monitoring endpoint (`/jsz`, ...) with a bare HTTP/1.0 request:
//! the harness needs one JSON document now and then, not an HTTP client.

use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::process::connect;

/// How long one request may take.
const REQUEST_WITHIN: Duration = Duration::from_secs(1);
/// Largest reply read; `/jsz` without details is a few hundred bytes.
const MAX_REPLY: u64 = 1024 * 1024;

/// GETs `path` from the monitoring port on loopback and parses the JSON body.
pub(crate) async fn get_json<T: DeserializeOwned>(port: u16, path: &str) -> io::Result<T> {
    if port == 0 {
        return Err(io::Error::other("monitoring is off for this server"));
    }
    let reply = tokio::time::timeout(REQUEST_WITHIN, get(port, path))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "monitoring request timed out"))??;
    let body = body_of(&reply)?;
    serde_json::from_slice(body).map_err(io::Error::other)
}

/// HTTP/1.0 so the server closes the connection after the reply and sends no chunked encoding:
/// the reply ends at end of stream.
async fn get(port: u16, path: &str) -> io::Result<Vec<u8>> {
    let mut stream = connect(port).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    stream.take(MAX_REPLY).read_to_end(&mut reply).await?;
    Ok(reply)
}

/// The body of a `200` reply.
fn body_of(reply: &[u8]) -> io::Result<&[u8]> {
    let status_ok = reply.starts_with(b"HTTP/1.0 200") || reply.starts_with(b"HTTP/1.1 200");
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n");
    match split {
        Some(at) if status_ok => Ok(&reply[at + 4..]),
        _ => {
            let head = String::from_utf8_lossy(&reply[..reply.len().min(120)]).into_owned();
            Err(io::Error::other(format!(
                "unexpected monitoring reply: {head:?}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::body_of;

    #[test]
    fn takes_the_body_of_a_200_reply_only() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
        assert_eq!(body_of(ok).ok(), Some(&b"{\"a\":1}"[..]));
        assert!(body_of(b"HTTP/1.0 404 Not Found\r\n\r\nno").is_err());
        assert!(body_of(b"HTTP/1.0 200 OK\r\nhalf a header").is_err());
    }
}
