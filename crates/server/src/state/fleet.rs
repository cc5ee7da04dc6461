//! [`FleetCache`]: a replica's copy of the active agents' views, kept current by reading the fleet
//! log (what changed since the last read) instead of every agent's hash, so a dispatch round costs
//! one Redis command whatever the fleet's size.
//!
//! The copy is only a hint, in the way Omega's cell state is: a stale view may propose an agent
//! that has filled up meanwhile, and `grant_tasks` re-checks every capacity atomically, so a
//! stale cache costs a retry, never an over-reservation. Every transition that changes an agent
//! appends the agent's whole new view to the log (`lua/lib.lua`), so applying the entries in
//! order always converges on Redis's state.
//!
//! What is learned per agent ([`AgentLearning`]) travels in its own field of an entry,
//! `<agent_id>|learned` ([`LEARNED_SUFFIX`], lib.lua `encode_learned`), logged only by the
//! transitions that change it (completions) or bring an agent (back) into the fleet
//! (registration); a view logged without it keeps the learned values the cache holds. The view's
//! encoding is unchanged, so replicas of the previous version read new entries as before (they
//! take the learned field for an inactive agent they do not hold, and ignore it), and the grant
//! path reads and logs no more than before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rows::LEARNED_SUFFIX;
use super::store::Store;
use switchyard_client::error::Error;
use switchyard_decision::{AgentLearning, AgentView, Resources};

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

    /// Sets every view's [`AgentView::idle_s`] for a decision at `now_ms` (this replica's clock;
    /// the learned time is the Redis server's, and a skew between the two shifts an idle
    /// agent's fading by that much, against a half-life of tens of task durations).
    pub fn age(&mut self, now_ms: u64) {
        for view in &mut self.views {
            view.idle_s = view.learned.idle_s(view.active_tasks, now_ms);
        }
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
        for (field, encoded) in fields {
            if let Some(agent_id) = field.strip_suffix(LEARNED_SUFFIX) {
                self.set_learned(agent_id, decode_learned(encoded));
                continue;
            }
            match decode_view(field, encoded) {
                Some(view) => self.upsert_view(view),
                None => self.remove(field),
            }
        }
    }

    /// A logged view: what is learned is not part of it, so the cache keeps what it knows.
    fn upsert_view(&mut self, mut view: AgentView) {
        if let Some(&at) = self.index.get(&view.agent_id) {
            view.learned = self.views[at].learned;
        }
        self.upsert(view);
    }

    /// Learned values logged for an agent (after its view in the same entry); an agent the cache
    /// does not hold (not active) is ignored.
    fn set_learned(&mut self, agent_id: &str, learned: AgentLearning) {
        if let Some(&at) = self.index.get(agent_id) {
            self.views[at].learned = learned;
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
        idle_s: 0.0,
    })
}

/// Decodes a log entry's learned values (`observations|pace|pace_fast|pace_var|failure_excess|
/// drifts|learned_at_ms`, lib.lua `encode_learned`; entries of the previous version have no
/// `learned_at_ms`); garbled or missing parts read as neutral, and parts a
/// later version may append are ignored.
pub(crate) fn decode_learned(encoded: &str) -> AgentLearning {
    let parts: Vec<&str> = encoded.split('|').collect();
    super::rows::learning_from(&parts)
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
    fn learned_values_travel_beside_the_view_and_survive_views_without_them() {
        let mut cache = FleetCache::new();
        // An entry of the previous version: the view alone, learning neutral.
        let old = "active|8000|0|0|0|0|0|0|0|0.5|1|0|gpu";
        cache.apply_entry(&[("a1".into(), old.into())]);
        assert_eq!(cache.agents()[0].learned, AgentLearning::default());
        // A completion's entry: the view, then the learned values.
        let learned = "3|2.0794415416798|2.07|0.015|-0.05|1";
        cache.apply_entry(&[
            ("a1".into(), "active|8000|0|0|0|0|0|0|0|0.6|1|0|gpu".into()),
            (format!("a1{LEARNED_SUFFIX}"), learned.into()),
        ]);
        let expected = AgentLearning {
            observations: 3,
            pace: 2.0794415416798,
            pace_fast: 2.07,
            pace_var: 0.015,
            failure_excess: -0.05,
            drifts: 1,
            // An entry of the version before `learned_at`: never learned, never faded.
            learned_at_ms: 0,
        };
        assert_eq!(cache.agents()[0].learned, expected);
        assert!((cache.agents()[0].learned.pace_factor() - 8.0).abs() < 1e-9);
        // A later view without them (a grant, or an old replica's completion) keeps them.
        cache.apply_entry(&[("a1".into(), old.into())]);
        assert_eq!(cache.agents()[0].learned, expected);
        assert!((cache.agents()[0].score - 0.5).abs() < 1e-12);
        // Learned values of an agent the cache does not hold change nothing.
        cache.apply_entry(&[(format!("zz{LEARNED_SUFFIX}"), learned.into())]);
        assert_eq!(cache.agents().len(), 1);
        // What a replica of the previous version does with the new field: decode_view refuses
        // it, and removing an agent it never held is a no-op.
        assert!(decode_view(&format!("a1{LEARNED_SUFFIX}"), learned).is_none());
        // Garbled or short values read as neutral; appended parts are ignored.
        assert_eq!(decode_learned(""), AgentLearning::default());
        assert_eq!(decode_learned("x|nan|||"), AgentLearning::default());
        let dated = AgentLearning {
            learned_at_ms: 1_700_000_000_123,
            ..expected
        };
        assert_eq!(decode_learned(&format!("{learned}|1700000000123")), dated);
        assert_eq!(
            decode_learned(&format!("{learned}|1700000000123|9|9")),
            dated
        );
    }

    #[test]
    fn ageing_sets_idle_time_only_for_agents_with_no_run_out() {
        let mut cache = FleetCache::new();
        cache.apply_entry(&[
            (
                "idle".into(),
                "active|8000|0|0|0|0|0|0|0|0.5|1|0|gpu".into(),
            ),
            (format!("idle{LEARNED_SUFFIX}"), "3|0|0|0|0|1|10000".into()),
            (
                "busy".into(),
                "active|8000|0|0|0|1000|0|0|0|0.5|1|1|gpu".into(),
            ),
            (format!("busy{LEARNED_SUFFIX}"), "3|0|0|0|0|1|10000".into()),
        ]);
        cache.age(12_500);
        let idle = |id: &str| {
            cache
                .agents()
                .iter()
                .find(|v| &*v.agent_id == id)
                .map(|v| v.idle_s)
        };
        assert_eq!(idle("idle"), Some(2.5));
        assert_eq!(idle("busy"), Some(0.0));
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
