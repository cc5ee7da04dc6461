//! Redis key names: the only place they are built. Every key a script touches is built here and
//! passed in through KEYS.

/// Builds keys under one prefix (default `switchyard`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// Hash: one agent's capacity, reservations, status, score, last heartbeat.
    pub fn agent(&self, agent_id: &str) -> String {
        format!("{}:agent:{agent_id}", self.prefix)
    }

    /// Set: task ids currently granted to the agent.
    pub fn agent_tasks(&self, agent_id: &str) -> String {
        format!("{}:agent:{agent_id}:tasks", self.prefix)
    }

    /// Set: ids of active agents.
    pub fn agents(&self) -> String {
        format!("{}:agents", self.prefix)
    }

    /// Hash: one task's state, requirements, owner, submitter.
    pub fn task(&self, task_id: &str) -> String {
        format!("{}:task:{task_id}", self.prefix)
    }

    /// Set: dependencies of the task that have not completed yet.
    pub fn unmet_dependencies(&self, task_id: &str) -> String {
        format!("{}:task:{task_id}:unmet", self.prefix)
    }

    /// Set: tasks waiting on this one.
    pub fn dependents(&self, task_id: &str) -> String {
        format!("{}:task:{task_id}:dependents", self.prefix)
    }

    /// Sorted set: the priority queue (lowest score first = highest priority, then FIFO).
    pub fn queue(&self) -> String {
        format!("{}:queue", self.prefix)
    }

    /// Sorted set: grants committed but not yet confirmed published (`task_id|grant_seq` by time).
    pub fn grant_outbox(&self) -> String {
        format!("{}:outbox", self.prefix)
    }

    /// Hash: learned statistics per (task type, agent type): `<task>|<agent>|<stat>` fields.
    pub fn patterns(&self) -> String {
        format!("{}:patterns", self.prefix)
    }

    /// String: which replica holds this interval's coordination-sync broadcast (expires).
    pub fn sync_lease(&self) -> String {
        format!("{}:sync_lease", self.prefix)
    }

    /// Hash: one handoff (task, from and to agents, grant number, status). Expires at the
    /// handoff's deadline while pending, and is kept a while after its verdict so a repeated
    /// message gets the same answer.
    pub fn handoff(&self, handoff_id: &str) -> String {
        format!("{}:handoff:{handoff_id}", self.prefix)
    }

    /// Hash: the answer to one resource request (by its message id), kept a while so a
    /// redelivered request is answered the same instead of growing the reservation again.
    pub fn resource_request(&self, message_id: &str) -> String {
        format!("{}:resource_request:{message_id}", self.prefix)
    }

    /// Stream: the fleet log. Every transition that changes an agent appends the agent's new view,
    /// so a replica keeps its fleet cache current by reading what changed since it last looked
    /// (state/fleet.rs) instead of reading every agent. Entries older than a minute are trimmed.
    pub fn fleet_log(&self) -> String {
        format!("{}:fleet_log", self.prefix)
    }

    /// Sorted set: active agents with a lease, scored by when the lease runs out (Redis clock,
    /// ms). Heartbeats move the score; the maintenance pass reads only what is past due.
    pub fn leases(&self) -> String {
        format!("{}:leases", self.prefix)
    }

    /// Hash: lifetime counters (submitted, granted, completed, failed, requeued).
    pub fn stats(&self) -> String {
        format!("{}:stats", self.prefix)
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
            k.task("a"),
            k.unmet_dependencies("a"),
            k.dependents("a"),
            k.queue(),
            k.grant_outbox(),
            k.stats(),
            k.patterns(),
            k.sync_lease(),
            k.handoff("a"),
            k.resource_request("a"),
            k.fleet_log(),
            k.leases(),
        ];
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        assert!(all.iter().all(|key| key.starts_with("sy:")));
    }
}
