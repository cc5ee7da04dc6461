//! The four roles of a secured deployment and what each may publish and subscribe to.
//!
//! Permissions are written once per role as a *template* on the account's scoped signing key for
//! that role: `{{name()}}` stands for the identity's name (an agent id, an orchestrator's sender
//! id), which the server fills in from the user JWT at connect time. So a user JWT carries no
//! permissions of its own, whoever holds a role's signing key can mint identities of that role
//! only, and adding an agent changes nothing on the server.
//!
//! Every subject comes from [`Subjects`], so the permissions follow the wire layout
//! (`<prefix>.<message type>.<sender or recipient id>`).

use switchyard_protocol::{MessagePriority, MessageType, Subjects};

/// The template placeholder for the identity's name.
pub(crate) const NAME: &str = "{{name()}}";

/// Events an agent publishes on subjects ending in its own id.
const AGENT_EVENTS: [MessageType; 8] = [
    MessageType::AgentRegister,
    MessageType::AgentDeregister,
    MessageType::TaskComplete,
    MessageType::Heartbeat,
    MessageType::GrantAck,
    MessageType::HandoffInitiate,
    MessageType::HandoffAcknowledge,
    MessageType::ResourceRequest,
];

/// Who an identity is, which decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An optimizer replica: consumes every event, publishes grants and replies, manages streams.
    Optimizer,
    /// Submits (and cancels its own) tasks and asks for status under its own sender id; cannot
    /// act as an agent.
    Orchestrator,
    /// Publishes the events of its own agent id and reads only what is addressed to it.
    Agent,
    /// Status queries and stream and consumer information; the one change it may make is to
    /// cancel any task, on its own subject `<prefix>.task_cancel.operator.<name>`, which no other
    /// role may publish to: that is how the optimizer knows a cancel comes from an operator.
    Operator,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Optimizer,
        Role::Orchestrator,
        Role::Agent,
        Role::Operator,
    ];

    /// The role's name in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Optimizer => "optimizer",
            Role::Orchestrator => "orchestrator",
            Role::Agent => "agent",
            Role::Operator => "operator",
        }
    }
}

/// The tag a user JWT carries to name its role (tags are not permissions, so a scoped
/// signing key's user may carry them).
pub fn role_tag(role: Role) -> String {
    format!("{ROLE_TAG}{}", role.as_str())
}

const ROLE_TAG: &str = "switchyard-role:";

