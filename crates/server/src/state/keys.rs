//! Redis key names: the only place they are built. Every key a script touches is built here and
//! passed in through KEYS.
//!
//! Every key starts with the prefix in braces, `{switchyard}:task:<id>`: a Redis Cluster hash tag.
//! A cluster places a key by the part in braces alone, so all the keys of one deployment hash to
//! one slot. They must: a transition script touches several keys at once (the task, the queue,
//! the agents it may go to, the stats, the fleet log...), and a cluster refuses a script whose
//! keys are in different slots (CROSSSLOT), as it refuses a pipeline spread over several nodes.
//!
//! The price is that one deployment lives on one shard: a cluster gives it failover, but not
//! more memory or throughput than one Redis node has; the other shards stay idle for it.
//! Fleets that do not share agents or tasks can each take their own prefix (`redis.key_prefix`),
//! so their own slot, and so spread over the shards. On a single Redis the braces change nothing
//! but the names.

/// Builds keys under one prefix (default `switchyard`), written as the hash tag `{prefix}`.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The prefix already in braces: `{switchyard}`.
    tag: String,
}

impl Keys {
    pub fn new(prefix: impl AsRef<str>) -> Self {
        Keys {
            tag: format!("{{{}}}", prefix.as_ref()),
        }
    }

    /// The hash tag `{prefix}` itself, a name in the deployment's slot: keyless commands (TIME)
    /// are sent to the node that serves it, so they read the clock the scripts read.
    pub fn slot_key(&self) -> &str {
        &self.tag
    }

    /// Hash: one agent's capacity, reservations, status, score, last heartbeat.
    pub fn agent(&self, agent_id: &str) -> String {
        format!("{}:agent:{agent_id}", self.tag)
    }

    /// Set: task ids currently granted to the agent.
    pub fn agent_tasks(&self, agent_id: &str) -> String {
        format!("{}:agent:{agent_id}:tasks", self.tag)
    }

    /// Set: ids of active agents.
    pub fn agents(&self) -> String {
        format!("{}:agents", self.tag)
    }

    /// Sorted set: agents that died or deregistered, by when they left (Redis clock, ms), so the
    /// dashboard lists them after they leave the active set. Bounded by the scripts that write
    /// it: a day at most, the newest 1000 at most.
    pub fn departed_agents(&self) -> String {
        format!("{}:departed_agents", self.tag)
    }

    /// Hash: one task's state, requirements, owner, submitter.
    pub fn task(&self, task_id: &str) -> String {
        format!("{}:task:{task_id}", self.tag)
    }

    /// Set: dependencies of the task that have not completed yet.
    pub fn unmet_dependencies(&self, task_id: &str) -> String {
        format!("{}:task:{task_id}:unmet", self.tag)
    }

    /// Set: tasks waiting on this one.
    pub fn dependents(&self, task_id: &str) -> String {
        format!("{}:task:{task_id}:dependents", self.tag)
    }

    /// Sorted set: the priority queue (lowest score first = highest priority, then FIFO).
    pub fn queue(&self) -> String {
        format!("{}:queue", self.tag)
    }

    /// Sorted set: grants committed but not yet confirmed published (`task_id|grant_seq` by time).
    pub fn grant_outbox(&self) -> String {
        format!("{}:outbox", self.tag)
    }

    /// Sorted set: cancel notices for granted tasks whose agents have not confirmed yet
    /// (`task_id|grant_seq`, scored by when the notice is next due; Redis clock, ms). Entries
    /// of tasks that have since finished are dropped by the resend pass.
    pub fn cancel_outbox(&self) -> String {
        format!("{}:cancel_outbox", self.tag)
    }

    /// Hash: learned statistics per (task type, agent type): `<task>|<agent>|<stat>` fields.
    pub fn patterns(&self) -> String {
        format!("{}:patterns", self.tag)
    }

    /// String: which replica holds the coordination-sync lease (broadcast and global gauges;
    /// renewed by its holder, expires).
    pub fn sync_lease(&self) -> String {
        format!("{}:sync_lease", self.tag)
    }

    /// Hash: one handoff (task, from and to agents, grant number, status). Expires at the
    /// handoff's deadline while pending, and is kept a while after its verdict so a repeated
    /// message gets the same answer.
    pub fn handoff(&self, handoff_id: &str) -> String {
        format!("{}:handoff:{handoff_id}", self.tag)
    }

    /// Hash: the answer to one resource request (by its message id), kept a while so a
    /// redelivered request is answered the same instead of growing the reservation again.
    pub fn resource_request(&self, message_id: &str) -> String {
        format!("{}:resource_request:{message_id}", self.tag)
    }

    /// Stream: the fleet log. Every transition that changes an agent appends the agent's new view
    /// (completions and registrations also its learned values, state/fleet.rs), so a replica keeps its fleet cache current by reading what changed since it last looked
    /// (state/fleet.rs) instead of reading every agent. Entries older than a minute are trimmed.
    pub fn fleet_log(&self) -> String {
        format!("{}:fleet_log", self.tag)
    }

    /// Sorted set: active agents with a lease, scored by when the lease runs out (Redis clock,
    /// ms). Heartbeats move the score; the maintenance pass reads only what is past due.
    pub fn leases(&self) -> String {
        format!("{}:leases", self.tag)
    }

    /// Sorted set: active agents by their capacity of one resource kind (milli-units), so the
    /// largest capacity of each kind is one read: what a submit is checked against under
    /// `coordination.infeasible = "refuse"`. Kept by register, deregister and expire.
    pub fn capacity_index(&self, kind: &str) -> String {
        format!("{}:capacity:{kind}", self.tag)
    }

