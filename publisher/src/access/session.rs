//! Console sessions: a person signs a short-lived [`SessionToken`] for one console
//! ([`session_token`], used by `mycosynth console login`), the console presents it with each
//! request it signs with its own key, and the validator ([`verify`], called by
//! [`super::signing::authenticate`]) records the request as the person's, "via" the console.
//!
//! The console holds no rights of its own: its key only proves which console relays the
//! request, and a token names the one console it is for (its audience), so a stolen token is
//! useless without that console's key, and the console's key alone acts for nobody.

use std::time::Duration;

use mycosynth_subscriber::wire::{
    session_signing_payload, ErrorKind, Policy, SessionClaims, SessionToken, MAX_CLOCK_SKEW_MS,
    MAX_SESSION_TTL_MS,
};

use crate::failure::{failure, Failure};

/// Why a session token could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The lifetime asked for is zero or longer than [`MAX_SESSION_TTL_MS`].
    #[error("--ttl {asked_s} s: a session lasts from 1 s to {} h", MAX_SESSION_TTL_MS / 3_600_000)]
    Ttl {
        /// The lifetime asked for, in seconds.
        asked_s: u64,
    },
    /// The audience is not a public user nkey.
    #[error("audience {0:?} is not a console's public user nkey (U...)")]
    Audience(String),
    /// The key cannot sign (a public key without its seed).
    #[error("cannot sign the session token: {0}")]
    Sign(String),
}

/// A session token for the console whose public key is `audience`, signed by `key` (the
/// person's seed), valid for `ttl` from now (at most [`MAX_SESSION_TTL_MS`]).
pub fn session_token(
    key: &nkeys::KeyPair,
    audience: &str,
    ttl: Duration,
) -> Result<String, SessionError> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    if ttl_ms <= 0 || ttl_ms > MAX_SESSION_TTL_MS {
        return Err(SessionError::Ttl {
            asked_s: ttl.as_secs(),
        });
    }
    if !audience.starts_with('U') || nkeys::KeyPair::from_public_key(audience).is_err() {
        return Err(SessionError::Audience(audience.to_owned()));
    }
    let now = crate::clock::now_ms();
    let claims = SessionClaims {
        identity_key: key.public_key(),
        audience: audience.to_owned(),
        issued_at_ms: now,
        expires_at_ms: now.saturating_add(ttl_ms),
        nonce: uuid::Uuid::now_v7().to_string(),
    };
    // A struct of strings and integers always serializes.
    let json = serde_json::to_vec(&claims).map_err(|e| SessionError::Sign(e.to_string()))?;
    let signature = key
        .sign(&session_signing_payload(&json))
        .map_err(|e| SessionError::Sign(e.to_string()))?;
    Ok(SessionToken::encode(&json, &signature))
}

/// The person a session token proves, for a request signed by the key `signer`: the identity's
/// name and public key. Refused (`access_denied`, one line naming what failed) when the token is
/// malformed, signed by a key the policy does not register, not signed by its key (tampered),
/// for another console than `signer`, expired, issued in the future or too long-lived.
pub fn verify(
    token: &str,
    policy: &Policy,
    signer: &str,
    now_ms: i64,
) -> Result<(String, String), Failure> {
    let token = SessionToken::parse(token).map_err(|e| refused(e.to_string()))?;
    let claims = &token.claims;
    let key = &claims.identity_key;
    let identity = policy
        .identities
        .iter()
        .find(|(_, record)| &record.public_key == key)
        .map(|(name, _)| name.clone())
        .ok_or_else(|| {
            refused(format!(
                "unknown identity: key {key} is not registered in the policy"
            ))
        })?;
    let verifier = nkeys::KeyPair::from_public_key(key)
        .map_err(|_| refused(format!("{key:?} is not a public nkey")))?;
    verifier
        .verify(&session_signing_payload(&token.claims_json), &token.signature)
        .map_err(|_| {
            refused(format!(
                "bad signature: the token does not verify with {identity}'s key {key} (altered or forged)"
            ))
        })?;
    if claims.audience != signer {
        return Err(refused(format!(
            "wrong audience: the token of {identity} is for the console key {}, but the request is signed by {signer}",
            claims.audience
        )));
    }
    check_times(claims, &identity, now_ms)?;
    Ok((identity, key.clone()))
}

