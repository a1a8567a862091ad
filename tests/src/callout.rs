//! Auth-callout mode: nats-server with the shipped `nats/callout/server.conf`, `mycosynth auth
//! serve` processes, and the credentials they take: the dev static tokens, and JWTs of a
//! stand-in Kubernetes issuer whose public key is in `nats/callout/jwks.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{free_port, mycosynth_bin, repo_root, LineTap, NatsServer, Validator};

/// `nats/callout/`.
pub fn callout_dir() -> PathBuf {
    repo_root().join("nats/callout")
}

/// The issuer (`iss`) of the stand-in Kubernetes cluster in `nats/callout/callout.yaml`.
pub const K8S_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audience the shipped config accepts.
pub const K8S_AUDIENCE: &str = "mycosynth";
/// The key id of the stand-in issuer's key in `jwks.json`.
pub const K8S_KID: &str = "dev-k8s-1";

/// The dev static token of `identity` (`svc-payment-service`, `svc-inventory-service`), whose
/// hash is in `nats/callout/tokens.txt`.
pub fn dev_token_file(identity: &str) -> PathBuf {
    callout_dir().join(format!("dev-credentials/{identity}.token"))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The claims of a Kubernetes projected service-account token for service account
/// `service_account` (in Kubernetes namespace `apps`), expiring `lifetime` seconds from now
/// (negative: already expired).
pub fn service_account_claims(service_account: &str, lifetime: i64) -> serde_json::Value {
    let now = unix_now();
    serde_json::json!({
        "aud": [K8S_AUDIENCE],
        "exp": now + lifetime,
        "iat": now - 1,
        "nbf": now - 1,
        "iss": K8S_ISSUER,
        "sub": format!("system:serviceaccount:apps:{service_account}"),
        "kubernetes.io": {
            "namespace": "apps",
            "pod": {"name": format!("{service_account}-7d9c"), "uid": "0b6f1b9e"},
            "serviceaccount": {"name": service_account, "uid": "3c1e2d4f"},
        },
    })
}

/// `claims` signed with a PEM private key (RSA for `RS*`, PKCS#8 EC for `ES*`) under key id
/// `kid`.
pub fn sign_jwt(
    claims: &serde_json::Value,
    algorithm: jsonwebtoken::Algorithm,
    key_pem: &[u8],
    kid: Option<&str>,
) -> String {
    let key = match algorithm {
        jsonwebtoken::Algorithm::ES256 | jsonwebtoken::Algorithm::ES384 => {
            jsonwebtoken::EncodingKey::from_ec_pem(key_pem)
        }
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(key_pem),
    }
    .expect("signing key");
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// `claims` signed by the stand-in Kubernetes issuer (RS256, its key id).
pub fn k8s_token(claims: &serde_json::Value) -> String {
    let pem = std::fs::read(callout_dir().join("dev-credentials/k8s-issuer-key.pem"))
        .expect("dev issuer key");
    sign_jwt(claims, jsonwebtoken::Algorithm::RS256, &pem, Some(K8S_KID))
}

/// Writes `token` to `path` the way the kubelet rotates a projected token: a new file renamed
/// over the old one, so a reader never sees half of it.
pub fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).expect("write token");
    std::fs::rename(&tmp, path).expect("rotate token");
}

impl NatsServer {
    /// Starts a server with the shipped auth-callout config (`nats/callout/server.conf`), on a
    /// free port and a temporary store dir. No connection but the callout's own is accepted
    /// until a [`Callout`] runs.
    pub fn start_callout() -> NatsServer {
        let port = free_port();
        let template =
            std::fs::read_to_string(callout_dir().join("server.conf")).expect("server.conf");
        NatsServer::start_config(port, move |store| {
            let text = template
                .replace("127.0.0.1:4222", &format!("127.0.0.1:{port}"))
                .replace("127.0.0.1:8222", &format!("127.0.0.1:{}", free_port()))
                .replace(
                    "\".tools/nats-data-callout\"",
                    &format!("{:?}", store.join("jetstream").display().to_string()),
                );
            assert!(
                text.contains(&port.to_string()),
                "server.conf has no listen line to template"
            );
            text
        })
    }
}

