//! The head hold and the tenants' fairness state: the hold_head transition and the plain reads
//! of both (see `lua/hold_head.lua`, lib.lua `fair_place`, and the decision crate's
//! `fairness.rs` and `placement/hold.rs` for the rules).

use std::collections::BTreeMap;

use redis::AsyncCommands;

use super::records::unexpected;
use super::store::Store;
use switchyard_client::error::Error;
use switchyard_decision::{HeadHold, ResourceKind, Resources};

/// Granted and submitted counts of one tenant, lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantCounts {
    pub submitted: u64,
    pub granted: u64,
}

impl Store {
    /// The hold standing now (unexpired by the Redis clock, its task still queued), if any.
    pub async fn head_hold(&self) -> Result<Option<HeadHold>, Error> {
        Ok(self.head_hold_left().await?.map(|(hold, _)| hold))
    }

    /// [`Store::head_hold`] with how long it lasts unless renewed (ms).
    pub async fn head_hold_left(&self) -> Result<Option<(HeadHold, u64)>, Error> {
        let (fields, now): (BTreeMap<String, String>, u64) = tokio::try_join!(
            async {
                let map: BTreeMap<String, String> =
                    self.conn().hgetall(self.keys().head_hold()).await?;
                Ok::<_, Error>(map)
            },
            self.redis_now_ms()
        )?;
        let Some(hold) = hold_from_fields(&fields, now) else {
            return Ok(None);
        };
        let left = fields
            .get("until")
            .and_then(|u| u.parse::<u64>().ok())
            .map_or(0, |until| until.saturating_sub(now));
        let score: Option<f64> = self
            .conn()
            .zscore(self.keys().queue(), &hold.task_id)
            .await?;
        Ok(score.map(|_| (hold, left)))
    }

    /// Holds `agent_id` for `task_id` for `ttl_ms` (renewing it when it stands already), unless
    /// a hold for a task further ahead in the queue stands. Returns the hold standing after the
    /// call as (task, agent).
    pub async fn hold_head(
        &self,
        task_id: &str,
        agent_id: &str,
        ttl_ms: u64,
    ) -> Result<Option<(String, String)>, Error> {
        let k = self.keys();
        let reply: Vec<String> = self
            .scripts
            .hold_head
            .key(k.head_hold())
            .key(k.queue())
            .key(k.task(task_id))
            .arg(task_id)
            .arg(agent_id)
            .arg(ttl_ms)
            .invoke_async(&mut self.conn())
            .await?;
        parse_hold_reply(&reply)
    }

    /// Ends a hold whose task left the queue (cancelled, granted by an older version, expired).
    pub async fn release_stale_hold(&self) -> Result<Option<(String, String)>, Error> {
        let k = self.keys();
        let reply: Vec<String> = self
            .scripts
            .hold_head
            .key(k.head_hold())
            .key(k.queue())
            .key(k.head_hold())
            .arg("")
            .arg("")
            .arg(0)
            .invoke_async(&mut self.conn())
            .await?;
        parse_hold_reply(&reply)
    }

    /// Every tenant's lifetime counts, by tenant.
    pub async fn tenant_counts(&self) -> Result<BTreeMap<String, TenantCounts>, Error> {
        let fields: BTreeMap<String, String> = self.conn().hgetall(self.keys().tenants()).await?;
        Ok(tenant_counts(&fields))
    }
}

fn parse_hold_reply(reply: &[String]) -> Result<Option<(String, String)>, Error> {
    match reply {
        [status, task, agent] if status == "held" => Ok(Some((task.clone(), agent.clone()))),
        [status, _, _] if status == "none" => Ok(None),
        _ => Err(unexpected("hold_head", reply)),
    }
}

/// The hold a head_hold hash describes, if it is still standing at `now_ms`.
pub(crate) fn hold_from_fields(fields: &BTreeMap<String, String>, now_ms: u64) -> Option<HeadHold> {
    let until: u64 = fields.get("until")?.parse().ok()?;
    if until <= now_ms {
        return None;
    }
    let mut required = Resources::default();
    for kind in ResourceKind::ALL {
        let amount = fields
            .get(&format!("req_{}", kind.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        required.set(kind, amount);
    }
    Some(HeadHold {
        task_id: fields.get("task")?.clone(),
        agent_id: fields.get("agent")?.as_str().into(),
        required,
    })
}

/// Per-tenant counts from the tenants hash (`<tenant>|submitted`, `<tenant>|granted`).
pub(crate) fn tenant_counts(fields: &BTreeMap<String, String>) -> BTreeMap<String, TenantCounts> {
    let mut out: BTreeMap<String, TenantCounts> = BTreeMap::new();
    for (field, value) in fields {
        let Some((tenant, what)) = field.split_once('|') else {
            continue;
        };
        let n: u64 = value.parse().unwrap_or(0);
        let counts = out.entry(tenant.to_string()).or_default();
        match what {
            "submitted" => counts.submitted = n,
            "granted" => counts.granted = n,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_or_partial_hold_is_none() {
        let mut f = BTreeMap::new();
        f.insert("task".to_string(), "big".to_string());
        f.insert("agent".to_string(), "a1".to_string());
        f.insert("until".to_string(), "1000".to_string());
        f.insert("req_cpu".to_string(), "4000".to_string());
        let hold = hold_from_fields(&f, 999).expect("standing");
        assert_eq!(hold.required.get(ResourceKind::Cpu), 4000);
        assert_eq!(&*hold.agent_id, "a1");
        assert!(hold_from_fields(&f, 1000).is_none());
        f.remove("agent");
        assert!(hold_from_fields(&f, 0).is_none());
    }

    #[test]
    fn tenant_counts_skip_the_virtual_time() {
        let mut f = BTreeMap::new();
        f.insert("vtime".to_string(), "5000".to_string());
        f.insert("a|granted".to_string(), "3".to_string());
        f.insert("a|submitted".to_string(), "7".to_string());
        f.insert("a|finish".to_string(), "7000".to_string());
        let counts = tenant_counts(&f);
        assert_eq!(counts.len(), 1);
        assert_eq!(
            counts["a"],
            TenantCounts {
                submitted: 7,
                granted: 3
            }
        );
    }
}
