//! [`Coordinator`]: the orchestrator's handle (the seed's `CoordinationOptimizer` calls).

use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::router::{ClientEvent, Router, into_reply};
use crate::error::{Error, ErrorKind};
use crate::transport;
use switchyard_protocol::{
    AgentRegister, CoordinationSync, CoordinatorReply, Envelope, MessageType, ReplyStatus,
    StatusQuery, Subjects, TaskCancel, TaskSubmit, TraceContext, now_ms,
};

/// Where a task stands after submission.
#[derive(Debug, Clone, PartialEq)]
pub enum Allocation {
    Granted { agent_id: String },
    Queued,
    Waiting,
    Failed { reason: String },
    Completed { agent_id: String },
    Cancelled,
}

/// What a [`Coordinator::cancel_task`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancellation {
    /// The task was waiting or queued and is cancelled (or had been already).
    Cancelled,
    /// The task is granted: its agent has been told, and the task becomes cancelled when the
    /// agent confirms or its lease ends (the submitter is then told `cancelled`, or `completed`
    /// if the agent finished the work first).
    Cancelling { agent_id: String },
    /// The task had already completed or failed: nothing was cancelled.
    AlreadyFinished {
        status: ReplyStatus,
        agent_id: Option<String>,
    },
}

impl Cancellation {
    fn from_reply(reply: CoordinatorReply) -> Cancellation {
        match reply.status {
            ReplyStatus::Cancelled => Cancellation::Cancelled,
            ReplyStatus::Cancelling => Cancellation::Cancelling {
                agent_id: reply.agent_id.unwrap_or_default(),
            },
            status => Cancellation::AlreadyFinished {
                status,
                agent_id: reply.agent_id,
            },
        }
    }
}

pub struct Coordinator {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    client_id: String,
    router: Router,
    reply_timeout: Duration,
}

impl Coordinator {
    /// Connects as `client_id` (1–64 of `[A-Za-z0-9_-]`; replies arrive on
    /// `<prefix>.reply.<client_id>`).
    pub async fn connect(
        nats_url: &str,
        client_id: &str,
        subject_prefix: &str,
    ) -> Result<Coordinator, Error> {
        let client = transport::connect(nats_url, client_id).await?;
        Coordinator::with_client(client, client_id, Subjects::new(subject_prefix)).await
    }

