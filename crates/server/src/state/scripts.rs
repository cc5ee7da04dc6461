//! The Lua scripts, one per state transition, compiled into the binary. Each is loaded with
//! `lua/lib.lua` in front of it (the Redis clock, the fleet log, field helpers), so the helpers
//! are written once, and in front of that the resource kinds, so no script spells one.

use redis::Script;
use switchyard_decision::ResourceKind;

/// Helpers every script may call.
const LIB: &str = include_str!("lua/lib.lua");

/// `local KINDS = {'cpu', 'memory', 'tokens', 'time'}`: the resource kinds in wire order, from
/// [`ResourceKind::ALL`], which is also the order in which the Rust side passes amounts.
fn kinds_prelude() -> String {
    let names: Vec<String> = ResourceKind::ALL
        .iter()
        .map(|kind| format!("'{}'", kind.as_str()))
        .collect();
    format!("local KINDS = {{{}}}\n", names.join(", "))
}

/// `local LEARNED_FIELDS = {'pace_n', ...}` and `local LEARNED_SUFFIX = '|learned'`: the agent
/// hash fields of what is learned per agent ([`super::rows::LEARNED_FIELDS`]) and the suffix of
/// their fleet-log field ([`super::rows::LEARNED_SUFFIX`]), so the scripts spell neither.
fn learned_prelude() -> String {
    let names: Vec<String> = super::rows::LEARNED_FIELDS
        .iter()
        .map(|name| format!("'{name}'"))
        .collect();
    format!(
        "local LEARNED_FIELDS = {{{}}}\nlocal LEARNED_SUFFIX = '{}'\n",
        names.join(", "),
        super::rows::LEARNED_SUFFIX
    )
}

/// How long a timeline bucket is kept after its first count, seconds: about an hour of history
/// (`story::TIMELINE_MAX_S` of it is read).
const TIMELINE_TTL_S: u64 = 3_900;

/// The story and timeline constants lib.lua's `story_append` and `timeline_add` read: how many
/// entries a task's story keeps (`redis.story_max_entries`), how long a timeline bucket lives and
/// the latency bucket bounds (ms), from the Rust constants the reads use, so both sides agree.
fn story_prelude(story_keep: usize) -> String {
    let bounds: Vec<String> = switchyard_protocol::LATENCY_BOUNDS_MS
        .iter()
        .map(u64::to_string)
        .collect();
    format!(
        "local STORY_KEEP = {}\nlocal TIMELINE_TTL_S = {}\nlocal LATENCY_BOUNDS_MS = {{{}}}\n",
        story_keep.max(1),
        TIMELINE_TTL_S,
        bounds.join(", ")
    )
}

/// A transition script with the kinds and the shared helpers in front of it.
fn with_lib(body: &str, story_keep: usize) -> Script {
    Script::new(&format!(
        "{}{}{}{LIB}\n{body}",
        kinds_prelude(),
        learned_prelude(),
        story_prelude(story_keep)
    ))
}

/// Every transition script, hashed once at start-up.
pub(crate) struct Scripts {
    pub register_agent: Script,
    pub deregister_agent: Script,
    pub submit_task: Script,
    pub grant_tasks: Script,
    pub complete_tasks: Script,
    pub resolve_dependency: Script,
    pub requeue_task: Script,
    pub record_heartbeats: Script,
    pub expire_agent: Script,
    pub begin_handoff: Script,
    pub resolve_handoff: Script,
    pub grow_reservation: Script,
    pub index_capacities: Script,
    pub cancel_task: Script,
    pub enforce_deadline: Script,
    pub promote_retries: Script,
    pub hold_head: Script,
    pub define_budgets: Script,
    pub take_sync_lease: Script,
}