    /// Sorted set: tasks waiting on dependencies, scored like the queue (priority, then FIFO):
    /// counted in status, and listed there with what each waits on.
    pub fn waiting(&self) -> String {
        format!("{}:waiting", self.tag)
    }

    /// Sorted set: queue deadlines (`queue_timeout_s`) of waiting and queued tasks, as
    /// `task_id|grant_seq` (the grants the task had when it began this wait, so a deadline ends
    /// with the wait it was for) scored by the deadline (Redis clock, ms). Entries of tasks
    /// granted or finished since are dropped when they come due.
    pub fn queue_deadlines(&self) -> String {
        format!("{}:deadlines:queue", self.tag)
    }

    /// Sorted set: run deadlines (`run_timeout_s`) of granted tasks, as `task_id|attempt`
    /// scored by the deadline (Redis clock, ms). A handoff keeps the attempt's deadline; a
    /// re-grant of the same attempt (its agent died) starts it again.
    pub fn run_deadlines(&self) -> String {
        format!("{}:deadlines:run", self.tag)
    }

    /// Sorted set: retried tasks waiting out their back-off, scored by when they may run again
    /// (Redis clock, ms); the resend pass moves the due ones into the priority queue.
    pub fn retries(&self) -> String {
        format!("{}:retries", self.tag)
    }

    /// Hash: fairness between tenants: the global virtual time `vtime` and, per tenant,
    /// `<tenant>|finish` (its last virtual finish), `<tenant>|submitted`, `<tenant>|granted`.
    /// One hash for every tenant, so the submit and grant scripts take one key whatever the
    /// tenant (tenant ids cannot contain `|`).
    pub fn tenants(&self) -> String {
        format!("{}:tenants", self.tag)
    }

    /// Hash: the head hold (task, agent, until, req_<kind>): the agent kept for the task at the
    /// head of the queue (lua/hold_head.lua). One per deployment; expires by its `until` field.
    pub fn head_hold(&self) -> String {
        format!("{}:head_hold", self.tag)
    }

    /// Hash: one shared budget: its definition as the replicas wrote it (`kind`, `limit`,
    /// `period_ms`, `burst`, `unit`; `define_budgets.lua`) and its state (rate: the scaled
    /// `level` and the time `at` it was computed; concurrency: `held`). The name is the key's
    /// last part: lib.lua's `budget_keys` reads it back from there.
    pub fn budget(&self, name: &str) -> String {
        format!("{}:budget:{name}", self.tag)
    }

    /// List: one task's story, a compact JSON entry per transition (lib.lua `story_append`,
    /// state/story.rs): the newest `redis.story_max_entries`, expiring with the task record
    /// (`task_retention_s`) once the task has ended.
    pub fn story(&self, task_id: &str) -> String {
        format!("{}:story:{task_id}", self.tag)
    }

    /// Hash: one 10-second bucket of the dashboard timeline, named by the bucket's start
    /// (Unix seconds, a multiple of 10): counts of submitted, granted, completed and failed
    /// tasks and request-to-grant latency buckets (lib.lua `timeline_add`); expires after about
    /// an hour.
    pub fn timeline(&self, bucket_start_s: u64) -> String {
        format!("{}:timeline:{bucket_start_s}", self.tag)
    }

    /// The timeline bucket of a moment (Unix ms, the replica's clock).
    pub fn timeline_now(&self, now_ms: u64) -> String {
        self.timeline(switchyard_protocol::timeline_bucket_start_s(now_ms))
    }

    /// Hash: lifetime counters (submitted, granted, completed, failed, cancelled, requeued,
    /// timed_out, retried).
    pub fn stats(&self) -> String {
        format!("{}:stats", self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_prefix_and_do_not_collide() {
        let k = Keys::new("sy");
        let all = [
            k.agent("a"),
            k.agent_tasks("a"),
            k.agents(),
            k.departed_agents(),
            k.task("a"),
            k.unmet_dependencies("a"),
            k.dependents("a"),
            k.queue(),
            k.grant_outbox(),
            k.cancel_outbox(),
            k.stats(),
            k.patterns(),
            k.sync_lease(),
            k.handoff("a"),
            k.resource_request("a"),
            k.fleet_log(),
            k.leases(),
            k.capacity_index("cpu"),
            k.waiting(),
            k.queue_deadlines(),
            k.run_deadlines(),
            k.retries(),
            k.tenants(),
            k.head_hold(),
            k.budget("a"),
            k.story("a"),
            k.timeline(10),
        ];
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        assert!(all.iter().all(|key| key.starts_with("{sy}:")));
    }

    /// The slot Redis Cluster computes (CRC16 of the hash tag) is the same for every key, or a
    /// script touching several of them would be refused with CROSSSLOT.
    #[test]
    fn every_key_is_in_the_slot_of_the_hash_tag() {
        use redis::cluster_routing::Slot;
        let k = Keys::new("switchyard");
        let home = Slot::for_key(k.slot_key());
        for key in [
            k.task("x"),
            k.agent("y"),
            k.queue(),
            k.fleet_log(),
            k.stats(),
            k.capacity_index("cpu"),
            k.waiting(),
            k.queue_deadlines(),
            k.run_deadlines(),
            k.retries(),
            k.tenants(),
            k.head_hold(),
            k.budget("openai-tpm"),
            k.story("x"),
            k.timeline(1_700_000_000),
        ] {
            assert_eq!(Slot::for_key(&key), home, "{key}");
        }
        assert_eq!(k.task("t1"), "{switchyard}:task:t1");
    }
}