/// A callout config in `dir` with the shipped keys and account and these `backends` (YAML list
/// items, paths absolute or relative to `dir`); returns its path.
pub fn callout_config(dir: &Path, max_lifetime_secs: u64, backends: &str) -> PathBuf {
    let creds = callout_dir().join("dev-credentials");
    let text = format!(
        "account: MYCOSYNTH\nissuer_seed_file: {:?}\nxkey_seed_file: {:?}\nmax_lifetime_secs: {max_lifetime_secs}\nbackends:\n{backends}\n",
        creds.join("issuer.nk").display().to_string(),
        creds.join("xkey.nk").display().to_string(),
    );
    let path = dir.join("callout.yaml");
    std::fs::write(&path, text).expect("write callout config");
    path
}

/// The `jwt` backend of the shipped config, with its JWKS at `jwks` (YAML list item).
pub fn k8s_backend(jwks: &Path) -> String {
    format!(
        "  - jwt:\n      issuer: {K8S_ISSUER}\n      audiences: [{K8S_AUDIENCE}]\n      jwks_file: {:?}\n      namespace_claim: kubernetes.io.serviceaccount.name\n",
        jwks.display().to_string()
    )
}

/// The `nkey` backend over the shipped dev identities (YAML list item).
pub fn nkey_backend() -> String {
    format!(
        "  - nkey:\n      identities_file: {:?}\n",
        repo_root()
            .join("nats/secure/identities.txt")
            .display()
            .to_string()
    )
}

/// A `mycosynth auth serve` process, connected as the dev callout user. Its process handling
/// (HTTP port, tapped log, kill on drop) is [`Validator`]'s: both are `mycosynth` services.
pub struct Callout(Validator);

impl Callout {
    /// Starts a callout with the shipped `nats/callout/callout.yaml` and waits until it serves.
    pub fn start(nats_url: &str) -> Callout {
        Callout::start_with_config(nats_url, &callout_dir().join("callout.yaml"))
    }

    /// Starts a callout with the config file `config`.
    pub fn start_with_config(nats_url: &str, config: &Path) -> Callout {
        let http_port = free_port();
        let mut child = Command::new(mycosynth_bin())
            .args(["--nats-url", nats_url, "auth", "serve", "--config"])
            .arg(config)
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .env(
                "MYCOSYNTH_NKEY_FILE",
                callout_dir().join("dev-credentials/callout.nk"),
            )
            .env_remove("MYCOSYNTH_TOKEN_FILE")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start callout");
        let log = LineTap::new(child.stderr.take().expect("stderr"), "callout| ");
        let ready = log.wait_for(0, Duration::from_secs(30), |l| {
            l.contains("ready") || l.contains("mycosynth: ")
        });
        assert!(
            ready.is_some_and(|(_, l)| l.contains("ready")),
            "callout did not start: {:?}",
            log.snapshot()
        );
        Callout(Validator {
            child: Some(child),
            http_port,
            log,
        })
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.0.log_lines()
    }

    /// Waits for a log line containing every one of `needles`; returns it.
    pub fn wait_log(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        self.0
            .log
            .wait_for(0, timeout, |l| needles.iter().all(|n| l.contains(n)))
            .map(|(_, line)| line)
    }

    /// The sum of metric `name`'s series whose labels include `labels`, from `/metrics` now.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.0.metric(name, labels)
    }

    /// The PID.
    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    /// SIGKILLs it.
    pub fn kill(&mut self) {
        self.0.kill()
    }
}

/// A plain HTTP server on a free loopback port answering every request with one JSON document
/// (a JWKS, as an OIDC issuer's `jwks_uri` serves it); stops on drop.
pub struct JsonServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl JsonServer {
    /// Serves `body`.
    pub fn start(body: String) -> JsonServer {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut request = [0u8; 4096];
                let _ = conn.read(&mut request);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        JsonServer { port, stop }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
