//! The subject map: the only place subject strings (and the JetStream names bound to them) are
//! built. Layout: `<prefix>.<message type>[.<agent or sender id>]`, so `nats sub 'coord.>'` shows
//! all traffic, `nats sub 'coord.task_request.agent-7'` one agent's grants, and NATS permissions
//! can later scope each agent to subjects ending in its own id.

use super::envelope::{MessagePriority, MessageType};

/// The recipient token of messages addressed to every agent (`all` is not a valid agent id).
pub const ALL_AGENTS: &str = "all";

/// The token between `task_cancel` and the sender's id on the subject an operator cancels on:
/// `<prefix>.task_cancel.operator.<name>`. A subject of its own, so that in a secured deployment
/// the permission to publish there (the operator role's alone) is what proves an operator.
pub const OPERATOR_CANCEL_TOKEN: &str = "operator";

/// Builds subjects under one prefix (default `coord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Subjects {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.<type>.<id>`: a message of `message_type` to or from one agent or sender.
    pub fn addressed(&self, message_type: MessageType, id: &str) -> String {
        format!("{}.{}.{}", self.prefix, message_type.as_str(), id)
    }

    /// `<prefix>.<type>`: a message not tied to one agent (status queries, sync snapshots).
    pub fn unaddressed(&self, message_type: MessageType) -> String {
        format!("{}.{}", self.prefix, message_type.as_str())
    }

    /// `<prefix>.<type>.*`: every message of one type.
    pub fn all_of(&self, message_type: MessageType) -> String {
        format!("{}.{}.*", self.prefix, message_type.as_str())
    }

    /// `<prefix>.task_cancel.operator.<name>`: where operator `name` sends TASK_CANCEL (a
    /// submitter sends it on `addressed(TaskCancel, <its id>)`).
    pub fn operator_cancel(&self, name: &str) -> String {
        format!(
            "{}.{}.{OPERATOR_CANCEL_TOKEN}.{name}",
            self.prefix,
            MessageType::TaskCancel.as_str()
        )
    }

    /// Where the optimizer tells an agent that its granted task was cancelled: the agent's grant
    /// subject, `<prefix>.task_request.<agent_id>`, which every agent already reads (and may read
    /// in a secured deployment), so the notice needs no new subscription or permission. The
    /// envelope's `type` (TASK_CANCEL) tells it from a grant.
    pub fn cancel_notice(&self, agent_id: &str) -> String {
        self.addressed(MessageType::TaskRequest, agent_id)
    }

    /// Where a message that exhausted its deliveries is parked: `<prefix>.dead_letter.<type>`.
    pub fn dead_letter(&self, message_type_token: &str) -> String {
        format!("{}.dead_letter.{}", self.prefix, message_type_token)
    }

    /// Wildcard over all dead letters.
    pub fn all_dead_letters(&self) -> String {
        format!("{}.dead_letter.>", self.prefix)
    }

    /// Splits an inbound subject into its message type and trailing id token.
    pub fn parse<'a>(&self, subject: &'a str) -> Option<(MessageType, Option<&'a str>)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let mut parts = rest.splitn(2, '.');
        let message_type = MessageType::from_token(parts.next()?)?;
        Some((message_type, parts.next()))
    }

    /// Subjects the optimizers consume as events (the events stream).
    pub fn event_subjects(&self) -> Vec<String> {
        let mut subjects = self.control_event_subjects();
        subjects.push(self.all_of(MessageType::TaskSubmit));
        subjects
    }

    /// `<prefix>.msg.<type>.<recipient>.<priority>.<sender>`: a stored message (asynchronous or
    /// guaranteed) for one agent, or for every agent when `recipient` is [`ALL_AGENTS`]. The
    /// sender is the last token so that NATS permissions can prove it (an agent may publish
    /// only on subjects ending in its own id) and receivers can check the envelope against it.
    pub fn message(
        &self,
        message_type: MessageType,
        recipient: &str,
        priority: MessagePriority,
        sender: &str,
    ) -> String {
        format!(
            "{}.msg.{}.{recipient}.{}.{sender}",
            self.prefix,
            message_type.as_str(),
            priority.as_str()
        )
    }

    /// What one agent's consumer for one priority reads: its own messages and broadcasts, from
    /// any sender.
    pub fn message_filters(&self, recipient: &str, priority: MessagePriority) -> Vec<String> {
        [recipient, ALL_AGENTS]
            .into_iter()
            .map(|r| format!("{}.msg.*.{r}.{}.*", self.prefix, priority.as_str()))
            .collect()
    }

    /// Every stored inter-agent message (the messages stream).
    pub fn all_messages(&self) -> String {
        format!("{}.msg.>", self.prefix)
    }

    /// `<prefix>.direct.<type>.<recipient>.<sender>`: a core NATS message (synchronous requests,
    /// fire-and-forget, acknowledgments), never stored.
    pub fn direct(&self, message_type: MessageType, recipient: &str, sender: &str) -> String {
        format!(
            "{}.direct.{}.{recipient}.{sender}",
            self.prefix,
            message_type.as_str()
        )
    }

    /// What one agent subscribes to for core messages: its own and broadcasts, from any sender.
    pub fn direct_filters(&self, recipient: &str) -> Vec<String> {
        [recipient, ALL_AGENTS]
            .into_iter()
            .map(|r| format!("{}.direct.*.{r}.*", self.prefix))
            .collect()
    }

    /// The acknowledgments sent to one agent, from any sender.
    pub fn direct_acks(&self, recipient: &str) -> String {
        format!(
            "{}.direct.{}.{recipient}.*",
            self.prefix,
            MessageType::MessageAck.as_str()
        )
    }

    /// Every stored message `sender` sends, to anyone, of any type and priority.
    pub fn messages_from(&self, sender: &str) -> String {
        format!("{}.msg.*.*.*.{sender}", self.prefix)
    }

    /// Every core message `sender` sends.
    pub fn direct_from(&self, sender: &str) -> String {
        format!("{}.direct.*.*.{sender}", self.prefix)
    }

    /// Every dead letter `sender`'s client parks.
    pub fn message_dead_letters_from(&self, sender: &str) -> String {
        format!("{}.dead_letter.*.{sender}", self.prefix)
    }

    /// The sender token (the last one) of a stored or core message's subject; `None` for any
    /// other subject.
    pub fn message_sender<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let tokens: Vec<&str> = rest.split('.').collect();
        match tokens.as_slice() {
            ["msg", _, _, _, sender] | ["direct", _, _, sender] if !sender.is_empty() => {
                Some(sender)
            }
            _ => None,
        }
    }

    /// Where an agent's client parks a guaranteed message it gave up on:
    /// `<prefix>.dead_letter.<type>.<sender>` (the optimizer's own dead letters have no sender
    /// token; both are under [`Subjects::all_dead_letters`]).
    pub fn message_dead_letter(&self, message_type: MessageType, sender: &str) -> String {
        format!(
            "{}.dead_letter.{}.{sender}",
            self.prefix,
            message_type.as_str()
        )
    }

    /// JetStream stream holding stored inter-agent messages.
    pub fn messages_stream(&self) -> String {
        format!("{}_MESSAGES", self.stream_base())
    }

    /// The durable consumer through which one agent reads its messages of one priority.
    pub fn message_consumer(&self, agent_id: &str, priority: MessagePriority) -> String {
        format!("msg_{agent_id}_{}", priority.as_str())
    }

    /// The JetStream API subject that reads a consumer's information (`INFO`).
    pub fn consumer_info(&self, stream: &str, consumer: &str) -> String {
        format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}")
    }

    /// The JetStream API subject a pull request for a consumer's next messages goes to.
    pub fn consumer_next(&self, stream: &str, consumer: &str) -> String {
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}")
    }

    /// The JetStream API subject that creates a consumer (with a name).
    pub fn consumer_create(&self, stream: &str, consumer: &str) -> String {
        format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}")
    }

    /// The acknowledgment subjects of a consumer's deliveries (their reply subjects).
    pub fn consumer_acks(&self, stream: &str, consumer: &str) -> String {
        format!("$JS.ACK.{stream}.{consumer}.>")
    }

    fn stream_base(&self) -> String {
        self.prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// JetStream stream holding optimizer events.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_base())
    }

    /// JetStream stream of dead letters and max-delivery advisories.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DLQ", self.stream_base())
    }

    /// The durable pull consumer all optimizer replicas share for new tasks.
    pub fn optimizer_consumer(&self) -> String {
        "optimizer".to_string()
    }

    /// The durable pull consumer all optimizer replicas share for control events (agents
    /// joining and leaving, completions). A separate lane, so a flood of submits can never hold
    /// back the completions that free the capacity those submits wait for.
    pub fn optimizer_control_consumer(&self) -> String {
        "optimizer_control".to_string()
    }

    /// Event subjects of the control lane.
    pub fn control_event_subjects(&self) -> Vec<String> {
        [
            MessageType::AgentRegister,
            MessageType::AgentDeregister,
            MessageType::TaskComplete,
            MessageType::HandoffInitiate,
            MessageType::HandoffAcknowledge,
            MessageType::ResourceRequest,
            MessageType::TaskCancel,
        ]
        .into_iter()
        .map(|t| self.all_of(t))
        .chain([self.operator_cancel("*")])
        .collect()
    }

    /// JetStream's advisory subject for messages of the events stream that hit `max_deliver`
    /// (either lane).
    pub fn max_deliveries_advisory(&self) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
            self.events_stream()
        )
    }

    /// Queue group shared by optimizer replicas for core request/reply subjects.
    pub fn optimizer_queue_group(&self) -> String {
        format!("{}-optimizers", self.prefix)
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects::new("coord")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_readable_subjects() {
        let s = Subjects::default();
        assert_eq!(
            s.addressed(MessageType::TaskRequest, "a1"),
            "coord.task_request.a1"
        );
        assert_eq!(
            s.unaddressed(MessageType::StatusQuery),
            "coord.status_query"
        );
        assert_eq!(s.all_of(MessageType::TaskSubmit), "coord.task_submit.*");
        assert_eq!(
            s.dead_letter("task_submit"),
            "coord.dead_letter.task_submit"
        );
    }

    #[test]
    fn parses_what_it_builds() {
        let s = Subjects::new("acme.prod");
        let subject = s.addressed(MessageType::TaskComplete, "agent-9");
        assert_eq!(
            s.parse(&subject),
            Some((MessageType::TaskComplete, Some("agent-9")))
        );
        assert_eq!(
            s.parse("acme.prod.status_query"),
            Some((MessageType::StatusQuery, None))
        );
        assert_eq!(s.parse("other.task_submit.x"), None);
        assert_eq!(s.parse("acme.prod.bogus.x"), None);
    }

    #[test]
    fn message_subjects_put_type_recipient_and_priority_in_tokens() {
        let s = Subjects::default();
        let subject = s.message(MessageType::StatusUpdate, "a2", MessagePriority::High, "a1");
        assert_eq!(subject, "coord.msg.status_update.a2.high.a1");
        assert_eq!(
            s.message_filters("a2", MessagePriority::High),
            vec!["coord.msg.*.a2.high.*", "coord.msg.*.all.high.*"]
        );
        let ack = s.direct(MessageType::MessageAck, "a1", "a2");
        assert_eq!(ack, "coord.direct.message_ack.a1.a2");
        assert_eq!(s.direct_acks("a1"), "coord.direct.message_ack.a1.*");
        assert_eq!(
            s.direct_filters("a1"),
            vec!["coord.direct.*.a1.*", "coord.direct.*.all.*"]
        );
        assert_eq!(
            s.message_dead_letter(MessageType::StatusUpdate, "a1"),
            "coord.dead_letter.status_update.a1"
        );
        // Stored messages never land in the events or grants streams.
        assert_eq!(s.parse(&subject), None);
        assert!(!crate::validate_agent_id(ALL_AGENTS));
    }

    #[test]
    fn the_sender_is_the_last_token_of_message_subjects_only() {
        let s = Subjects::new("acme.prod");
        let stored = s.message(MessageType::TaskResponse, "b", MessagePriority::Low, "a");
        assert_eq!(s.message_sender(&stored), Some("a"));
        let core = s.direct(MessageType::StatusUpdate, ALL_AGENTS, "a");
        assert_eq!(s.message_sender(&core), Some("a"));
        assert_eq!(s.message_sender("acme.prod.msg.status_update.b.low"), None);
        assert_eq!(s.message_sender("acme.prod.direct.status_update.b"), None);
        assert_eq!(s.message_sender("acme.prod.heartbeat.a"), None);
        assert_eq!(s.message_sender("coord.direct.status_update.b.a"), None);
    }

    #[test]
    fn operator_cancels_have_their_own_subject_in_the_control_lane() {
        let s = Subjects::default();
        assert_eq!(s.operator_cancel("ops"), "coord.task_cancel.operator.ops");
        assert_eq!(
            s.parse(&s.operator_cancel("ops")),
            Some((MessageType::TaskCancel, Some("operator.ops")))
        );
        let lane = s.control_event_subjects();
        assert!(lane.contains(&"coord.task_cancel.*".to_string()));
        assert!(lane.contains(&"coord.task_cancel.operator.*".to_string()));
        assert_eq!(s.cancel_notice("a1"), "coord.task_request.a1");
    }

    #[test]
    fn stream_names_are_valid_jetstream_names() {
        let s = Subjects::new("acme.prod");
        assert_eq!(s.events_stream(), "ACME_PROD_EVENTS");
        assert!(!s.dead_letter_stream().contains('.'));
    }
}
