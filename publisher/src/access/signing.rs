//! Signed requests: [`sign`] on the client side, and [`authenticate`] on the validator side,
//! which checks the signature, its time and nonce, and finds the identity the policy registers
//! for the signing key. The validator's dispatcher calls it once per request, before anything
//! else.
//!
//! A request may also carry a person's session token ([`sign_with_session`], header
//! [`HEADER_SESSION`]): then the signer is the console relaying it, and the caller is the person
//! the token proves ([`super::session::verify`]), recorded "via" the console.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use mycosynth_subscriber::wire::{
    session_request_payload, signing_payload, ErrorKind, Policy, HEADER_KEY, HEADER_NONCE,
    HEADER_SESSION, HEADER_SIGNATURE, HEADER_TIME, MAX_CLOCK_SKEW_MS,
};

use super::caller::Caller;
use crate::failure::{failure, Failure};

/// How the validator establishes who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// No authentication (local tinkering with `nats/dev.conf` only): the `author` a request
    /// declares is recorded as is, and every caller may do everything.
    #[default]
    Open,
    /// Every request must be signed by a key registered in the policy, and the policy decides
    /// what it may do. The recorded author is the verified identity.
    Signed,
}

/// Signs `body` for `subject` with `key`: the headers to send with it.
pub fn sign(
    key: &nkeys::KeyPair,
    subject: &str,
    body: &[u8],
) -> Result<async_nats::HeaderMap, String> {
    sign_request(key, subject, body, None)
}

/// Signs `body` for `subject` with the console's `key` on behalf of the person whose session
/// token is `session`: the headers to send (the token in [`HEADER_SESSION`], covered by the
/// signature).
pub fn sign_with_session(
    key: &nkeys::KeyPair,
    subject: &str,
    body: &[u8],
    session: &str,
) -> Result<async_nats::HeaderMap, String> {
    sign_request(key, subject, body, Some(session))
}

fn sign_request(
    key: &nkeys::KeyPair,
    subject: &str,
    body: &[u8],
    session: Option<&str>,
) -> Result<async_nats::HeaderMap, String> {
    let time_ms = now_ms();
    let nonce = uuid::Uuid::now_v7().to_string();
    let payload = match session {
        Some(token) => session_request_payload(subject, time_ms, &nonce, token, body),
        None => signing_payload(subject, time_ms, &nonce, body),
    };
    let signature = key
        .sign(&payload)
        .map_err(|e| format!("cannot sign the request: {e}"))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_KEY, key.public_key().as_str());
    headers.insert(HEADER_TIME, time_ms.to_string().as_str());
    headers.insert(HEADER_NONCE, nonce.as_str());
    headers.insert(
        HEADER_SIGNATURE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signature)
            .as_str(),
    );
    if let Some(token) = session {
        headers.insert(HEADER_SESSION, token);
    }
    Ok(headers)
}

fn now_ms() -> i64 {
    crate::clock::now_ms()
}

fn denied(message: String) -> Failure {
    metrics::counter!("mycosynth_validator_auth_failures_total").increment(1);
    failure(ErrorKind::AccessDenied, message)
}

/// Nonces seen within the clock-skew window: a captured request cannot be replayed.
#[derive(Debug, Default)]
pub struct Nonces {
    seen: Mutex<HashMap<String, i64>>,
}

impl Nonces {
    /// Records `nonce` (signed at `time_ms`); false if it was seen already.
    fn first_use(&self, nonce: &str, time_ms: i64, now: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 10_000 {
            seen.retain(|_, t| (now - *t).abs() <= MAX_CLOCK_SKEW_MS);
        }
        seen.insert(nonce.to_owned(), time_ms).is_none()
    }
}

