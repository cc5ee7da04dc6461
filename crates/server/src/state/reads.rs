//! The plain reads of the shared state: fleet snapshots and the fleet log, the queue head,
//! records, learned patterns and the coordination-sync snapshot. Besides reads, only single
//! commands that move no task or reservation: the sync lease (SET NX) and the grant outbox's
//! bookkeeping (acknowledged grants leave it, re-sent ones are re-timed). Every change of state
//! goes through a transition script in `store.rs` / `handoffs.rs`.

use std::collections::BTreeMap;

use redis::AsyncCommands;

use super::records::*;
use super::rows::{AGENT_FIELDS, TASK_FIELDS, agent_status, agent_view, queued_task};
use super::store::Store;
use switchyard_client::error::Error;
use switchyard_decision::{AgentView, PatternTable, TaskState};
use switchyard_protocol::{CoordinationSync, PatternRow, StatusQuery};

impl Store {
    /// Agents whose lease ran out (Redis clock), at most `limit`, read from the leases index so
    /// the cost follows the number of silent agents, not the fleet. Only candidates:
    /// `expire_agent` re-checks atomically.
    pub async fn agents_past_lease(&self, limit: usize) -> Result<Vec<String>, Error> {
        let now = self.redis_now_ms().await?;
        Ok(self
            .conn()
            .zrangebyscore_limit(self.keys().leases(), 0, now, 0, limit as isize)
            .await?)
    }

