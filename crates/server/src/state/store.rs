//! [`Store`]: typed calls to the transition scripts (the plain reads are in `reads.rs`).
//!
//! All calls take `&self` and clone the multiplexed [`Connection`] (a cheap handle, to a single
//! Redis or to a Redis Cluster), so a batch's calls issued concurrently share one connection and
//! are pipelined by the client: one network round trip for the whole batch instead of one per
//! event.

use redis::{Script, ScriptInvocation};

use super::connection::Connection;
use super::keys::Keys;
use super::records::*;
use super::scripts::Scripts;
use crate::config::{InfeasiblePolicy, RedisConfig};
use switchyard_client::error::{Error, ErrorKind};
use switchyard_decision::{ResourceKind, Resources};

/// Starting performance score of a new agent: neutral, so it is neither favoured nor starved.
pub use switchyard_decision::NEUTRAL_SCORE;

/// Handle to the shared state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Connection,
    keys: Keys,
    // Visible to the sibling modules that add transitions to `Store` (handoffs.rs).
    pub(super) scripts: std::sync::Arc<Scripts>,
    /// What a submit does with a task no active agent's capacity covers.
    infeasible: InfeasiblePolicy,
    /// The budgets this replica defines, by name (reported in status).
    pub(super) budget_names: std::sync::Arc<Vec<String>>,
}

impl Store {
    /// Connects with explicit timeouts and loads every script once (later calls use EVALSHA; on a
    /// cluster SCRIPT LOAD goes to every primary, and a node that lacks a script, e.g. a replica
    /// promoted since, is given it again on its first NOSCRIPT).
    pub async fn connect(config: &RedisConfig) -> Result<Store, Error> {
        let store = Store {
            conn: Connection::open(config).await?,
            keys: Keys::new(config.key_prefix.clone()),
            scripts: std::sync::Arc::new(Scripts::new(config.story_max_entries)),
            infeasible: InfeasiblePolicy::default(),
            budget_names: std::sync::Arc::default(),
        };
        // The first command: a Redis that wants a login, or a user without the permissions,
        // is told apart here from a Redis that is down. A short one (TIME, in the slot of the
        // keys): before a login Redis refuses a long argument (16 KB, as a script with its
        // helpers is) with a protocol error instead of NOAUTH.
        let login = |e: redis::RedisError| {
            super::connection::refused_login(config, &e).unwrap_or_else(|| e.into())
        };
        let _: Vec<String> = store
            .conn()
            .query_in_slot(&redis::cmd("TIME"), store.keys.slot_key())
            .await
            .map_err(login)?;
        for script in store.scripts.all() {
            script
                .prepare_invoke()
                .load_async(&mut store.conn())
                .await
                .map_err(login)?;
        }
        Ok(store)
    }

    pub(super) fn conn(&self) -> Connection {
        self.conn.clone()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The same store, refusing or holding infeasible submits as `policy` says (default: hold).
    pub fn with_infeasible_policy(mut self, policy: InfeasiblePolicy) -> Store {
        self.infeasible = policy;
        self
    }

    /// The same store, reporting these budgets (by name) in status.
    pub fn with_budgets(mut self, names: Vec<String>) -> Store {
        self.budget_names = std::sync::Arc::new(names);
        self
    }

    /// The capacity index keys, one per resource kind in wire order (see `Keys::capacity_index`).
    fn capacity_index_keys<'s>(&self, inv: &mut ScriptInvocation<'s>) {
        for kind in ResourceKind::ALL {
            inv.key(self.keys.capacity_index(kind.as_str()));
        }
    }

