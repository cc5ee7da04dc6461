//! Time limits per task type (`queue_timeout_s`, `run_timeout_s`), as the service enforces them:
//! a queue deadline per wait in the queue (from arrival, time waiting on parents included; again
//! from the end of a retry's back-off or a re-queue after an agent died), a run deadline per
//! grant. A deadline whose wait or grant has ended since does nothing.

use super::{Engine, Ev, SimError, to_us};
use switchyard_decision::{TaskEvent, TaskState};

impl Engine<'_> {
    /// Attempts a task of `t`'s type may have.
    pub(super) fn max_attempts(&self, t: usize) -> u32 {
        let ty = &self.w.tasks.types[self.stream[t].type_index];
        ty.max_attempts.unwrap_or(self.w.retry.max_attempts).max(1)
    }

    /// A limit of `t`'s type in µs, if it has one.
    fn limit_us(&self, t: usize, run: bool) -> Option<u64> {
        let ty = &self.w.tasks.types[self.stream[t].type_index];
        let seconds = if run {
            ty.run_timeout_s
        } else {
            ty.queue_timeout_s
        };
        seconds.filter(|s| *s > 0.0).map(|s| to_us(s).max(1))
    }

    /// `t` starts a wait (arrived, or back in the queue): its queue deadline, if it has one,
    /// for the wait before grant number `grants + 1`.
    pub(crate) fn start_queue_deadline(&mut self, t: usize) {
        if let Some(limit) = self.limit_us(t, false) {
            let grants = self.runs[t].grants;
            self.schedule(self.now_us + limit, Ev::QueueDeadline { task: t, grants });
        }
    }

    /// Grant `grant` of `t` was made: its run deadline, if it has one.
    pub(super) fn start_run_deadline(&mut self, t: usize, grant: u32) {
        if let Some(limit) = self.limit_us(t, true) {
            self.schedule(self.now_us + limit, Ev::RunDeadline { task: t, grant });
        }
    }

    /// The queue deadline of `t`'s wait before grant `grants + 1`: it fails if still waiting
    /// there (not granted since, not in a back-off).
    pub(super) fn queue_deadline(&mut self, t: usize, grants: u32) -> Result<(), SimError> {
        let run = &self.runs[t];
        let waiting = run.is(TaskState::Queued) || run.is(TaskState::WaitingDependencies);
        if !waiting || run.grants != grants || run.retry_at_us.is_some() {
            return Ok(());
        }
        self.drop_ready(t);
        self.step(t, TaskEvent::TimedOut)?;
        self.runs[t].queue_timeouts += 1;
        self.terminal();
        self.fail_dependents(t)
    }

    /// The run deadline of grant `grant` of `t`: if it still runs, its reservation is released
    /// and the task retried or failed. Its agent and its type's pattern learn a failed attempt
    /// with no duration, as enforce_deadline.lua teaches them.
    pub(super) fn run_deadline(&mut self, t: usize, grant: u32) -> Result<(), SimError> {
        let run = &self.runs[t];
        let (true, Some(a)) = (run.is(TaskState::Granted), run.agent) else {
            return Ok(());
        };
        if run.grants != grant {
            return Ok(());
        }
        self.learn(t, a, false, 0.0);
        // As the service's enforce_deadline: slots released, rate draws kept (no usage report).
        self.release_slots(t);
        let run = &mut self.runs[t];
        run.agent = None;
        run.first_ok.get_or_insert(false);
        run.run_timeouts += 1;
        self.retry_or_fail(t, a, TaskEvent::TimedOut)
    }
}