    pub async fn with_client(
        client: async_nats::Client,
        client_id: &str,
        subjects: Subjects,
    ) -> Result<Coordinator, Error> {
        if !switchyard_protocol::validate_agent_id(client_id) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "client id must be 1-64 of [A-Za-z0-9_-]",
            ));
        }
        let router = Router::start(&client, &subjects, client_id, 65_536).await?;
        let js = jetstream::new(client.clone());
        Ok(Coordinator {
            client,
            js,
            subjects,
            client_id: client_id.to_string(),
            router,
            reply_timeout: super::DEFAULT_REPLY_TIMEOUT,
        })
    }

    pub fn set_reply_timeout(&mut self, timeout: Duration) {
        self.reply_timeout = timeout;
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Every reply and error report addressed to this client, as they arrive.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.router.subscribe()
    }

    /// Submits a task and waits for the first answer: granted (to whom), queued, waiting on
    /// dependencies, or failed. A refusal (bad input, duplicate id) is an
    /// [`ErrorKind::Rejected`] error carrying the reason code.
    ///
    /// The submit starts a new trace (W3C `traceparent` header, docs/protocol.md "Tracing");
    /// [`Coordinator::allocate_task_traced`] continues one of the caller's instead.
    pub async fn allocate_task(&self, task: TaskSubmit) -> Result<Allocation, Error> {
        self.allocate_task_traced(task, None).await
    }

    /// [`Coordinator::allocate_task`] as part of the caller's trace: the optimizer's spans of the
    /// task become children of `parent` (`None`: a new trace).
    pub async fn allocate_task_traced(
        &self,
        task: TaskSubmit,
        parent: Option<TraceContext>,
    ) -> Result<Allocation, Error> {
        let envelope = self.submit_envelope(task, parent);
        let id = envelope.message_id.to_string();
        let rx = self.router.expect(&id);
        if let Err(e) = self.publish(&envelope).await {
            self.router.forget(&id);
            return Err(e);
        }
        let reply = into_reply(self.router.wait(&id, rx, self.reply_timeout).await?)?;
        Ok(match reply.status {
            ReplyStatus::Granted => Allocation::Granted {
                agent_id: reply.agent_id.unwrap_or_default(),
            },
            ReplyStatus::Queued => Allocation::Queued,
            ReplyStatus::Waiting => Allocation::Waiting,
            ReplyStatus::Completed => Allocation::Completed {
                agent_id: reply.agent_id.unwrap_or_default(),
            },
            ReplyStatus::Cancelled => Allocation::Cancelled,
            _ => Allocation::Failed {
                reason: reply.detail.unwrap_or_default(),
            },
        })
    }

    /// Submits a task without waiting for the answer; returns the submit's message id (the
    /// correlation id of the replies in [`Coordinator::events`]). Resolves once JetStream stored it.
    pub async fn submit_task(&self, task: TaskSubmit) -> Result<Uuid, Error> {
        self.submit_task_traced(task, None).await
    }

    /// [`Coordinator::submit_task`] as part of the caller's trace (`None`: a new trace).
    pub async fn submit_task_traced(
        &self,
        task: TaskSubmit,
        parent: Option<TraceContext>,
    ) -> Result<Uuid, Error> {
        let envelope = self.submit_envelope(task, parent);
        self.publish(&envelope).await?;
        Ok(envelope.message_id)
    }

    /// A TASK_SUBMIT envelope carrying `parent`, or a new trace's context (random ids: no
    /// tracing library needed here).
    pub fn submit_envelope(
        &self,
        task: TaskSubmit,
        parent: Option<TraceContext>,
    ) -> Envelope<TaskSubmit> {
        Envelope::new(
            self.client_id.clone(),
            MessageType::TaskSubmit,
            task,
            now_ms(),
        )
        .with_trace(Some(parent.unwrap_or_else(TraceContext::new_root)))
    }

    /// Publishes an already-built submit envelope (e.g. to resend the same message id).
    pub async fn publish(&self, envelope: &Envelope<TaskSubmit>) -> Result<(), Error> {
        let subject = self
            .subjects
            .addressed(MessageType::TaskSubmit, &self.client_id);
        transport::publish_stored_traced(
            &self.js,
            subject,
            &envelope.message_id.to_string(),
            envelope,
            envelope.trace.as_ref(),
        )
        .await
    }

    /// Cancels a task this client submitted (TASK_CANCEL) and waits for the answer. Idempotent:
    /// cancelling again answers the same. A task submitted by someone else is refused
    /// (`not_submitter`), an unknown one `unknown_task`, as [`ErrorKind::Rejected`] errors.
    pub async fn cancel_task(&self, task_id: &str) -> Result<Cancellation, Error> {
        let subject = self
            .subjects
            .addressed(MessageType::TaskCancel, &self.client_id);
        self.send_cancel(subject, task_id, None).await
    }

    /// Cancels any task as an operator: sent on `<prefix>.task_cancel.operator.<client_id>`,
    /// which in a secured deployment only the operator role may publish to.
    pub async fn cancel_task_as_operator(
        &self,
        task_id: &str,
        reason: Option<&str>,
    ) -> Result<Cancellation, Error> {
        let subject = self.subjects.operator_cancel(&self.client_id);
        self.send_cancel(subject, task_id, reason).await
    }

    async fn send_cancel(
        &self,
        subject: String,
        task_id: &str,
        reason: Option<&str>,
    ) -> Result<Cancellation, Error> {
        let cancel = TaskCancel {
            task_id: task_id.to_string(),
            reason: reason.map(str::to_string),
        };
        let envelope = Envelope::new(
            self.client_id.clone(),
            MessageType::TaskCancel,
            cancel,
            now_ms(),
        );
        let id = envelope.message_id.to_string();
        let rx = self.router.expect(&id);
        if let Err(e) = transport::publish_stored(&self.js, subject, &id, &envelope).await {
            self.router.forget(&id);
            return Err(e);
        }
        let reply = into_reply(self.router.wait(&id, rx, self.reply_timeout).await?)?;
        Ok(Cancellation::from_reply(reply))
    }

    /// Registers an agent on its behalf (the seed's `coordinator.register_agent`).
    pub async fn register_agent(&self, agent: AgentRegister) -> Result<(), Error> {
        let subject = self
            .subjects
            .addressed(MessageType::AgentRegister, &agent.agent_id);
        let envelope = Envelope::new(
            self.client_id.clone(),
            MessageType::AgentRegister,
            agent,
            now_ms(),
        );
        let id = envelope.message_id.to_string();
        let rx = self.router.expect(&id);
        transport::publish_stored(&self.js, subject, &id, &envelope).await?;
        into_reply(self.router.wait(&id, rx, self.reply_timeout).await?).map(|_| ())
    }

    /// A COORDINATION_SYNC snapshot (queue, counters, agents) from any optimizer replica.
    pub async fn status(&self) -> Result<CoordinationSync, Error> {
        self.status_with(StatusQuery::default()).await
    }

    /// A snapshot with what `query` asks for (e.g. the learned patterns).
    pub async fn status_with(&self, query: StatusQuery) -> Result<CoordinationSync, Error> {
        let timeout = self.reply_timeout;
        crate::calls::request_status(
            &self.client,
            &self.subjects,
            &self.client_id,
            query,
            timeout,
        )
        .await
    }

    /// One task's state and, when it waits, why (`None`: no optimizer knows the task, or the
    /// answer left it out). One status query without the agent table.
    pub async fn task_status(
        &self,
        task_id: &str,
    ) -> Result<Option<switchyard_protocol::TaskWaitView>, Error> {
        let query = StatusQuery {
            include_agents: false,
            task_id: Some(task_id.to_string()),
            ..StatusQuery::default()
        };
        let sync = self.status_with(query).await?;
        Ok(sync.tasks.into_iter().find(|t| t.task_id == task_id))
    }

    /// One task's story: what happened to it, oldest first (empty: no optimizer knows the task,
    /// or it was submitted before stories were kept). One status query without the agent table;
    /// the same answer carries the state and why it waits (`status_with`).
    pub async fn task_story(
        &self,
        task_id: &str,
    ) -> Result<Vec<switchyard_protocol::StoryEntry>, Error> {
        let query = StatusQuery {
            include_agents: false,
            task_id: Some(task_id.to_string()),
            ..StatusQuery::default()
        };
        Ok(self.status_with(query).await?.story)
    }
}