    /// Fleet-log entries after `after` (exclusive), oldest first, at most `limit`: each entry's
    /// (agent id, encoded view) pairs.
    pub(crate) async fn fleet_log_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<(String, String)>)>, Error> {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(self.keys().fleet_log())
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn())
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, flat)| {
                let pairs = flat
                    .chunks_exact(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect();
                (id, pairs)
            })
            .collect())
    }

    /// The id of the newest fleet-log entry (`0-0` when the log is empty).
    pub(crate) async fn fleet_log_position(&self) -> Result<String, Error> {
        let newest: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(self.keys().fleet_log())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await?;
        Ok(newest
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_string(), |(id, _)| id))
    }

    /// Everything learned per (task type, agent type), for strategies and `status --patterns`.
    pub async fn patterns(&self) -> Result<PatternTable, Error> {
        let fields: BTreeMap<String, String> = self.conn().hgetall(self.keys().patterns()).await?;
        Ok(super::rows::pattern_table(&fields))
    }

    /// Takes or renews the coordination-sync lease for `ttl_ms` (lua/take_sync_lease.lua): true
    /// when `holder` holds it after the call.
    pub async fn take_sync_lease(&self, holder: &str, ttl_ms: u64) -> Result<bool, Error> {
        let held: i64 = self
            .scripts
            .take_sync_lease
            .key(self.keys().sync_lease())
            .arg(holder)
            .arg(ttl_ms)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(held == 1)
    }

    /// Ids of active agents.
    pub async fn active_agent_ids(&self) -> Result<Vec<String>, Error> {
        Ok(self.conn().smembers(self.keys().agents()).await?)
    }

    /// Views of all active agents, read in one pipelined round trip after the id list.
    pub async fn agent_snapshot(&self) -> Result<Vec<AgentView>, Error> {
        let ids = self.active_agent_ids().await?;
        let rows = self.agent_rows(&ids).await?;
        Ok(ids
            .into_iter()
            .zip(rows)
            .filter(|(_, row)| row.get(1).map(String::as_str) == Some("active"))
            .map(|(id, row)| agent_view(id, &row))
            .collect())
    }

    pub(super) async fn agent_rows(&self, ids: &[String]) -> Result<Vec<Vec<String>>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new()); // an empty pipeline is refused by the client ("empty command")
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.keys().agent(id))
                .arg(&AGENT_FIELDS[..]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn()).await?;
        Ok(rows
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
            .collect())
    }

    /// When each agent's lease runs out (Redis clock, ms), `None` for agents without one.
    pub(super) async fn lease_deadlines(&self, ids: &[String]) -> Result<Vec<Option<f64>>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(redis::cmd("ZMSCORE")
            .arg(self.keys().leases())
            .arg(ids)
            .query_async(&mut self.conn())
            .await?)
    }

    /// Up to `limit` tasks from the head of the priority queue, in order.
    pub async fn queue_head(&self, limit: usize) -> Result<Vec<QueuedTask>, Error> {
        self.queue_page(0, limit).await
    }

    /// Up to `limit` queued tasks from position `offset` of the priority queue, in order (tasks
    /// that stopped being queued since are left out, so a page may be shorter).
    pub async fn queue_page(&self, offset: usize, limit: usize) -> Result<Vec<QueuedTask>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = self
            .conn()
            .zrange(
                self.keys().queue(),
                offset as isize,
                (offset + limit) as isize - 1,
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.keys().task(id))
                .arg(&TASK_FIELDS[..]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn()).await?;
        Ok(ids
            .into_iter()
            .zip(rows)
            .filter(|(_, row)| {
                row.first()
                    .and_then(|s| s.as_deref())
                    .and_then(TaskState::parse)
                    == Some(TaskState::Queued)
            })
            .map(|(id, row)| {
                queued_task(id, row.into_iter().map(Option::unwrap_or_default).collect())
            })
            .collect())
    }

    /// One task's record (all fields), or `None` when unknown or expired.
    pub async fn task_record(
        &self,
        task_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, Error> {
        let map: BTreeMap<String, String> = self.conn().hgetall(self.keys().task(task_id)).await?;
        Ok(if map.is_empty() { None } else { Some(map) })
    }

    /// One agent's record (all fields), or `None`.
    pub async fn agent_record(
        &self,
        agent_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, Error> {
        let map: BTreeMap<String, String> =
            self.conn().hgetall(self.keys().agent(agent_id)).await?;
        Ok(if map.is_empty() { None } else { Some(map) })
    }

    /// Agents acknowledged these grants: they leave the outbox (one ZREM for the batch). A grant
    /// already gone (completed, re-queued, acknowledged before) is simply not there.
    pub async fn acknowledge_grants(&self, grants: &[(String, u64)]) -> Result<(), Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let members: Vec<String> = grants.iter().map(|(t, s)| outbox_member(t, *s)).collect();
        let _: i64 = self
            .conn()
            .zrem(self.keys().grant_outbox(), members)
            .await?;
        Ok(())
    }

    /// These grants were just sent again: the next resend is due a whole interval from now
    /// (Redis clock). Only entries still in the outbox are touched (ZADD XX).
    pub async fn mark_grants_resent(&self, grants: &[(String, u64)]) -> Result<(), Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let now = self.redis_now_ms().await?;
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.keys().grant_outbox()).arg("XX");
        for (task_id, seq) in grants {
            cmd.arg(now).arg(outbox_member(task_id, *seq));
        }
        let _: i64 = cmd.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The Redis clock, in ms: on a cluster, that of the node the scripts run on.
    pub(crate) async fn redis_now_ms(&self) -> Result<u64, Error> {
        let (secs, micros): (u64, u64) = self
            .conn()
            .query_in_slot(&redis::cmd("TIME"), self.keys().slot_key())
            .await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// The task records of the grants an agent holds that it has not acknowledged yet (still in
    /// the outbox): sent again when the agent registers, e.g. after a restart.
    pub async fn unacknowledged_grants_of(
        &self,
        agent_id: &str,
    ) -> Result<Vec<BTreeMap<String, String>>, Error> {
        let task_ids: Vec<String> = self
            .conn()
            .smembers(self.keys().agent_tasks(agent_id))
            .await?;
        let mut pending = Vec::new();
        for task_id in task_ids {
            let Some(record) = self.task_record(&task_id).await? else {
                continue;
            };
            let held = record.get("state").and_then(|s| TaskState::parse(s))
                == Some(TaskState::Granted)
                && record.get("agent").map(String::as_str) == Some(agent_id);
            let seq: u64 = record
                .get("grant_seq")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let score: Option<f64> = self
                .conn()
                .zscore(self.keys().grant_outbox(), outbox_member(&task_id, seq))
                .await?;
            if held && score.is_some() {
                pending.push(record);
            }
        }
        Ok(pending)
    }

    /// Grants committed more than `older_than_ms` ago (Redis clock) whose publication was never
    /// confirmed: a replica died between commit and publish.
    pub async fn stale_grants(
        &self,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, Error> {
        self.outbox_due(self.keys().grant_outbox(), older_than_ms, limit)
            .await
    }

    /// Cancel notices due again: in the cancel outbox since more than `older_than_ms` ago
    /// (Redis clock), as `(task_id, grant_seq)`.
    pub async fn due_cancel_notices(
        &self,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, Error> {
        self.outbox_due(self.keys().cancel_outbox(), older_than_ms, limit)
            .await
    }

    /// Members of an outbox (`task_id|grant_seq` scored by Redis-clock ms) scored more than
    /// `older_than_ms` ago, at most `limit`, as `(task_id, grant_seq)`.
    async fn outbox_due(
        &self,
        outbox: String,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, Error> {
        let cutoff = self.redis_now_ms().await?.saturating_sub(older_than_ms);
        let members: Vec<String> = self
            .conn()
            .zrangebyscore_limit(outbox, 0, cutoff, 0, limit as isize)
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| m.rsplit_once('|'))
            .filter_map(|(t, s)| Some((t.to_string(), s.parse().ok()?)))
            .collect())
    }

    /// These cancel notices were just sent again (`sent`), and these are no longer needed
    /// (`gone`: the task finished or was granted again): one ZADD XX and one ZREM.
    pub async fn update_cancel_notices(
        &self,
        sent: &[(String, u64)],
        gone: &[(String, u64)],
    ) -> Result<(), Error> {
        let key = self.keys().cancel_outbox();
        if !gone.is_empty() {
            let members: Vec<String> = gone.iter().map(|(t, s)| outbox_member(t, *s)).collect();
            let _: i64 = self.conn().zrem(&key, members).await?;
        }
        if !sent.is_empty() {
            let now = self.redis_now_ms().await?;
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&key).arg("XX");
            for (task_id, seq) in sent {
                cmd.arg(now).arg(outbox_member(task_id, *seq));
            }
            let _: i64 = cmd.query_async(&mut self.conn()).await?;
        }
        Ok(())
    }

    /// Cancel notices now owed for these grants (a handed-off task's new grant): due at once
    /// on the next pass.
    pub async fn add_cancel_notices(&self, grants: &[(String, u64)]) -> Result<(), Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.keys().cancel_outbox()).arg("NX");
        for (task_id, seq) in grants {
            cmd.arg(0).arg(outbox_member(task_id, *seq));
        }
        let _: i64 = cmd.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The tasks registered as waiting on `task_id` (a dependent may be submitted before the
    /// task it depends on, so a task can have dependents before it exists).
    pub async fn dependents_of(&self, task_id: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .conn()
            .smembers(self.keys().dependents(task_id))
            .await?)
    }

    pub async fn queue_depth(&self) -> Result<u64, Error> {
        Ok(self.conn().zcard(self.keys().queue()).await?)
    }

    /// A coordination snapshot for status queries and sync broadcasts.
    pub async fn coordination_sync(&self, query: &StatusQuery) -> Result<CoordinationSync, Error> {
        let queue_depth = self.queue_depth().await?;
        let counters: BTreeMap<String, u64> = self.conn().hgetall(self.keys().stats()).await?;
        let mut agents = Vec::new();
        if query.include_agents {
            let mut ids: Vec<String> = self.active_agent_ids().await?;
            ids.sort();
            let rows = self.agent_rows(&ids).await?;
            let deadlines = self.lease_deadlines(&ids).await?;
            agents = ids
                .into_iter()
                .zip(rows)
                .zip(deadlines)
                .map(|((id, row), deadline)| {
                    let mut status = agent_status(id, &row);
                    // Heartbeats move the lease deadline only (one command each), so the last
                    // one is the deadline less the lease.
                    if let (Some(deadline), Some(lease)) =
                        (deadline, row.get(14).and_then(|l| l.parse::<u64>().ok()))
                    {
                        status.last_heartbeat_ms = status
                            .last_heartbeat_ms
                            .max((deadline as u64).saturating_sub(lease));
                    }
                    status
                })
                .collect();
        }
        let patterns = if query.include_patterns {
            pattern_rows(&self.patterns().await?)
        } else {
            Vec::new()
        };
        Ok(CoordinationSync {
            budgets: self.budget_states(&self.budget_names).await?,
            waiting_depth: self.waiting_depth().await?,
            tasks: self.task_waits(query).await?,
            story: match &query.task_id {
                Some(task_id) => self.task_story(task_id).await?,
                None => Vec::new(),
            },
            patterns,
            queue_depth,
            counters,
            agents,
            tenants: self
                .tenant_counts()
                .await?
                .into_iter()
                .map(|(tenant, c)| {
                    let view = switchyard_protocol::TenantCountsView {
                        submitted: c.submitted,
                        granted: c.granted,
                    };
                    (tenant, view)
                })
                .collect(),
        })
    }
}

fn pattern_rows(table: &PatternTable) -> Vec<PatternRow> {
    table
        .iter()
        .map(|(task_type, agent_type, s)| PatternRow {
            task_type: task_type.to_string(),
            agent_type: agent_type.to_string(),
            attempts: s.attempts,
            successes: s.successes,
            success_ema: s.success_ema,
            duration_ratio_ema: s.duration_ratio_ema,
            explorations: s.explorations,
        })
        .collect()
}

/// An outbox member (grants and cancel notices): `task_id|grant_seq`, as the scripts write it.
fn outbox_member(task_id: &str, grant_seq: u64) -> String {
    format!("{task_id}|{grant_seq}")
}
