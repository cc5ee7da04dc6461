//! [`FleetCache`]: a replica's copy of the active agents' views, kept current by reading the fleet
//! log (what changed since the last read) instead of every agent's hash, so a dispatch round costs
//! one Redis command whatever the fleet's size.
//!
//! The copy is only a hint, in the way Omega's cell state is: a stale view may propose an agent
//! that has filled up meanwhile, and `grant_tasks` re-checks every capacity atomically, so a
//! stale cache costs a retry, never an over-reservation. Every transition that changes an agent
//! appends the agent's whole new view to the log (`lua/lib.lua`), so applying the entries in
//! order always converges on Redis's state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::Store;
use switchyard_client::error::Error;
use switchyard_decision::{AgentView, Resources};

/// Log entries are trimmed after a minute (`FLEET_LOG_KEEP_MS` in lib.lua); a cache that has not
/// read the log for half that reloads the whole fleet rather than risk missing a trimmed entry.
const MAX_READ_GAP: Duration = Duration::from_secs(30);

/// Entries read per XRANGE call.
const LOG_PAGE: usize = 4096;

/// The active agents as this replica last read them.
#[derive(Default)]
pub struct FleetCache {
    views: Vec<AgentView>,
    index: HashMap<Arc<str>, usize>,
    /// Id of the last log entry applied.
    last_entry: Option<String>,
    read_at: Option<Instant>,
}

/// What one refresh did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refresh {
    /// The whole fleet was read (first use, or the log was not read for too long).
    pub full: bool,
    /// Log entries applied.
    pub entries: usize,
}

impl FleetCache {
    pub fn new() -> FleetCache {
        FleetCache::default()
    }

    /// The active agents' views, in no particular order.
    pub fn agents(&self) -> &[AgentView] {
        &self.views
    }

    /// Brings the cache up to date: the log entries since the last read, or the whole fleet when
    /// the cache is new or has not been read for too long.
    pub async fn refresh(&mut self, store: &Store) -> Result<Refresh, Error> {
        let stale = self.read_at.is_none_or(|at| at.elapsed() > MAX_READ_GAP);
        let mut refresh = Refresh::default();
        if stale || self.last_entry.is_none() {
            self.reload(store).await?;
            refresh.full = true;
        }
        loop {
            let after = self.last_entry.clone().unwrap_or_else(|| "0-0".into());
            let entries = store.fleet_log_after(&after, LOG_PAGE).await?;
            let count = entries.len();
            for (id, fields) in entries {
                self.apply_entry(&fields);
                self.last_entry = Some(id);
            }
            refresh.entries += count;
            if count < LOG_PAGE {
                break;
            }
        }
        self.read_at = Some(Instant::now());
        Ok(refresh)
    }

    /// Reads every active agent. The log position is taken first, so a change made while the
    /// agents are read is applied again from the log afterwards (views are whole, so applying
    /// one twice is harmless).
    async fn reload(&mut self, store: &Store) -> Result<(), Error> {
        let position = store.fleet_log_position().await?;
        let snapshot = store.agent_snapshot().await?;
        self.views.clear();
        self.index.clear();
        for view in snapshot {
            self.upsert(view);
        }
        self.last_entry = Some(position);
        Ok(())
    }

    fn apply_entry(&mut self, fields: &[(String, String)]) {
        for (agent_id, encoded) in fields {
            match decode_view(agent_id, encoded) {
                Some(view) => self.upsert(view),
                None => self.remove(agent_id),
            }
        }
    }

    fn upsert(&mut self, view: AgentView) {
        match self.index.get(&view.agent_id) {
            Some(&at) => self.views[at] = view,
            None => {
                self.index.insert(view.agent_id.clone(), self.views.len());
                self.views.push(view);
            }
        }
    }

    fn remove(&mut self, agent_id: &str) {
        let Some(at) = self.index.remove(agent_id) else {
            return;
        };
        self.views.swap_remove(at);
        if let Some(moved) = self.views.get(at) {
            self.index.insert(moved.agent_id.clone(), at);
        }
    }
}

/// Decodes a log entry's view (`status|cap x4|res x4|score|priority_weight|active_tasks|type`,
/// see `VIEW_FIELDS` in lib.lua). `None` for an agent that is not active (dead, deregistered)
/// or an entry that does not parse, either of which takes the agent out of the cache.
pub(crate) fn decode_view(agent_id: &str, encoded: &str) -> Option<AgentView> {
    let parts: Vec<&str> = encoded.splitn(13, '|').collect();
    let [status, rest @ ..] = parts.as_slice() else {
        return None;
    };
    if *status != "active" || rest.len() != 12 {
        return None;
    }
    let int = |i: usize| rest[i].parse::<u64>().ok();
    let resources = |first: usize| -> Option<Resources> {
        Some(Resources {
            cpu: int(first)?,
            memory: int(first + 1)?,
            tokens: int(first + 2)?,
            time: int(first + 3)?,
        })
    };
    Some(AgentView {
        agent_id: agent_id.into(),
        agent_type: rest[11].into(),
        capacity: resources(0)?,
        reserved: resources(4)?,
        score: rest[8].parse().ok()?,
        priority_weight: rest[9].parse().unwrap_or(1.0),
        active_tasks: rest[10].parse().ok()?,
        learned: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_active_view_and_drops_others() {
        let view = decode_view("a1", "active|8000|0|0|0|1000|0|0|0|0.5|1|1|gpu|x").expect("view");
        assert_eq!(&*view.agent_id, "a1");
        assert_eq!(&*view.agent_type, "gpu|x");
        assert_eq!(view.capacity.cpu, 8000);
        assert_eq!(view.reserved.cpu, 1000);
        assert_eq!(view.active_tasks, 1);
        assert!((view.score - 0.5).abs() < 1e-12);
        assert!(decode_view("a1", "dead|8000|0|0|0|0|0|0|0|0.5|1|0|gpu").is_none());
        assert!(decode_view("a1", "active|8000|x").is_none());
    }

    #[test]
    fn removal_keeps_the_index_consistent() {
        let mut cache = FleetCache::new();
        for id in ["a", "b", "c"] {
            let view = decode_view(id, "active|1|1|1|1|0|0|0|0|0.5|1|0|t").expect("view");
            cache.upsert(view);
        }
        cache.remove("a");
        let ids: Vec<&str> = cache.agents().iter().map(|v| &*v.agent_id).collect();
        assert_eq!(ids.len(), 2);
        for (at, view) in cache.agents().iter().enumerate() {
            assert_eq!(cache.index.get(&view.agent_id), Some(&at));
        }
        cache.apply_entry(&[("b".into(), "deregistered|1|1|1|1|0|0|0|0|0.5|1|0|t".into())]);
        let ids: Vec<&str> = cache.agents().iter().map(|v| &*v.agent_id).collect();
        assert_eq!(ids, ["c"]);
    }
}
