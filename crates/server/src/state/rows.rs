//! Parsing the rows Redis returns for agents and tasks into typed views. Missing or garbled
//! fields read as zero/empty: a half-written record must not take the optimizer down.

use switchyard_decision::{AgentLearning, AgentView, Resources, TaskView};
use switchyard_protocol::AgentStatusView;

use super::records::QueuedTask;

/// The agent hash fields holding what has been learned about the agent beyond its type
/// ([`AgentLearning`]), in the order of its fields: observations, pace, pace_fast, pace_var,
/// failure_excess, drifts, learned_at_ms. The completion and deadline scripts write them (named
/// through the `LEARNED_FIELDS` the scripts are given, state/scripts.rs), the fleet log carries
/// them, and the reads below parse them; an agent stored before they existed has none and reads
/// as neutral.
pub(crate) const LEARNED_FIELDS: [&str; 7] = [
    "pace_n",
    "pace",
    "pace_fast",
    "pace_var",
    "fail_excess",
    "drifts",
    "learned_at",
];

/// The suffix of a fleet-log field carrying an agent's learned values (state/fleet.rs; agent ids
/// cannot contain `|`, so it cannot be an agent's own field).
pub(crate) const LEARNED_SUFFIX: &str = "|learned";

/// Agent hash fields before the learned ones, in the order the functions below read them.
const VIEW_ROW_FIELDS: [&str; 15] = [
    "agent_type",
    "status",
    "cap_cpu",
    "cap_memory",
    "cap_tokens",
    "cap_time",
    "res_cpu",
    "res_memory",
    "res_tokens",
    "res_time",
    "score",
    "priority_weight",
    "active_tasks",
    "last_heartbeat",
    "lease_ms",
];

/// Agent hash fields read for a full row: the view's, then [`LEARNED_FIELDS`] (from
/// `LEARNED_AT`).
pub(crate) const AGENT_FIELDS: [&str; 22] = {
    let mut out = [""; 22];
    let mut i = 0;
    while i < VIEW_ROW_FIELDS.len() {
        out[i] = VIEW_ROW_FIELDS[i];
        i += 1;
    }
    let mut j = 0;
    while j < LEARNED_FIELDS.len() {
        out[i + j] = LEARNED_FIELDS[j];
        j += 1;
    }
    out
};

/// Where the learned fields start in an agent row.
const LEARNED_AT: usize = VIEW_ROW_FIELDS.len();

/// Task hash fields read for the queue head, in order.
pub(crate) const TASK_FIELDS: [&str; 22] = [
    "state",
    "task_type",
    "priority",
    "req_cpu",
    "req_memory",
    "req_tokens",
    "req_time",
    "submitter",
    "submit_msg_id",
    "estimated_duration_s",
    "submitted_at",
    "queue_seq",
    "strategy",
    "explain",
    "replies",
    // Comma-separated agents whose attempts at the task failed (a retried task).
    "failed_agents",
    "submit_seq",
    "tenant",
    "budgets",
    // The submit span's W3C trace context (a task option, SubmitRequest::options), and the
    // attempt being granted (a retried task: 2 onwards).
    "traceparent",
    "tracestate",
    "attempt",
];

fn num<T: std::str::FromStr + Default>(row: &[String], i: usize) -> T {
    row.get(i).and_then(|s| s.parse().ok()).unwrap_or_default()
}

fn resources_at(row: &[String], first: usize) -> Resources {
    Resources {
        cpu: num(row, first),
        memory: num(row, first + 1),
        tokens: num(row, first + 2),
        time: num(row, first + 3),
    }
}

pub(crate) fn agent_view(agent_id: String, row: &[String]) -> AgentView {
    AgentView {
        agent_id: agent_id.into(),
        agent_type: row.first().map_or("", String::as_str).into(),
        capacity: resources_at(row, 2),
        reserved: resources_at(row, 6),
        score: num(row, 10),
        priority_weight: num(row, 11),
        active_tasks: num(row, 12),
        learned: learning_from(row.get(LEARNED_AT..).unwrap_or_default()),
        idle_s: 0.0,
    }
}

