//! Handoffs and resource requests in Redis: typed calls to `begin_handoff`, `resolve_handoff` and
//! `grow_reservation`, and their answers.

pub use super::records::Refusal;
use super::records::refusal;
use super::records::unexpected;
use super::store::Store;
use switchyard_client::error::Error;
use switchyard_decision::{ResourceKind, Resources};
use switchyard_protocol::HandoffStatus;

/// A handoff as `begin_handoff` records it.
#[derive(Debug, Clone, PartialEq)]
pub struct BeginHandoff<'a> {
    pub handoff_id: &'a str,
    pub task_id: &'a str,
    pub from_agent: &'a str,
    pub to_agent: &'a str,
    /// The grant handed over; `None`: the task's current grant.
    pub grant_seq: Option<u64>,
    /// How long the new agent has to answer.
    pub timeout_ms: u64,
    /// Message priority of the initiate, kept for the verdicts (`low`, `normal`, ...).
    pub priority: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BeginOutcome {
    /// Recorded and waiting for the new agent (`repeat`: recorded before, nothing changed).
    Pending { created_ms: u64, repeat: bool },
    /// Refused, and remembered so a repeat is refused the same way.
    Refused {
        refusal: Refusal,
        created_ms: u64,
        repeat: bool,
    },
    /// The new agent's answer was already applied; the initiate is a late repeat.
    Answered { status: String },
    /// The handoff id already names a handoff of another task or other agents.
    Conflict,
}

/// The handoff a verdict is about, as recorded when it began.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoffRecord {
    pub task_id: String,
    pub from_agent: String,
    pub to_agent: String,
    pub priority: String,
}

/// The verdict on a handoff.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoffVerdict {
    pub handoff: HandoffRecord,
    pub status: HandoffStatus,
    /// The task's grant number after the move (accepted only).
    pub grant_seq: Option<u64>,
    /// Why (refused only).
    pub refusal: Option<Refusal>,
    /// Redis clock: when the handoff was recorded, and when it was decided.
    pub created_ms: u64,
    pub decided_ms: u64,
    /// Decided before: this is the same verdict again, and nothing changed.
    pub repeat: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AnswerOutcome {
    Decided(HandoffVerdict),
    /// Never begun, or its deadline passed: the task stays with the old agent.
    UnknownHandoff,
    /// The answer came from an agent other than the handoff's `to_agent`.
    WrongAgent {
        to_agent: String,
    },
}

/// A resource request, as `grow_reservation` needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct GrowRequest<'a> {
    /// The request's message id: its answer is remembered under it.
    pub message_id: &'a str,
    pub task_id: &'a str,
    pub agent_id: &'a str,
    pub grant_seq: Option<u64>,
    pub extra: Resources,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrowOutcome {
    /// `None`: granted.
    pub refusal: Option<Refusal>,
    /// The task's whole reservation after the answer; `None` when the request is not about a
    /// task the agent holds.
    pub reservation: Option<Resources>,
    /// Answered before: the same answer again, and nothing changed.
    pub repeat: bool,
}

fn field(reply: &[String], i: usize) -> &str {
    reply.get(i).map(String::as_str).unwrap_or("")
}

fn number(reply: &[String], i: usize) -> u64 {
    field(reply, i).parse().unwrap_or(0)
}

impl BeginOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        let repeat = field(reply, 1) == "1";
        Ok(match reply.first().map(String::as_str) {
            Some("pending") => BeginOutcome::Pending {
                created_ms: number(reply, 2),
                repeat,
            },
            Some("refused") => BeginOutcome::Refused {
                refusal: refusal("begin_handoff", reply, 3)?,
                created_ms: number(reply, 2),
                repeat,
            },
            Some("answered") => BeginOutcome::Answered {
                status: field(reply, 1).to_string(),
            },
            Some("conflict") => BeginOutcome::Conflict,
            _ => return Err(unexpected("begin_handoff", reply)),
        })
    }
}

