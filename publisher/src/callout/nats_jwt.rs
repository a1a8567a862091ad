//! The NATS JWTs of the auth-callout exchange (ADR-26): the server's authorization request
//! (read and verified here), and the user JWT and authorization response the callout signs.
//!
//! A NATS JWT is `base64url(header).base64url(claims).base64url(signature)` with the header
//! `{"typ":"JWT","alg":"ed25519-nkey"}` and an ed25519 signature (the `nkeys` crate) of the
//! first two parts by the issuer's nkey. `jti` is the base32 SHA-512/256 of the claims, as
//! nats-io/jwt computes it; the server does not check it.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mycosynth_subscriber::wire::{Permissions, SubjectRules};
use serde::{Deserialize, Serialize};
use sha2::Digest;

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;
/// The audience of every authorization request.
const REQUEST_AUDIENCE: &str = "nats-authorization-request";
/// How long a replier may answer a request it received (nats-server's default for
/// `allow_responses: true`), in nanoseconds.
const RESPONSE_TTL_NS: u64 = 120_000_000_000;

/// Why a NATS JWT was refused or could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts, or not the expected JSON.
    #[error("malformed NATS JWT: {0}")]
    Malformed(String),
    /// The signature does not verify with the issuer's key.
    #[error("the signature of the NATS JWT does not verify")]
    BadSignature,
    /// A claim that must hold a certain value does not.
    #[error("NATS JWT claim {claim}: {rule}")]
    Claim {
        /// The claim.
        claim: &'static str,
        /// What was wrong.
        rule: String,
    },
    /// Signing failed.
    #[error("cannot sign the NATS JWT: {0}")]
    Sign(String),
}

/// The standard claims of a JWT issued by NATS or by the callout.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StandardClaims {
    /// Audience.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aud: String,
    /// Expiry, seconds since the Unix epoch (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exp: u64,
    /// Identifier (hash of the claims).
    #[serde(default)]
    pub jti: String,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: u64,
    /// Issuer's public nkey.
    #[serde(default)]
    pub iss: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Subject.
    #[serde(default)]
    pub sub: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The server that asks (`server_id` of the request).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ServerId {
    /// Server name.
    #[serde(default)]
    pub name: String,
    /// The server's public nkey (`N...`); the request is signed by it and the response must
    /// be addressed to it.
    pub id: String,
    /// The server's curve public key when it encrypts requests.
    #[serde(default)]
    pub xkey: Option<String>,
}

/// The connection being authenticated (`client_info`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ClientInfo {
    /// Remote address.
    #[serde(default)]
    pub host: String,
    /// Connection id on the server.
    #[serde(default)]
    pub id: u64,
    /// Connection name the client chose.
    #[serde(default)]
    pub name: String,
    /// The nonce the server sent; set when the client signed it.
    #[serde(default)]
    pub nonce: String,
}

/// What the client sent in CONNECT (`connect_opts`). Holds secrets: its `Debug` names which
/// fields are present, never their values.
#[derive(Clone, Deserialize, Default)]
pub struct ConnectOpts {
    /// A NATS user JWT (not used by Mycosynth's backends).
    #[serde(default)]
    pub jwt: Option<String>,
    /// The public nkey the client proves.
    #[serde(default)]
    pub nkey: Option<String>,
    /// The nonce signed by that nkey, base64url.
    #[serde(default)]
    pub sig: Option<String>,
    /// A bearer token: a static token or an OIDC/Kubernetes JWT.
    #[serde(default)]
    pub auth_token: Option<String>,
    /// User name.
    #[serde(default)]
    pub user: Option<String>,
    /// Password.
    #[serde(default)]
    pub pass: Option<String>,
}

impl fmt::Debug for ConnectOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOpts")
            .field("nkey", &self.nkey)
            .field("sig", &self.sig.is_some())
            .field("auth_token", &self.auth_token.is_some())
            .field("jwt", &self.jwt.is_some())
            .field("user", &self.user)
            .finish()
    }
}

