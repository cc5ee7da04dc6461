//! What the agents saw: every grant they worked on, from when to when, and every time one held
//! more than its capacity. The invariants are checked on this record afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// One grant as an agent worked on it.
#[derive(Debug, Clone)]
pub(crate) struct Interval {
    pub(crate) task_id: String,
    pub(crate) agent_id: String,
    pub(crate) grant_seq: u64,
    pub(crate) start: Instant,
    /// When the agent stopped working on it (reported it, or was killed); `None` while working.
    pub(crate) end: Option<Instant>,
    pub(crate) success: bool,
    /// Ended because its agent was killed.
    pub(crate) cut: bool,
}

#[derive(Debug, Default)]
struct Book {
    intervals: Vec<Interval>,
    /// Index into `intervals` by (task, agent, grant_seq).
    open: HashMap<(String, String, u64), usize>,
    /// Agents dropped by the agent-kill fault, and when.
    killed: HashMap<String, Instant>,
    /// Each time an agent was handed more than its capacity.
    over_capacity: Vec<String>,
    /// Completions the agents could not get stored even after retrying.
    unreported: u64,
}

/// Shared by every agent of one scenario.
#[derive(Clone, Default)]
pub(crate) struct Ledger(Arc<Mutex<Book>>);

impl Ledger {
    /// The book, also after a panic elsewhere: every change is one push or insert, so it is whole.
    fn book(&self) -> MutexGuard<'_, Book> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn started(&self, task_id: &str, agent_id: &str, grant_seq: u64) {
        let mut book = self.book();
        let index = book.intervals.len();
        book.intervals.push(Interval {
            task_id: task_id.to_string(),
            agent_id: agent_id.to_string(),
            grant_seq,
            start: Instant::now(),
            end: None,
            success: false,
            cut: false,
        });
        book.open.insert(
            (task_id.to_string(), agent_id.to_string(), grant_seq),
            index,
        );
    }

    pub(crate) fn finished(&self, task_id: &str, agent_id: &str, grant_seq: u64, success: bool) {
        let mut book = self.book();
        let key = (task_id.to_string(), agent_id.to_string(), grant_seq);
        if let Some(index) = book.open.remove(&key) {
            book.intervals[index].end = Some(Instant::now());
            book.intervals[index].success = success;
        }
    }

    pub(crate) fn over_capacity(&self, what: String) {
        self.book().over_capacity.push(what);
    }

    pub(crate) fn unreported(&self) {
        self.book().unreported += 1;
    }

    /// Marks `agent_id` dead now: its open intervals end here.
    pub(crate) fn killed(&self, agent_id: &str) {
        let now = Instant::now();
        let mut book = self.book();
        book.killed.insert(agent_id.to_string(), now);
        let open: Vec<usize> = book
            .open
            .iter()
            .filter(|((_, agent, _), _)| agent == agent_id)
            .map(|(_, &index)| index)
            .collect();
        for index in open {
            book.intervals[index].end = Some(now);
            book.intervals[index].cut = true;
        }
        book.open.retain(|(_, agent, _), _| agent != agent_id);
    }

    /// Every interval, with those still open closed at `now`.
    pub(crate) fn intervals(&self, now: Instant) -> Vec<Interval> {
        self.book()
            .intervals
            .iter()
            .map(|i| Interval {
                end: i.end.or(Some(now)),
                ..i.clone()
            })
            .collect()
    }

    /// When each grant started, oldest first (for the recovery times).
    pub(crate) fn grant_times(&self) -> Vec<Instant> {
        let mut times: Vec<Instant> = self.book().intervals.iter().map(|i| i.start).collect();
        times.sort();
        times
    }

    /// The agents the agent-kill fault dropped.
    pub(crate) fn killed_agents(&self) -> Vec<String> {
        self.book().killed.keys().cloned().collect()
    }

    pub(crate) fn over_capacity_events(&self) -> Vec<String> {
        self.book().over_capacity.clone()
    }

    pub(crate) fn unreported_count(&self) -> u64 {
        self.book().unreported
    }

    /// Finished intervals (task, agent, grant_seq, success) for the duplicate flood.
    pub(crate) fn finished_grants(&self) -> Vec<(String, String, u64, bool)> {
        self.book()
            .intervals
            .iter()
            .filter(|i| i.end.is_some())
            .map(|i| {
                (
                    i.task_id.clone(),
                    i.agent_id.clone(),
                    i.grant_seq,
                    i.success,
                )
            })
            .collect()
    }
}
