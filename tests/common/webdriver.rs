//! A headless chromium driven over WebDriver (W3C JSON over HTTP) through Debian's chromedriver,
//! with a few plain HTTP/1.1 calls: no WebDriver crate, no TLS stack. Used by tests/dashboard.rs.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

/// Where the browser and its driver are (Debian's packages; `scripts/install-servers.sh`
/// installs them), unless CHROMIUM_BIN / CHROMEDRIVER_BIN say otherwise.
fn binaries() -> (String, String) {
    let browser = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver =
        std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    for (what, path, package) in [
        ("chromium", &browser, "chromium"),
        ("chromedriver", &driver, "chromium-driver"),
    ] {
        assert!(
            std::path::Path::new(path).exists(),
            "the dashboard's browser test needs {what} at {path}: run scripts/install-servers.sh \
             (apt-get install {package}) or set {}",
            if what == "chromium" {
                "CHROMIUM_BIN"
            } else {
                "CHROMEDRIVER_BIN"
            }
        );
    }
    (browser, driver)
}

/// One chromedriver process and one browser session in it; both end on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver on a free port, waits (polling /status) until it is ready, and opens
    /// a headless session with its own profile directory.
    pub async fn start() -> Browser {
        let (browser, driver) = binaries();
        let port = super::free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut this = Browser {
            driver: child,
            port,
            session: String::new(),
            _profile: profile,
        };
        within(30, "chromedriver to be ready", async {
            loop {
                if let Ok((200, body)) = this.call("GET", "/status", None).await {
                    if body["value"]["ready"] == json!(true) {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1400,1000",
                         format!("--user-data-dir={}", this._profile.path().display())],
            },
        }}});
        let (status, body) = within(60, "a browser session", async {
            this.call("POST", "/session", Some(capabilities)).await
        })
        .await
        .expect("chromedriver answers");
        assert_eq!(status, 200, "new session refused: {body}");
        this.session = body["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        this
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> std::io::Result<(u16, Value)> {
        http(self.port, method, path, body).await
    }

    /// A session command; panics on a WebDriver error.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        let (status, answer) = self.call(method, &full, body).await.expect("chromedriver");
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` in the page (synchronously) and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The element `css` matches, `None` when none does now.
    pub async fn find(&self, css: &str) -> Option<String> {
        let full = format!("/session/{}/element", self.session);
        let body = json!({"using": "css selector", "value": css});
        let (status, answer) = self
            .call("POST", &full, Some(body))
            .await
            .expect("chromedriver");
        (status == 200).then(|| answer["value"][ELEMENT].as_str().unwrap_or_default().into())
    }

    /// Waits (at most `secs`) until `css` matches an element, and returns it.
    pub async fn wait_for(&self, secs: u64, css: &str) -> String {
        within(secs, &format!("the page to show {css}"), async {
            loop {
                if let Some(element) = self.find(css).await {
                    return element;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }

    pub async fn click(&self, element: &str) {
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn text(&self, element: &str) -> String {
        self.command("GET", &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session, which closes the browser, then the driver; a blocking call because
        // drop cannot await (also on a failing test's unwinding, so no browser is left behind).
        use std::io::{Read, Write};
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = stream.write_all(request.as_bytes());
            let _ = stream.read(&mut [0u8; 4096]);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`, JSON in and out (`Value::Null` for a body that is
/// not JSON); the connection closes after the answer.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> std::io::Result<(u16, Value)> {
    let (status, _, text) = http_raw(port, method, path, &[], body).await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// One HTTP/1.1 request with extra headers: status, head, body text.
pub async fn http_raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        payload.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&payload);
    stream.write_all(request.as_bytes()).await?;
    let raw = read_response(&mut stream).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, head.to_string(), body))
}

/// Reads one response: up to its Content-Length when it has one (chromedriver keeps the
/// connection open whatever the request asked), else to the end of the connection.
async fn read_response(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == "content-length")
                .and_then(|(_, v)| v.trim().parse::<usize>().ok());
            if let Some(length) = length {
                if raw.len() >= end + 4 + length {
                    raw.truncate(end + 4 + length);
                    return Ok(raw);
                }
            }
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}
