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
    /// `queued`, but an attempt failed and the task waits out its retry back-off until
    /// `until_ms` (Unix ms, Redis clock) before it re-enters the queue; `attempt` is the number of
    /// the attempt it will run next.
    RetryBackoff { until_ms: u64, attempt: u32 },
    /// `queued`; it fits on no agent now, and `agent_id` is held for it (the head
    /// reservation): nothing that would delay it goes there, and it is granted when the tasks
    /// running there have ended.
    AgentHeld { agent_id: String },
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
            WaitReason::RetryBackoff { until_ms, attempt } => format!(
                "retrying after back-off until {} (attempt {attempt})",
                utc_time(*until_ms)
            ),
            WaitReason::AgentHeld { agent_id } => {
                format!("agent {agent_id} held for it until its running tasks end")
            }
            WaitReason::Budget {
                budget,
                until_ms: Some(until),
            } => format!("budget {budget} exhausted until {}", utc_time(*until)),
            WaitReason::Budget {
                budget,
                until_ms: None,
            } => format!("budget {budget} exhausted until a slot is released"),
            WaitReason::Other => "waiting".to_string(),
        }
    }
}

/// Unix milliseconds as a UTC time of day with the date, `2026-12-03 10:15:42.250 UTC`.
pub fn utc_time(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let in_day = ms % 86_400_000;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
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
    fn a_back_off_names_its_end_in_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc_time(1_700_000_000_250), "2023-11-14 22:13:20.250 UTC");
        let reason = WaitReason::RetryBackoff {
            until_ms: 951_782_400_000,
            attempt: 3,
        };
        assert_eq!(
            reason.describe(),
            "retrying after back-off until 2000-02-29 00:00:00.000 UTC (attempt 3)"
        );
    }

    #[test]
    fn reasons_round_trip_and_unknown_kinds_read_as_other() {
        let reasons = [
            WaitReason::Dependencies {
                unmet: vec!["a".into(), "b".into()],
            },
            WaitReason::NoAgentWithCapacity,
            WaitReason::NoFreeCapacity { ahead: 3 },
            WaitReason::BehindQueue { ahead: 0 },
            WaitReason::RetryBackoff {
                until_ms: 1_700_000_000_000,
                attempt: 2,
            },
            WaitReason::AgentHeld {
                agent_id: "a1".into(),
            },
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
