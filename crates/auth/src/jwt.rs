//! NATS JWTs (version 2 claims): a header, the claims and an ed25519 signature by an nkey, as
//! nats-server verifies them in operator mode.
//!
//! Why not a JWT library: NATS signs with the `ed25519-nkey` algorithm (an nkey signs the
//! `header.claims` text) and derives the `jti` from the claims, which general JWT crates do not
//! do; the format is small enough to build here, next to the nkeys it is signed with.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512_256};

use crate::AuthError;

/// What every NATS JWT says besides its type-specific `nats` section.
pub(crate) struct Claims<'a> {
    /// The public key the JWT is about (`sub`).
    pub subject: &'a str,
    /// A human-readable name; for users, the identity that permission templates see as `name()`.
    pub name: &'a str,
    /// Seconds since the Unix epoch when it was issued (`iat`).
    pub issued_at: u64,
    /// The type-specific section (`nats`), including `type` and `version`.
    pub nats: Value,
}

/// Signs `claims` with `signer`, whose public key becomes the issuer (`iss`).
pub(crate) fn encode(claims: Claims<'_>, signer: &KeyPair) -> Result<String, AuthError> {
    let mut body = Map::new();
    body.insert("iat".into(), json!(claims.issued_at));
    body.insert("iss".into(), json!(signer.public_key()));
    body.insert("name".into(), json!(claims.name));
    body.insert("sub".into(), json!(claims.subject));
    body.insert("nats".into(), claims.nats);
    // As the Go library does: the id is the hash of the claims without it.
    let unsigned = serde_json::to_vec(&body).map_err(AuthError::json)?;
    let jti = data_encoding::BASE32_NOPAD.encode(&Sha512_256::digest(&unsigned));
    body.insert("jti".into(), json!(jti));

    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).map_err(AuthError::json)?);
    let signing_input = format!("{header}.{payload}");
    let signature = signer
        .sign(signing_input.as_bytes())
        .map_err(|e| AuthError::Key(e.to_string()))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// The claims of a JWT, without checking its signature: for a client reading its own
/// credentials (the server checks the signature when it connects).
pub(crate) fn decode_claims(jwt: &str) -> Result<Value, AuthError> {
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| AuthError::Invalid("a JWT has three dot-separated parts".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| AuthError::Invalid(format!("JWT claims are not base64url: {e}")))?;
    serde_json::from_slice(&bytes).map_err(AuthError::json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_is_signed_by_its_issuer_and_carries_its_claims() {
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let claims = Claims {
            subject: &user.public_key(),
            name: "agent-7",
            issued_at: 1_700_000_000,
            nats: json!({"type": "user", "version": 2}),
        };
        let jwt = encode(claims, &account).expect("signs");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url");
        let input = format!("{}.{}", parts[0], parts[1]);
        account
            .verify(input.as_bytes(), &signature)
            .expect("the issuer's signature verifies");
        assert!(user.verify(input.as_bytes(), &signature).is_err());

        let decoded = decode_claims(&jwt).expect("decodes");
        assert_eq!(decoded["iss"], account.public_key());
        assert_eq!(decoded["sub"], user.public_key());
        assert_eq!(decoded["name"], "agent-7");
        assert_eq!(decoded["nats"]["type"], "user");
        assert_eq!(decoded["jti"].as_str().map(str::len), Some(52));
    }
}
