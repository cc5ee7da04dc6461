//! The Lua scripts, one per state transition, compiled into the binary.

use redis::Script;

/// Every transition script, hashed once at start-up.
pub(crate) struct Scripts {
    pub register_agent: Script,
    pub deregister_agent: Script,
    pub submit_task: Script,
    pub grant_task: Script,
    pub complete_task: Script,
    pub resolve_dependency: Script,
    pub requeue_task: Script,
    pub record_heartbeat: Script,
    pub expire_agent: Script,
    pub begin_handoff: Script,
    pub resolve_handoff: Script,
    pub grow_reservation: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            register_agent: Script::new(include_str!("lua/register_agent.lua")),
            deregister_agent: Script::new(include_str!("lua/deregister_agent.lua")),
            submit_task: Script::new(include_str!("lua/submit_task.lua")),
            grant_task: Script::new(include_str!("lua/grant_task.lua")),
            complete_task: Script::new(include_str!("lua/complete_task.lua")),
            resolve_dependency: Script::new(include_str!("lua/resolve_dependency.lua")),
            requeue_task: Script::new(include_str!("lua/requeue_task.lua")),
            record_heartbeat: Script::new(include_str!("lua/record_heartbeat.lua")),
            expire_agent: Script::new(include_str!("lua/expire_agent.lua")),
            begin_handoff: Script::new(include_str!("lua/begin_handoff.lua")),
            resolve_handoff: Script::new(include_str!("lua/resolve_handoff.lua")),
            grow_reservation: Script::new(include_str!("lua/grow_reservation.lua")),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 12] {
        [
            &self.register_agent,
            &self.deregister_agent,
            &self.submit_task,
            &self.grant_task,
            &self.complete_task,
            &self.resolve_dependency,
            &self.requeue_task,
            &self.record_heartbeat,
            &self.expire_agent,
            &self.begin_handoff,
            &self.resolve_handoff,
            &self.grow_reservation,
        ]
    }
}
