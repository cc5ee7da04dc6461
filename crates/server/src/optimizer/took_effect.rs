//! Whether a dead-lettered event's transition took effect after all. An event is dead-lettered
//! when its last delivery failed, but a failure seen by the replica (a Redis reply that timed out)
//! does not mean the command did not run: Redis may have applied it and answered too late. The
//! dead letter says which, so an operator replays only what was lost.

use super::Ctx;
use switchyard_protocol::Inbound;

/// `yes`, `no`, or `unknown` (Redis cannot be asked now, or the event leaves no mark to read).
pub(crate) async fn took_effect(ctx: &Ctx, event: &Inbound) -> &'static str {
    // Redis may be the trouble that dead-lettered the event: do not wait on it for long.
    let checked = tokio::time::timeout(CHECK_TIMEOUT, check(ctx, event)).await;
    match checked.ok().flatten() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

/// How long the check may wait for Redis.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

async fn check(ctx: &Ctx, event: &Inbound) -> Option<bool> {
    match event {
        Inbound::Submit(env, ..) => {
            let task = ctx.store.task_record(&env.payload.task_id).await.ok()?;
            let message_id = env.message_id.to_string();
            Some(task.is_some_and(|t| t.get("submit_msg_id") == Some(&message_id)))
        }
        Inbound::Complete(env) => {
            let task = ctx.store.task_record(&env.payload.task_id).await.ok()?;
            Some(task.is_some_and(|t| {
                let finished = matches!(
                    t.get("state").map(String::as_str),
                    Some("completed" | "failed" | "cancelled")
                );
                finished && t.get("agent") == Some(&env.payload.agent_id)
            }))
        }
        Inbound::Register(env, _) => {
            let agent = ctx.store.agent_record(&env.payload.agent_id).await.ok()?;
            Some(agent.is_some_and(|a| a.get("status").map(String::as_str) == Some("active")))
        }
        Inbound::Deregister(env) => {
            let agent = ctx.store.agent_record(&env.payload.agent_id).await.ok()?;
            let status = agent
                .as_ref()
                .and_then(|a| a.get("status"))
                .map(String::as_str);
            Some(status == Some("deregistered"))
        }
        Inbound::Cancel(env, _) => {
            let task = ctx.store.task_record(&env.payload.task_id).await.ok()?;
            Some(task.is_some_and(|t| {
                t.get("state").map(String::as_str) == Some("cancelled")
                    || t.get("cancel_requested").map(String::as_str) == Some("1")
            }))
        }
        _ => None,
    }
}
