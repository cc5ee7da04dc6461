//! The Redis ACL file of a secured deployment: the `default` user off, and one user for the
//! optimizers that may touch the deployment's keys only, with the commands Switchyard sends and
//! nothing else. Pure text generation; `directory.rs` writes the file.
//!
//! Redis checks ACLs on the commands a Lua script runs as well as on the call itself, so the
//! commands inside the transition scripts are listed like the ones the optimizer sends.
//! `switchyard status` asks the optimizers over NATS and never reads Redis, so no read-only
//! operator user is needed.

use sha2::{Digest, Sha256};

use crate::AuthError;

/// The user the optimizers log in as.
pub const OPTIMIZER_USER: &str = "switchyard-optimizer";

/// Every command the optimizer user may run, with the reason it needs it. Keep in step with the
/// state layer (crates/server/src/state): a command missing here fails there with NOPERM, which
/// the Redis ACL end-to-end test (tests/redis_acl.rs) shows.
pub const OPTIMIZER_COMMANDS: &[(&str, &str)] = &[
    // Scripts: every state transition is a Lua script called by its SHA; redis-rs loads it on
    // start and again on NOSCRIPT (a restarted or promoted node). EVAL itself is never sent.
    ("evalsha", "every transition script is invoked by SHA"),
    (
        "script|load",
        "scripts are loaded at start and after NOSCRIPT",
    ),
    // Inside the scripts (and some also sent directly).
    ("del", "scripts: dropping a finished task's dependency set"),
    ("exists", "scripts: does a task or agent exist"),
    ("expire", "scripts: retention of finished tasks"),
    ("pexpire", "scripts: handoff and resource-request deadlines"),
    ("hget", "scripts: single fields of records"),
    ("hmget", "scripts and reads: agent, task and handoff rows"),
    ("hset", "scripts: writing records"),
    ("hdel", "scripts: a retried task's back-off ends"),
    (
        "hincrby",
        "scripts: reservations, counters, learned patterns",
    ),
    ("sadd", "scripts: agent, task and dependency sets"),
    ("srem", "scripts: agent, task and dependency sets"),
    ("scard", "scripts: unmet dependencies left"),
    (
        "smembers",
        "scripts and reads: agents, an agent's tasks, dependents",
    ),
    (
        "zadd",
        "scripts: queue, leases, grant outbox; re-timing re-sent grants",
    ),
    (
        "zrem",
        "scripts: queue, leases; acknowledged grants leave the outbox",
    ),
    (
        "zscore",
        "scripts and reads: queue and grant outbox membership",
    ),
    ("xadd", "scripts: the fleet log"),
    ("rpush", "scripts: a task's story"),
    ("ltrim", "scripts: a task's story keeps its newest entries"),
    ("lrange", "reads: a task's story"),
    (
        "zremrangebyscore",
        "scripts: departed agents older than a day leave their index",
    ),
    (
        "zremrangebyrank",
        "scripts: the departed-agents index keeps its newest 1000",
    ),
    ("zcount", "dashboard: queued tasks per priority"),
    (
        "time",
        "scripts and reads: the Redis clock; the readiness probe",
    ),
    // Reads and bookkeeping the optimizer sends directly.
    ("hgetall", "reads: task and agent records, stats, patterns"),
    ("zrange", "reads: the head of the priority queue"),
    (
        "zrangebyscore",
        "reads: agents past their lease, stale grants",
    ),
    ("zmscore", "reads: lease deadlines for status"),
    ("zcard", "reads: queue depth"),
    (
        "zrank",
        "reads: a queued task's place in the queue (why it waits)",
    ),
    (
        "zrevrange",
        "scripts: the largest capacity of a kind (coordination.infeasible = refuse)",
    ),
    ("xrange", "reads: fleet-log entries since the last read"),
    ("xrevrange", "reads: the newest fleet-log position"),
    ("set", "scripts: the coordination-sync lease"),
    ("get", "scripts: the coordination-sync lease's holder"),
    // Connecting, by topology.
    ("select", "a redis.url naming a database other than 0"),
    (
        "ping",
        "Redis Cluster: the client checks each node connection",
    ),
    ("cluster|slots", "Redis Cluster: the slot map"),
    (
        "asking",
        "Redis Cluster: following an ASK redirection during a slot migration",
    ),
    (
        "role",
        "Sentinel: checking that the node named is the primary",
    ),
];

/// The lines of the ACL file: the default user off (no password, no command, no key), and the
/// optimizer user with its password hashed, its key pattern and [`OPTIMIZER_COMMANDS`].
/// Redis ACL files have no comments, so the file holds only these lines.
pub fn users_acl(key_prefix: &str, optimizer_password: &str) -> Result<String, AuthError> {
    check_password(optimizer_password)?;
    let commands: Vec<String> = OPTIMIZER_COMMANDS
        .iter()
        .map(|(command, _)| format!("+{command}"))
        .collect();
    Ok(format!(
        "user default off resetpass resetkeys resetchannels -@all\n\
         user {OPTIMIZER_USER} on resetpass #{} resetkeys {} resetchannels -@all {}\n",
        password_hash(optimizer_password),
        key_pattern(key_prefix)?,
        commands.join(" ")
    ))
}