/// The `nats` part of an authorization request.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthRequest {
    /// The server asking.
    pub server_id: ServerId,
    /// The public key the server made for this connection: the subject of the user JWT.
    pub user_nkey: String,
    /// The connection.
    #[serde(default)]
    pub client_info: ClientInfo,
    /// Its credentials.
    #[serde(default)]
    pub connect_opts: ConnectOpts,
}

#[derive(Deserialize)]
struct RequestClaims {
    #[serde(flatten)]
    std: StandardClaims,
    nats: AuthRequest,
}

/// Decodes an authorization request and checks it: signed by the server it names, addressed
/// to the callout, not expired at `now` (seconds since the epoch).
pub fn decode_request(token: &str, now: u64) -> Result<AuthRequest, JwtError> {
    let claims: RequestClaims = decode_verified(token)?;
    if claims.std.iss != claims.nats.server_id.id || !claims.std.iss.starts_with('N') {
        return Err(JwtError::Claim {
            claim: "iss",
            rule: "is not the public key of the server that asks".into(),
        });
    }
    if claims.std.aud != REQUEST_AUDIENCE {
        return Err(JwtError::Claim {
            claim: "aud",
            rule: format!("is {:?}, not {REQUEST_AUDIENCE:?}", claims.std.aud),
        });
    }
    if claims.std.exp != 0 && claims.std.exp < now {
        return Err(JwtError::Claim {
            claim: "exp",
            rule: "the request has expired".into(),
        });
    }
    Ok(claims.nats)
}

/// Splits a NATS JWT, checks its header and signature (by the key named in `iss`) and parses
/// its claims.
pub fn decode_verified<T: for<'de> Deserialize<'de>>(token: &str) -> Result<T, JwtError> {
    let malformed = |what: &str| JwtError::Malformed(what.to_owned());
    let (signed, signature) = token.rsplit_once('.').ok_or_else(|| malformed("no dots"))?;
    let (header, payload) = signed
        .split_once('.')
        .ok_or_else(|| malformed("two parts"))?;
    let part = |text: &str| {
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| malformed(&e.to_string()))
    };
    let header: serde_json::Value =
        serde_json::from_slice(&part(header)?).map_err(|e| malformed(&e.to_string()))?;
    if header["alg"] != "ed25519-nkey"
        || !header["typ"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("jwt"))
    {
        return Err(malformed("the header is not {typ: JWT, alg: ed25519-nkey}"));
    }
    let payload = part(payload)?;
    let issuer: StandardClaims =
        serde_json::from_slice(&payload).map_err(|e| malformed(&e.to_string()))?;
    let key = nkeys::KeyPair::from_public_key(&issuer.iss).map_err(|_| JwtError::Claim {
        claim: "iss",
        rule: "is not a public nkey".into(),
    })?;
    key.verify(signed.as_bytes(), &part(signature)?)
        .map_err(|_| JwtError::BadSignature)?;
    serde_json::from_slice(&payload).map_err(|e| malformed(&e.to_string()))
}

/// Signs `nats` with the standard claims `std` (`iss`, `iat` and `jti` are filled in here).
pub fn encode<T: Serialize>(
    mut std: StandardClaims,
    nats: &T,
    signer: &nkeys::KeyPair,
    now: u64,
) -> Result<String, JwtError> {
    #[derive(Serialize)]
    struct Claims<'a, T> {
        #[serde(flatten)]
        std: &'a StandardClaims,
        nats: &'a T,
    }
    let json = |std: &StandardClaims| {
        serde_json::to_vec(&Claims { std, nats }).map_err(|e| JwtError::Sign(e.to_string()))
    };
    std.iss = signer.public_key();
    std.iat = now;
    std.jti.clear();
    std.jti = data_encoding::BASE32_NOPAD.encode(&sha2::Sha512_256::digest(json(&std)?));
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(json(&std)?)
    );
    let signature = signer
        .sign(signed.as_bytes())
        .map_err(|e| JwtError::Sign(e.to_string()))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[derive(Serialize, Default)]
struct Rules<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allow: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    deny: &'a [String],
}

#[derive(Serialize)]
struct Response {
    max: u32,
    ttl: u64,
}