impl Scripts {
    /// `story_keep`: the entries a task's story keeps (`redis.story_max_entries`).
    pub(crate) fn new(story_keep: usize) -> Self {
        let with_lib = |body: &str| with_lib(body, story_keep);
        Scripts {
            register_agent: with_lib(include_str!("lua/register_agent.lua")),
            deregister_agent: with_lib(include_str!("lua/deregister_agent.lua")),
            submit_task: with_lib(include_str!("lua/submit_task.lua")),
            grant_tasks: with_lib(include_str!("lua/grant_tasks.lua")),
            complete_tasks: with_lib(include_str!("lua/complete_tasks.lua")),
            resolve_dependency: with_lib(include_str!("lua/resolve_dependency.lua")),
            requeue_task: with_lib(include_str!("lua/requeue_task.lua")),
            record_heartbeats: with_lib(include_str!("lua/record_heartbeats.lua")),
            expire_agent: with_lib(include_str!("lua/expire_agent.lua")),
            begin_handoff: with_lib(include_str!("lua/begin_handoff.lua")),
            resolve_handoff: with_lib(include_str!("lua/resolve_handoff.lua")),
            grow_reservation: with_lib(include_str!("lua/grow_reservation.lua")),
            index_capacities: with_lib(include_str!("lua/index_capacities.lua")),
            cancel_task: with_lib(include_str!("lua/cancel_task.lua")),
            enforce_deadline: with_lib(include_str!("lua/enforce_deadline.lua")),
            promote_retries: with_lib(include_str!("lua/promote_retries.lua")),
            hold_head: with_lib(include_str!("lua/hold_head.lua")),
            define_budgets: with_lib(include_str!("lua/define_budgets.lua")),
            take_sync_lease: with_lib(include_str!("lua/take_sync_lease.lua")),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 19] {
        [
            &self.register_agent,
            &self.deregister_agent,
            &self.submit_task,
            &self.grant_tasks,
            &self.complete_tasks,
            &self.resolve_dependency,
            &self.requeue_task,
            &self.record_heartbeats,
            &self.expire_agent,
            &self.begin_handoff,
            &self.resolve_handoff,
            &self.grow_reservation,
            &self.index_capacities,
            &self.cancel_task,
            &self.enforce_deadline,
            &self.promote_retries,
            &self.hold_head,
            &self.define_budgets,
            &self.take_sync_lease,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_get_every_resource_kind_and_spell_none() {
        let prelude = kinds_prelude();
        for kind in ResourceKind::ALL {
            assert!(
                prelude.contains(&format!("'{}'", kind.as_str())),
                "{prelude}"
            );
        }
        let bodies = [
            LIB,
            include_str!("lua/register_agent.lua"),
            include_str!("lua/submit_task.lua"),
            include_str!("lua/grant_tasks.lua"),
            include_str!("lua/complete_tasks.lua"),
            include_str!("lua/requeue_task.lua"),
            include_str!("lua/begin_handoff.lua"),
            include_str!("lua/resolve_handoff.lua"),
            include_str!("lua/grow_reservation.lua"),
            include_str!("lua/index_capacities.lua"),
            include_str!("lua/cancel_task.lua"),
            include_str!("lua/enforce_deadline.lua"),
            include_str!("lua/promote_retries.lua"),
            include_str!("lua/hold_head.lua"),
            include_str!("lua/define_budgets.lua"),
        ];
        for body in bodies {
            let code: Vec<&str> = body
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect();
            for name in super::super::rows::LEARNED_FIELDS {
                let quoted = format!("'{name}'");
                assert!(
                    !code.iter().any(|l| l.contains(&quoted)),
                    "a script spells the learned field {name}: name it through LEARNED_FIELDS"
                );
            }
            for kind in ResourceKind::ALL {
                let quoted = format!("'{}'", kind.as_str());
                let field = format!("_{}'", kind.as_str());
                assert!(
                    !code
                        .iter()
                        .any(|l| l.contains(&quoted) || l.contains(&field)),
                    "a script spells the kind {kind:?}: {}",
                    code.iter()
                        .find(|l| l.contains(&quoted) || l.contains(&field))
                        .unwrap_or(&"")
                );
            }
        }
    }
}