impl AnswerOutcome {
    pub(crate) fn parse(handoff: HandoffRecord, reply: &[String]) -> Result<Self, Error> {
        let status = match reply.first().map(String::as_str) {
            Some("unknown_handoff") => return Ok(AnswerOutcome::UnknownHandoff),
            Some("wrong_agent") => {
                return Ok(AnswerOutcome::WrongAgent {
                    to_agent: field(reply, 1).to_string(),
                });
            }
            Some("accepted") => HandoffStatus::Accepted,
            Some("rejected") => HandoffStatus::Rejected,
            Some("refused") => HandoffStatus::Refused,
            _ => return Err(unexpected("resolve_handoff", reply)),
        };
        let refusal = match status {
            HandoffStatus::Refused => Some(refusal("resolve_handoff", reply, 5)?),
            _ => None,
        };
        Ok(AnswerOutcome::Decided(HandoffVerdict {
            handoff,
            status,
            grant_seq: field(reply, 4).parse().ok(),
            refusal,
            created_ms: number(reply, 2),
            decided_ms: number(reply, 3),
            repeat: field(reply, 1) == "1",
        }))
    }
}

impl GrowOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        let refusal = match reply.first().map(String::as_str) {
            Some("granted") => None,
            Some("refused") => Some(refusal("grow_reservation", reply, 2)?),
            _ => return Err(unexpected("grow_reservation", reply)),
        };
        let mut reservation = Resources::default();
        for (i, kind) in ResourceKind::ALL.into_iter().enumerate() {
            match field(reply, 4 + i).parse() {
                Ok(milli) => reservation.set(kind, milli),
                Err(_) => {
                    return Ok(GrowOutcome {
                        refusal,
                        reservation: None,
                        repeat: field(reply, 1) == "1",
                    });
                }
            }
        }
        Ok(GrowOutcome {
            refusal,
            reservation: Some(reservation),
            repeat: field(reply, 1) == "1",
        })
    }
}

impl Store {
    /// Checks and records a handoff; see `lua/begin_handoff.lua`. `refusal_ttl_ms`: how long a
    /// refusal is remembered for repeats.
    pub async fn begin_handoff(
        &self,
        req: &BeginHandoff<'_>,
        refusal_ttl_ms: u64,
    ) -> Result<BeginOutcome, Error> {
        let k = self.keys();
        let reply: Vec<String> = self
            .scripts
            .begin_handoff
            .key(k.handoff(req.handoff_id))
            .key(k.task(req.task_id))
            .key(k.agent(req.from_agent))
            .key(k.agent(req.to_agent))
            .key(k.story(req.task_id))
            .arg(req.handoff_id)
            .arg(req.task_id)
            .arg(req.from_agent)
            .arg(req.to_agent)
            .arg(req.grant_seq.unwrap_or(0))
            .arg(req.timeout_ms.max(1))
            .arg(refusal_ttl_ms.max(1))
            .arg(req.priority)
            .invoke_async(&mut self.conn())
            .await?;
        BeginOutcome::parse(&reply)
    }