/// The `nats` part of a user JWT.
#[derive(Serialize)]
struct User<'a> {
    #[serde(rename = "pub", skip_serializing_if = "Option::is_none")]
    publish: Option<Rules<'a>>,
    #[serde(rename = "sub", skip_serializing_if = "Option::is_none")]
    subscribe: Option<Rules<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resp: Option<Response>,
    subs: i64,
    data: i64,
    payload: i64,
    #[serde(rename = "type")]
    claim_type: &'static str,
    version: u32,
}

/// The user JWT of one connection: subject `user_nkey` (the key the server made for it),
/// audience `account` (the account it is placed in), `name` the identity, the subject
/// permissions of its kind (`None`: unrestricted), expiring at `expires` (0: never).
pub fn user_jwt(
    user_nkey: &str,
    account: &str,
    name: &str,
    permissions: Option<&Permissions>,
    expires: u64,
    signer: &nkeys::KeyPair,
    now: u64,
) -> Result<String, JwtError> {
    fn rules(r: &SubjectRules) -> Rules<'_> {
        Rules {
            allow: &r.allow,
            deny: &r.deny,
        }
    }
    let user = User {
        publish: permissions.map(|p| rules(&p.publish)),
        subscribe: permissions.map(|p| rules(&p.subscribe)),
        resp: permissions.filter(|p| p.allow_responses).map(|_| Response {
            max: 1,
            ttl: RESPONSE_TTL_NS,
        }),
        subs: -1,
        data: -1,
        payload: -1,
        claim_type: "user",
        version: 2,
    };
    let std = StandardClaims {
        aud: account.to_owned(),
        exp: expires,
        name: name.to_owned(),
        sub: user_nkey.to_owned(),
        ..StandardClaims::default()
    };
    encode(std, &user, signer, now)
}

/// The authorization response to `request`: the user JWT, or the reason for refusing.
pub fn response(
    request: &AuthRequest,
    outcome: Result<&str, &str>,
    signer: &nkeys::KeyPair,
    now: u64,
) -> Result<String, JwtError> {
    #[derive(Serialize)]
    struct Nats<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        jwt: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
        #[serde(rename = "type")]
        claim_type: &'static str,
        version: u32,
    }
    let (jwt, error) = match outcome {
        Ok(jwt) => (Some(jwt), None),
        Err(reason) => (None, Some(reason)),
    };
    let std = StandardClaims {
        aud: request.server_id.id.clone(),
        sub: request.user_nkey.clone(),
        ..StandardClaims::default()
    };
    let nats = Nats {
        jwt,
        error,
        claim_type: "authorization_response",
        version: 2,
    };
    encode(std, &nats, signer, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_jwt_verifies_and_carries_the_permissions() {
        let account = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user().public_key();
        let kind = mycosynth_subscriber::wire::IdentityKind::Validator;
        let perms = kind.permissions("UKEY");
        let jwt = user_jwt(&user, "APP", "validator", perms.as_ref(), 0, &account, 5).unwrap();
        let claims: serde_json::Value = decode_verified(&jwt).unwrap();
        assert_eq!(claims["iss"], account.public_key());
        assert_eq!(claims["sub"], user);
        assert_eq!(claims["aud"], "APP");
        assert_eq!(claims["nats"]["type"], "user");
        assert_eq!(claims["nats"]["resp"]["max"], 1);
        assert_eq!(
            claims["nats"]["sub"]["allow"],
            serde_json::json!(perms.as_ref().unwrap().subscribe.allow)
        );
        assert!(claims["nats"]["sub"]["allow"]
            .as_array()
            .unwrap()
            .contains(&"_INBOX_UKEY.>".into()));
        assert!(claims.get("exp").is_none());
        // Any change to the signed bytes breaks the signature.
        let (head, rest) = jwt.split_once('.').unwrap();
        let (body, sig) = rest.split_once('.').unwrap();
        let mut claims = claims;
        claims["aud"] = "OTHER".into();
        let forged = format!(
            "{head}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_ne!(body, forged.split('.').nth(1).unwrap());
        assert_eq!(
            decode_verified::<serde_json::Value>(&forged).unwrap_err(),
            JwtError::BadSignature
        );
    }
}
