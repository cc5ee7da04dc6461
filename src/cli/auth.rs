//! `switchyard auth`: the identities of a secured deployment (docs/security.md).

use std::io::Write;
use std::path::PathBuf;

use switchyard_auth::Role;
use switchyard_auth::directory::AuthDir;
use switchyard_protocol::Subjects;

use super::RunContext;

#[derive(clap::Args)]
pub(crate) struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(clap::Subcommand)]
enum AuthCommand {
    /// Creates a deployment's trust chain in DIR: nats-auth.conf for nats-server (include it),
    /// the signing keys (DIR/keys, secret), and the optimizer's and the operator's credentials;
    /// and DIR/redis/users.acl for redis-server (--aclfile) with the optimizer user's password
    /// in DIR/redis/optimizer.password, for the keys under redis.key_prefix (REDIS_KEY_PREFIX).
    Init { dir: PathBuf },
    /// Writes the credentials of a new agent (DIR/creds/agent-ID.creds); no server restart.
    AddAgent {
        id: String,
        #[arg(long, default_value = "switchyard-auth")]
        dir: PathBuf,
    },
    /// Writes the credentials of a new orchestrator (submits tasks and queries status only).
    AddOrchestrator {
        id: String,
        #[arg(long, default_value = "switchyard-auth")]
        dir: PathBuf,
    },
    /// Revokes an identity: nats-server refuses it and drops its connections once it reloads
    /// its configuration (`nats-server --signal reload`). Removes its creds file.
    Revoke {
        /// optimizer, orchestrator, agent or operator.
        #[arg(value_parser = parse_role)]
        role: Role,
        id: String,
        #[arg(long, default_value = "switchyard-auth")]
        dir: PathBuf,
    },
    /// Writes the credentials of another optimizer replica or read-only operator.
    Add {
        /// optimizer, orchestrator, agent or operator.
        #[arg(value_parser = parse_role)]
        role: Role,
        id: String,
        #[arg(long, default_value = "switchyard-auth")]
        dir: PathBuf,
    },
}

pub(crate) fn run(
    args: AuthArgs,
    context: &RunContext<'_>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match args.command {
        AuthCommand::Init { dir } => {
            let subjects = Subjects::new(context.config.nats.subject_prefix.clone());
            // The prefix the optimizers will read from the same configuration.
            let auth = AuthDir::init(&dir, subjects, &context.config.redis.key_prefix)?;
            writeln!(
                out,
                "nats-server include: {}",
                auth.server_conf_path().display()
            )?;
            for role in [Role::Optimizer, Role::Operator] {
                let path = auth.creds_path(role, role.as_str());
                writeln!(out, "{} credentials: {}", role.as_str(), path.display())?;
            }
            let acl = auth.redis_acl_path();
            writeln!(out, "redis-server --aclfile {}", acl.display())?;
            let password = auth.redis_password_path();
            writeln!(
                out,
                "optimizer redis user: REDIS_USERNAME={} REDIS_PASSWORD_FILE={}",
                switchyard_auth::redis_acl::OPTIMIZER_USER,
                password.display()
            )?;
            Ok(())
        }
        AuthCommand::AddAgent { id, dir } => add(&dir, Role::Agent, &id, out),
        AuthCommand::AddOrchestrator { id, dir } => add(&dir, Role::Orchestrator, &id, out),
        AuthCommand::Add { role, id, dir } => add(&dir, role, &id, out),
        AuthCommand::Revoke { role, id, dir } => {
            let auth = AuthDir::open(&dir)?;
            let key = auth.revoke(role, &id)?;
            writeln!(
                out,
                "revoked {}-{id} ({key}); apply it with `nats-server --signal reload` on every \
                 server that includes {}",
                role.as_str(),
                auth.server_conf_path().display()
            )?;
            Ok(())
        }
    }
}

fn add(dir: &std::path::Path, role: Role, id: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = AuthDir::open(dir)?.add(role, id)?;
    writeln!(out, "{}", path.display())?;
    Ok(())
}

fn parse_role(raw: &str) -> Result<Role, String> {
    Role::ALL
        .into_iter()
        .find(|r| r.as_str() == raw)
        .ok_or_else(|| format!("unknown role {raw:?} (optimizer, orchestrator, agent, operator)"))
}
