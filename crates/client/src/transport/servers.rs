//! The NATS server list (`nats://a:4222,tls://b:4222`) and the optional TLS files: parsed and
//! checked in one place, so the configuration check and the connection agree on what is valid.

use std::path::PathBuf;

use async_nats::{ConnectOptions, ServerAddr};

use crate::error::{Error, ErrorKind};

/// Schemes a server entry may use: plain or TLS client connections. (async-nats also takes
/// `ws://`, but Switchyard's deployments do not use websockets, so a typo stays an error.)
const SCHEMES: [&str; 2] = ["nats://", "tls://"];

/// Parses a comma-separated list of server URLs. Either every entry parses, or the result lists
/// one problem per bad entry (so a configuration check can report them all at once).
pub fn parse_servers(list: &str) -> Result<Vec<ServerAddr>, Vec<String>> {
    let mut servers = Vec::new();
    let mut problems = Vec::new();
    for (position, entry) in list.split(',').map(str::trim).enumerate() {
        match parse_entry(entry) {
            Ok(server) => servers.push(server),
            Err(why) => problems.push(format!("entry {} {entry:?} {why}", position + 1)),
        }
    }
    if problems.is_empty() {
        Ok(servers)
    } else {
        Err(problems)
    }
}

fn parse_entry(entry: &str) -> Result<ServerAddr, String> {
    if entry.is_empty() {
        return Err("is empty".into());
    }
    if !SCHEMES.iter().any(|scheme| entry.starts_with(scheme)) {
        return Err("must start with nats:// or tls://".into());
    }
    let server: ServerAddr = entry.parse().map_err(|e| format!("is invalid: {e}"))?;
    if server.host().is_empty() {
        return Err("names no host".into());
    }
    Ok(server)
}

/// How the NATS connection proves who it talks to and who it is: optional TLS files, and the
/// `.creds` file of a secured deployment. Unset (`None`) files are not used; a `tls://` server
/// entry alone makes the connection use TLS with the system's root certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsSecurity {
    /// PEM file of the certificate authorities that signed the servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// A NATS `.creds` file made by `switchyard auth` (user JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
}

impl NatsSecurity {
    /// Adds what is set to the connect options. With a creds file, request replies come back
    /// under the identity's own inbox prefix, the only one its permissions let it read.
    pub(crate) async fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, Error> {
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(path) = &self.creds_file {
            let unreadable = |why: String| {
                Error::new(
                    ErrorKind::Config,
                    format!("NATS credentials {}: {why}", path.display()),
                )
            };
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| unreadable(e.to_string()))?;
            let identity = switchyard_auth::creds::identity_of(&text)
                .map_err(|e| unreadable(e.to_string()))?;
            options = options
                .credentials(&text)
                .map_err(|e| unreadable(e.to_string()))?
                .custom_inbox_prefix(identity.inbox_prefix());
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_servers;

    #[test]
    fn a_list_of_nats_and_tls_servers_parses_in_order() {
        let servers =
            parse_servers("nats://a:4222, tls://b:4333,nats://127.0.0.1:1").expect("valid list");
        let hosts: Vec<(&str, u16)> = servers.iter().map(|s| (s.host(), s.port())).collect();
        assert_eq!(hosts, [("a", 4222), ("b", 4333), ("127.0.0.1", 1)]);
        assert!(servers[1].tls_required());
        assert_eq!(parse_servers("nats://one:4222").map(|s| s.len()), Ok(1));
    }

    #[test]
    fn every_bad_entry_is_reported() {
        let problems = parse_servers("http://x,nats://ok:1,,a:4222,nats://:9").expect_err("bad");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("entry 1 \"http://x\""), "{problems:?}");
        assert!(problems[1].contains("entry 3") && problems[1].contains("empty"));
        assert!(problems[2].contains("entry 4 \"a:4222\" must start with"));
        assert!(problems[3].contains("entry 5"), "{problems:?}");
    }
}
