//! Who a connection is: the backends tried in order on what it presented, and the nkey that
//! names its reply inbox. No I/O but the backends' files and JWKS.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mycosynth_subscriber::wire::IdentityKind;

use super::identities::NkeyIdentity;
use super::nats_jwt::AuthRequest;
use super::oidc::{JwtBackend, JwtVerdict};
use super::reloading::Reloading;
use super::tokens::Tokens;

/// One authentication backend.
pub enum Backend {
    /// Hashed static tokens.
    Static(Reloading<Tokens>),
    /// OIDC/JWT bearer tokens of one issuer.
    Jwt(Box<JwtBackend>),
    /// The nkey identities of `identities.txt`.
    Nkey(Reloading<Vec<NkeyIdentity>>),
}

impl Backend {
    /// Its name in the config file, logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Static(_) => "static",
            Backend::Jwt(_) => "jwt",
            Backend::Nkey(_) => "nkey",
        }
    }
}

/// An accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The identity's name.
    pub identity: String,
    /// Its kind, which decides its permissions.
    pub kind: IdentityKind,
    /// The backend that accepted it.
    pub backend: &'static str,
    /// When the credential expires (seconds since the epoch; 0: it does not).
    pub expires: u64,
    /// The public nkey the connection proved: its reply inbox is `_INBOX_<key>`.
    pub inbox_key: String,
}

/// A refused connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why (never containing the credential).
    pub reason: String,
    /// The backend that refused (`none` when none took the credential).
    pub backend: &'static str,
    /// The identity, when one was established before the refusal.
    pub identity: Option<String>,
}

fn refusal(backend: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        reason: reason.into(),
        backend,
        identity: None,
    }
}

/// The nkey the connection proved by signing the server's nonce, if it presented one.
fn proven_nkey(request: &AuthRequest) -> Result<Option<String>, Refusal> {
    let opts = &request.connect_opts;
    let Some(key) = opts.nkey.as_deref().filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    let bad = |why: &str| refusal("none", format!("nkey {key}: {why}"));
    let pair = nkeys::KeyPair::from_public_key(key)
        .ok()
        .filter(|_| key.starts_with('U'))
        .ok_or_else(|| bad("not a public user nkey"))?;
    let sig = opts
        .sig
        .as_deref()
        .and_then(|s| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok())
        .ok_or_else(|| bad("no signature of the nonce"))?;
    let nonce = &request.client_info.nonce;
    if nonce.is_empty() || pair.verify(nonce.as_bytes(), &sig).is_err() {
        return Err(bad("the signature of the server's nonce does not verify"));
    }
    Ok(Some(key.to_owned()))
}

/// What one backend says.
enum Verdict {
    Pass(Option<String>),
    Accept {
        identity: String,
        kind: IdentityKind,
        expires: u64,
    },
    Refuse(String),
}

async fn ask(backend: &Backend, token: Option<&str>, proven: Option<&str>) -> Verdict {
    match (backend, token) {
        (Backend::Static(tokens), Some(token)) => match tokens.get().find(token) {
            Some(entry) => Verdict::Accept {
                identity: entry.identity.clone(),
                kind: entry.kind.clone(),
                expires: 0,
            },
            None => Verdict::Pass(Some("not a listed token".into())),
        },
        (Backend::Jwt(jwt), Some(token)) => match jwt.verify(token).await {
            JwtVerdict::NotMine(why) => Verdict::Pass(Some(why)),
            JwtVerdict::Refuse(why) => Verdict::Refuse(why),
            JwtVerdict::Accept(v) => Verdict::Accept {
                identity: v.identity,
                kind: v.kind,
                expires: v.expires,
            },
        },
        (Backend::Nkey(identities), None) => {
            let Some(key) = proven else {
                return Verdict::Pass(None);
            };
            match identities.get().iter().find(|i| i.public_key == key) {
                Some(i) => Verdict::Accept {
                    identity: i.name.clone(),
                    kind: i.kind.clone(),
                    expires: 0,
                },
                None => Verdict::Pass(Some(format!("{key} is not a registered identity"))),
            }
        }
        // A token is never ignored in favour of the nkey beside it, and token backends have
        // nothing to say about a connection without one.
        _ => Verdict::Pass(None),
    }
}

/// Tries `backends` in order on what the connection presented: the first that accepts or
/// refuses decides; if none does, the connection is refused with every backend's reason.
pub async fn decide(backends: &[Backend], request: &AuthRequest) -> Result<Grant, Refusal> {
    let proven = proven_nkey(request)?;
    let token = request
        .connect_opts
        .auth_token
        .as_deref()
        .filter(|t| !t.is_empty());
    let mut reasons = Vec::new();
    for backend in backends {
        match ask(backend, token, proven.as_deref()).await {
            Verdict::Pass(reason) => {
                reasons.extend(reason.map(|r| format!("{}: {r}", backend.name())));
            }
            Verdict::Refuse(reason) => return Err(refusal(backend.name(), reason)),
            Verdict::Accept {
                identity,
                kind,
                expires,
            } => {
                // Every connection reads replies on the inbox of a key it proved.
                let Some(inbox_key) = proven.clone() else {
                    return Err(Refusal {
                        reason: "a token must come with an nkey signature, which names the reply inbox (Credentials::with_token_file does this)".into(),
                        backend: backend.name(),
                        identity: Some(identity),
                    });
                };
                return Ok(Grant {
                    identity,
                    kind,
                    backend: backend.name(),
                    expires,
                    inbox_key,
                });
            }
        }
    }
    if token.is_none() && proven.is_none() {
        reasons.push("no credentials presented".into());
    }
    Err(refusal(
        "none",
        format!("no backend accepts it ({})", reasons.join("; ")),
    ))
}
