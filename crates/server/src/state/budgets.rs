//! Shared budgets in Redis: writing the config's definitions (`define_budgets.lua`), the budget
//! keys a transition needs for its tasks, and the budgets' state for status and metrics.

use redis::AsyncCommands;

use super::store::Store;
use crate::config::{BudgetConfig, BudgetKind};
use switchyard_client::error::Error;
use switchyard_decision::budget::{Bucket, parse_draws};

/// One budget as Redis holds it, at the Redis time of the read (the status query's view).
pub use switchyard_protocol::BudgetView as BudgetState;

/// What `define_budgets` found for one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defined {
    New,
    Same,
    /// Another definition was there (a replica with another config); this one replaced it.
    Changed,
}

impl Store {
    /// Writes the config's budgets to Redis (see `lua/define_budgets.lua`); one verdict per
    /// budget, in order.
    pub async fn define_budgets(&self, budgets: &[BudgetConfig]) -> Result<Vec<Defined>, Error> {
        if budgets.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.define_budgets.prepare_invoke();
        for b in budgets {
            let kind = match b.kind {
                BudgetKind::Rate => "rate",
                BudgetKind::Concurrency => "concurrency",
            };
            inv.key(self.keys().budget(&b.name))
                .arg(kind)
                .arg(b.limit)
                .arg(b.period_ms())
                .arg(b.burst())
                .arg(b.unit());
        }
        let reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        Ok(reply
            .iter()
            .map(|v| match v.as_str() {
                "new" => Defined::New,
                "same" => Defined::Same,
                _ => Defined::Changed,
            })
            .collect())
    }

    /// The budget hashes the given tasks draw from (their `budgets` fields), each once: what a
    /// transition that may end or take back their grants passes in KEYS for lib.lua's
    /// `release_budget_holds` (and complete_tasks' reconciliation). One pipelined read.
    pub async fn task_budget_keys(&self, task_ids: &[&str]) -> Result<Vec<String>, Error> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in task_ids {
            pipe.cmd("HGET").arg(self.keys().task(id)).arg("budgets");
        }
        let fields: Vec<Option<String>> = pipe.query_async(&mut self.conn()).await?;
        let names: std::collections::BTreeSet<String> = fields
            .iter()
            .flatten()
            .flat_map(|f| parse_draws(f).into_iter().map(|(name, _)| name))
            .collect();
        Ok(names.iter().map(|n| self.keys().budget(n)).collect())
    }

    /// The named budgets' state now (Redis clock); a name not defined in Redis is left out.
    pub async fn budget_states(&self, names: &[String]) -> Result<Vec<BudgetState>, Error> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.redis_now_ms().await? as i64;
        let mut pipe = redis::pipe();
        for name in names {
            pipe.cmd("HGETALL").arg(self.keys().budget(name));
        }
        let rows: Vec<std::collections::HashMap<String, String>> =
            pipe.query_async(&mut self.conn()).await?;
        Ok(names
            .iter()
            .zip(rows)
            .filter(|(_, row)| row.contains_key("kind"))
            .map(|(name, row)| budget_state(name, &row, now))
            .collect())
    }

    /// A budget's raw hash (tests and `switchyard status --budgets` read it).
    pub async fn budget_record(
        &self,
        name: &str,
    ) -> Result<std::collections::HashMap<String, String>, Error> {
        Ok(self.conn().hgetall(self.keys().budget(name)).await?)
    }
}

fn budget_state(
    name: &str,
    row: &std::collections::HashMap<String, String>,
    now: i64,
) -> BudgetState {
    let num = |f: &str| row.get(f).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let kind = row.get("kind").cloned().unwrap_or_default();
    let limit = num("limit").max(0);
    let mut state = BudgetState {
        name: name.to_string(),
        kind: kind.clone(),
        limit: limit as u64,
        period_ms: 0,
        burst: 0,
        unit: String::new(),
        available: 0,
        in_use: 0,
        debt: 0,
    };
    if kind == "rate" {
        let rate = switchyard_decision::budget::Rate {
            limit: limit.max(1),
            period_ms: num("period_ms").max(1),
            burst: num("burst"),
        };
        let bucket = Bucket {
            level: num("level"),
            at_ms: num("at"),
        };
        state.period_ms = rate.period_ms as u64;
        state.burst = rate.burst.max(0) as u64;
        state.unit = row.get("unit").cloned().unwrap_or_default();
        state.available = rate.available(bucket, now) as u64;
        state.debt = rate.debt(bucket, now) as u64;
    } else {
        let held = num("held").max(0);
        state.in_use = held as u64;
        state.available = (limit - held).max(0) as u64;
    }
    state
}
