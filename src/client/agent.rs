//! [`Agent`]: an agent's handle: register, receive grants, report completions.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;

use super::router::{ClientEvent, Router, into_reply};
use crate::error::{Error, nats_error};
use crate::protocol::{
    AgentDeregister, AgentRegister, Envelope, Heartbeat, MessageType, Subjects, TaskComplete,
    TaskGrant, now_ms,
};
use crate::transport;

pub struct Agent {
    js: jetstream::Context,
    subjects: Subjects,
    agent_id: String,
    router: Router,
    reply_timeout: Duration,
    /// Sends HEARTBEATs while the agent lives (when it registered with a lease).
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop_heartbeats();
    }
}

impl Agent {
    /// Registers with the coordinator and waits until it confirms.
    pub async fn register(
        client: async_nats::Client,
        subjects: Subjects,
        registration: AgentRegister,
    ) -> Result<Agent, Error> {
        let agent_id = registration.agent_id.clone();
        let lease = registration.lease_s.filter(|l| *l > 0.0);
        let router = Router::start(&client, &subjects, &agent_id, 1024).await?;
        let mut agent = Agent {
            js: jetstream::new(client),
            subjects,
            agent_id,
            router,
            reply_timeout: super::DEFAULT_REPLY_TIMEOUT,
            heartbeat: None,
        };
        agent
            .send_and_confirm(MessageType::AgentRegister, registration)
            .await?;
        if let Some(lease) = lease {
            agent.heartbeat = Some(tokio::spawn(send_heartbeats(
                agent.js.clone(),
                agent.subjects.clone(),
                agent.agent_id.clone(),
                Duration::from_secs_f64(lease / 3.0),
            )));
        }
        Ok(agent)
    }

