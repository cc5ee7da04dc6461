//! The standard NATS `.creds` file: a user JWT and the user's nkey seed, which every NATS client
//! (async-nats `credentials_file`, nats-py `user_credentials`, the `nats` CLI `--creds`) loads.

use nkeys::KeyPair;

use crate::AuthError;

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
}
