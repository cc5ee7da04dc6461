//! The invariants, checked from what the agents saw ([`Ledger`]) and from Redis: every task
//! terminal (none lost, none stuck), none worked by two agents at once, no agent reserved beyond
//! its capacity; plus the dead letters and how long service took to come back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::faults::FaultWindow;
use super::ledger::Interval;
use super::scenario::RecoverFrom;
use switchyard_client::error::{Error, ErrorKind};
use switchyard_protocol::Subjects;
use switchyard_server::config::RedisConfig;
use switchyard_server::state::{Connection, Keys};

/// One Redis round trip of the checks may take this long (Redis may be restarting).
const QUERY_WITHIN: Duration = Duration::from_secs(2);
/// How often agent reservations are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Stragglers listed by name in the report.
const LISTED: usize = 10;

fn redis_error(e: redis::RedisError) -> Error {
    Error::with_source(ErrorKind::Redis, "redis query failed", e)
}

/// Runs `pipe` with a bound on its time.
async fn query<T: redis::FromRedisValue>(
    conn: &mut Connection,
    pipe: &redis::Pipeline,
) -> Result<T, Error> {
    match tokio::time::timeout(QUERY_WITHIN, pipe.query_async(conn)).await {
        Ok(result) => result.map_err(redis_error),
        Err(_) => Err(Error::new(ErrorKind::Timeout, "redis query timed out")),
    }
}

/// The largest reservation seen per agent while sampling, against its capacity.
#[derive(Debug, Default, Serialize)]
pub struct Reservations {
    pub samples: u64,
    /// Samples in which an agent held more cpu than it has, as "agent: reserved/capacity".
    pub over: Vec<String>,
}

/// Samples every agent's cpu reservation in Redis until stopped.
pub(crate) fn sample_reservations(
    redis: RedisConfig,
    keys: Keys,
    agents: Vec<String>,
    capacity_milli: i64,
) -> (watch::Sender<bool>, JoinHandle<Reservations>) {
    let (stop, mut stopped) = watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut seen = Reservations::default();
        let Ok(mut conn) = Connection::open(&redis).await else {
            return seen;
        };
        let mut pipe = redis::pipe();
        for agent in &agents {
            pipe.cmd("HGET").arg(keys.agent(agent)).arg("res_cpu");
        }
        while !*stopped.borrow() {
            // Errors while Redis restarts or is cut off are expected; the next sample retries.
            if let Ok(reserved) = query::<Vec<Option<i64>>>(&mut conn, &pipe).await {
                seen.samples += 1;
                for (agent, milli) in agents.iter().zip(reserved) {
                    let milli = milli.unwrap_or(0);
                    if milli > capacity_milli && seen.over.len() < LISTED {
                        seen.over
                            .push(format!("{agent}: {milli}/{capacity_milli} milli-cpu"));
                    }
                }
            }
            // Stops when told to, and when the driver went away (its sender dropped).
            if let Ok(Err(_)) = tokio::time::timeout(SAMPLE_EVERY, stopped.changed()).await {
                break;
            }
        }
        seen
    });
    (stop, sampler)
}

/// Where the submitted tasks ended, as Redis says.
#[derive(Debug, Default, Serialize)]
pub struct Outcomes {
    pub completed: u64,
    pub failed: u64,
    /// Stored in JetStream but no record in Redis at the deadline.
    pub lost: u64,
    /// A record, but not terminal at the deadline.
    pub stuck: u64,
    /// The first few lost or stuck tasks, "id: state".
    pub stragglers: Vec<String>,
    /// Seconds from the end of the load until every task was terminal (`None`: never).
    pub drained_after_s: Option<f64>,
}

