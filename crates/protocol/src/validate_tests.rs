use serde_json::json;

use super::*;

const NOW: u64 = 1_700_000_000_000;

fn envelope(kind: &str, sender: &str, payload: serde_json::Value) -> serde_json::Value {
    json!({
        "protocol_version": 1,
        "message_id": "6f1c2d1e-8f7a-4b7e-9a51-3d0f2f6f7a10",
        "sender": sender,
        "type": kind,
        "created_at_ms": NOW,
        "payload": payload,
    })
}

fn run(subject: &str, value: &serde_json::Value) -> Result<Inbound, Rejection> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    decode(&Subjects::default(), subject, &bytes, 65_536, NOW)
}

fn reason(subject: &str, value: &serde_json::Value) -> &'static str {
    match run(subject, value) {
        Ok(_) => "accepted",
        Err(r) => r.reason.as_str(),
    }
}

fn submit(payload: serde_json::Value) -> serde_json::Value {
    envelope("TASK_SUBMIT", "orch", payload)
}

#[test]
fn accepts_a_valid_submit_with_seed_style_resource_names() {
    let msg = submit(
        json!({"task_id": "t1", "priority": 8, "required_resources": {"CPU": 2.0, "memory": 4096.0}, "dependencies": ["t0"]}),
    );
    match run("coord.task_submit.orch", &msg) {
        Ok(Inbound::Submit(env, req, _)) => {
            assert_eq!(env.payload.task_id, "t1");
            assert_eq!(req.cpu, 2000);
            assert_eq!(req.memory, 4_096_000);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn malformed_json_keeps_the_subject_sender_for_the_reply() {
    let r = decode(
        &Subjects::default(),
        "coord.task_submit.orch",
        b"{not json",
        65_536,
        NOW,
    )
    .expect_err("malformed");
    assert_eq!(r.reason, RejectReason::MalformedJson);
    assert_eq!(r.reply_to, "orch");
}

#[test]
fn bad_resources_are_refused_with_specific_codes() {
    let neg = submit(json!({"task_id": "t1", "required_resources": {"cpu": -1.0}}));
    assert_eq!(reason("coord.task_submit.orch", &neg), "negative_resource");
    let huge = submit(json!({"task_id": "t1", "required_resources": {"cpu": 1e300}}));
    assert_eq!(
        reason("coord.task_submit.orch", &huge),
        "resource_too_large"
    );
    let unknown = submit(json!({"task_id": "t1", "required_resources": {"gpu": 1.0}}));
    assert_eq!(
        reason("coord.task_submit.orch", &unknown),
        "unknown_resource"
    );
}

#[test]
fn nan_cannot_even_be_encoded_in_json_so_it_is_malformed() {
    let r = decode(
        &Subjects::default(),
        "coord.task_submit.orch",
        br#"{"payload": NaN}"#,
        65_536,
        NOW,
    );
    assert_eq!(r.expect_err("NaN").reason, RejectReason::MalformedJson);
}

#[test]
fn oversized_messages_are_refused_before_parsing() {
    let r = decode(
        &Subjects::default(),
        "coord.task_submit.orch",
        &vec![b' '; 70_000],
        65_536,
        NOW,
    );
    assert_eq!(
        r.expect_err("too large").reason,
        RejectReason::PayloadTooLarge
    );
}

#[test]
fn expired_messages_are_refused() {
    let mut msg = submit(json!({"task_id": "t1"}));
    msg["created_at_ms"] = json!(NOW - 10_000);
    msg["ttl_seconds"] = json!(5);
    assert_eq!(reason("coord.task_submit.orch", &msg), "expired");
}

#[test]
fn subject_must_name_the_agent_or_sender() {
    let reg = envelope(
        "AGENT_REGISTER",
        "a1",
        json!({"agent_id": "a1", "agent_type": "backend", "max_resources": {"cpu": 4}}),
    );
    assert_eq!(reason("coord.agent_register.a1", &reg), "accepted");
    assert_eq!(reason("coord.agent_register.a2", &reg), "subject_mismatch");
    assert_eq!(
        reason(
            "coord.task_submit.someone_else",
            &submit(json!({"task_id": "t"}))
        ),
        "subject_mismatch"
    );
    assert_eq!(
        reason("coord.agent_deregister.a1", &reg),
        "subject_mismatch"
    );
}

#[test]
fn ids_priorities_and_dependencies_are_checked() {
    assert_eq!(
        reason(
            "coord.task_submit.orch",
            &submit(json!({"task_id": "has space"}))
        ),
        "invalid_id"
    );
    assert_eq!(
        reason(
            "coord.task_submit.orch",
            &submit(json!({"task_id": "t", "priority": 11}))
        ),
        "invalid_priority"
    );
    assert_eq!(
        reason(
            "coord.task_submit.orch",
            &submit(json!({"task_id": "t", "dependencies": ["t"]}))
        ),
        "invalid_dependencies"
    );
    assert_eq!(
        reason(
            "coord.task_submit.orch",
            &submit(json!({"task_id": "t", "estimated_duration_s": -3}))
        ),
        "invalid_duration"
    );
}

#[test]
fn version_and_envelope_shape_are_checked() {
    let mut msg = submit(json!({"task_id": "t1"}));
    msg["protocol_version"] = json!(2);
    assert_eq!(
        reason("coord.task_submit.orch", &msg),
        "unsupported_version"
    );
    let mut no_id = submit(json!({"task_id": "t1"}));
    no_id["message_id"] = json!("not-a-uuid");
    assert_eq!(reason("coord.task_submit.orch", &no_id), "invalid_envelope");
    let wrong_payload = submit(json!({"task_id": 5}));
    assert_eq!(
        reason("coord.task_submit.orch", &wrong_payload),
        "invalid_payload"
    );
}

#[test]
fn rejections_carry_the_offending_message_id() {
    let r = run(
        "coord.task_submit.orch",
        &submit(json!({"task_id": "bad id"})),
    )
    .expect_err("bad");
    assert_eq!(
        r.correlation_id.as_deref(),
        Some("6f1c2d1e-8f7a-4b7e-9a51-3d0f2f6f7a10")
    );
    assert_eq!(r.message_type, Some(MessageType::TaskSubmit));
}

#[test]
fn sender_must_be_a_plain_token() {
    let reg = envelope(
        "AGENT_REGISTER",
        "a.*",
        json!({"agent_id": "a1", "agent_type": "backend", "max_resources": {}}),
    );
    assert_eq!(reason("coord.agent_register.a1", &reg), "invalid_id");
}

#[test]
fn an_unknown_strategy_is_refused_and_known_ones_accepted() {
    let bad = submit(json!({"task_id": "t", "strategy": "coin_flip"}));
    assert_eq!(reason("coord.task_submit.orch", &bad), "invalid_strategy");
    let seed_spelling = submit(json!({"task_id": "t", "strategy": "ROUND_ROBIN"}));
    assert_eq!(reason("coord.task_submit.orch", &seed_spelling), "accepted");
    // The strategy is parsed once, here, and travels typed to the optimizer.
    match run("coord.task_submit.orch", &seed_spelling) {
        Ok(Inbound::Submit(_, _, strategy)) => {
            assert_eq!(
                strategy,
                Some(switchyard_decision::StrategyKind::RoundRobin)
            )
        }
        other => panic!("expected a submit, got {other:?}"),
    }
}

#[test]
fn a_tenant_is_an_id() {
    let ok = submit(json!({"task_id": "t", "tenant": "team-a.eu:1"}));
    assert_eq!(reason("coord.task_submit.orch", &ok), "accepted");
    for bad in ["", "a|b", "has space", &"x".repeat(129)] {
        let env = submit(json!({"task_id": "t", "tenant": bad}));
        assert_eq!(
            reason("coord.task_submit.orch", &env),
            "invalid_id",
            "{bad:?}"
        );
    }
}

#[test]
fn a_number_beyond_f64_is_malformed_json_where_it_is_read() {
    // serde_json refuses a number that overflows f64 ("number out of range") when it reads it:
    // in the payload that is `malformed_json` (even where a too-large amount would be
    // `resource_too_large`), reported to the sender with the message's id, since the envelope
    // was read. In a field nobody reads it is skipped with the field.
    let in_payload = r#"{"protocol_version":1,"message_id":"6f1c2d1e-8f7a-4b7e-9a51-3d0f2f6f7a10","sender":"orch","type":"TASK_SUBMIT","created_at_ms":1700000000000,"payload":{"task_id":"t1","required_resources":{"cpu":1e400}}}"#;
    let r = decode(
        &Subjects::default(),
        "coord.task_submit.orch",
        in_payload.as_bytes(),
        65_536,
        NOW,
    )
    .expect_err("out of range");
    assert_eq!(r.reason, RejectReason::MalformedJson, "{}", r.message);
    assert_eq!(r.reply_to, "orch");
    assert_eq!(
        r.correlation_id.as_deref(),
        Some("6f1c2d1e-8f7a-4b7e-9a51-3d0f2f6f7a10")
    );
    let unread = r#"{"protocol_version":1,"message_id":"6f1c2d1e-8f7a-4b7e-9a51-3d0f2f6f7a10","sender":"orch","type":"TASK_SUBMIT","created_at_ms":1700000000000,"unknown_field":-1e400,"payload":{"task_id":"t1"}}"#;
    let decoded = decode(
        &Subjects::default(),
        "coord.task_submit.orch",
        unread.as_bytes(),
        65_536,
        NOW,
    );
    assert!(decoded.is_ok(), "{decoded:?}");
    // A number too small for f64 is read as 0.
    let tiny = br#"{"protocol_version":1,"message_id":"6f1c2d1e-8f7a-4b7e-9a51-3d0f2f6f7a10","sender":"orch","type":"TASK_SUBMIT","created_at_ms":1700000000000,"payload":{"task_id":"t1","required_resources":{"cpu":1e-400}}}"#;
    match decode(
        &Subjects::default(),
        "coord.task_submit.orch",
        tiny,
        65_536,
        NOW,
    ) {
        Ok(Inbound::Submit(_, required, _)) => assert_eq!(required.cpu, 0),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_oversized_message_is_reported_to_the_subject_token_not_its_sender() {
    // Registered on the agent's behalf by `orch`: a refusal after reading goes to `orch`, but an
    // oversized message is not read at all, so its report goes to the subject's agent.
    let mut reg = envelope(
        "AGENT_REGISTER",
        "orch",
        json!({"agent_id": "a1", "agent_type": "backend", "max_resources": {}}),
    );
    reg["padding"] = json!("x".repeat(70_000));
    let r = run("coord.agent_register.a1", &reg).expect_err("too large");
    assert_eq!(r.reason, RejectReason::PayloadTooLarge);
    assert_eq!(r.reply_to, "a1");
    assert_eq!(r.correlation_id, None);
    reg["padding"] = json!("small");
    reg["protocol_version"] = json!(2);
    let r = run("coord.agent_register.a1", &reg).expect_err("version");
    assert_eq!(r.reply_to, "orch");
}

#[test]
fn an_invalid_sender_is_invalid_id_for_a_submit_too() {
    // The envelope's sender is checked before the subject: a submit from a sender that is not a
    // valid id is `invalid_id` (reported to the subject's token), not `subject_mismatch`.
    for sender in ["has space", "all", ""] {
        let r = run(
            "coord.task_submit.orch",
            &envelope("TASK_SUBMIT", sender, json!({"task_id": "t"})),
        )
        .expect_err("invalid sender");
        assert_eq!(r.reason, RejectReason::InvalidId, "sender {sender:?}");
        assert_eq!(r.reply_to, "orch");
    }
}

#[test]
fn an_event_whose_sender_is_not_its_subject_token_is_a_forgery() {
    let heartbeat = json!({"agent_id": "a", "utilization": {}});
    let forged = envelope("HEARTBEAT", "mallory", heartbeat.clone());
    let r = run("coord.heartbeat.a", &forged).expect_err("forged sender");
    assert_eq!(r.reason, RejectReason::SubjectMismatch);
    assert!(r.message.contains("mallory"), "{}", r.message);
    let own = envelope("HEARTBEAT", "a", heartbeat);
    assert_eq!(reason("coord.heartbeat.a", &own), "accepted");
    let submit_as_other = submit(json!({"task_id": "t1", "priority": 1}));
    assert_eq!(
        reason("coord.task_submit.someone-else", &submit_as_other),
        "subject_mismatch"
    );
    // Registering an agent on its behalf stays allowed.
    let register = json!({"agent_id": "a", "agent_type": "worker", "max_resources": {"cpu": 1.0}});
    let on_behalf = envelope("AGENT_REGISTER", "orch", register);
    assert_eq!(reason("coord.agent_register.a", &on_behalf), "accepted");
}

#[test]
fn time_limits_and_retries_are_checked() {
    let subject = "coord.task_submit.orch";
    let ok = submit(
        json!({"task_id": "t1", "queue_timeout_s": 0.5, "run_timeout_s": 0, "max_attempts": 3, "retry_backoff_s": 0.25}),
    );
    match run(subject, &ok) {
        Ok(Inbound::Submit(env, _, _)) => {
            assert_eq!(env.payload.queue_timeout_s, Some(0.5));
            assert_eq!(env.payload.run_timeout_s, Some(0.0));
            assert_eq!(env.payload.max_attempts, Some(3));
            assert_eq!(env.payload.retry_backoff_s, Some(0.25));
        }
        other => panic!("unexpected {other:?}"),
    }
    for bad in [
        json!({"task_id": "t1", "queue_timeout_s": -1.0}),
        json!({"task_id": "t1", "run_timeout_s": 1e12}),
        json!({"task_id": "t1", "retry_backoff_s": -0.5}),
    ] {
        assert_eq!(reason(subject, &submit(bad)), "invalid_duration");
    }
    for bad in [
        json!({"task_id": "t1", "max_attempts": 0}),
        json!({"task_id": "t1", "max_attempts": 101}),
    ] {
        assert_eq!(reason(subject, &submit(bad)), "invalid_payload");
    }
    let wrong_type = submit(json!({"task_id": "t1", "max_attempts": -2}));
    assert_ne!(reason(subject, &wrong_type), "accepted");
}