/// `~{prefix}:*`: every key the state layer builds starts with the prefix as a hash tag
/// (crates/server/src/state/keys.rs). Glob characters in the prefix are escaped, so a prefix
/// matches itself only; blanks cannot be written in an ACL file, whose rules are split on
/// spaces.
pub fn key_pattern(key_prefix: &str) -> Result<String, AuthError> {
    if key_prefix.is_empty()
        || key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(AuthError::Invalid(format!(
            "Redis key prefix {key_prefix:?} must be non-empty, without blanks or control characters"
        )));
    }
    let mut escaped = String::with_capacity(key_prefix.len());
    for c in key_prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    Ok(format!("~{{{escaped}}}:*"))
}

/// The form Redis keeps a password in: SHA-256, lowercase hex.
pub fn password_hash(password: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(password.as_bytes()))
}

/// A generated password is hex; one given by hand must at least survive the file format.
fn check_password(password: &str) -> Result<(), AuthError> {
    if password.len() < 16
        || password
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(AuthError::Invalid(
            "the Redis password must be at least 16 characters, without blanks".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "0123456789abcdef0123456789abcdef";

    fn optimizer_line(text: &str) -> &str {
        text.lines()
            .find(|l| l.starts_with(&format!("user {OPTIMIZER_USER} ")))
            .unwrap_or("")
    }

    #[test]
    fn the_default_user_is_off_and_may_do_nothing() {
        let text = users_acl("switchyard", PASSWORD).expect("acl");
        let default = text.lines().next().unwrap_or("");
        assert_eq!(
            default,
            "user default off resetpass resetkeys resetchannels -@all"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().all(|l| l.starts_with("user ")), "no comments");
    }

    #[test]
    fn the_optimizer_user_holds_the_hash_not_the_password() {
        let text = users_acl("switchyard", PASSWORD).expect("acl");
        assert!(!text.contains(PASSWORD), "{text}");
        let rules: Vec<&str> = optimizer_line(&text).split(' ').collect();
        let hash = format!("#{}", password_hash(PASSWORD));
        assert_eq!(hash.len(), 65);
        assert!(rules.contains(&hash.as_str()), "{rules:?}");
        assert!(rules.contains(&"on") && rules.contains(&"resetchannels"));
        // `-@all` comes before the grants, or it would take them back.
        let all = rules.iter().position(|r| *r == "-@all").expect("-@all");
        assert!(rules[all + 1..].iter().all(|r| r.starts_with('+')));
    }

    #[test]
    fn the_optimizer_may_run_exactly_the_listed_commands_and_no_admin_one() {
        let text = users_acl("switchyard", PASSWORD).expect("acl");
        let granted: Vec<&str> = optimizer_line(&text)
            .split(' ')
            .filter_map(|r| r.strip_prefix('+'))
            .collect();
        let listed: Vec<&str> = OPTIMIZER_COMMANDS.iter().map(|(c, _)| *c).collect();
        assert_eq!(granted, listed);
        let unique: std::collections::HashSet<_> = listed.iter().collect();
        assert_eq!(unique.len(), listed.len(), "listed twice");
        for admin in [
            "flushall",
            "flushdb",
            "config",
            "keys",
            "scan",
            "eval",
            "acl",
            "debug",
            "shutdown",
            "script",
            "client",
            "info",
            "monitor",
            "module",
            "@all",
            "@admin",
            "@dangerous",
        ] {
            assert!(!granted.contains(&admin), "{admin} granted");
        }
        assert!(granted.iter().all(|c| !c.starts_with('@')), "no category");
    }

    #[test]
    fn keys_are_limited_to_the_prefix_hash_tag() {
        let text = users_acl("fleet-a", PASSWORD).expect("acl");
        let patterns: Vec<&str> = optimizer_line(&text)
            .split(' ')
            .filter(|r| r.starts_with('~') || r.starts_with('%'))
            .collect();
        assert_eq!(patterns, ["~{fleet-a}:*"]);
        assert!(!text.contains("~*") && !text.contains("allkeys"));
        assert_eq!(
            key_pattern("a*b?[c]\\").expect("escaped"),
            "~{a\\*b\\?\\[c\\]\\\\}:*"
        );
    }

    #[test]
    fn prefixes_and_passwords_the_file_cannot_hold_are_refused() {
        assert!(users_acl("", PASSWORD).is_err());
        assert!(users_acl("two words", PASSWORD).is_err());
        assert!(users_acl("line\nbreak", PASSWORD).is_err());
        assert!(users_acl("switchyard", "short").is_err());
        assert!(users_acl("switchyard", "has a blank in it somewhere").is_err());
    }

    #[test]
    fn the_hash_is_the_sha256_redis_expects() {
        // sha256("secret"), as `printf secret | sha256sum` prints it.
        assert_eq!(
            password_hash("secret"),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }
}
