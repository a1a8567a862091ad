//! The `jwt` backend: OIDC/JWT bearer tokens (for example Kubernetes projected service-account
//! tokens) verified with the `jsonwebtoken` crate against the issuer's JWKS (a file, read again
//! when it changes, or a URL, fetched again on an unknown key id and every few minutes), with
//! issuer, audience and time checks, and claim mappings to an identity and a namespace.
//!
//! Refused, each with its reason: `alg: none` and any algorithm not configured (HMAC never is:
//! a public JWKS key must not double as a shared secret), an unknown key id, a signature that
//! does not verify, a wrong issuer or audience, an expired or not-yet-valid token.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mycosynth_subscriber::wire::IdentityKind;
use serde_json::Value;

use super::reloading::Reloading;

/// Where the issuer's public keys come from.
pub enum KeySource {
    /// A JWKS file, read again when it changes.
    File(Reloading<JwkSet>),
    /// A JWKS URL (`https://` or `http://`).
    Url(UrlKeys),
}

/// A JWKS fetched from a URL and kept for a while.
pub struct UrlKeys {
    url: String,
    agent: ureq::Agent,
    cached: Mutex<(Arc<JwkSet>, Instant)>,
}

/// How long a fetched JWKS is used before it is fetched again.
const URL_REFRESH: Duration = Duration::from_secs(300);
/// An unknown key id fetches the JWKS again, but not more often than this.
const URL_MIN_REFETCH: Duration = Duration::from_secs(10);

/// Parses JWKS JSON.
pub fn parse_jwks(text: &str) -> Result<JwkSet, String> {
    serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))
}

impl UrlKeys {
    /// Fetches the JWKS at `url` now (start-up fails if it cannot be read).
    pub fn open(url: &str) -> Result<UrlKeys, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let keys = fetch(&agent, url)?;
        Ok(UrlKeys {
            url: url.to_owned(),
            agent,
            cached: Mutex::new((Arc::new(keys), Instant::now())),
        })
    }

    /// The keys; fetched again if older than [`URL_REFRESH`], or if `want_kid` is not among
    /// them and the last fetch is older than [`URL_MIN_REFETCH`].
    async fn get(&self, want_kid: Option<&str>) -> Arc<JwkSet> {
        let (keys, fetched) = {
            let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            (Arc::clone(&cached.0), cached.1)
        };
        let missing = want_kid.is_some_and(|kid| keys.find(kid).is_none());
        let age = fetched.elapsed();
        if age < URL_REFRESH && !(missing && age >= URL_MIN_REFETCH) {
            return keys;
        }
        let (agent, url) = (self.agent.clone(), self.url.clone());
        let fresh = tokio::task::spawn_blocking(move || fetch(&agent, &url)).await;
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        cached.1 = Instant::now();
        match fresh {
            Ok(Ok(keys)) => cached.0 = Arc::new(keys),
            Ok(Err(err)) => {
                metrics::counter!("mycosynth_callout_reload_errors_total").increment(1);
                tracing::error!(error = %err, "cannot fetch the JWKS; the previous keys stay in force");
            }
            Err(err) => tracing::error!(error = %err, "JWKS fetch task failed"),
        }
        Arc::clone(&cached.0)
    }
}

fn fetch(agent: &ureq::Agent, url: &str) -> Result<JwkSet, String> {
    let text = agent
        .get(url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .map_err(|e| format!("{url}: {e}"))?;
    parse_jwks(&text).map_err(|e| format!("{url}: {e}"))
}

/// A claim path: `/a/b` is a JSON pointer; `a.b.c` walks objects by dots, where a key may itself
/// contain dots (`kubernetes.io.serviceaccount.name` finds `{"kubernetes.io": {"serviceaccount":
/// {"name": ..}}}`): at each level the longest key that matches is taken.
pub fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        return claims.pointer(path);
    }
    let segments: Vec<&str> = path.split('.').collect();
    walk(claims, &segments)
}

fn walk<'a>(value: &'a Value, segments: &[&str]) -> Option<&'a Value> {
    if segments.is_empty() {
        return Some(value);
    }
    let object = value.as_object()?;
    (1..=segments.len()).rev().find_map(|n| {
        let key = segments[..n].join(".");
        object.get(&key).and_then(|v| walk(v, &segments[n..]))
    })
}

/// The `jwt` backend, built from its config.
pub struct JwtBackend {
    /// The `iss` this backend trusts.
    pub issuer: String,
    /// Accepted `aud` values (a token must name one of them).
    pub audiences: Vec<String>,
    /// Accepted signature algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
    /// The issuer's keys.
    pub keys: KeySource,
    /// Claim path of the identity's name.
    pub identity_claim: String,
    /// The kind every identity of this issuer has (`service` and its namespace claim, or
    /// another kind).
    pub kind: String,
    /// Claim path of the namespace (services).
    pub namespace_claim: Option<String>,
}

