//! [`Agent`]: an agent's handle: register, receive grants, report completions.

use crate::sync::lock;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;

use super::router::{ClientEvent, Router, into_reply};
use crate::error::{Error, nats_error};
use crate::transport;
use switchyard_protocol::{
    AgentDeregister, AgentRegister, Envelope, GrantAck, GrantRef, Heartbeat, MessageType, Replies,
    Subjects, TaskCancelNotice, TaskComplete, TaskGrant, now_ms,
};

/// What arrives on an agent's grant subject.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// A task to run (TASK_REQUEST).
    Grant(Envelope<TaskGrant>),
    /// A granted task was cancelled (TASK_CANCEL): stop it and confirm with
    /// [`Agent::confirm_cancel`]. Sent again until confirmed, so a copy may come; confirming
    /// twice is harmless.
    Cancel(Envelope<TaskCancelNotice>),
}

/// How many recent grants an agent remembers to drop redeliveries.
const DEDUPE_MEMORY: usize = 10_000;

pub struct Agent {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The grant subscription, made before registering so that no grant sent in answer to the
    /// registration is missed; handed out by [`Agent::grants`].
    grants: std::sync::Mutex<Option<async_nats::Subscriber>>,
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
        let grants = client
            .subscribe(subjects.addressed(MessageType::TaskRequest, &agent_id))
            .await
            .map_err(|e| nats_error("cannot subscribe to grants", e))?;
        let mut agent = Agent {
            client: client.clone(),
            grants: std::sync::Mutex::new(Some(grants)),
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
                agent.client.clone(),
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

    /// This agent's grants. Each is acknowledged (GRANT_ACK) as it is handed out; grants the
    /// optimizers sent while the agent was away are sent again until acknowledged, and at once
    /// when it registers again. Can be taken once per registration: a second call is an error.
    pub async fn grants(&self) -> Result<GrantStream, Error> {
        let taken = lock(&self.grants).take();
        let Some(subscription) = taken else {
            return Err(Error::new(
                crate::error::ErrorKind::Rejected,
                "the grant stream of this agent was already taken",
            ));
        };
        Ok(GrantStream {
            subscription,
            client: self.client.clone(),
            subjects: self.subjects.clone(),
            agent_id: self.agent_id.clone(),
            seen: HashSet::new(),
            order: VecDeque::new(),
        })
    }

    /// Reports a task's outcome; resolves once JetStream stored the report (it will be applied
    /// even if no optimizer is up right now).
    /// Nobody waits for the verdict, so none is asked for (a refusal still comes on
    /// [`Agent::events`]).
    pub async fn complete_task(
        &self,
        task_id: &str,
        success: bool,
        execution_time_s: f64,
    ) -> Result<(), Error> {
        let mut report = self.completion(task_id, success, execution_time_s);
        report.replies = Replies::None;
        self.publish_completion(report).await
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
        report.replies = Replies::None;
        self.publish_completion(report).await
    }

    /// Reports the outcome of a received grant like [`Agent::complete_grant`], and sends its
    /// trace context back (`traceparent`: the grant's, as received in [`Envelope::trace`]), so
    /// the report belongs to the task's trace.
    pub async fn complete_work(
        &self,
        grant: &Envelope<TaskGrant>,
        success: bool,
        execution_time_s: f64,
    ) -> Result<(), Error> {
        let mut report = self.completion(&grant.payload.task_id, success, execution_time_s);
        report.grant_seq = Some(grant.payload.grant_seq);
        report.replies = Replies::None;
        self.publish_traced_completion(report, grant.trace.clone())
            .await
    }

    async fn publish_completion(&self, report: TaskComplete) -> Result<(), Error> {
        self.publish_traced_completion(report, None).await
    }

    async fn publish_traced_completion(
        &self,
        report: TaskComplete,
        trace: Option<switchyard_protocol::TraceContext>,
    ) -> Result<(), Error> {
        let envelope = Envelope::new(
            self.agent_id.clone(),
            MessageType::TaskComplete,
            report,
            now_ms(),
        )
        .with_trace(trace);
        let subject = self
            .subjects
            .addressed(MessageType::TaskComplete, &self.agent_id);
        transport::publish_stored_traced(
            &self.js,
            subject,
            &envelope.message_id.to_string(),
            &envelope,
            envelope.trace.as_ref(),
        )
        .await
    }

    /// [`Agent::complete_grant`] with what the task actually used, by unit (`tokens`,
    /// `requests`, ...): the budgets it drew from are reconciled with it.
    pub async fn complete_grant_with_usage(
        &self,
        grant: &TaskGrant,
        success: bool,
        execution_time_s: f64,
        usage: BTreeMap<String, u64>,
    ) -> Result<(), Error> {
        let mut report = self.completion(&grant.task_id, success, execution_time_s);
        report.grant_seq = Some(grant.grant_seq);
        report.replies = Replies::None;
        report.usage = usage;
        self.publish_completion(report).await
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

    /// Like [`Agent::complete_grant`] but waits for the coordinator's verdict: a report of a
    /// grant that ended (re-granted, handed off, or stopped at its run timeout) comes back as a
    /// `stale_grant` error.
    pub async fn complete_grant_confirmed(
        &self,
        grant: &TaskGrant,
        success: bool,
        execution_time_s: f64,
    ) -> Result<(), Error> {
        let mut report = self.completion(&grant.task_id, success, execution_time_s);
        report.grant_seq = Some(grant.grant_seq);
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
            replies: Replies::All,
            usage: BTreeMap::new(),
        }
    }

    /// Confirms a cancel notice: the grant is reported failed (`error: "cancelled"`), which
    /// cancels the task and releases its reservation. Resolves once JetStream stored the report.
    ///
    /// A notice for a grant stopped at its run timeout ([`TaskCancelNotice::is_run_timeout`])
    /// needs no confirmation (its reservation is already released): nothing is sent.
    pub async fn confirm_cancel(&self, notice: &TaskCancelNotice) -> Result<(), Error> {
        if notice.is_run_timeout() {
            return Ok(());
        }
        let mut report = self.completion(&notice.task_id, false, 0.0);
        report.grant_seq = Some(notice.grant_seq);
        report.error = Some("cancelled".to_string());
        report.replies = Replies::None;
        self.publish_completion(report).await
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

/// An agent's incoming grants (core NATS, `<prefix>.task_request.<agent_id>`). Each grant is
/// acknowledged as it is handed out, and a grant delivered twice (same task and grant number) is
/// handed out once.
pub struct GrantStream {
    subscription: async_nats::Subscriber,
    client: async_nats::Client,
    subjects: Subjects,
    agent_id: String,
    seen: HashSet<(String, u64)>,
    order: VecDeque<(String, u64)>,
}

impl GrantStream {
    /// The next grant, waiting for one; `None` when the connection closed for good. Cancel
    /// notices are skipped: an agent that never reads them keeps a cancelled task's reservation
    /// until it reports the task or its lease ends. Use [`GrantStream::next_work`] to hear them.
    pub async fn next(&mut self) -> Option<Result<Envelope<TaskGrant>, Error>> {
        loop {
            match self.next_work().await? {
                Ok(Work::Grant(grant)) => return Some(Ok(grant)),
                Ok(Work::Cancel(notice)) => {
                    tracing::debug!(task_id = %notice.payload.task_id, "cancel notice skipped");
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next grant or cancel notice, waiting for one; `None` when the connection closed for
    /// good. A grant that ran past its run timeout is stopped with a cancel notice too (reason
    /// `run_timeout`, [`TaskCancelNotice::is_run_timeout`]): stop working on it; its report
    /// would be refused `stale_grant`.
    pub async fn next_work(&mut self) -> Option<Result<Work, Error>> {
        loop {
            let message = self.subscription.next().await?;
            if is_cancel_notice(&message.payload) {
                match serde_json::from_slice::<Envelope<TaskCancelNotice>>(&message.payload) {
                    Ok(notice) => return Some(Ok(Work::Cancel(notice))),
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable cancel notice skipped");
                        continue;
                    }
                }
            }
            let grant: Envelope<TaskGrant> = match serde_json::from_slice(&message.payload) {
                // The grant span's context, for the agent's own spans and the report.
                Ok(g) => Envelope::with_trace(g, transport::trace_of(message.headers.as_ref())),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable grant skipped");
                    continue;
                }
            };
            // Acknowledged even when it is a copy: the copy came because an earlier
            // acknowledgment was lost.
            if let Err(e) = self.acknowledge(&grant.payload).await {
                tracing::warn!(task_id = %grant.payload.task_id, error = %e, "grant not acknowledged; it will come again");
            }
            if self.remember(&grant.payload) {
                return Some(Ok(Work::Grant(grant)));
            }
        }
    }

    async fn acknowledge(&self, grant: &TaskGrant) -> Result<(), Error> {
        let ack = GrantAck {
            agent_id: self.agent_id.clone(),
            grants: vec![GrantRef {
                task_id: grant.task_id.clone(),
                grant_seq: grant.grant_seq,
            }],
        };
        let envelope = Envelope::new(self.agent_id.clone(), MessageType::GrantAck, ack, now_ms());
        let subject = self
            .subjects
            .addressed(MessageType::GrantAck, &self.agent_id);
        transport::publish_core(&self.client, subject, &envelope).await
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

/// Whether a message on the grant subject is a TASK_CANCEL notice (its envelope's `type`).
fn is_cancel_notice(payload: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        message_type: Option<MessageType>,
    }
    serde_json::from_slice::<Kind>(payload)
        .ok()
        .and_then(|k| k.message_type)
        == Some(MessageType::TaskCancel)
}

/// Publishes a HEARTBEAT (core NATS) every `every` until aborted. A lost heartbeat is harmless:
/// the next one comes well within the lease.
async fn send_heartbeats(
    client: async_nats::Client,
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
        if let Err(e) = transport::publish_core(&client, subject, &envelope).await {
            tracing::warn!(agent_id = %agent_id, error = %e, "heartbeat not sent");
        }
    }
}
