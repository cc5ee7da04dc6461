//! Checks of the inter-agent protocol's events: handoffs and resource requests.

use super::{
    Context, Inbound, RejectReason, Rejection, check_agent_token, resources, validate_agent_id,
    validate_task_id,
};
use crate::Envelope;
use crate::messaging::{HandoffAcknowledge, HandoffInitiate, ResourceRequest};

/// Longest a handoff may wait for the new agent's answer (seconds).
pub const MAX_HANDOFF_TIMEOUT_S: f64 = 3600.0;

fn check_handoff_id(ctx: &Context<'_>, id: &str) -> Result<(), Rejection> {
    if validate_task_id(id) {
        Ok(())
    } else {
        Err(ctx.reject(
            RejectReason::InvalidId,
            "handoff_id must be 1-128 of [A-Za-z0-9_.:-]",
        ))
    }
}

fn check_task_id(ctx: &Context<'_>, id: &str) -> Result<(), Rejection> {
    if validate_task_id(id) {
        Ok(())
    } else {
        Err(ctx.reject(
            RejectReason::InvalidId,
            "task_id must be 1-128 of [A-Za-z0-9_.:-]",
        ))
    }
}

pub(super) fn handoff_initiate(
    ctx: &Context<'_>,
    env: Envelope<HandoffInitiate>,
) -> Result<Inbound, Rejection> {
    let h = &env.payload;
    check_agent_token(ctx, &h.from_agent)?;
    check_handoff_id(ctx, &h.handoff_id)?;
    check_task_id(ctx, &h.task_id)?;
    if !validate_agent_id(&h.to_agent) || h.to_agent == h.from_agent {
        return Err(ctx.reject(
            RejectReason::InvalidId,
            "to_agent must be a valid agent id other than from_agent",
        ));
    }
    if !h.timeout_s.is_finite() || h.timeout_s <= 0.0 || h.timeout_s > MAX_HANDOFF_TIMEOUT_S {
        return Err(ctx.reject(
            RejectReason::InvalidDuration,
            format!("timeout_s must be > 0 and <= {MAX_HANDOFF_TIMEOUT_S}"),
        ));
    }
    // Validated for its shape only: the whole reservation moves regardless.
    resources(ctx, &h.resource_transfer)?;
    Ok(Inbound::HandoffInitiate(env))
}

pub(super) fn handoff_acknowledge(
    ctx: &Context<'_>,
    env: Envelope<HandoffAcknowledge>,
) -> Result<Inbound, Rejection> {
    check_agent_token(ctx, &env.payload.agent_id)?;
    check_handoff_id(ctx, &env.payload.handoff_id)?;
    if env.payload.outcome.is_some() {
        return Err(ctx.reject(
            RejectReason::InvalidPayload,
            "outcome is filled in by the coordinator, not by agents",
        ));
    }
    Ok(Inbound::HandoffAcknowledge(env))
}

pub(super) fn resource_request(
    ctx: &Context<'_>,
    env: Envelope<ResourceRequest>,
) -> Result<Inbound, Rejection> {
    check_agent_token(ctx, &env.payload.agent_id)?;
    check_task_id(ctx, &env.payload.task_id)?;
    let extra = resources(ctx, &env.payload.additional_resources)?;
    if extra.is_zero() {
        return Err(ctx.reject(
            RejectReason::InvalidPayload,
            "additional_resources must ask for something",
        ));
    }
    Ok(Inbound::ResourceRequest(env, extra))
}