/// What a verified token proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The identity's name (the identity claim).
    pub identity: String,
    /// Its kind.
    pub kind: IdentityKind,
    /// The token's `exp`.
    pub expires: u64,
}

/// What the backend says about a token.
#[derive(Debug, PartialEq, Eq)]
pub enum JwtVerdict {
    /// Not a JWT, or one of another issuer: for the next backend (the reason says why).
    NotMine(String),
    /// Verified.
    Accept(Verified),
    /// A token of this issuer that fails a check.
    Refuse(String),
}

/// The decoded JSON of one base64url part of a token.
fn part(token: &str, n: usize) -> Option<Value> {
    let text = token.split('.').nth(n)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).ok()?).ok()
}

impl JwtBackend {
    /// Checks `token`.
    pub async fn verify(&self, token: &str) -> JwtVerdict {
        if token.split('.').count() != 3 {
            return JwtVerdict::NotMine("not a JWT".into());
        }
        let (Some(header), Some(unverified)) = (part(token, 0), part(token, 1)) else {
            return JwtVerdict::NotMine("not a JWT".into());
        };
        let iss = unverified["iss"].as_str().unwrap_or_default();
        if iss != self.issuer {
            return JwtVerdict::NotMine(format!(
                "issuer {iss:?} is not the trusted issuer {:?}",
                self.issuer
            ));
        }
        let alg = header["alg"].as_str().unwrap_or_default();
        let Some(algorithm) = self
            .algorithms
            .iter()
            .copied()
            .find(|a| format!("{a:?}") == alg)
        else {
            return JwtVerdict::Refuse(format!("algorithm {alg:?} is not accepted"));
        };
        let kid = header["kid"].as_str();
        let keys = match &self.keys {
            KeySource::File(file) => file.get(),
            KeySource::Url(url) => url.get(kid).await,
        };
        let jwk = match kid {
            Some(kid) => keys.find(kid),
            None if keys.keys.len() == 1 => keys.keys.first(),
            None => return JwtVerdict::Refuse("the token names no key id (kid)".into()),
        };
        let Some(jwk) = jwk else {
            return JwtVerdict::Refuse(format!("unknown key id {:?}", kid.unwrap_or_default()));
        };
        if let Some(key_alg) = jwk.common.key_algorithm {
            if format!("{key_alg:?}") != alg {
                return JwtVerdict::Refuse(format!("key {kid:?} is for {key_alg:?}, not {alg}"));
            }
        }
        let key = match DecodingKey::from_jwk(jwk) {
            Ok(key) => key,
            Err(err) => return JwtVerdict::Refuse(format!("key {kid:?} is unusable: {err}")),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        match jsonwebtoken::decode::<Value>(token, &key, &validation) {
            Ok(data) => self.map_claims(&data.claims),
            Err(err) => JwtVerdict::Refuse(refusal(err.kind())),
        }
    }

    fn map_claims(&self, claims: &Value) -> JwtVerdict {
        let text = |path: &str| {
            claim(claims, path)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let Some(identity) = text(&self.identity_claim).filter(|s| !s.is_empty()) else {
            return JwtVerdict::Refuse(format!("no identity claim {:?}", self.identity_claim));
        };
        let namespace = match &self.namespace_claim {
            Some(path) => match text(path) {
                Some(ns) => Some(ns),
                None => return JwtVerdict::Refuse(format!("no namespace claim {path:?}")),
            },
            None => None,
        };
        let kind = match IdentityKind::parse(&self.kind, namespace.as_deref()) {
            Ok(kind) => kind,
            Err(err) => return JwtVerdict::Refuse(format!("identity {identity:?}: {err}")),
        };
        JwtVerdict::Accept(Verified {
            identity,
            kind,
            expires: claims["exp"].as_u64().unwrap_or_default(),
        })
    }
}

fn refusal(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience (aud)".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim:?} claim"),
        ErrorKind::InvalidAlgorithm => "the algorithm does not fit the key".into(),
        other => format!("invalid token: {other:?}"),
    }
}

/// The algorithms a `jwt` backend may accept (asymmetric only).
pub fn algorithm(name: &str) -> Option<Algorithm> {
    use Algorithm::*;
    [
        RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ]
    .into_iter()
    .find(|a| format!("{a:?}") == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_paths_walk_keys_that_contain_dots() {
        let claims = serde_json::json!({
            "sub": "system:serviceaccount:pay:default",
            "kubernetes.io": {"namespace": "pay", "serviceaccount": {"name": "payment-service"}},
        });
        let name = claim(&claims, "kubernetes.io.serviceaccount.name");
        assert_eq!(name, Some(&Value::from("payment-service")));
        assert_eq!(
            claim(&claims, "/kubernetes.io/namespace"),
            Some(&Value::from("pay"))
        );
        assert_eq!(claim(&claims, "kubernetes.io.nothing"), None);
        assert_eq!(algorithm("HS256"), None);
        assert_eq!(algorithm("none"), None);
        assert_eq!(algorithm("RS256"), Some(Algorithm::RS256));
    }
}