impl Role {
    /// The role named by one of a user JWT's tags, if it is a role tag.
    pub fn from_tag(tag: &str) -> Option<Role> {
        let name = tag.strip_prefix(ROLE_TAG)?;
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// Subjects an identity may publish to and subscribe to (NATS wildcards allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The inbox prefix an identity of `role` named `name` must use for request replies (clients
/// set it as their custom inbox prefix), so no identity can read another's replies.
pub fn inbox_prefix(role: Role, name: &str) -> String {
    format!("_INBOX_{}.{name}", role.as_str())
}

/// What `role` may do under `subjects`, with [`NAME`] where the identity's name goes.
pub fn permissions(role: Role, subjects: &Subjects) -> Permissions {
    match role {
        Role::Optimizer => optimizer(subjects),
        Role::Orchestrator => orchestrator(subjects),
        Role::Agent => agent(subjects),
        Role::Operator => operator(subjects),
    }
}

fn optimizer(subjects: &Subjects) -> Permissions {
    let everything = format!("{}.>", subjects.prefix());
    Permissions {
        publish: vec![
            everything.clone(),
            "$JS.API.>".into(),
            "$JS.ACK.>".into(),
            format!("{}.>", inbox_prefix(Role::Optimizer, NAME)),
        ],
        subscribe: vec![
            everything,
            "$JS.EVENT.>".into(),
            format!("{}.>", inbox_prefix(Role::Optimizer, NAME)),
        ],
    }
}

fn orchestrator(subjects: &Subjects) -> Permissions {
    let inbox = format!("{}.>", inbox_prefix(Role::Orchestrator, NAME));
    Permissions {
        publish: vec![
            subjects.addressed(MessageType::TaskSubmit, NAME),
            subjects.addressed(MessageType::TaskCancel, NAME),
            subjects.unaddressed(MessageType::StatusQuery),
            "$JS.API.STREAM.INFO.*".into(),
        ],
        subscribe: vec![
            subjects.addressed(MessageType::CoordinatorReply, NAME),
            subjects.addressed(MessageType::ErrorReport, NAME),
            inbox,
        ],
    }
}

fn agent(subjects: &Subjects) -> Permissions {
    let mut publish: Vec<String> = AGENT_EVENTS
        .iter()
        .map(|t| subjects.addressed(*t, NAME))
        .collect();
    publish.push(subjects.unaddressed(MessageType::StatusQuery));
    publish.push("$JS.API.STREAM.INFO.*".into());
    publish.extend(agent_messaging_publish(subjects));
    let mut subscribe = vec![
        subjects.addressed(MessageType::TaskRequest, NAME),
        subjects.addressed(MessageType::CoordinatorReply, NAME),
        subjects.addressed(MessageType::ErrorReport, NAME),
        format!("{}.>", inbox_prefix(Role::Agent, NAME)),
    ];
    // Core messages to itself and to every agent, from any sender (the sender is the last
    // token, which the sender's own permissions prove).
    subscribe.extend(subjects.direct_filters(NAME));
    Permissions { publish, subscribe }
}

/// Messages to other agents, only as itself (the sender token is its own name), and its own
/// message consumers: look them up, pull from them, acknowledge what they delivered. Never
/// create one: a consumer named after itself could filter on someone else's messages, so the
/// optimizer creates them when the agent registers.
fn agent_messaging_publish(subjects: &Subjects) -> Vec<String> {
    let mut publish = vec![
        subjects.messages_from(NAME),
        subjects.direct_from(NAME),
        subjects.message_dead_letters_from(NAME),
    ];
    let stream = subjects.messages_stream();
    for priority in MessagePriority::ALL {
        let consumer = subjects.message_consumer(NAME, priority);
        publish.push(subjects.consumer_info(&stream, &consumer));
        publish.push(subjects.consumer_next(&stream, &consumer));
        publish.push(subjects.consumer_acks(&stream, &consumer));
    }
    publish
}

fn operator(subjects: &Subjects) -> Permissions {
    Permissions {
        publish: vec![
            subjects.unaddressed(MessageType::StatusQuery),
            "$JS.API.INFO".into(),
            "$JS.API.STREAM.NAMES".into(),
            "$JS.API.STREAM.INFO.*".into(),
            "$JS.API.CONSUMER.NAMES.*".into(),
            "$JS.API.CONSUMER.INFO.*.*".into(),
            subjects.operator_cancel(NAME),
        ],
        subscribe: vec![
            subjects.addressed(MessageType::CoordinatorReply, NAME),
            subjects.addressed(MessageType::ErrorReport, NAME),
            format!("{}.>", inbox_prefix(Role::Operator, NAME)),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(patterns: &[String], subject: &str) -> bool {
        patterns.iter().any(|p| matches(p, subject))
    }

    /// NATS subject matching: `*` one token, `>` one or more trailing tokens.
    fn matches(pattern: &str, subject: &str) -> bool {
        let mut subject_tokens = subject.split('.');
        for p in pattern.split('.') {
            match (p, subject_tokens.next()) {
                (">", Some(_)) => return true,
                ("*", Some(_)) => {}
                (p, Some(s)) if p == s => {}
                _ => return false,
            }
        }
        subject_tokens.next().is_none()
    }

    fn for_name(p: Permissions, name: &str) -> Permissions {
        let fill = |v: Vec<String>| v.into_iter().map(|s| s.replace(NAME, name)).collect();
        Permissions {
            publish: fill(p.publish),
            subscribe: fill(p.subscribe),
        }
    }

    #[test]
    fn an_agent_publishes_only_its_own_events() {
        let p = for_name(permissions(Role::Agent, &Subjects::new("coord")), "a");
        assert!(allows(&p.publish, "coord.heartbeat.a"));
        assert!(allows(&p.publish, "coord.task_complete.a"));
        assert!(!allows(&p.publish, "coord.heartbeat.b"));
        assert!(
            !allows(&p.publish, "coord.task_submit.a"),
            "agents do not submit"
        );
        assert!(
            !allows(&p.publish, "coord.task_request.b"),
            "agents do not grant"
        );
        assert!(!allows(&p.publish, "$JS.API.STREAM.DELETE.COORD_EVENTS"));
        assert!(allows(&p.subscribe, "coord.task_request.a"));
        assert!(!allows(&p.subscribe, "coord.task_request.b"));
        assert!(!allows(&p.subscribe, "coord.>"));
        assert!(allows(&p.subscribe, "_INBOX_agent.a.xyz"));
        assert!(!allows(&p.subscribe, "_INBOX_agent.b.xyz"));
    }

    #[test]
    fn an_agent_messages_other_agents_only_as_itself() {
        let p = for_name(permissions(Role::Agent, &Subjects::new("coord")), "a");
        for allowed in [
            "coord.msg.status_update.b.normal.a",
            "coord.msg.broadcast.all.low.a",
            "coord.msg.error_report.b.high.a",
            "coord.direct.task_response.b.a",
            "coord.direct.message_ack.b.a",
            "coord.dead_letter.status_update.a",
        ] {
            assert!(allows(&p.publish, allowed), "{allowed}");
        }
        for refused in [
            "coord.msg.status_update.b.normal.b",
            "coord.msg.status_update.a.normal.b",
            "coord.direct.status_update.b.b",
            "coord.direct.message_ack.a.b",
            "coord.dead_letter.status_update.b",
            "coord.dead_letter.task_submit",
        ] {
            assert!(!allows(&p.publish, refused), "{refused}");
        }
        assert!(allows(&p.subscribe, "coord.direct.status_update.a.b"));
        assert!(allows(&p.subscribe, "coord.direct.*.a.*"));
        assert!(allows(&p.subscribe, "coord.direct.status_update.all.b"));
        assert!(!allows(&p.subscribe, "coord.direct.status_update.b.a"));
        assert!(!allows(&p.subscribe, "coord.msg.status_update.a.normal.b"));
    }

    #[test]
    fn an_agent_reads_only_its_own_consumers_and_creates_none() {
        let p = for_name(permissions(Role::Agent, &Subjects::new("coord")), "a");
        for priority in ["low", "normal", "high", "critical"] {
            let own = format!("COORD_MESSAGES.msg_a_{priority}");
            assert!(allows(&p.publish, &format!("$JS.API.CONSUMER.INFO.{own}")));
            assert!(allows(
                &p.publish,
                &format!("$JS.API.CONSUMER.MSG.NEXT.{own}")
            ));
            assert!(allows(&p.publish, &format!("$JS.ACK.{own}.1.7.7.1700.0")));
            let theirs = format!("COORD_MESSAGES.msg_b_{priority}");
            assert!(!allows(
                &p.publish,
                &format!("$JS.API.CONSUMER.INFO.{theirs}")
            ));
            assert!(!allows(
                &p.publish,
                &format!("$JS.API.CONSUMER.MSG.NEXT.{theirs}")
            ));
            assert!(!allows(
                &p.publish,
                &format!("$JS.ACK.{theirs}.1.7.7.1700.0")
            ));
            for create in [
                format!("$JS.API.CONSUMER.CREATE.{own}"),
                format!("$JS.API.CONSUMER.CREATE.{own}.coord.msg.*.b.{priority}.*"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{own}"),
                "$JS.API.CONSUMER.CREATE.COORD_MESSAGES".to_string(),
            ] {
                assert!(!allows(&p.publish, &create), "{create}");
            }
        }
        assert!(!allows(
            &p.publish,
            "$JS.API.CONSUMER.DELETE.COORD_MESSAGES.msg_a_low"
        ));
    }

    #[test]
    fn an_orchestrator_submits_but_does_not_act_as_an_agent() {
        let p = for_name(
            permissions(Role::Orchestrator, &Subjects::new("coord")),
            "o",
        );
        assert!(allows(&p.publish, "coord.task_submit.o"));
        assert!(!allows(&p.publish, "coord.task_submit.other"));
        assert!(allows(&p.publish, "coord.task_cancel.o"));
        assert!(!allows(&p.publish, "coord.task_cancel.other"));
        assert!(
            !allows(&p.publish, "coord.task_cancel.operator.o"),
            "only operators cancel as operators"
        );
        assert!(!allows(&p.publish, "coord.task_complete.o"));
        assert!(!allows(&p.publish, "coord.agent_register.o"));
        assert!(allows(&p.subscribe, "coord.reply.o"));
    }

    #[test]
    fn the_operator_changes_nothing_but_may_cancel() {
        let p = for_name(permissions(Role::Operator, &Subjects::new("coord")), "ops");
        for subject in [
            "coord.task_submit.ops",
            "coord.heartbeat.ops",
            "coord.task_cancel.ops",
            "coord.task_cancel.operator.other",
            "$JS.API.STREAM.DELETE.X",
        ] {
            assert!(!allows(&p.publish, subject), "{subject}");
        }
        assert!(allows(&p.publish, "coord.status_query"));
        assert!(allows(&p.publish, "coord.task_cancel.operator.ops"));
        assert!(allows(&p.subscribe, "coord.reply.ops"));
        for role in [Role::Agent, Role::Orchestrator] {
            let other = for_name(permissions(role, &Subjects::new("coord")), "ops");
            assert!(!allows(&other.publish, "coord.task_cancel.operator.ops"));
        }
    }
}
