//! Why a task waits: the reasons a status answer gives for tasks that are neither granted nor
//! finished ([`CoordinationSync::tasks`](crate::CoordinationSync::tasks)).

use serde::{Deserialize, Serialize};

/// Most tasks one status answer lists (`STATUS_QUERY.include_tasks` is capped to this), so a long
/// queue cannot make a huge reply.
pub const MAX_STATUS_TASKS: u32 = 200;

/// Why a task is not running yet. Tagged by `kind`; a kind this version does not know (a newer
/// optimizer's, such as a budget) reads as [`WaitReason::Other`], and the view's `detail` still
/// says it in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WaitReason {
    /// `waiting`: these dependencies have not completed yet.
    Dependencies { unmet: Vec<String> },
    /// `queued`, but no active agent's *capacity* (free or not) covers everything the task needs:
    /// held until an agent that big registers (`coordination.infeasible = "hold"`).
    NoAgentWithCapacity,
    /// `queued`; some agent could hold it, none has the free capacity now. `ahead` tasks are
    /// before it in the queue.
    NoFreeCapacity { ahead: u64 },
    /// `queued`; an agent has room for it now, and `ahead` tasks are before it in the queue: it
    /// is granted when the dispatcher reaches it.
    BehindQueue { ahead: u64 },
    /// `queued`; the shared budget `budget` does not allow the task's draw now. `until_ms`: when
    /// it will by refill alone (Redis clock, ms since the epoch) if nothing else draws first;
    /// absent: when a concurrency slot is released (or never: the draw exceeds the budget's
    /// burst or limit).
    Budget {
        budget: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<u64>,
    },
    /// A reason this version does not know.
    #[serde(other)]
    Other,
}

/// `HH:MM:SS.mmm UTC` of a time in ms since the epoch.
fn clock_time(ms: u64) -> String {
    let day_ms = ms % 86_400_000;
    let (h, m) = (day_ms / 3_600_000, day_ms / 60_000 % 60);
    let (s, milli) = (day_ms / 1000 % 60, day_ms % 1000);
    format!("{h:02}:{m:02}:{s:02}.{milli:03} UTC")
}

impl WaitReason {
    /// The reason in words, as `switchyard status` prints it.
    pub fn describe(&self) -> String {
        match self {
            WaitReason::Dependencies { unmet } => {
                format!("waiting on dependencies [{}]", unmet.join(", "))
            }
            WaitReason::NoAgentWithCapacity => "no agent with capacity".to_string(),
            WaitReason::NoFreeCapacity { ahead } => {
                format!("no agent with free capacity now ({ahead} tasks ahead)")
            }
            WaitReason::BehindQueue { ahead } => {
                format!("behind {ahead} higher-priority or earlier tasks")
            }
            WaitReason::Budget {
                budget,
                until_ms: Some(until),
            } => format!("budget {budget} exhausted until {}", clock_time(*until)),
            WaitReason::Budget {
                budget,
                until_ms: None,
            } => format!("budget {budget} exhausted until a slot is released"),
            WaitReason::Other => "waiting".to_string(),
        }
    }
}

/// One waiting or queued task in a status answer, with why it waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskWaitView {
    pub task_id: String,
    /// `waiting` (on dependencies) or `queued`; for a task asked for by id, whatever state it is
    /// in (`granted`, `completed`, ...), with no reason.
    pub state: String,
    pub priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<WaitReason>,
    /// The reason in words (empty when there is none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_unknown_kinds_read_as_other() {
        let reasons = [
            WaitReason::Dependencies {
                unmet: vec!["a".into(), "b".into()],
            },
            WaitReason::NoAgentWithCapacity,
            WaitReason::NoFreeCapacity { ahead: 3 },
            WaitReason::BehindQueue { ahead: 0 },
            WaitReason::Budget {
                budget: "tpm".into(),
                until_ms: Some(1_000),
            },
        ];
        for reason in reasons {
            let json = serde_json::to_string(&reason).unwrap_or_default();
            let back: Result<WaitReason, _> = serde_json::from_str(&json);
            assert_eq!(back.ok(), Some(reason));
        }
        let newer = r#"{"kind":"budget_exhausted","budget":"llm","until_ms":5}"#;
        let read: Result<WaitReason, _> = serde_json::from_str(newer);
        assert_eq!(read.ok(), Some(WaitReason::Other));
        assert_eq!(
            WaitReason::Dependencies {
                unmet: vec!["a".into(), "b".into()]
            }
            .describe(),
            "waiting on dependencies [a, b]"
        );
    }
}