/// [`AgentLearning`] from its fields in [`LEARNED_FIELDS`] order (the hash row's tail, or a
/// fleet-log learned entry split on `|`); missing or garbled fields read as neutral.
pub(crate) fn learning_from<S: AsRef<str>>(parts: &[S]) -> AgentLearning {
    let at = |i: usize| parts.get(i).map_or("", |s| s.as_ref());
    let real = |i: usize| at(i).parse::<f64>().ok().filter(|x| x.is_finite());
    AgentLearning {
        observations: at(0).parse().unwrap_or(0),
        pace: real(1).unwrap_or(0.0),
        pace_fast: real(2).unwrap_or(0.0),
        pace_var: real(3).unwrap_or(0.0),
        failure_excess: real(4).unwrap_or(0.0),
        drifts: at(5).parse().unwrap_or(0),
        learned_at_ms: at(6).parse().unwrap_or(0),
    }
}

pub(crate) fn agent_status(agent_id: String, row: &[String]) -> AgentStatusView {
    let view = agent_view(agent_id, row);
    AgentStatusView {
        utilization: switchyard_decision::resources::utilization(&view.reserved, &view.capacity),
        agent_id: view.agent_id.to_string(),
        agent_type: view.agent_type.to_string(),
        status: row.get(1).cloned().unwrap_or_default(),
        capacity: view.capacity.to_units(),
        reserved: view.reserved.to_units(),
        performance_score: view.score,
        active_tasks: u64::from(view.active_tasks),
        last_heartbeat_ms: num(row, 13),
        pace_factor: view.learned.pace_factor(),
        failure_excess: view.learned.failure_excess,
        drifts: view.learned.drifts,
    }
}

