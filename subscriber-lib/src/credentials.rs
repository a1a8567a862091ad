//! How a process proves who it is to NATS: an nkey (ed25519) seed, a bearer token file (for a
//! server in auth-callout mode), and TLS (a CA to trust and a client certificate). Used by the
//! subscriber, the CLI and the validator alike.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::wire::inbox_prefix;

/// Env var holding an nkey seed (`SU...`).
pub const ENV_NKEY: &str = "MYCOSYNTH_NKEY";
/// Env var naming a file that holds an nkey seed.
pub const ENV_NKEY_FILE: &str = "MYCOSYNTH_NKEY_FILE";
/// Env var naming a file that holds a bearer token (a static token or a JWT such as a Kubernetes
/// projected service-account token), read anew at every connection.
pub const ENV_TOKEN_FILE: &str = "MYCOSYNTH_TOKEN_FILE";
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
    /// The token file holds nothing.
    #[error("the token file {0} is empty")]
    EmptyToken(PathBuf),
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
    token_file: Option<PathBuf>,
}

impl fmt::Debug for Credentials {
    // Never prints the seed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("public_key", &self.public_key)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .field("token_file", &self.token_file)
            .finish()
    }
}

fn read(path: &Path) -> Result<String, CredentialsError> {
    std::fs::read_to_string(path).map_err(|e| CredentialsError::Unreadable {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn read_token(path: &Path) -> Result<String, CredentialsError> {
    let token = read(path)?.trim().to_owned();
    if token.is_empty() {
        return Err(CredentialsError::EmptyToken(path.to_owned()));
    }
    Ok(token)
}

/// What a connection presents when it holds a token file: the token as the file has it now, and
/// the nkey with its signature of the server's nonce (which binds the reply inbox to it).
fn token_auth(
    path: &Path,
    seed: &str,
    nonce: &[u8],
) -> Result<async_nats::Auth, async_nats::AuthError> {
    let token = read_token(path).map_err(async_nats::AuthError::new)?;
    let pair = nkeys::KeyPair::from_seed(seed).map_err(async_nats::AuthError::new)?;
    let mut auth = async_nats::Auth::new();
    auth.signature = Some(pair.sign(nonce).map_err(async_nats::AuthError::new)?);
    auth.nkey = Some(pair.public_key());
    auth.token = Some(token);
    Ok(auth)
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

    /// Authenticate with the bearer token stored in `path`: a static token or a JWT (for example
    /// a Kubernetes projected service-account token), for a server in auth-callout mode
    /// (`mycosynth auth serve`, `nats/callout/`). The file is read again at every connection
    /// and reconnection made through [`Credentials::connect_options`], so a token rotated in
    /// place keeps the service connected with no restart. It is read once here to fail early.
    ///
    /// The connection also proves an nkey, which names its reply inbox: the nkey set with
    /// [`Credentials::with_nkey_seed`] if any, else a fresh one made here for this process.
    ///
    /// ```
    /// use mycosynth_subscriber::Credentials;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("token");
    /// std::fs::write(&path, "s3cr3t\n")?;
    /// let creds = Credentials::default().with_token_file(&path)?;
    /// // A key of its own for the reply inbox; the token never shows in Debug.
    /// assert!(creds.public_key().unwrap().starts_with('U'));
    /// assert!(!format!("{creds:?}").contains("s3cr3t"));
    /// let _options = creds.connect_options();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_token_file(
        mut self,
        path: impl Into<PathBuf>,
    ) -> Result<Credentials, CredentialsError> {
        let path = path.into();
        read_token(&path)?;
        if self.seed.is_none() {
            let pair = nkeys::KeyPair::new_user();
            let seed = pair
                .seed()
                .map_err(|e| CredentialsError::BadSeed(e.to_string()))?;
            self.public_key = Some(pair.public_key());
            self.seed = Some(seed);
        }
        self.token_file = Some(path);
        Ok(self)
    }

    /// The token file, if one is set.
    ///
    /// ```
    /// assert!(mycosynth_subscriber::Credentials::default().token_file().is_none());
    /// ```
    pub fn token_file(&self) -> Option<&Path> {
        self.token_file.as_deref()
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

    /// Reads [`ENV_NKEY`] or [`ENV_NKEY_FILE`], [`ENV_TOKEN_FILE`], [`ENV_TLS_CA`],
    /// [`ENV_TLS_CERT`] and [`ENV_TLS_KEY`]; absent variables add nothing.
    pub fn from_env() -> Result<Credentials, CredentialsError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut creds = Credentials::default();
        if let Some(seed) = var(ENV_NKEY) {
            creds = creds.with_nkey_seed(&seed)?;
        } else if let Some(path) = var(ENV_NKEY_FILE) {
            creds = creds.with_nkey_file(path)?;
        }
        if let Some(path) = var(ENV_TOKEN_FILE) {
            creds = creds.with_token_file(path)?;
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

    /// Connection options carrying these credentials: [`Credentials::apply`] to fresh options,
    /// with the token file (if any) read again at every connection and reconnection.
    ///
    /// ```
    /// use mycosynth_subscriber::Credentials;
    /// let options = Credentials::default().connect_options().name("my-service");
    /// # let _ = options;
    /// ```
    pub fn connect_options(&self) -> async_nats::ConnectOptions {
        let options = match (&self.token_file, &self.seed) {
            (Some(path), Some(seed)) => {
                let (path, seed) = (path.clone(), seed.clone());
                async_nats::ConnectOptions::with_auth_callback(move |nonce| {
                    let auth = token_auth(&path, &seed, &nonce);
                    async move { auth }
                })
            }
            _ => async_nats::ConnectOptions::new(),
        };
        self.apply(options)
    }

    /// Adds these credentials to connection options: the nkey, the identity's own inbox prefix
    /// (`_INBOX_<public key>`, the only inbox the server lets it read), the token file's token
    /// as it is now (read once: use [`Credentials::connect_options`] to read it at every
    /// reconnection), and TLS.
    pub fn apply(&self, mut options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        if let (Some(seed), Some(public_key)) = (&self.seed, &self.public_key) {
            options = options
                .nkey(seed.clone())
                .custom_inbox_prefix(inbox_prefix(public_key));
        }
        if let Some(token) = self.token_file.as_deref().and_then(|p| read_token(p).ok()) {
            options = options.token(token);
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
