//! What applying one event calls for, as every event handler (events, handoffs, liveness)
//! answers it and the batch acts on it: replies, a refusal, a dispatch pass, inbox messages and
//! grants to publish again.

use super::publish::{Grant, Reply};
use crate::state::Refusal;
use switchyard_protocol::{RejectReason, TaskCancelNotice};

/// What applying one event calls for.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub replies: Vec<Reply>,
    /// The event is refused with this reason and message.
    pub refusal: Option<(RejectReason, String)>,
    /// Capacity was freed or work was queued: run a dispatch pass.
    pub dispatch: bool,
    /// A submit that ended queued: (task id, submitter, submit message id). Told "queued" unless
    /// the batch's dispatch grants it.
    pub queued_submit: Option<(String, String, String)>,
    /// Grants to publish again (a redelivered submit whose first publication may have been lost).
    pub republish: Vec<Grant>,
    /// Stored messages for agents' inboxes (handoffs, verdicts, resource grants). Published
    /// before the event is acknowledged; if that fails, the event is redelivered.
    pub messages: Vec<super::inbox::InboxDelivery>,
    /// Agents whose message consumers must exist before anyone hears of the event: a registered
    /// agent's (it may not create its own in a secured deployment).
    pub inboxes: Vec<String>,
    /// Cancel notices for the agents of granted tasks just cancelled (core NATS; the cancel
    /// outbox sends them again until the agent confirms).
    pub cancel_notices: Vec<TaskCancelNotice>,
}

impl Applied {
    /// A transition script's refusal, as the script worded it.
    pub(crate) fn refused(refusal: Refusal) -> Applied {
        Applied::refuse(refusal.reason, refusal.message)
    }

    pub(crate) fn refuse(reason: RejectReason, message: impl Into<String>) -> Applied {
        Applied {
            refusal: Some((reason, message.into())),
            ..Applied::default()
        }
    }
}
