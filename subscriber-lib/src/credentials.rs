//! How a process proves who it is to NATS: an nkey (ed25519) seed, and TLS (a CA to trust and a
//! client certificate). Used by the subscriber, the CLI and the validator alike.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::wire::inbox_prefix;

/// Env var holding an nkey seed (`SU...`).
pub const ENV_NKEY: &str = "MYCOSYNTH_NKEY";
/// Env var naming a file that holds an nkey seed.
pub const ENV_NKEY_FILE: &str = "MYCOSYNTH_NKEY_FILE";
/// Env var naming the PEM file of the CA that signed the server's certificate.
pub const ENV_TLS_CA: &str = "MYCOSYNTH_TLS_CA";
/// Env var naming this client's PEM certificate (with [`ENV_TLS_KEY`]).
pub const ENV_TLS_CERT: &str = "MYCOSYNTH_TLS_CERT";
/// Env var naming this client's PEM private key.
pub const ENV_TLS_KEY: &str = "MYCOSYNTH_TLS_KEY";

/// Why credentials could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A credential file cannot be read.
    #[error("cannot read credential file {path}: {message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        message: String,
    },
    /// The text is not an nkey user seed.
    #[error("not a valid nkey user seed: {0}")]
    BadSeed(String),
    /// A client certificate without its key, or the other way round.
    #[error("a TLS client certificate needs both {ENV_TLS_CERT} and {ENV_TLS_KEY}")]
    HalfClientCert,
}

/// The credentials of one connection. No credentials (the default) connects anonymously,
/// which only an open server (`nats/dev.conf`) accepts.
///
/// ```
/// use mycosynth_subscriber::Credentials;
/// let seed = nkeys::KeyPair::new_user().seed().unwrap();
/// let creds = Credentials::default().with_nkey_seed(&seed)?;
/// assert!(creds.public_key().unwrap().starts_with('U'));
/// # Ok::<(), mycosynth_subscriber::CredentialsError>(())
/// ```
#[derive(Clone, Default)]
pub struct Credentials {
    seed: Option<String>,
    public_key: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_client: Option<(PathBuf, PathBuf)>,
}

impl fmt::Debug for Credentials {
    // Never prints the seed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("public_key", &self.public_key)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .finish()
    }
}

fn read(path: &Path) -> Result<String, CredentialsError> {
    std::fs::read_to_string(path).map_err(|e| CredentialsError::Unreadable {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

impl Credentials {
    /// Authenticate with this nkey user seed (`SU...`).
    pub fn with_nkey_seed(mut self, seed: &str) -> Result<Credentials, CredentialsError> {
        let seed = seed.trim();
        let pair = nkeys::KeyPair::from_seed(seed)
            .map_err(|e| CredentialsError::BadSeed(e.to_string()))?;
        if !pair.public_key().starts_with('U') {
            return Err(CredentialsError::BadSeed(
                "the seed is not a user seed (SU...)".into(),
            ));
        }
        self.public_key = Some(pair.public_key());
        self.seed = Some(seed.to_owned());
        Ok(self)
    }

    /// Authenticate with the nkey user seed stored in `path` (surrounding whitespace ignored).
    pub fn with_nkey_file(self, path: impl AsRef<Path>) -> Result<Credentials, CredentialsError> {
        let text = read(path.as_ref())?;
        self.with_nkey_seed(&text)
    }

    /// Trust the CA certificate(s) in this PEM file for the server's certificate, and require
    /// TLS.
    pub fn with_tls_ca(mut self, path: impl Into<PathBuf>) -> Credentials {
        self.tls_ca = Some(path.into());
        self
    }

    /// Present this client certificate and key (PEM files) to a server that verifies clients.
    pub fn with_tls_client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Credentials {
        self.tls_client = Some((cert.into(), key.into()));
        self
    }

    /// Reads [`ENV_NKEY`] or [`ENV_NKEY_FILE`], [`ENV_TLS_CA`], [`ENV_TLS_CERT`] and
    /// [`ENV_TLS_KEY`]; absent variables add nothing.
    pub fn from_env() -> Result<Credentials, CredentialsError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut creds = Credentials::default();
        if let Some(seed) = var(ENV_NKEY) {
            creds = creds.with_nkey_seed(&seed)?;
        } else if let Some(path) = var(ENV_NKEY_FILE) {
            creds = creds.with_nkey_file(path)?;
        }
        if let Some(ca) = var(ENV_TLS_CA) {
            creds = creds.with_tls_ca(ca);
        }
        match (var(ENV_TLS_CERT), var(ENV_TLS_KEY)) {
            (Some(cert), Some(key)) => creds = creds.with_tls_client_cert(cert, key),
            (None, None) => {}
            _ => return Err(CredentialsError::HalfClientCert),
        }
        Ok(creds)
    }

    /// The public nkey of the identity, if an nkey is set.
    pub fn public_key(&self) -> Option<&str> {
        self.public_key.as_deref()
    }

    /// The key pair, to sign with (None without an nkey).
    pub fn key_pair(&self) -> Option<nkeys::KeyPair> {
        self.seed
            .as_deref()
            .and_then(|s| nkeys::KeyPair::from_seed(s).ok())
    }

    /// Adds these credentials to connection options: the nkey, the identity's own inbox prefix
    /// (`_INBOX_<public key>`, the only inbox the server lets it read), and TLS.
    pub fn apply(&self, mut options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        if let (Some(seed), Some(public_key)) = (&self.seed, &self.public_key) {
            options = options
                .nkey(seed.clone())
                .custom_inbox_prefix(inbox_prefix(public_key));
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        options
    }
}