    pub async fn register_agent(
        &self,
        agent_id: &str,
        agent_type: &str,
        capacity: &Resources,
        priority_weight: f64,
        lease_ms: u64,
    ) -> Result<(), Error> {
        let mut inv = self.scripts.register_agent.prepare_invoke();
        inv.key(self.keys.agent(agent_id))
            .key(self.keys.agents())
            .key(self.keys.fleet_log())
            .key(self.keys.leases());
        self.capacity_index_keys(&mut inv);
        inv.arg(agent_id).arg(agent_type);
        for kind in ResourceKind::ALL {
            inv.arg(capacity.get(kind));
        }
        inv.arg(priority_weight).arg(NEUTRAL_SCORE).arg(lease_ms);
        let _: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The keys of a script by which an agent leaves the fleet (deregister_agent, expire_agent):
    /// its hash, the active set, its granted tasks, the fleet log and the leases.
    fn leaving_agent<'s>(&self, script: &'s Script, agent_id: &str) -> ScriptInvocation<'s> {
        let mut invocation = script.key(self.keys.agent(agent_id));
        invocation
            .key(self.keys.agents())
            .key(self.keys.agent_tasks(agent_id))
            .key(self.keys.fleet_log())
            .key(self.keys.leases());
        self.capacity_index_keys(&mut invocation);
        invocation.key(self.keys.departed_agents());
        invocation
    }

    pub async fn deregister_agent(&self, agent_id: &str) -> Result<DeregisterOutcome, Error> {
        let reply: Vec<String> = self
            .leaving_agent(&self.scripts.deregister_agent, agent_id)
            .arg(agent_id)
            .arg(DEPARTED_KEEP_MS)
            .arg(DEPARTED_MAX)
            .invoke_async(&mut self.conn())
            .await?;
        DeregisterOutcome::parse(&reply)
    }

    pub async fn submit_task(
        &self,
        req: &SubmitRequest,
        retention_s: u64,
    ) -> Result<SubmitOutcome, Error> {
        let k = &self.keys;
        let mut inv = self.scripts.submit_task.prepare_invoke();
        inv.key(k.task(&req.task_id))
            .key(k.unmet_dependencies(&req.task_id))
            .key(k.queue())
            .key(k.stats());
        for dep in &req.dependencies {
            inv.key(k.task(dep)).key(k.dependents(dep));
        }
        inv.key(k.waiting()).key(k.agents());
        self.capacity_index_keys(&mut inv);
        inv.arg(&req.task_id)
            .arg(&req.message_id)
            .arg(&req.submitter)
            .arg(&req.task_type)
            .arg(req.priority);
        for kind in ResourceKind::ALL {
            inv.arg(req.required.get(kind));
        }
        inv.arg(req.estimated_duration_s)
            .arg(retention_s)
            .arg(req.dependencies.len());
        for dep in &req.dependencies {
            inv.arg(dep);
        }
        inv.arg(req.strategy.as_deref().unwrap_or(""))
            .arg(if req.explain { "1" } else { "0" })
            .arg(switchyard_protocol::now_ms())
            .arg(req.replies.as_str())
            .arg(self.infeasible.as_str())
            .arg(req.options.len());
        inv.key(k.queue_deadlines())
            .key(k.tenants())
            .key(k.story(&req.task_id))
            .key(k.timeline_now(switchyard_protocol::now_ms()));
        for (field, value) in &req.options {
            inv.arg(*field).arg(value);
        }
        let reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        SubmitOutcome::parse(&reply)
    }

    /// Tries the candidates in order; see `lua/grant_tasks.lua`. One task: a batch of one.
    pub async fn grant_task(
        &self,
        task_id: &str,
        candidates: &[String],
    ) -> Result<GrantOutcome, Error> {
        let batch = [GrantRequest {
            task_id,
            candidates,
            budgets: &[],
            why: "",
            explores: "",
        }];
        let outcomes = self.grant_tasks(&batch).await?;
        only_outcome(outcomes, "grant_tasks")
    }

    /// One dispatch round's grants in one script call, in the order given; see
    /// `lua/grant_tasks.lua`. Returns one outcome per request.
    pub async fn grant_tasks(
        &self,
        requests: &[GrantRequest<'_>],
    ) -> Result<Vec<GrantOutcome>, Error> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let k = &self.keys;
        let (agents, numbers) = number_agents(
            requests
                .iter()
                .flat_map(|r| r.candidates.iter().map(String::as_str)),
        );
        let mut inv = self.scripts.grant_tasks.prepare_invoke();
        inv.key(k.queue())
            .key(k.grant_outbox())
            .key(k.stats())
            .key(k.fleet_log());
        for request in requests {
            inv.key(k.task(request.task_id));
        }
        for agent in &agents {
            inv.key(k.agent(agent)).key(k.agent_tasks(agent));
        }
        inv.key(k.run_deadlines());
        inv.key(k.tenants())
            .key(k.head_hold())
            .key(k.timeline_now(switchyard_protocol::now_ms()));
        for request in requests {
            inv.key(k.story(request.task_id));
        }
        inv.key(k.patterns());
        let names: std::collections::BTreeSet<&str> = requests
            .iter()
            .flat_map(|r| r.budgets.iter().map(|(name, _)| name.as_str()))
            .collect();
        for name in names {
            inv.key(k.budget(name));
        }
        inv.arg(requests.len()).arg(agents.len());
        for agent in &agents {
            inv.arg(*agent);
        }
        for request in requests {
            inv.arg(request.task_id).arg(request.candidates.len());
            for agent in request.candidates {
                inv.arg(numbers.get(agent.as_str()).copied().unwrap_or(0));
            }
            inv.arg(request.why).arg(request.explores);
        }
        let reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        let outcomes: Vec<GrantOutcome> = reply
            .chunks(3)
            .map(GrantOutcome::parse)
            .collect::<Result<_, _>>()?;
        one_each(outcomes, requests.len(), "grant_tasks")
    }

    /// One completion: a batch of one; see [`Store::complete_tasks`].
    pub async fn complete_task(
        &self,
        report: &Completion<'_>,
        learning_rate: f64,
        retention_s: u64,
    ) -> Result<CompleteOutcome, Error> {
        let batch = self
            .complete_tasks(std::slice::from_ref(report), learning_rate, retention_s)
            .await?;
        only_outcome(batch.outcomes, "complete_tasks")
    }

    /// A batch of completions in one script call, applied in order; see
    /// `lua/complete_tasks.lua`. Returns one outcome per report, and the agents' pace changes
    /// the batch revealed.
    pub async fn complete_tasks(
        &self,
        reports: &[Completion<'_>],
        learning_rate: f64,
        retention_s: u64,
    ) -> Result<CompletedBatch, Error> {
        if reports.is_empty() {
            return Ok(CompletedBatch::default());
        }
        let k = &self.keys;
        let (agents, numbers) = number_agents(reports.iter().map(|r| r.agent_id));
        let ids: Vec<&str> = reports.iter().map(|r| r.task_id).collect();
        let budget_keys = self.task_budget_keys(&ids).await?;
        let mut inv = self.scripts.complete_tasks.prepare_invoke();
        inv.key(k.stats())
            .key(k.grant_outbox())
            .key(k.patterns())
            .key(k.fleet_log());
        for report in reports {
            inv.key(k.task(report.task_id))
                .key(k.dependents(report.task_id));
        }
        for agent in &agents {
            inv.key(k.agent(agent)).key(k.agent_tasks(agent));
        }
        inv.key(k.retries())
            .key(k.timeline_now(switchyard_protocol::now_ms()));
        for report in reports {
            inv.key(k.story(report.task_id));
        }
        inv.arg(reports.len())
            .arg(agents.len())
            .arg(learning_rate)
            .arg(retention_s)
            .arg(switchyard_protocol::now_ms());
        for agent in &agents {
            inv.arg(*agent);
        }
        for report in reports {
            inv.arg(report.task_id)
                .arg(numbers.get(report.agent_id).copied().unwrap_or(0))
                .arg(if report.success { 1 } else { 0 })
                .arg(report.execution_time_s)
                .arg(report.grant_seq.unwrap_or(0));
        }
        for key in budget_keys {
            inv.key(key);
        }
        usage_args(&mut inv, reports);
        let reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        let mut items = split_counted(&reply)?;
        // The script's last item counts the drifts it detected.
        let drifts = match items.last().map(Vec::as_slice) {
            Some([tag, count]) if tag == "drifts_detected" => count.parse().unwrap_or(0),
            _ => return Err(unexpected("complete_tasks", &reply)),
        };
        items.pop();
        let outcomes: Vec<CompleteOutcome> = items
            .iter()
            .map(|item| CompleteOutcome::parse(item))
            .collect::<Result<_, _>>()?;
        Ok(CompletedBatch {
            outcomes: one_each(outcomes, reports.len(), "complete_tasks")?,
            drifts,
        })
    }

    pub async fn resolve_dependency(
        &self,
        task_id: &str,
        dependency_id: &str,
        dependency_succeeded: bool,
        retention_s: u64,
    ) -> Result<ResolveOutcome, Error> {
        let outcome = if dependency_succeeded {
            DependencyOutcome::Completed
        } else {
            DependencyOutcome::Failed
        };
        self.resolve_dependency_as(task_id, dependency_id, outcome, retention_s)
            .await
    }

    /// A dependency of a waiting task ended with `outcome`; see `lua/resolve_dependency.lua`.
    pub async fn resolve_dependency_as(
        &self,
        task_id: &str,
        dependency_id: &str,
        outcome: DependencyOutcome,
        retention_s: u64,
    ) -> Result<ResolveOutcome, Error> {
        let k = &self.keys;
        let reply: Vec<String> = self
            .scripts
            .resolve_dependency
            .key(k.task(task_id))
            .key(k.unmet_dependencies(task_id))
            .key(k.queue())
            .key(k.stats())
            .key(k.dependents(task_id))
            .key(k.waiting())
            .key(k.story(task_id))
            .arg(task_id)
            .arg(dependency_id)
            .arg(outcome.as_str())
            .arg(retention_s)
            .invoke_async(&mut self.conn())
            .await?;
        ResolveOutcome::parse(&reply)
    }

    /// Takes a granted task back from an agent that left or died; one whose cancel was
    /// requested is cancelled instead (kept for `retention_s`). See `lua/requeue_task.lua`.
    pub async fn requeue_task(
        &self,
        task_id: &str,
        agent_id: &str,
        retention_s: u64,
    ) -> Result<RequeueOutcome, Error> {
        let k = &self.keys;
        let mut inv = self.scripts.requeue_task.prepare_invoke();
        inv.key(k.task(task_id))
            .key(k.agent(agent_id))
            .key(k.agent_tasks(agent_id))
            .key(k.queue())
            .key(k.stats())
            .key(k.grant_outbox())
            .key(k.fleet_log())
            .key(k.queue_deadlines())
            .key(k.story(task_id));
        for key in self.task_budget_keys(&[task_id]).await? {
            inv.key(key);
        }
        let reply: Vec<String> = inv
            .arg(task_id)
            .arg(agent_id)
            .arg(retention_s)
            .invoke_async(&mut self.conn())
            .await?;
        RequeueOutcome::parse(&reply)
    }

    /// A TASK_CANCEL from `canceller` (`operator`: it came on the operators' subject); see
    /// `lua/cancel_task.lua`.
    pub async fn cancel_task(
        &self,
        task_id: &str,
        canceller: &str,
        operator: bool,
        reason: &str,
        retention_s: u64,
    ) -> Result<CancelOutcome, Error> {
        let k = &self.keys;
        let reply: Vec<String> = self
            .scripts
            .cancel_task
            .key(k.task(task_id))
            .key(k.unmet_dependencies(task_id))
            .key(k.queue())
            .key(k.stats())
            .key(k.dependents(task_id))
            .key(k.cancel_outbox())
            .key(k.waiting())
            .key(k.retries())
            .key(k.story(task_id))
            .arg(task_id)
            .arg(canceller)
            .arg(if operator { "1" } else { "0" })
            .arg(reason)
            .arg(retention_s)
            .arg(switchyard_protocol::now_ms())
            .invoke_async(&mut self.conn())
            .await?;
        CancelOutcome::parse(&reply)
    }

    /// Renews the leases of a batch of agents in one script call; one outcome per agent, in
    /// order. See `lua/record_heartbeats.lua`.
    pub async fn record_heartbeats(
        &self,
        agent_ids: &[&str],
    ) -> Result<Vec<HeartbeatOutcome>, Error> {
        if agent_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.record_heartbeats.prepare_invoke();
        inv.key(self.keys.leases());
        for agent in agent_ids {
            inv.key(self.keys.agent(agent));
        }
        inv.arg(agent_ids.len());
        for agent in agent_ids {
            inv.arg(*agent);
        }
        let reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        let outcomes = reply
            .chunks(3)
            .map(HeartbeatOutcome::parse)
            .collect::<Result<_, _>>()?;
        one_each(outcomes, agent_ids.len(), "record_heartbeats")
    }

    /// One agent's heartbeat: a batch of one.
    pub async fn record_heartbeat(&self, agent_id: &str) -> Result<HeartbeatOutcome, Error> {
        let outcomes = self.record_heartbeats(&[agent_id]).await?;
        only_outcome(outcomes, "record_heartbeats")
    }

    /// Marks the agent dead if its lease ran out (Redis clock), counting the lease from no
    /// earlier than `listening_since_ms` (when the caller began receiving heartbeats, Redis
    /// clock; 0 = always); see `lua/expire_agent.lua`.
    pub async fn expire_agent(
        &self,
        agent_id: &str,
        listening_since_ms: u64,
    ) -> Result<ExpireOutcome, Error> {
        let reply: Vec<String> = self
            .leaving_agent(&self.scripts.expire_agent, agent_id)
            .arg(agent_id)
            .arg(listening_since_ms)
            .arg(DEPARTED_KEEP_MS)
            .arg(DEPARTED_MAX)
            .invoke_async(&mut self.conn())
            .await?;
        ExpireOutcome::parse(&reply)
    }
}

