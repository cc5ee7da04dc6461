//! `switchyard status`: a running deployment's state, as tables or one JSON line.

use std::io::Write;

use switchyard_protocol::{AgentStatusView, PatternRow, StatusQuery, TaskWaitView};

use super::{RunContext, write_json_line};

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    #[arg(long)]
    json: bool,
    /// Also show what was learned per (task type, agent type).
    #[arg(long)]
    patterns: bool,
    /// Also list the first N waiting and queued tasks by priority, with why each waits (at most
    /// 200).
    #[arg(long, value_name = "N", default_value_t = 0)]
    tasks: u32,
    /// Also show one task: its state, why it waits if it does, and its story (as
    /// `switchyard task ID`).
    #[arg(long, value_name = "ID")]
    task: Option<String>,
}

/// Asks the deployment at the configured NATS URL for its status and prints it.
pub(crate) async fn run(
    args: StatusArgs,
    context: &RunContext<'_>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let query = StatusQuery {
        include_agents: true,
        include_patterns: args.patterns,
        include_tasks: args.tasks,
        task_id: args.task.clone(),
    };
    let status = super::ask_status(context, query).await?;
    if args.json {
        return write_json_line(out, &status);
    }
    writeln!(
        out,
        "queue depth {}  waiting on dependencies {}  counters {:?}",
        status.queue_depth, status.waiting_depth, status.counters
    )?;
    write_agents(out, &status.agents)?;
    write_tenants(out, &status.tenants)?;
    if !status.budgets.is_empty() {
        write_budgets(out, &status.budgets)?;
    }
    if args.patterns {
        write_patterns(out, &status.patterns)?;
    }
    if args.tasks > 0 || args.task.is_some() {
        write_tasks(out, &status.tasks)?;
    }
    if let Some(id) = &args.task {
        // The same story `switchyard task ID` prints.
        writeln!(out, "\nstory of {id}")?;
        super::task::write_story(out, &status.story)?;
    }
    Ok(())
}

/// Per tenant: submitted and granted, and each tenant's share of the grants.
fn write_tenants(
    out: &mut dyn Write,
    tenants: &std::collections::BTreeMap<String, switchyard_protocol::TenantCountsView>,
) -> anyhow::Result<()> {
    if tenants.is_empty() {
        return Ok(());
    }
    let total: u64 = tenants.values().map(|t| t.granted).sum();
    writeln!(
        out,
        "\n{:<24} {:>10} {:>10} {:>8}",
        "tenant", "submitted", "granted", "share"
    )?;
    for (tenant, t) in tenants {
        let share = if total == 0 {
            0.0
        } else {
            t.granted as f64 / total as f64
        };
        writeln!(
            out,
            "{:<24} {:>10} {:>10} {:>7.1}%",
            tenant,
            t.submitted,
            t.granted,
            share * 100.0
        )?;
    }
    Ok(())
}

fn write_tasks(out: &mut dyn Write, tasks: &[TaskWaitView]) -> anyhow::Result<()> {
    writeln!(
        out,
        "\n{:<24} {:<10} {:>8}  why",
        "task", "state", "priority"
    )?;
    for t in tasks {
        writeln!(
            out,
            "{:<24} {:<10} {:>8}  {}",
            t.task_id, t.state, t.priority, t.detail
        )?;
    }
    Ok(())
}

fn write_budgets(
    out: &mut dyn Write,
    budgets: &[switchyard_protocol::BudgetView],
) -> anyhow::Result<()> {
    writeln!(
        out,
        "\n{:<24} {:<12} {:>22} {:>12} {:>8} {:>10}",
        "budget", "kind", "limit", "available", "in use", "debt"
    )?;
    for b in budgets {
        let limit = if b.kind == "rate" {
            format!("{} {}/{}s", b.limit, b.unit, b.period_ms as f64 / 1000.0)
        } else {
            b.limit.to_string()
        };
        writeln!(
            out,
            "{:<24} {:<12} {:>22} {:>12} {:>8} {:>10}",
            b.name, b.kind, limit, b.available, b.in_use, b.debt
        )?;
    }
    Ok(())
}

fn write_agents(out: &mut dyn Write, agents: &[AgentStatusView]) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<24} {:<10} {:<12} {:>8} {:>7} {:>6} {:>8} {:>8} {:>6}",
        "agent", "type", "status", "util", "score", "tasks", "pace", "fail+", "drifts"
    )?;
    for a in agents {
        // pace: how long the agent takes relative to its type (8.00x: eight times slower);
        // fail+: how much more often than its type it fails.
        writeln!(
            out,
            "{:<24} {:<10} {:<12} {:>7.1}% {:>7.3} {:>6} {:>7.2}x {:>+8.2} {:>6}",
            a.agent_id,
            a.agent_type,
            a.status,
            a.utilization * 100.0,
            a.performance_score,
            a.active_tasks,
            a.pace_factor,
            a.failure_excess,
            a.drifts
        )?;
    }
    Ok(())
}

fn write_patterns(out: &mut dyn Write, rows: &[PatternRow]) -> anyhow::Result<()> {
    writeln!(
        out,
        "\n{:<16} {:<16} {:>8} {:>9} {:>9} {:>12}",
        "task type", "agent type", "attempts", "successes", "success", "time ratio"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<16} {:<16} {:>8} {:>9} {:>8.1}% {:>12.2}",
            r.task_type,
            r.agent_type,
            r.attempts,
            r.successes,
            r.success_ema * 100.0,
            r.duration_ratio_ema
        )?;
    }
    Ok(())
}