/// Polls the tasks' states until every one is terminal or `deadline` passes.
pub(crate) async fn final_states(
    redis: &RedisConfig,
    task_ids: &[String],
    deadline: Duration,
) -> Result<Outcomes, Error> {
    let keys = Keys::new(&redis.key_prefix);
    let mut conn = Connection::open(redis).await?;
    let mut pipe = redis::pipe();
    for id in task_ids {
        pipe.cmd("HGET").arg(keys.task(id)).arg("state");
    }
    let started = Instant::now();
    loop {
        match query::<Vec<Option<String>>>(&mut conn, &pipe).await {
            Ok(states) => {
                let mut outcomes = tally(task_ids, &states);
                if outcomes.lost + outcomes.stuck == 0 {
                    outcomes.drained_after_s = Some(started.elapsed().as_secs_f64());
                    return Ok(outcomes);
                }
                if started.elapsed() >= deadline {
                    return Ok(outcomes);
                }
            }
            Err(e) if started.elapsed() >= deadline => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn tally(task_ids: &[String], states: &[Option<String>]) -> Outcomes {
    let mut outcomes = Outcomes::default();
    for (id, state) in task_ids.iter().zip(states) {
        match state.as_deref() {
            Some("completed") => outcomes.completed += 1,
            Some("failed") => outcomes.failed += 1,
            other => {
                if other.is_none() {
                    outcomes.lost += 1;
                } else {
                    outcomes.stuck += 1;
                }
                if outcomes.stragglers.len() < LISTED {
                    outcomes
                        .stragglers
                        .push(format!("{id}: {}", other.unwrap_or("no record")));
                }
            }
        }
    }
    outcomes
}

/// Pairs of grants of one task that two agents (or one agent under two grant numbers) worked on
/// at the same time. A killed agent's work ends when it was killed, so a re-grant after its lease
/// ran out is no overlap.
pub(crate) fn double_worked(intervals: &[Interval]) -> Vec<String> {
    let mut by_task: HashMap<&str, Vec<&Interval>> = HashMap::new();
    for interval in intervals {
        by_task
            .entry(interval.task_id.as_str())
            .or_default()
            .push(interval);
    }
    let mut found = Vec::new();
    for (task, mut grants) in by_task {
        grants.sort_by_key(|i| i.start);
        for (n, a) in grants.iter().enumerate() {
            for b in &grants[n + 1..] {
                let a_end = a.end.unwrap_or(b.start);
                if b.start < a_end {
                    found.push(format!(
                        "{task}: {} (grant {}) and {} (grant {}) overlap {:.2}s",
                        a.agent_id,
                        a.grant_seq,
                        b.agent_id,
                        b.grant_seq,
                        (a_end - b.start).as_secs_f64()
                    ));
                }
            }
        }
    }
    found.sort();
    found
}

/// Agents Redis holds as dead at the end of a scenario.
pub(crate) async fn dead_agents(
    redis: &RedisConfig,
    agent_ids: &[String],
) -> Result<Vec<String>, Error> {
    let keys = Keys::new(&redis.key_prefix);
    let mut conn = Connection::open(redis).await?;
    let mut pipe = redis::pipe();
    for id in agent_ids {
        pipe.cmd("HGET").arg(keys.agent(id)).arg("status");
    }
    let statuses: Vec<Option<String>> = query(&mut conn, &pipe).await?;
    Ok(agent_ids
        .iter()
        .zip(statuses)
        .filter(|(_, status)| status.as_deref() == Some("dead"))
        .map(|(id, _)| id.clone())
        .collect())
}

/// The longest time from an agent's death (the agent-kill fault) to the re-grant of a task it
/// was working on, and how many such tasks were never granted again.
pub(crate) fn regrants_after_kill(intervals: &[Interval]) -> (Option<f64>, u64) {
    let mut longest: Option<f64> = None;
    let mut never = 0;
    for cut in intervals.iter().filter(|i| i.cut) {
        let Some(died) = cut.end else { continue };
        let next = intervals
            .iter()
            .filter(|i| i.task_id == cut.task_id && i.start > cut.start)
            .map(|i| i.start)
            .min();
        match next {
            Some(start) => {
                let after = start.saturating_duration_since(died).as_secs_f64();
                longest = Some(longest.map_or(after, |l: f64| l.max(after)));
            }
            None => never += 1,
        }
    }
    (longest, never)
}

/// Dead letters by what their `Switchyard-Took-Effect` header says.
#[derive(Debug, Default, Serialize)]
pub struct DeadLetters {
    pub took_effect: u64,
    pub did_not: u64,
    pub unknown: u64,
    /// What the dead letters' `Switchyard-Error` headers said, with counts (first few kinds).
    pub errors: Vec<String>,
}

/// Reads the dead-letter stream (only the optimizer's dead letters, not JetStream advisories).
pub(crate) async fn dead_letters(
    nats: &async_nats::Client,
    subjects: &Subjects,
) -> Result<DeadLetters, Error> {
    let nats_error = |e: String| Error::new(ErrorKind::Nats, format!("dead-letter stream: {e}"));
    let js = async_nats::jetstream::new(nats.clone());
    let mut stream = js
        .get_stream(subjects.dead_letter_stream())
        .await
        .map_err(|e| nats_error(e.to_string()))?;
    let state = stream
        .info()
        .await
        .map_err(|e| nats_error(e.to_string()))?
        .state
        .clone();
    let mut tally = DeadLetterTally::default();
    if state.messages > 0 {
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(message) = stream.get_raw_message(seq).await {
                tally.add(&message);
            }
        }
    }
    Ok(tally.finish())
}

#[derive(Default)]
struct DeadLetterTally {
    letters: DeadLetters,
    errors: HashMap<String, u64>,
}

impl DeadLetterTally {
    /// Counts one stored message if it is an optimizer's dead letter (advisories are not).
    fn add(&mut self, message: &async_nats::jetstream::message::StreamMessage) {
        let Some(effect) = message.headers.get("Switchyard-Took-Effect") else {
            return;
        };
        match effect.as_str() {
            "yes" => self.letters.took_effect += 1,
            "no" => self.letters.did_not += 1,
            _ => self.letters.unknown += 1,
        }
        let error = message
            .headers
            .get("Switchyard-Error")
            .map(|v| v.as_str())
            .unwrap_or("");
        // The kind of error, without task-specific detail after the first colon.
        let kind = error.split(':').next().unwrap_or("").trim();
        *self
            .errors
            .entry(format!("{} {kind}", message.subject))
            .or_default() += 1;
    }

    /// The counts, with the most frequent errors first.
    fn finish(mut self) -> DeadLetters {
        let mut errors: Vec<(String, u64)> = self.errors.into_iter().collect();
        errors.sort_by_key(|e| std::cmp::Reverse(e.1));
        self.letters.errors = errors
            .into_iter()
            .take(LISTED)
            .map(|(e, n)| format!("{n}x {e}"))
            .collect();
        self.letters
    }
}

/// How long service took to come back.
#[derive(Debug, Default, Serialize)]
pub struct Recovery {
    /// Seconds from the reference point (the fault's start for kills, its end otherwise) to the
    /// first grant after it.
    pub first_grant_s: Option<f64>,
    /// Seconds from the reference point until a one-second window holds at least half the grants
    /// of an average second before the fault.
    pub rate_back_s: Option<f64>,
    /// The load was still running at the reference point, so grants were due after it; when
    /// not, the times above are left out (there was nothing left to recover).
    pub measured: bool,
}

/// The recovery times from the grant start times the agents recorded.
pub(crate) fn recovery(
    grants: &[Instant],
    fault: &FaultWindow,
    from: RecoverFrom,
    load_end: Instant,
) -> Recovery {
    let reference = match from {
        RecoverFrom::Start => fault.start,
        RecoverFrom::End => fault.end,
    };
    if reference >= load_end {
        return Recovery::default();
    }
    let baseline_span = Duration::from_secs(5);
    let before = grants
        .iter()
        .filter(|&&t| t < fault.start && t + baseline_span >= fault.start)
        .count();
    let baseline = before as f64 / baseline_span.as_secs_f64();
    let after: Vec<Instant> = grants.iter().copied().filter(|&t| t >= reference).collect();
    let first_grant_s = after.first().map(|t| (*t - reference).as_secs_f64());
    let wanted = (baseline / 2.0).ceil().max(1.0) as usize;
    // The earliest grant that begins a one-second window holding `wanted` grants.
    let rate_back_s = after
        .iter()
        .enumerate()
        .find(|(i, t)| {
            after[*i..]
                .iter()
                .take_while(|u| **u < **t + Duration::from_secs(1))
                .count()
                >= wanted
        })
        .map(|(_, t)| (*t - reference).as_secs_f64());
    Recovery {
        first_grant_s,
        rate_back_s: if baseline > 0.0 { rate_back_s } else { None },
        measured: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(
        task: &str,
        agent: &str,
        seq: u64,
        start: Instant,
        from_s: f64,
        to_s: f64,
    ) -> Interval {
        Interval {
            task_id: task.into(),
            agent_id: agent.into(),
            grant_seq: seq,
            start: start + Duration::from_secs_f64(from_s),
            end: Some(start + Duration::from_secs_f64(to_s)),
            success: true,
            cut: false,
        }
    }

    #[test]
    fn overlapping_grants_of_one_task_are_double_work_and_sequential_ones_are_not() {
        let t0 = Instant::now();
        let sequential = [
            interval("t", "a", 1, t0, 0.0, 1.0),
            interval("t", "b", 2, t0, 1.5, 2.0),
        ];
        assert!(double_worked(&sequential).is_empty());
        let overlapping = [
            interval("t", "a", 1, t0, 0.0, 1.0),
            interval("t", "b", 2, t0, 0.5, 2.0),
        ];
        assert_eq!(double_worked(&overlapping).len(), 1);
        let other_tasks = [
            interval("t", "a", 1, t0, 0.0, 1.0),
            interval("u", "b", 1, t0, 0.5, 2.0),
        ];
        assert!(double_worked(&other_tasks).is_empty());
    }

    #[test]
    fn recovery_counts_from_the_reference_to_the_first_grant_and_the_rate_back() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        // 10 grants a second for 5 s, nothing during the fault (5..8 s), then 1, then 10 a second.
        let mut grants: Vec<Instant> = (0..50).map(|i| at(f64::from(i) * 0.1)).collect();
        grants.push(at(9.0));
        grants.extend((0..20).map(|i| at(10.0 + f64::from(i) * 0.1)));
        let fault = FaultWindow {
            start: at(5.0),
            end: at(8.0),
            note: String::new(),
        };
        let r = recovery(&grants, &fault, RecoverFrom::End, at(12.0));
        assert!(r.measured);
        assert_eq!(r.first_grant_s.map(|s| (s * 10.0).round()), Some(10.0));
        assert_eq!(r.rate_back_s.map(|s| (s * 10.0).round()), Some(20.0));
        let after_the_load = recovery(&grants, &fault, RecoverFrom::End, at(7.0));
        assert!(!after_the_load.measured && after_the_load.first_grant_s.is_none());
    }
}