    /// The handoff's task and agents, or `None` when unknown (or its deadline passed).
    pub async fn handoff(&self, handoff_id: &str) -> Result<Option<HandoffRecord>, Error> {
        let row: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys().handoff(handoff_id))
            .arg(&["task_id", "from_agent", "to_agent", "priority"])
            .query_async(&mut self.conn())
            .await?;
        let mut row = row.into_iter();
        let mut next = || row.next().flatten();
        match (next(), next(), next(), next()) {
            (Some(task_id), Some(from_agent), Some(to_agent), priority) => {
                Ok(Some(HandoffRecord {
                    task_id,
                    from_agent,
                    to_agent,
                    priority: priority.unwrap_or_default(),
                }))
            }
            _ => Ok(None),
        }
    }

    /// Applies the new agent's answer; see `lua/resolve_handoff.lua`. The handoff is read first
    /// to name the keys of its task and agents; the script checks it is still the same handoff.
    pub async fn answer_handoff(
        &self,
        handoff_id: &str,
        agent_id: &str,
        accept: bool,
        verdict_ttl_ms: u64,
    ) -> Result<AnswerOutcome, Error> {
        let Some(handoff) = self.handoff(handoff_id).await? else {
            return Ok(AnswerOutcome::UnknownHandoff);
        };
        let k = self.keys();
        let reply: Vec<String> = self
            .scripts
            .resolve_handoff
            .key(k.handoff(handoff_id))
            .key(k.task(&handoff.task_id))
            .key(k.agent(&handoff.from_agent))
            .key(k.agent_tasks(&handoff.from_agent))
            .key(k.agent(&handoff.to_agent))
            .key(k.agent_tasks(&handoff.to_agent))
            .key(k.grant_outbox())
            .key(k.stats())
            .key(k.fleet_log())
            .key(k.story(&handoff.task_id))
            .arg(handoff_id)
            .arg(agent_id)
            .arg(if accept { "1" } else { "0" })
            .arg(&handoff.task_id)
            .arg(&handoff.from_agent)
            .arg(&handoff.to_agent)
            .arg(verdict_ttl_ms.max(1))
            .invoke_async(&mut self.conn())
            .await?;
        AnswerOutcome::parse(handoff, &reply)
    }

    /// Grows a running task's reservation from its agent's free capacity; see
    /// `lua/grow_reservation.lua`. `answer_ttl_ms`: how long the answer is remembered.
    pub async fn grow_reservation(
        &self,
        req: &GrowRequest<'_>,
        answer_ttl_ms: u64,
    ) -> Result<GrowOutcome, Error> {
        let k = self.keys();
        let mut inv = self.scripts.grow_reservation.prepare_invoke();
        inv.key(k.task(req.task_id))
            .key(k.agent(req.agent_id))
            .key(k.resource_request(req.message_id))
            .key(k.fleet_log());
        inv.arg(req.task_id)
            .arg(req.agent_id)
            .arg(req.grant_seq.unwrap_or(0));
        for kind in ResourceKind::ALL {
            inv.arg(req.extra.get(kind));
        }
        inv.arg(answer_ttl_ms.max(1));
        let reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        GrowOutcome::parse(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_protocol::RejectReason;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_script_replies() {
        assert_eq!(
            BeginOutcome::parse(&s(&["refused", "0", "5", "insufficient_capacity", "full"])).ok(),
            Some(BeginOutcome::Refused {
                refusal: Refusal {
                    reason: RejectReason::InsufficientCapacity,
                    message: "full".into()
                },
                created_ms: 5,
                repeat: false
            })
        );
        let record = HandoffRecord {
            task_id: "t".into(),
            from_agent: "a".into(),
            to_agent: "b".into(),
            priority: "normal".into(),
        };
        let accepted = AnswerOutcome::parse(
            record.clone(),
            &s(&["accepted", "1", "10", "30", "2", "", ""]),
        );
        assert!(matches!(
            accepted,
            Ok(AnswerOutcome::Decided(HandoffVerdict {
                status: HandoffStatus::Accepted,
                grant_seq: Some(2),
                refusal: None,
                created_ms: 10,
                decided_ms: 30,
                repeat: true,
                ..
            }))
        ));
        let grown = GrowOutcome::parse(&s(&["granted", "0", "", "", "1", "2", "3", "4"]));
        assert_eq!(
            grown.ok().and_then(|g| g.reservation),
            Some(Resources {
                cpu: 1,
                memory: 2,
                tokens: 3,
                time: 4
            })
        );
        assert!(GrowOutcome::parse(&s(&["refused", "0", "bogus_code", ""])).is_err());
        assert!(BeginOutcome::parse(&s(&["what"])).is_err());
    }
}
