//! The web dashboard: one HTML page, one small script and one stylesheet, embedded in the binary
//! (no build step), reading JSON views of the deployment that it polls every two seconds. Served
//! on the metrics listener of every optimizer replica (`[dashboard] enabled`) and by `switchyard
//! dashboard`, which needs only NATS and Redis.
//!
//! Routes (all under the listener of `optimizer::http`):
//! * `GET /`, `/dashboard` — the page; `/dashboard/app.js`, `/dashboard/style.css` — its assets.
//! * `GET /api/overview.json` — fleet (active and departed agents), queue, budgets, tenants,
//!   counters and the throughput timeline.
//! * `GET /api/tasks.json?limit=N` — the first N waiting and queued tasks, each with why it waits.
//! * `GET /api/task.json?id=ID` — one task's story.
//! * `GET /api/dead_letters.json?before=SEQ&limit=N` — dead letters, newest first.
//! * `GET /api/dead_letter.json?seq=SEQ` — one dead letter: headers and payload.
//! * `POST /api/dead_letter/replay?seq=SEQ` — republish it (only with `allow_replay`).
//!
//! Everything but the replay only reads. Redis is read through the [`Store`], never written.

mod dead_letters;

pub use dead_letters::ORIGINAL_SUBJECT_HEADER;
mod views;

use std::sync::Arc;

use async_nats::jetstream;
use serde::Serialize;
use switchyard_client::error::Error;
use switchyard_client::transport;
use switchyard_protocol::Subjects;

use crate::config::{Config, DashboardConfig};
use crate::metrics::Metrics;
use crate::optimizer::http::message::{Request, Response};
use crate::state::Store;

/// The header a replay request must carry. A browser sends a custom header cross-origin only
/// after a CORS preflight, which this server never approves: another site open in an
/// operator's browser cannot make it replay anything.
pub const REPLAY_HEADER: &str = "x-switchyard-dashboard";

/// A dashboard over one deployment; cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    js: jetstream::Context,
    subjects: Subjects,
    metrics: Metrics,
    allow_replay: bool,
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

impl Dashboard {
    /// A dashboard reading through `store` and `js`; `metrics` counts replays and, in an
    /// optimizer, holds the replica's own grant latencies the timeline shows.
    pub fn new(
        store: Store,
        js: jetstream::Context,
        subjects: Subjects,
        metrics: Metrics,
        config: &DashboardConfig,
    ) -> Dashboard {
        Dashboard {
            inner: Arc::new(Inner {
                store,
                js,
                subjects,
                metrics,
                allow_replay: config.allow_replay,
            }),
        }
    }

    /// Connects to the deployment `config` names (NATS and Redis), for `switchyard dashboard`:
    /// no optimizer runs in the process.
    pub async fn connect(config: &Config, metrics: Metrics) -> Result<Dashboard, Error> {
        let nats = &config.nats;
        let client =
            transport::connect_secured(&nats.url, "switchyard-dashboard", &nats.security()).await?;
        let store = Store::connect(&config.redis)
            .await?
            .with_budgets(config.budgets.iter().map(|b| b.name.clone()).collect());
        Ok(Dashboard::new(
            store,
            jetstream::new(client),
            Subjects::new(nats.subject_prefix.clone()),
            metrics,
            &config.dashboard,
        ))
    }

    /// The answer to a dashboard route, `None` for a path that is not one.
    pub async fn answer(&self, request: &Request) -> Option<Response> {
        let get = request.method == "GET" || request.method == "HEAD";
        Some(match (request.path.as_str(), get) {
            ("/" | "/dashboard" | "/dashboard/", true) => {
                Response::new("200 OK", "text/html; charset=utf-8", INDEX_HTML.into())
            }
            ("/dashboard/app.js", true) => {
                Response::new("200 OK", "text/javascript; charset=utf-8", APP_JS.into())
            }
            ("/dashboard/style.css", true) => {
                Response::new("200 OK", "text/css; charset=utf-8", STYLE_CSS.into())
            }
            ("/api/overview.json", true) => json(views::overview(self).await),
            ("/api/tasks.json", true) => json(views::tasks(self, request).await),
            ("/api/task.json", true) => json(views::task_story(self, request).await),
            ("/api/dead_letters.json", true) => json(dead_letters::list(self, request).await),
            ("/api/dead_letter.json", true) => json(dead_letters::inspect(self, request).await),
            ("/api/dead_letter/replay", false) if request.method == "POST" => {
                dead_letters::replay(self, request).await
            }
            _ => return None,
        })
    }
}

/// What a JSON view failed with: a request the view cannot answer, or the deployment not
/// answering (Redis or NATS), which the page shows as its error state.
#[derive(Debug)]
pub(crate) enum ViewError {
    BadRequest(String),
    NotFound(String),
    Unavailable(Error),
}

impl From<Error> for ViewError {
    fn from(e: Error) -> Self {
        ViewError::Unavailable(e)
    }
}

fn json<T: Serialize>(result: Result<T, ViewError>) -> Response {
    let (status, body) = match result {
        Ok(value) => (
            "200 OK",
            serde_json::to_string(&value).unwrap_or_else(|_| "null".into()),
        ),
        Err(ViewError::BadRequest(m)) => ("400 Bad Request", error_body(&m)),
        Err(ViewError::NotFound(m)) => ("404 Not Found", error_body(&m)),
        Err(ViewError::Unavailable(e)) => ("503 Service Unavailable", error_body(&e.to_string())),
    };
    Response::new(status, "application/json", body)
}

fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}