pub(crate) fn queued_task(task_id: String, row: Vec<String>) -> QueuedTask {
    QueuedTask {
        view: TaskView {
            task_id,
            task_type: row.get(1).cloned().unwrap_or_default(),
            priority: num(&row, 2),
            required: resources_at(&row, 3),
            // The submit counter; `queue_seq` is the fair place (older records: the counter).
            seq: if row.get(16).is_some_and(|s| !s.is_empty()) {
                num(&row, 16)
            } else {
                num(&row, 11)
            },
            estimated_duration_s: num(&row, 9),
            avoid_agents: row
                .get(15)
                .map(|list| {
                    list.split(',')
                        .filter(|a| !a.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        },
        submitter: row.get(7).cloned().unwrap_or_default(),
        submit_message_id: row.get(8).cloned().unwrap_or_default(),
        submitted_at_ms: num(&row, 10),
        strategy: row
            .get(12)
            .and_then(|name| switchyard_decision::StrategyKind::parse(name)),
        explain: row.get(13).is_some_and(|flag| flag == "1"),
        replies: switchyard_protocol::Replies::parse(row.get(14).map_or("", String::as_str)),
        tenant: match row.get(17) {
            Some(t) if !t.is_empty() => t.clone(),
            _ => switchyard_decision::DEFAULT_TENANT.to_string(),
        },
        budgets: switchyard_decision::budget::parse_draws(row.get(18).map_or("", String::as_str)),
        trace: switchyard_protocol::TraceContext::from_headers(
            row.get(19).map(String::as_str),
            row.get(20).map(String::as_str),
        ),
        attempt: num::<u32>(&row, 21).max(1),
    }
}

/// Rebuilds the pattern table from its hash fields (`<task_type>|<agent_type>|<stat>`); fields
/// that do not parse are skipped.
pub(crate) fn pattern_table(
    fields: &std::collections::BTreeMap<String, String>,
) -> switchyard_decision::PatternTable {
    use switchyard_decision::PatternStats;
    let mut pairs: std::collections::BTreeMap<(&str, &str), PatternStats> = Default::default();
    for (field, value) in fields {
        let mut parts = field.splitn(3, '|');
        let (Some(task_type), Some(agent_type), Some(stat)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let stats = pairs
            .entry((task_type, agent_type))
            .or_insert_with(PatternStats::neutral);
        match stat {
            "attempts" => stats.attempts = value.parse().unwrap_or(0),
            "successes" => stats.successes = value.parse().unwrap_or(0),
            "success_ema" => stats.success_ema = value.parse().unwrap_or(stats.success_ema),
            "duration_ratio_ema" => {
                stats.duration_ratio_ema = value.parse().unwrap_or(stats.duration_ratio_ema)
            }
            "explorations" => stats.explorations = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut table = switchyard_decision::PatternTable::new();
    for ((task_type, agent_type), stats) in pairs {
        table.insert(task_type, agent_type, stats);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_task_reads_seq_and_estimate_by_field_position() {
        let mut row: Vec<String> = vec![String::new(); TASK_FIELDS.len()];
        let at = |name: &str| TASK_FIELDS.iter().position(|f| *f == name).unwrap_or(0);
        row[at("task_type")] = "build".into();
        row[at("priority")] = "7".into();
        row[at("estimated_duration_s")] = "12.5".into();
        row[at("queue_seq")] = "42".into();
        row[at("explain")] = "1".into();
        row[at("failed_agents")] = "a1,a2".into();
        row[at("tenant")] = "team-a".into();
        let task = queued_task("t1".into(), row.clone());
        assert_eq!(task.view.avoid_agents, ["a1", "a2"]);
        assert_eq!(task.tenant, "team-a");
        assert!(task.explain);
        assert_eq!(task.view.task_type, "build");
        assert_eq!(task.view.priority, 7);
        assert_eq!(task.view.seq, 42);
        assert_eq!(task.view.estimated_duration_s, 12.5);
        row[at("submit_seq")] = "7".into();
        let task = queued_task("t1".into(), row);
        assert_eq!(
            task.view.seq, 7,
            "the submit counter, not the fair place, when stored"
        );
    }

    #[test]
    fn agent_rows_carry_the_learned_fields_and_older_rows_read_neutral() {
        let at = |name: &str| AGENT_FIELDS.iter().position(|f| *f == name).unwrap_or(0);
        let mut row: Vec<String> = vec![String::new(); AGENT_FIELDS.len()];
        row[at("agent_type")] = "gpu".into();
        row[at("status")] = "active".into();
        row[at("score")] = "0.5".into();
        // A row of an agent stored before the learned fields: neutral.
        let old = agent_status("a1".into(), &row[..LEARNED_AT]);
        assert_eq!(old.pace_factor, 1.0);
        assert_eq!(old.drifts, 0);
        row[at("pace_n")] = "2".into();
        row[at("pace")] = "2.0794415416798".into();
        row[at("fail_excess")] = "0.25".into();
        row[at("drifts")] = "3".into();
        let view = agent_view("a1".into(), &row);
        assert_eq!(view.learned.observations, 2);
        assert_eq!(view.learned.drifts, 3);
        let status = agent_status("a1".into(), &row);
        assert!(
            (status.pace_factor - 8.0).abs() < 1e-9,
            "{}",
            status.pace_factor
        );
        assert_eq!(status.failure_excess, 0.25);
        assert_eq!(&AGENT_FIELDS[LEARNED_AT..], &LEARNED_FIELDS[..]);
        assert_eq!(&AGENT_FIELDS[..LEARNED_AT], &VIEW_ROW_FIELDS[..]);
    }

    #[test]
    fn garbled_task_fields_read_as_zero() {
        let task = queued_task("t".into(), vec!["queued".into()]);
        assert_eq!(task.view.seq, 0);
        assert_eq!(task.view.estimated_duration_s, 0.0);
        assert!(
            !task.explain,
            "a task stored without the flag is not explained"
        );
    }
}