/// Expiry (with the clock skew allowance of signed requests), issue time, lifetime.
fn check_times(claims: &SessionClaims, identity: &str, now_ms: i64) -> Result<(), Failure> {
    if now_ms > claims.expires_at_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(refused(format!(
            "expired: the token of {identity} expired {} s ago (at {}); sign in again with `mycosynth console login`",
            (now_ms - claims.expires_at_ms) / 1000,
            crate::clock::rfc3339_ms(claims.expires_at_ms)
        )));
    }
    if claims.issued_at_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(refused(format!(
            "issued in the future: the token of {identity} was signed {} s ahead of the validator's clock",
            (claims.issued_at_ms - now_ms) / 1000
        )));
    }
    if claims.expires_at_ms.saturating_sub(claims.issued_at_ms) > MAX_SESSION_TTL_MS {
        return Err(refused(format!(
            "too long-lived: the token of {identity} lasts longer than the {} h allowed",
            MAX_SESSION_TTL_MS / 3_600_000
        )));
    }
    Ok(())
}

fn refused(reason: String) -> Failure {
    metrics::counter!("mycosynth_validator_session_refusals_total").increment(1);
    failure(
        ErrorKind::AccessDenied,
        format!("session token refused: {reason}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::IdentityRecord;

    fn policy(people: &[(&str, &nkeys::KeyPair)]) -> Policy {
        Policy {
            identities: people
                .iter()
                .map(|(name, key)| {
                    (
                        (*name).to_owned(),
                        IdentityRecord {
                            public_key: key.public_key(),
                        },
                    )
                })
                .collect(),
            ..Policy::default()
        }
    }

    #[test]
    fn a_token_names_its_person_for_its_console_only() {
        let (alice, console, other) = (
            nkeys::KeyPair::new_user(),
            nkeys::KeyPair::new_user(),
            nkeys::KeyPair::new_user(),
        );
        let policy = policy(&[("alice", &alice), ("console", &console)]);
        let hour = Duration::from_secs(3600);
        let token = session_token(&alice, &console.public_key(), hour).unwrap();
        let now = crate::clock::now_ms();
        let (identity, key) = verify(&token, &policy, &console.public_key(), now).unwrap();
        assert_eq!((identity.as_str(), key), ("alice", alice.public_key()));

        let refusal = |token: &str, signer: &str, at: i64| {
            let err = verify(token, &policy, signer, at).unwrap_err();
            assert_eq!(err.kind, ErrorKind::AccessDenied);
            err.message
        };
        let msg = refusal(&token, &other.public_key(), now);
        assert!(msg.contains("wrong audience"), "{msg}");
        let msg = refusal(&token, &console.public_key(), now + 2 * 3_600_000);
        assert!(msg.contains("expired"), "{msg}");
        // Within the clock skew allowance after expiry: still accepted.
        assert!(verify(
            &token,
            &policy,
            &console.public_key(),
            now + 3_600_000 + 1_000
        )
        .is_ok());
        let stranger = session_token(&other, &console.public_key(), hour).unwrap();
        let msg = refusal(&stranger, &console.public_key(), now);
        assert!(msg.contains("unknown identity"), "{msg}");
        // One claim changed after signing (another audience, same signature).
        let parsed = SessionToken::parse(&token).unwrap();
        let altered = String::from_utf8(parsed.claims_json)
            .unwrap()
            .replace(&console.public_key(), &other.public_key());
        let tampered = SessionToken::encode(altered.as_bytes(), &parsed.signature);
        let msg = refusal(&tampered, &other.public_key(), now);
        assert!(msg.contains("bad signature"), "{msg}");
        let msg = refusal("garbage", &console.public_key(), now);
        assert!(msg.contains("malformed"), "{msg}");
    }

    #[test]
    fn a_token_is_short_lived_and_for_a_console_key() {
        let alice = nkeys::KeyPair::new_user();
        let console = nkeys::KeyPair::new_user().public_key();
        let day = Duration::from_millis(MAX_SESSION_TTL_MS as u64);
        assert!(session_token(&alice, &console, day).is_ok());
        assert_eq!(
            session_token(&alice, &console, day + Duration::from_secs(1)),
            Err(SessionError::Ttl { asked_s: 86_401 })
        );
        assert!(matches!(
            session_token(&alice, &console, Duration::ZERO),
            Err(SessionError::Ttl { .. })
        ));
        assert!(matches!(
            session_token(&alice, "console", day),
            Err(SessionError::Audience(_))
        ));
    }
}
