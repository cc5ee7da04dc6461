//! Reading one task's story and the dashboard timeline back (the scripts write them: lib.lua
//! `story_append` and `timeline_add`).

use std::collections::BTreeMap;

use redis::AsyncCommands;

use super::store::Store;
use switchyard_client::error::Error;
use switchyard_protocol::{
    LATENCY_BOUNDS_MS, StoryEntry, StoryEvent, TIMELINE_BUCKET_S, TimelinePoint,
    estimate_percentile_ms, timeline_bucket_start_s,
};

/// Most history one timeline read returns, seconds (what the buckets' expiry keeps).
pub const TIMELINE_MAX_S: u64 = 3_600;

/// One stored entry as the scripts write it: `{"t":ms,"e":event,"d":{...}}`.
#[derive(serde::Deserialize)]
struct StoredEntry {
    t: f64,
    e: StoryEvent,
    #[serde(default)]
    d: BTreeMap<String, serde_json::Value>,
}

/// A stored entry as the wire type; None for an entry that does not parse (skipped, not fatal:
/// a story is for reading).
pub(crate) fn parse_entry(raw: &str) -> Option<StoryEntry> {
    let stored: StoredEntry = serde_json::from_str(raw).ok()?;
    let details = stored
        .d
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect();
    Some(StoryEntry {
        at_ms: stored.t.max(0.0) as u64,
        event: stored.e,
        details,
    })
}

/// One timeline bucket's hash as a point, with its percentile estimates.
pub(crate) fn timeline_point(start_s: u64, fields: &BTreeMap<String, u64>) -> TimelinePoint {
    let count = |name: &str| fields.get(name).copied().unwrap_or(0);
    let latency_counts: Vec<u64> = (1..=LATENCY_BOUNDS_MS.len() + 1)
        .map(|i| count(&format!("lat_{i}")))
        .collect();
    TimelinePoint {
        start_ms: start_s * 1000,
        submitted: count("submitted"),
        granted: count("granted"),
        completed: count("completed"),
        failed: count("failed"),
        p50_ms: estimate_percentile_ms(&latency_counts, 0.50),
        p95_ms: estimate_percentile_ms(&latency_counts, 0.95),
        p99_ms: estimate_percentile_ms(&latency_counts, 0.99),
        latency_counts,
    }
}

impl Store {
    /// One task's story, oldest first: empty when the task is unknown, expired, or was submitted
    /// before stories were kept.
    pub async fn task_story(&self, task_id: &str) -> Result<Vec<StoryEntry>, Error> {
        let raw: Vec<String> = self
            .conn()
            .lrange(self.keys().story(task_id), 0, -1)
            .await?;
        Ok(raw.iter().filter_map(|r| parse_entry(r)).collect())
    }

    /// The dashboard timeline: one point per 10-second bucket over the last `last_seconds`
    /// (at most [`TIMELINE_MAX_S`]), oldest first, the current (partial) bucket last; buckets
    /// with nothing in them are points of zeros. Buckets are by this replica's clock.
    pub async fn timeline(&self, last_seconds: u64) -> Result<Vec<TimelinePoint>, Error> {
        let now_s = timeline_bucket_start_s(switchyard_protocol::now_ms());
        let span = last_seconds.clamp(TIMELINE_BUCKET_S, TIMELINE_MAX_S);
        let starts: Vec<u64> = (0..span / TIMELINE_BUCKET_S)
            .rev()
            .map(|back| now_s.saturating_sub(back * TIMELINE_BUCKET_S))
            .collect();
        let mut pipe = redis::pipe();
        for start in &starts {
            pipe.hgetall(self.keys().timeline(*start));
        }
        let rows: Vec<BTreeMap<String, u64>> = pipe.query_async(&mut self.conn()).await?;
        Ok(starts
            .iter()
            .zip(rows.iter())
            .map(|(start, fields)| timeline_point(*start, fields))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_any_detail_values() {
        let entry = parse_entry(r#"{"t":1764763200123,"e":"granted","d":{"agent":"a1","n":3}}"#)
            .expect("parses");
        assert_eq!(entry.at_ms, 1_764_763_200_123);
        assert_eq!(entry.event, StoryEvent::Granted);
        assert_eq!(entry.details["agent"], "a1");
        assert_eq!(entry.details["n"], "3");
        assert!(parse_entry(r#"{"t":1,"e":"queued","d":{}}"#).is_some());
        assert!(parse_entry("not json").is_none());
    }

    #[test]
    fn buckets_are_ten_seconds() {
        assert_eq!(timeline_bucket_start_s(1_700_000_009_999), 1_700_000_000);
        assert_eq!(timeline_bucket_start_s(1_700_000_010_000), 1_700_000_010);
    }

    #[test]
    fn a_point_counts_and_estimates() {
        let fields: BTreeMap<String, u64> = [("granted", 4), ("lat_1", 2), ("lat_7", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let point = timeline_point(10, &fields);
        assert_eq!(point.start_ms, 10_000);
        assert_eq!(point.granted, 4);
        assert_eq!(point.latency_counts.len(), LATENCY_BOUNDS_MS.len() + 1);
        let p99 = point.p99_ms.expect("estimated");
        assert!((50.0..=100.0).contains(&p99), "{p99}");
    }
}
