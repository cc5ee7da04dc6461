//! The standard NATS `.creds` file: a user JWT and the user's nkey seed, which every NATS client
//! (async-nats `credentials_file`, nats-py `user_credentials`, the `nats` CLI `--creds`) loads.

use nkeys::KeyPair;

use crate::roles::{Role, inbox_prefix};
use crate::{AuthError, jwt};

/// Who a `.creds` file says its holder is: the role and the name its permissions are filled
/// in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    /// The inbox prefix this identity's permissions allow for request replies.
    pub fn inbox_prefix(&self) -> String {
        inbox_prefix(self.role, &self.name)
    }
}

/// Reads the identity out of a `.creds` file's text (the user JWT's name and role tag). The
/// signature is not checked here: the server checks it when the holder connects.
pub fn identity_of(creds: &str) -> Result<Identity, AuthError> {
    let claims = jwt::decode_claims(jwt_of(creds)?)?;
    let name = claims["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AuthError::Invalid("the user JWT has no name".into()))?;
    let role = claims["nats"]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().and_then(Role::from_tag))
        .next()
        .ok_or_else(|| {
            AuthError::Invalid(format!(
                "the user JWT of {name:?} names no Switchyard role: not made by `switchyard auth`"
            ))
        })?;
    Ok(Identity {
        role,
        name: name.to_string(),
    })
}

/// The text of a `.creds` file for `jwt`, whose subject is `user`.
pub fn creds_file(jwt: &str, user: &KeyPair) -> Result<String, AuthError> {
    let seed = user.seed().map_err(|e| AuthError::Key(e.to_string()))?;
    Ok(format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    ))
}

/// The user JWT of a `.creds` file's text.
pub fn jwt_of(creds: &str) -> Result<&str, AuthError> {
    let mut lines = creds
        .lines()
        .skip_while(|l| !l.contains("BEGIN NATS USER JWT"));
    lines.next();
    lines
        .next()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| AuthError::Invalid("no user JWT in the credentials".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creds_file_holds_the_jwt_and_the_seed() {
        let user = KeyPair::new_user();
        let text = creds_file("header.claims.signature", &user).expect("writes");
        assert_eq!(jwt_of(&text).expect("reads"), "header.claims.signature");
        let seed = user.seed().expect("seed");
        assert!(text.contains(&format!("-----BEGIN USER NKEY SEED-----\n{seed}\n")));
        assert!(jwt_of("no jwt here").is_err());
    }

    #[test]
    fn a_creds_file_names_its_role_and_identity() {
        let trust = crate::Trust::generate();
        let user = KeyPair::new_user();
        let jwt = trust
            .user_jwt(Role::Agent, "worker-3", &user)
            .expect("signs");
        let identity = identity_of(&creds_file(&jwt, &user).expect("writes")).expect("reads");
        assert_eq!(identity.role, Role::Agent);
        assert_eq!(identity.name, "worker-3");
        assert_eq!(identity.inbox_prefix(), "_INBOX_agent.worker-3");
        let untagged = crate::jwt::encode(
            crate::jwt::Claims {
                subject: &user.public_key(),
                name: "x",
                issued_at: 1,
                nats: serde_json::json!({"type": "user"}),
            },
            &KeyPair::new_account(),
        )
        .expect("signs");
        let refused = identity_of(&creds_file(&untagged, &user).expect("writes"));
        assert!(refused.is_err(), "{refused:?}");
    }
}