/// Establishes who sent `message`: in [`AuthMode::Open`] nobody; in [`AuthMode::Signed`] the
/// identity of `policy` whose key signed the subject, time, nonce and body. Missing, forged,
/// expired or replayed signatures and unknown keys are refused with `access_denied` and the
/// reason. With a session token, the caller is the person it proves, via the signer.
pub fn authenticate(
    mode: AuthMode,
    policy: &Policy,
    nonces: &Nonces,
    message: &async_nats::Message,
) -> Result<Caller, Failure> {
    if mode == AuthMode::Open {
        return Ok(Caller::unverified());
    }
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let (Some(public_key), Some(time), Some(nonce), Some(signature)) = (
        header(HEADER_KEY),
        header(HEADER_TIME),
        header(HEADER_NONCE),
        header(HEADER_SIGNATURE),
    ) else {
        return Err(denied(format!(
            "the request is not signed (it needs the {HEADER_KEY}, {HEADER_TIME}, {HEADER_NONCE} and {HEADER_SIGNATURE} headers; give the CLI your nkey with --nkey-file or MYCOSYNTH_NKEY)"
        )));
    };
    let time_ms: i64 = time
        .parse()
        .map_err(|_| denied(format!("the signing time {time:?} is not a number")))?;
    let now = now_ms();
    if (now - time_ms).abs() > MAX_CLOCK_SKEW_MS {
        return Err(denied(format!(
            "the signature has expired: signed {} s away from the validator's clock (at most {} s)",
            (now - time_ms) / 1000,
            MAX_CLOCK_SKEW_MS / 1000
        )));
    }
    let verifier = nkeys::KeyPair::from_public_key(&public_key)
        .map_err(|_| denied(format!("{public_key:?} is not a public nkey")))?;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature.as_bytes())
        .map_err(|_| denied("the signature is not base64url".into()))?;
    let session = header(HEADER_SESSION);
    let payload = match &session {
        Some(token) => session_request_payload(
            message.subject.as_str(),
            time_ms,
            &nonce,
            token,
            &message.payload,
        ),
        None => signing_payload(message.subject.as_str(), time_ms, &nonce, &message.payload),
    };
    verifier.verify(&payload, &signature).map_err(|_| {
        denied(format!(
            "forged signature: it does not verify with key {public_key}"
        ))
    })?;
    let identity = policy
        .identities
        .iter()
        .find(|(_, record)| record.public_key == public_key)
        .map(|(name, _)| name.clone())
        .ok_or_else(|| denied(format!("key {public_key} is not registered in the policy")))?;
    if !nonces.first_use(&nonce, time_ms, now) {
        return Err(denied(format!(
            "replayed request: nonce {nonce} was already used by {identity}"
        )));
    }
    match session {
        None => Ok(Caller::verified(identity, public_key)),
        Some(token) => {
            let (person, key) = super::session::verify(&token, policy, &public_key, now)
                .inspect_err(|refusal| {
                    tracing::warn!(via = %identity, reason = %refusal.message, "session token refused");
                })?;
            Ok(Caller::verified(person, key).relayed_by(identity))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::IdentityRecord;

    fn message(
        subject: &str,
        body: &[u8],
        headers: Option<async_nats::HeaderMap>,
    ) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: bytes::Bytes::copy_from_slice(body),
            headers,
            status: None,
            description: None,
            length: body.len(),
        }
    }

    fn policy(name: &str, key: &nkeys::KeyPair) -> Policy {
        Policy {
            identities: [(
                name.to_owned(),
                IdentityRecord {
                    public_key: key.public_key(),
                },
            )]
            .into(),
            grants: Vec::new(),
            approvals: Vec::new(),
        }
    }

    #[test]
    fn a_signed_request_names_its_identity_and_cannot_be_replayed() {
        let alice = nkeys::KeyPair::new_user();
        let headers = sign(&alice, "mycosynth.api.change", b"{}").unwrap();
        let msg = message("mycosynth.api.change", b"{}", Some(headers));
        let nonces = Nonces::default();
        let caller =
            authenticate(AuthMode::Signed, &policy("alice", &alice), &nonces, &msg).unwrap();
        assert_eq!(caller.identity.as_deref(), Some("alice"));
        let again =
            authenticate(AuthMode::Signed, &policy("alice", &alice), &nonces, &msg).unwrap_err();
        assert!(again.message.contains("replayed"), "{}", again.message);
    }

    #[test]
    fn forged_unsigned_and_unknown_requests_are_refused() {
        let alice = nkeys::KeyPair::new_user();
        let mallory = nkeys::KeyPair::new_user();
        let nonces = Nonces::default();
        let policy = policy("alice", &alice);
        // Body changed after signing.
        let headers = sign(&alice, "mycosynth.api.change", b"{}").unwrap();
        let forged = message("mycosynth.api.change", b"{\"x\":1}", Some(headers));
        let err = authenticate(AuthMode::Signed, &policy, &nonces, &forged).unwrap_err();
        assert_eq!(err.kind, ErrorKind::AccessDenied);
        assert!(err.message.contains("forged"), "{}", err.message);
        // An empty change request with these headers, refused.
        let refused = |headers| {
            let request = message("mycosynth.api.change", b"{}", headers);
            authenticate(AuthMode::Signed, &policy, &nonces, &request).unwrap_err()
        };
        // Mallory signs with her own key but claims Alice's public key.
        let mut headers = sign(&mallory, "mycosynth.api.change", b"{}").unwrap();
        headers.insert(HEADER_KEY, alice.public_key().as_str());
        let err = refused(Some(headers));
        assert!(err.message.contains("forged"), "{}", err.message);
        // Unsigned.
        let err = refused(None);
        assert!(err.message.contains("not signed"), "{}", err.message);
        // Signed by a key the policy does not know.
        let headers = sign(&mallory, "mycosynth.api.change", b"{}").unwrap();
        let err = refused(Some(headers));
        assert!(err.message.contains("not registered"), "{}", err.message);
        // Expired.
        let mut headers = sign(&alice, "mycosynth.api.change", b"{}").unwrap();
        headers.insert(HEADER_TIME, "1000");
        let err = refused(Some(headers));
        assert!(err.message.contains("expired"), "{}", err.message);
    }
}