/// How long a dead or deregistered agent stays in the departed-agents index (a day), and how
/// many it holds at most: the dashboard's view of the fleet's recent losses stays bounded.
pub(crate) const DEPARTED_KEEP_MS: u64 = 24 * 3600 * 1000;
pub(crate) const DEPARTED_MAX: u64 = 1000;

/// A batch script's outcomes, checked to be one per item: a short reply would otherwise leave
/// items unanswered without a word.
/// What one `complete_tasks` call did.
#[derive(Debug, Default)]
pub struct CompletedBatch {
    /// One per report, in order.
    pub outcomes: Vec<CompleteOutcome>,
    /// Changes in agents' pace detected (`AgentLearning::drifts` incremented), for the metric.
    pub drifts: u64,
}

fn one_each<T>(outcomes: Vec<T>, items: usize, script: &str) -> Result<Vec<T>, Error> {
    if outcomes.len() == items {
        Ok(outcomes)
    } else {
        Err(Error::new(
            ErrorKind::Unexpected,
            format!(
                "{script} returned {} outcomes for {items} items",
                outcomes.len()
            ),
        ))
    }
}

/// The one outcome of a batch script called with one item (checked by `one_each`).
fn only_outcome<T>(mut outcomes: Vec<T>, script: &str) -> Result<T, Error> {
    outcomes.pop().ok_or_else(|| {
        Error::new(
            ErrorKind::Unexpected,
            format!("{script} returned no outcome"),
        )
    })
}

