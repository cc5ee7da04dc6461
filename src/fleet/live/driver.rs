//! The live run's event loop: releases arrivals, retries and agent events at their compressed
//! times, submits through a real [`Coordinator`], and follows the optimizer's replies (granted,
//! completed, failed) into the [`Book`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::broadcast::{self, error::RecvError};

use super::book::{Book, Effects};
use super::work::{SpeedFactor, task_id};
use switchyard_client::error::{Error, ErrorKind};
use switchyard_client::{ClientEvent, Coordinator};
use switchyard_protocol::{CoordinatorReply, ReplyStatus, TaskSubmit};
use switchyard_sim::Outcome;
use switchyard_sim::workload::{AgentEventKind, Workload};

/// Something scheduled at a virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    AgentEvent(usize),
    Retry(usize),
    Arrival(usize),
}

/// The fleet as the driver acts on it: per agent (in the book's order) its degradation factor
/// and the switch that stops it.
pub(crate) struct FleetControl {
    pub factors: Vec<SpeedFactor>,
    pub stops: Vec<tokio::sync::watch::Sender<bool>>,
}

pub(crate) struct Driver<'a> {
    workload: &'a Workload,
    book: Book,
    orch: &'a Coordinator,
    fleet: &'a FleetControl,
    timers: BinaryHeap<Reverse<(u64, u64, Timer)>>,
    next_seq: u64,
    start: Instant,
    /// Virtual seconds per real second.
    scale: f64,
}

fn to_us(s: f64) -> u64 {
    (s.max(0.0) * 1e6).round() as u64
}

impl<'a> Driver<'a> {
    pub(crate) fn new(
        workload: &'a Workload,
        orch: &'a Coordinator,
        fleet: &'a FleetControl,
        scale: f64,
    ) -> Driver<'a> {
        let mut driver = Driver {
            workload,
            book: Book::new(workload),
            orch,
            fleet,
            timers: BinaryHeap::new(),
            next_seq: 0,
            start: Instant::now(),
            scale,
        };
        for t in 0..driver.book.stream().len() {
            let at = driver.book.stream()[t].submit_s;
            driver.schedule(at, Timer::Arrival(t));
        }
        for (i, event) in workload.events.iter().enumerate() {
            driver.schedule(event.at_s, Timer::AgentEvent(i));
        }
        driver
    }

    fn schedule(&mut self, at_s: f64, timer: Timer) {
        self.timers
            .push(Reverse((to_us(at_s), self.next_seq, timer)));
        self.next_seq += 1;
    }

    /// Virtual seconds since the start.
    fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * self.scale
    }

    fn real_instant(&self, at_us: u64) -> tokio::time::Instant {
        let real = Duration::from_secs_f64(at_us as f64 / 1e6 / self.scale);
        tokio::time::Instant::from_std(self.start + real)
    }

    /// Runs until every task finished or `limit` (real time) passed; tasks still open then are
    /// reported unfinished. Scheduled events later than the last task's end never happen.
    pub(crate) async fn run(
        mut self,
        mut replies: broadcast::Receiver<ClientEvent>,
        limit: Duration,
    ) -> Result<Outcome, Error> {
        self.start = Instant::now();
        let deadline = tokio::time::Instant::from_std(self.start + limit);
        while !self.book.is_done() {
            let next = self
                .timers
                .peek()
                .map_or(deadline, |Reverse((at, _, _))| self.real_instant(*at));
            tokio::select! {
                _ = tokio::time::sleep_until(next.min(deadline)) => {
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    self.fire_due().await?;
                }
                event = replies.recv() => self.on_event(event).await?,
            }
        }
        Ok(self.book.outcome())
    }

    /// Applies every timer that is due, then submits what became ready, all at once.
    async fn fire_due(&mut self) -> Result<(), Error> {
        let now_us = to_us(self.now_s());
        let mut submit = Vec::new();
        while let Some(Reverse((at, _, timer))) = self.timers.peek().copied() {
            if at > now_us {
                break;
            }
            self.timers.pop();
            let now_s = self.now_s();
            match timer {
                Timer::Arrival(t) => submit.extend(self.book.arrive(t, now_s).submit),
                Timer::Retry(t) => submit.extend(self.book.retry_due(t).then_some(t)),
                Timer::AgentEvent(i) => self.agent_event(i, now_s),
            }
        }
        self.submit(&submit).await
    }

    /// A workload event: `degrade` slows the agent's later attempts; `die` stops the agent,
    /// which deregisters, so the optimizer gives its tasks to others.
    fn agent_event(&mut self, i: usize, now_s: f64) {
        let Some(event) = self.workload.events.get(i) else {
            return;
        };
        let id = switchyard_sim::engine::agent_id(&event.agent.agent_type, event.agent.index);
        let Some(a) = self.book.agent_index(&id) else {
            return;
        };
        match event.kind {
            AgentEventKind::Degrade => {
                if let Some(factor) = self.fleet.factors.get(a) {
                    factor.multiply(event.speed_factor.unwrap_or(1.0));
                }
            }
            AgentEventKind::Die => {
                if let Some(stop) = self.fleet.stops.get(a) {
                    let _ = stop.send(true);
                }
                self.book.agent_died(a, now_s);
            }
        }
    }

    async fn on_event(&mut self, event: Result<ClientEvent, RecvError>) -> Result<(), Error> {
        let reply = match event {
            Ok(ClientEvent::Reply(envelope)) => envelope.payload,
            Ok(ClientEvent::Error(report)) => {
                let p = report.payload;
                return Err(Error::rejected(p.code, p.message));
            }
            Err(RecvError::Lagged(n)) => {
                let lost = format!("missed {n} replies from the optimizer; the run is unreliable");
                return Err(Error::new(ErrorKind::Timeout, lost));
            }
            Err(RecvError::Closed) => {
                return Err(Error::new(ErrorKind::Shutdown, "reply stream closed"));
            }
        };
        let effects = self.on_reply(reply);
        for &(t, at_s) in &effects.requeue {
            self.schedule(at_s, Timer::Retry(t));
        }
        self.submit(&effects.submit).await
    }

    fn on_reply(&mut self, reply: CoordinatorReply) -> Effects {
        let (Some(task_id), now_s) = (reply.task_id.as_deref(), self.now_s()) else {
            return Effects::default();
        };
        match reply.status {
            ReplyStatus::Granted => {
                self.book
                    .granted(task_id, reply.agent_id.as_deref().unwrap_or(""), now_s);
                Effects::default()
            }
            ReplyStatus::Completed => self.book.finished(task_id, true, now_s),
            ReplyStatus::Failed => self.book.finished(task_id, false, now_s),
            _ => Effects::default(),
        }
    }

    /// Submits the current attempt of each task, concurrently. Estimates go out in compressed
    /// seconds, so learned duration ratios and scores mean what they mean in the simulator.
    async fn submit(&self, tasks: &[usize]) -> Result<(), Error> {
        let submits = tasks.iter().filter_map(|&t| {
            let task = self.book.stream().get(t)?;
            let kind = self.workload.tasks.types.get(task.type_index)?;
            let mut submit = TaskSubmit::new(task_id(t, self.book.attempt(t)))
                .task_type(kind.name.clone())
                .priority(task.priority)
                .estimated_duration(task.estimated_s / self.scale)
                .tenant(task.tenant.clone());
            submit.required_resources = task.required.to_units();
            Some(self.orch.submit_task(submit))
        });
        for result in join_all(submits).await {
            result?;
        }
        Ok(())
    }
}