    /// Stops heartbeating (the agent will be marked dead once its lease runs out). Dropping the
    /// agent does this too.
    pub fn stop_heartbeats(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Replies and error reports addressed to this agent.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ClientEvent> {
        self.router.subscribe()
    }

    /// This agent's grants, from its durable consumer: grants sent while it was away arrive
    /// when it comes back.
    pub async fn grants(&self) -> Result<GrantStream, Error> {
        let consumer = transport::agent_consumer(&self.js, &self.subjects, &self.agent_id).await?;
        Ok(GrantStream {
            consumer,
            batch: None,
            seen: HashSet::new(),
            order: VecDeque::new(),
        })
    }

    /// Reports a task's outcome; resolves once JetStream stored the report (it will be applied
    /// even if no optimizer is up right now).
    pub async fn complete_task(
        &self,
        task_id: &str,
        success: bool,
        execution_time_s: f64,
    ) -> Result<(), Error> {
        self.publish_completion(self.completion(task_id, success, execution_time_s))
            .await
    }

    /// Reports the outcome of this grant: like [`Agent::complete_task`], plus the grant number,
    /// so the report cannot complete a later grant of the same task (`stale_grant`).
    pub async fn complete_grant(
        &self,
        grant: &TaskGrant,
        success: bool,
        execution_time_s: f64,
    ) -> Result<(), Error> {
        let mut report = self.completion(&grant.task_id, success, execution_time_s);
        report.grant_seq = Some(grant.grant_seq);
        self.publish_completion(report).await
    }

    async fn publish_completion(&self, report: TaskComplete) -> Result<(), Error> {
        let envelope = Envelope::new(
            self.agent_id.clone(),
            MessageType::TaskComplete,
            report,
            now_ms(),
        );
        let subject = self
            .subjects
            .addressed(MessageType::TaskComplete, &self.agent_id);
        transport::publish_stored(
            &self.js,
            subject,
            &envelope.message_id.to_string(),
            &envelope,
        )
        .await
    }

    /// Like [`Agent::complete_task`] but waits for the coordinator's verdict, so a refusal
    /// (`wrong_agent`, `unknown_task`, ...) comes back as an error.
    pub async fn complete_task_confirmed(
        &self,
        task_id: &str,
        success: bool,
        execution_time_s: f64,
    ) -> Result<(), Error> {
        let report = self.completion(task_id, success, execution_time_s);
        self.send_and_confirm(MessageType::TaskComplete, report)
            .await
    }

    fn completion(&self, task_id: &str, success: bool, execution_time_s: f64) -> TaskComplete {
        TaskComplete {
            task_id: task_id.to_string(),
            agent_id: self.agent_id.clone(),
            success,
            execution_time_s,
            performance_metrics: Default::default(),
            error: None,
            grant_seq: None,
        }
    }

    /// Leaves the fleet; tasks still granted to this agent go back to the queue.
    pub async fn deregister(&self) -> Result<(), Error> {
        self.send_and_confirm(
            MessageType::AgentDeregister,
            AgentDeregister {
                agent_id: self.agent_id.clone(),
            },
        )
        .await
    }

    async fn send_and_confirm<P: serde::Serialize>(
        &self,
        message_type: MessageType,
        payload: P,
    ) -> Result<(), Error> {
        let envelope = Envelope::new(self.agent_id.clone(), message_type, payload, now_ms());
        let id = envelope.message_id.to_string();
        let rx = self.router.expect(&id);
        let subject = self.subjects.addressed(message_type, &self.agent_id);
        if let Err(e) = transport::publish_stored(&self.js, subject, &id, &envelope).await {
            self.router.forget(&id);
            return Err(e);
        }
        into_reply(self.router.wait(&id, rx, self.reply_timeout).await?).map(|_| ())
    }
}

/// How many recent grants an agent remembers to drop redeliveries.
const DEDUPE_MEMORY: usize = 10_000;

/// An agent's incoming grants. Each grant is acknowledged as it is handed out, and a grant
/// delivered twice (same task and grant number) is handed out once.
pub struct GrantStream {
    consumer: jetstream::consumer::PullConsumer,
    /// The pull request being served. Grants are pulled in consecutive batch requests rather
    /// than async-nats' continuous stream, whose client-side count of outstanding messages was
    /// seen to drift under load and stop asking for more for up to 35 s.
    batch: Option<pull::Batch>,
    seen: HashSet<(String, u64)>,
    order: VecDeque<(String, u64)>,
}

/// Grants asked for per pull request, and how long a request waits on the server.
const GRANT_BATCH: usize = 256;
const GRANT_PULL_EXPIRES: Duration = Duration::from_secs(5);

impl GrantStream {
    /// The next grant, waiting for one; an error when pulling fails (e.g. the connection closed).
    pub async fn next(&mut self) -> Option<Result<Envelope<TaskGrant>, Error>> {
        loop {
            let message = match self.next_message().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            };
            let _ = message.ack().await;
            let grant: Envelope<TaskGrant> = match serde_json::from_slice(&message.payload) {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable grant skipped");
                    continue;
                }
            };
            if self.remember(&grant.payload) {
                return Some(Ok(grant));
            }
        }
    }

    async fn next_message(&mut self) -> Option<Result<jetstream::Message, Error>> {
        loop {
            let batch = match self.batch.as_mut() {
                Some(batch) => batch,
                None => {
                    let request = self
                        .consumer
                        .batch()
                        .max_messages(GRANT_BATCH)
                        .expires(GRANT_PULL_EXPIRES)
                        .messages()
                        .await;
                    match request {
                        Ok(batch) => self.batch.insert(batch),
                        Err(e) => return Some(Err(nats_error("cannot pull grants", e))),
                    }
                }
            };
            match batch.next().await {
                Some(Ok(message)) => return Some(Ok(message)),
                Some(Err(e)) => {
                    self.batch = None;
                    return Some(Err(Error::new(
                        crate::error::ErrorKind::Nats,
                        format!("grant delivery failed: {e}"),
                    )));
                }
                // This request is done (filled or expired): ask again.
                None => self.batch = None,
            }
        }
    }

    fn remember(&mut self, grant: &TaskGrant) -> bool {
        let key = (grant.task_id.clone(), grant.grant_seq);
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > DEDUPE_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// Publishes a HEARTBEAT every `every` until aborted. A failed heartbeat is logged; the next one
/// may get through before the lease runs out.
async fn send_heartbeats(
    js: jetstream::Context,
    subjects: Subjects,
    agent_id: String,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await; // registration itself counts as the first heartbeat
    loop {
        ticker.tick().await;
        let beat = Heartbeat {
            agent_id: agent_id.clone(),
        };
        let envelope = Envelope::new(agent_id.clone(), MessageType::Heartbeat, beat, now_ms());
        let subject = subjects.addressed(MessageType::Heartbeat, &agent_id);
        if let Err(e) =
            transport::publish_stored(&js, subject, &envelope.message_id.to_string(), &envelope)
                .await
        {
            tracing::warn!(agent_id = %agent_id, error = %e, "heartbeat not sent");
        }
    }
}