/// Numbers agents once each (1-based, as the batch scripts count), in first-seen order.
/// complete_tasks' usage arguments, after the reports: the number u of (report, unit, amount)
/// entries, then the entries.
fn usage_args(inv: &mut ScriptInvocation<'_>, reports: &[Completion<'_>]) {
    let entries: Vec<(usize, &str, u64)> = reports
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.usage
                .into_iter()
                .flatten()
                .map(move |(unit, n)| (i + 1, unit.as_str(), *n))
        })
        .collect();
    inv.arg(entries.len());
    for (i, unit, amount) in entries {
        inv.arg(i).arg(unit).arg(amount);
    }
}

fn number_agents<'a>(
    ids: impl Iterator<Item = &'a str>,
) -> (Vec<&'a str>, std::collections::HashMap<&'a str, usize>) {
    let mut agents = Vec::new();
    let mut numbers = std::collections::HashMap::new();
    for id in ids {
        numbers.entry(id).or_insert_with(|| {
            agents.push(id);
            agents.len()
        });
    }
    (agents, numbers)
}

/// Splits a batch script's reply of `outcome, k, k fields` groups into one `[outcome,
/// fields...]` list per item, the shape the single-transition parsers take.
fn split_counted(reply: &[String]) -> Result<Vec<Vec<String>>, Error> {
    let mut items = Vec::new();
    let mut rest = reply;
    while let [outcome, count, tail @ ..] = rest {
        let count: usize = count
            .parse()
            .map_err(|_| Error::new(ErrorKind::Unexpected, "a batch reply lost its field count"))?;
        if tail.len() < count {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "a batch reply is cut short",
            ));
        }
        let (fields, next) = tail.split_at(count);
        let mut item = Vec::with_capacity(count + 1);
        item.push(outcome.clone());
        item.extend_from_slice(fields);
        items.push(item);
        rest = next;
    }
    if !rest.is_empty() {
        return Err(Error::new(
            ErrorKind::Unexpected,
            "a batch reply ends half way",
        ));
    }
    Ok(items)
}
