//! The callout's config file (YAML; relative paths are relative to the file), checked whole at
//! start-up with one clear error naming the key that is wrong.
//!
//! ```yaml
//! account: MYCOSYNTH                  # the account every user is placed in (user JWT aud)
//! issuer_seed_file: issuer.nk         # account nkey seed (SA...): signs every user JWT
//! xkey_seed_file: xkey.nk             # curve seed (SX...), when the server encrypts requests
//! max_lifetime_secs: 3600             # no user JWT lives longer (0: as long as its credential)
//! backends:                           # tried in order
//!   - static: { tokens_file: tokens.txt }
//!   - jwt:
//!       issuer: https://kubernetes.default.svc.cluster.local
//!       audiences: [mycosynth]
//!       jwks_file: jwks.json          # or jwks_url: https://...
//!       namespace_claim: kubernetes.io.serviceaccount.name
//!   - nkey: { identities_file: ../secure/identities.txt }
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::decide::Backend;
use super::oidc::{self, JwtBackend, KeySource, UrlKeys};
use super::reloading::Reloading;
use super::tokens::Tokens;

/// Why the config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file cannot be read.
    #[error("cannot read {path}: {message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        message: String,
    },
    /// A value breaks a rule.
    #[error("callout config: {key}: {message}")]
    Invalid {
        /// The key (e.g. `backends[1].jwt.audiences`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    account: String,
    issuer_seed_file: PathBuf,
    #[serde(default)]
    xkey_seed_file: Option<PathBuf>,
    #[serde(default = "default_lifetime")]
    max_lifetime_secs: u64,
    // `- static: {..}` rather than YAML tags (`- !static {..}`).
    #[serde(with = "serde_yaml_ng::with::singleton_map_recursive")]
    backends: Vec<FileBackend>,
}

fn default_lifetime() -> u64 {
    3600
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum FileBackend {
    Static { tokens_file: PathBuf },
    Jwt(FileJwt),
    Nkey { identities_file: PathBuf },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJwt {
    issuer: String,
    audiences: Vec<String>,
    #[serde(default)]
    jwks_file: Option<PathBuf>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default = "default_algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "default_leeway")]
    leeway_secs: u64,
    #[serde(default = "default_identity_claim")]
    identity_claim: String,
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default)]
    namespace_claim: Option<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_leeway() -> u64 {
    30
}
fn default_identity_claim() -> String {
    "sub".into()
}
fn default_kind() -> String {
    "service".into()
}

/// The config, loaded: keys read, backends built.
pub struct CalloutConfig {
    /// The account users are placed in.
    pub account: String,
    /// Signs user JWTs and responses.
    pub issuer: nkeys::KeyPair,
    /// Opens requests and seals responses, when the server encrypts.
    pub xkey: Option<nkeys::XKey>,
    /// Longest life of a user JWT, seconds (0: no limit beyond the credential's).
    pub max_lifetime: u64,
    /// The backends, in order.
    pub backends: Vec<Backend>,
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

impl CalloutConfig {
    /// Loads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<CalloutConfig, ConfigError> {
        let file: FileConfig = serde_yaml_ng::from_str(&read(path)?)
            .map_err(|e| invalid(path.display().to_string(), e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if file.account.trim().is_empty() {
            return Err(invalid(
                "account",
                "must name the account users are placed in",
            ));
        }
        let seed = read(&base.join(&file.issuer_seed_file))?;
        let issuer = nkeys::KeyPair::from_seed(seed.trim())
            .ok()
            .filter(|k| k.public_key().starts_with('A'))
            .ok_or_else(|| invalid("issuer_seed_file", "not an account nkey seed (SA...)"))?;
        let xkey = match &file.xkey_seed_file {
            Some(p) => Some(
                nkeys::XKey::from_seed(read(&base.join(p))?.trim())
                    .map_err(|_| invalid("xkey_seed_file", "not a curve key seed (SX...)"))?,
            ),
            None => None,
        };
        if file.backends.is_empty() {
            return Err(invalid("backends", "lists no backend"));
        }
        let backends = file
            .backends
            .into_iter()
            .enumerate()
            .map(|(i, b)| backend(base, b).map_err(|e| prefixed(e, &format!("backends[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CalloutConfig {
            account: file.account,
            issuer,
            xkey,
            max_lifetime: file.max_lifetime_secs,
            backends,
        })
    }
}

fn prefixed(err: ConfigError, prefix: &str) -> ConfigError {
    match err {
        ConfigError::Invalid { key, message } => invalid(format!("{prefix}.{key}"), message),
        other => other,
    }
}

fn reloading<T>(
    base: &Path,
    key: &str,
    file: &Path,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Reloading<T>, ConfigError> {
    Reloading::open(base.join(file), parse).map_err(|e| invalid(key, e))
}

fn backend(base: &Path, file: FileBackend) -> Result<Backend, ConfigError> {
    Ok(match file {
        FileBackend::Static { tokens_file } => Backend::Static(reloading(
            base,
            "static.tokens_file",
            &tokens_file,
            Tokens::parse,
        )?),
        FileBackend::Nkey { identities_file } => Backend::Nkey(reloading(
            base,
            "nkey.identities_file",
            &identities_file,
            |text| super::identities::parse(text).map_err(|e| e.to_string()),
        )?),
        FileBackend::Jwt(jwt) => Backend::Jwt(Box::new(jwt_backend(base, jwt)?)),
    })
}

fn jwt_backend(base: &Path, jwt: FileJwt) -> Result<JwtBackend, ConfigError> {
    if jwt.issuer.is_empty() {
        return Err(invalid("jwt.issuer", "must name the issuer (iss) to trust"));
    }
    if jwt.audiences.iter().all(|a| a.is_empty()) {
        return Err(invalid(
            "jwt.audiences",
            "must list the audience(s) tokens are for",
        ));
    }
    let algorithms = jwt
        .algorithms
        .iter()
        .map(|a| {
            oidc::algorithm(a).ok_or_else(|| {
                invalid(
                    "jwt.algorithms",
                    format!(
                        "{a:?} is not one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let keys = match (&jwt.jwks_file, &jwt.jwks_url) {
        (Some(file), None) => {
            KeySource::File(reloading(base, "jwt.jwks_file", file, oidc::parse_jwks)?)
        }
        (None, Some(url)) => {
            KeySource::Url(UrlKeys::open(url).map_err(|e| invalid("jwt.jwks_url", e))?)
        }
        _ => {
            return Err(invalid(
                "jwt",
                "needs exactly one of jwks_file and jwks_url",
            ))
        }
    };
    match (jwt.kind.as_str(), &jwt.namespace_claim) {
        ("service", None) => {
            return Err(invalid(
                "jwt.namespace_claim",
                "kind service needs the claim that names the namespace",
            ))
        }
        ("service", Some(_)) => {}
        (kind, None) => {
            mycosynth_subscriber::wire::IdentityKind::parse(kind, None)
                .map_err(|e| invalid("jwt.kind", e.to_string()))?;
        }
        (_, Some(_)) => {
            return Err(invalid(
                "jwt.namespace_claim",
                "only kind service has a namespace",
            ))
        }
    }
    Ok(JwtBackend {
        issuer: jwt.issuer,
        audiences: jwt.audiences,
        algorithms,
        leeway: jwt.leeway_secs,
        keys,
        identity_claim: jwt.identity_claim,
        kind: jwt.kind,
        namespace_claim: jwt.namespace_claim,
    })
}
