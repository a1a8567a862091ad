//! Test support: real `nats-server` processes on free loopback ports with temporary store dirs,
//! validator processes, a TCP proxy that can cut connections, and helpers to run the CLI.
//!
//! Every process is started here and stopped by the PID started here (on `Drop` too), so a
//! failing test leaves nothing running.

pub mod browser;
pub mod callout;
pub mod console;
pub mod prometheus;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub mod sidecar;
pub mod site;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The nats-server binary: `$NATS_SERVER`, else the project's `.tools/bin/nats-server`,
/// provisioned by `nats/provision.sh` if missing.
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let output = Command::new("bash")
            .arg(repo_root().join("nats/provision.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run nats/provision.sh");
        assert!(output.status.success(), "nats/provision.sh failed");
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    })
    .clone()
}

/// Python with `nats-py`, installed by `nats/provision.sh` (a NATS client that is not ours).
pub fn python_bin() -> PathBuf {
    let _ = nats_server_bin();
    repo_root().join(".tools/venv/bin/python")
}

/// The `mycosynth` binary of this build (`$MYCOSYNTH_BIN` overrides).
pub fn mycosynth_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("MYCOSYNTH_BIN") {
            return PathBuf::from(bin);
        }
        // Test binaries live in target/<profile>/deps; the CLI in target/<profile>.
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let bin = profile_dir.join("mycosynth");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build
            .args(["build", "--quiet", "-p", "mycosynth", "--bin", "mycosynth"])
            .current_dir(repo_root());
        // Set by `cargo test` for the test process; inherited, they would make ring's build
        // script (which watches CARGO_MANIFEST_DIR and CARGO_PKG_*) rebuild the crypto stack
        // here, and again in the next `cargo test` (about 100 s each on this machine).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let from_cargo_test = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*name);
            if from_cargo_test {
                build.env_remove(&*name);
            }
        }
        if release {
            build.arg("--release");
        }
        // Quiet, so this line is all there is to see while it builds: minutes on a cold target
        // (it builds the binary's own set of dependencies), or while it waits for another
        // cargo's lock.
        eprintln!(
            "building {} (cargo build -p mycosynth --bin mycosynth{})",
            bin.display(),
            if release { " --release" } else { "" }
        );
        let status = build.status().expect("run cargo build");
        assert!(
            status.success() && bin.exists(),
            "could not build {}",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A free TCP port on 127.0.0.1 (free when asked; the OS may hand it out again later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a PID this harness started; no memory is involved.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// Reads a child's output lines on a thread; lets a test wait for a line.
struct LineTap {
    lines: Arc<Mutex<Vec<String>>>,
    notify: mpsc::Receiver<()>,
}

impl LineTap {
    fn new(reader: impl Read + Send + 'static, echo_prefix: &'static str) -> LineTap {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, notify) = mpsc::channel();
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("MYCOSYNTH_TEST_ECHO").is_some() {
                    eprintln!("{echo_prefix}{line}");
                }
                sink.lock().unwrap().push(line);
                let _ = tx.send(());
            }
        });
        LineTap { lines, notify }
    }

    /// Waits for a line satisfying `pred` (searching from line `from`); returns its index.
    fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if let Some((i, line)) = lines.iter().enumerate().skip(from).find(|(_, l)| pred(l))
                {
                    return Some((i, line.clone()));
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = self
                .notify
                .recv_timeout(left.min(Duration::from_millis(50)));
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// A real nats-server with JetStream on a free loopback port and a temporary store dir.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// Held, not read: the store dir lives as long as the server (and across restarts).
    _store: tempfile::TempDir,
    config: PathBuf,
    log: Option<LineTap>,
}

impl NatsServer {
    /// Starts a server and waits until it is ready.
    pub fn start() -> NatsServer {
        NatsServer::start_with("")
    }

    /// Starts a server that fsyncs every acknowledged write (`sync_interval: always`), for
    /// tests that kill it and count acknowledged changes.
    pub fn start_durable() -> NatsServer {
        NatsServer::start_with("sync_interval: always")
    }

    fn start_with(jetstream_extra: &str) -> NatsServer {
        let port = free_port();
        NatsServer::start_config(port, |store| {
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{ store_dir: {:?}\n{jetstream_extra} }}\n",
                store.join("jetstream").display().to_string()
            )
        })
    }

    /// Starts a server on `port` with the config text `config(store_dir)`.
    pub(crate) fn start_config(port: u16, config: impl FnOnce(&Path) -> String) -> NatsServer {
        let store = tempfile::tempdir().expect("temp dir");
        let path = store.path().join("nats.conf");
        std::fs::write(&path, config(store.path())).expect("write config");
        let mut server = NatsServer {
            child: None,
            port,
            _store: store,
            config: path,
            log: None,
        };
        server.launch();
        server
    }

    /// Waits until the server's log has a line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        self.log
            .as_ref()
            .is_some_and(|log| log.wait_for(0, timeout, |l| l.contains(needle)).is_some())
    }

    fn launch(&mut self) {
        let mut child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        let log = LineTap::new(child.stderr.take().expect("stderr"), "nats| ");
        let ready = log.wait_for(0, Duration::from_secs(20), |l| {
            l.contains("Server is ready")
        });
        assert!(
            ready.is_some(),
            "nats-server did not start: {:?}",
            log.snapshot()
        );
        self.child = Some(child);
        self.log = Some(log);
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PID of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server (no clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store dir.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of real nats-server processes on loopback (server names `n1`, `n2`, ...).
pub struct NatsCluster {
    /// The nodes, `n1` first.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes routed to each other (with `sync_interval: always`) and waits until
    /// JetStream has elected a metadata leader.
    pub fn start(size: usize) -> NatsCluster {
        let client_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let nodes: Vec<NatsServer> = (0..size)
            .map(|i| {
                let (port, route_port, routes) = (client_ports[i], route_ports[i], routes.join(", "));
                NatsServer::start_config(port, move |store| {
                    format!(
                        "server_name: n{}\nlisten: 127.0.0.1:{port}\nmax_payload: 8MB\n\
                         jetstream {{ store_dir: {:?}, sync_interval: always }}\n\
                         cluster {{ name: mycosynth-test, listen: 127.0.0.1:{route_port}, routes: [{routes}] }}\n",
                        i + 1,
                        store.join("jetstream").display().to_string()
                    )
                })
            })
            .collect();
        let cluster = NatsCluster { nodes };
        let leader = cluster
            .nodes
            .iter()
            .any(|n| n.wait_log("metadata leader", Duration::from_secs(30)));
        assert!(leader, "the cluster elected no JetStream leader");
        cluster
    }

    /// Every node's URL, comma-separated (what clients are given).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node whose server name is `name` (`n1`, `n2`, ...).
    pub fn node_index(name: &str) -> Option<usize> {
        name.strip_prefix('n')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
    }
}

/// A `mycosynth serve` process.
pub struct Validator {
    child: Option<Child>,
    http_port: u16,
    log: LineTap,
}

impl Validator {
    /// Starts a validator against `nats_url` with extra arguments, and waits until it serves.
    pub fn start(nats_url: &str, extra: &[&str]) -> Validator {
        Validator::start_with_env(nats_url, extra, &[])
    }

    /// Starts a validator in signed mode on a server started with [`NatsServer::start_secure`]:
    /// it connects as the dev identity `validator`, and bootstraps the policy with the dev
    /// identity `admin` as administrator.
    pub fn start_secure(nats_url: &str, extra: &[&str]) -> Validator {
        let admin = format!("admin={}", dev_public_key("admin"));
        let mut args = vec!["--auth", "signed", "--admin", &admin];
        args.extend_from_slice(extra);
        Validator::start_with_env(nats_url, &args, &identity_env("validator"))
    }

    /// Like [`Validator::start`], with extra environment variables.
    pub fn start_with_env(nats_url: &str, extra: &[&str], env: &[(String, String)]) -> Validator {
        let http_port = free_port();
        let mut child = Command::new(mycosynth_bin())
            .args([
                "--nats-url",
                nats_url,
                "serve",
                "--http",
                &format!("127.0.0.1:{http_port}"),
            ])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start validator");
        let log = LineTap::new(child.stderr.take().expect("stderr"), "validator| ");
        let ready = log.wait_for(0, Duration::from_secs(30), |l| {
            l.contains("ready") || l.contains("mycosynth serve:")
        });
        assert!(
            ready.is_some_and(|(_, l)| l.contains("ready")),
            "validator did not start: {:?}",
            log.snapshot()
        );
        Validator {
            child: Some(child),
            http_port,
            log,
        }
    }

    /// Every log line the validator wrote so far (stderr).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.snapshot()
    }

    /// Address of `/metrics` and `/health`.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// The sum of the series of metric `name` whose labels include `labels` (for example
    /// `outcome="answered"`; empty: all of them), read from `/metrics` now; 0 when there is none
    /// (a counter never incremented is not rendered) or the page cannot be read.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        http_get(&self.http_addr(), "/metrics")
            .map_or(0.0, |(_, page)| metric_sum(&page, name, labels))
    }

    /// The PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the CLI to completion.
pub fn cli(nats_url: &str, args: &[&str]) -> Output {
    Command::new(mycosynth_bin())
        .arg("--nats-url")
        .arg(nats_url)
        .args(args)
        .env("MYCOSYNTH_AUTHOR", "test-operator")
        .env("NO_COLOR", "1")
        .output()
        .expect("run mycosynth")
}

/// A long-running CLI process (e.g. `watch --json`) whose stdout lines can be awaited.
pub struct CliProcess {
    child: Child,
    out: LineTap,
}

impl CliProcess {
    /// Spawns `mycosynth --nats-url <url> <args>`.
    pub fn spawn(nats_url: &str, args: &[&str]) -> CliProcess {
        let mut child = Command::new(mycosynth_bin())
            .arg("--nats-url")
            .arg(nats_url)
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mycosynth");
        let out = LineTap::new(child.stdout.take().expect("stdout"), "cli| ");
        CliProcess { child, out }
    }

    /// Waits for a stdout line satisfying `pred`, searching from line `from`.
    pub fn wait_line(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        self.out.wait_for(from, timeout, pred)
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on a free loopback port in front of a server, whose connections a test can cut.
pub struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts forwarding 127.0.0.1:<free port> to 127.0.0.1:`target_port`.
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut2, stop2, conns2) = (Arc::clone(&cut), Arc::clone(&stop), Arc::clone(&conns));
        thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if cut2.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(upstream) = TcpStream::connect(("127.0.0.1", target_port)) else {
                            continue;
                        };
                        let mut guard = conns2.lock().unwrap();
                        for (a, b) in [(&client, &upstream), (&upstream, &client)] {
                            let (Ok(mut from), Ok(mut to)) = (a.try_clone(), b.try_clone()) else {
                                continue;
                            };
                            thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                        guard.push(client);
                        guard.push(upstream);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            cut,
            conns,
            stop,
        }
    }

    /// `nats://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Closes every proxied connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// The sum of the series of metric `name` in a Prometheus text page whose labels include
/// `labels` (empty: all of them).
pub fn metric_sum(page: &str, name: &str, labels: &str) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            *series == name
                || (series
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{'))
                    && series.contains(labels))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP/1.0 GET on loopback; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Parses a JSON line.
pub fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or(serde_json::Value::Null)
}

/// The seed file of a dev-only identity shipped in `nats/secure/dev-credentials/`
/// (`validator`, `nats-admin`, `admin`, `alice`, `bob`, `ci-bot`, `svc-payment-service`,
/// `svc-inventory-service`).
pub fn dev_seed_file(identity: &str) -> PathBuf {
    repo_root().join(format!("nats/secure/dev-credentials/{identity}.nk"))
}

/// The seed of a dev-only identity.
pub fn dev_seed(identity: &str) -> String {
    std::fs::read_to_string(dev_seed_file(identity))
        .expect("dev seed")
        .trim()
        .to_owned()
}

/// The public key of a dev-only identity.
pub fn dev_public_key(identity: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("nats/secure/dev-credentials/{identity}.pub")))
        .expect("dev public key")
        .trim()
        .to_owned()
}

/// The environment that makes the CLI or validator connect and sign as `identity`.
pub fn identity_env(identity: &str) -> Vec<(String, String)> {
    vec![(
        "MYCOSYNTH_NKEY_FILE".to_owned(),
        dev_seed_file(identity).display().to_string(),
    )]
}

impl NatsServer {
    /// Starts a server with the shipped secure config (`nats/secure/server.conf` and its
    /// `users.conf`), on a free port and a temporary store dir. That config fsyncs every write
    /// (`sync_interval: always`).
    pub fn start_secure() -> NatsServer {
        NatsServer::start_secure_with("")
    }

    /// [`NatsServer::start_secure`] with `extra` config text appended (e.g. a `tls` block).
    pub fn start_secure_with(extra: &str) -> NatsServer {
        NatsServer::secure(extra, true)
    }

    /// [`NatsServer::start_secure`] with JetStream's default `sync_interval` instead of the
    /// shipped config's `sync_interval: always` (an fsync per write): for the benchmark that
    /// names what that fsync costs.
    pub fn start_secure_default_sync() -> NatsServer {
        NatsServer::secure("", false)
    }

    /// The shipped secure config on a free port and a temporary store dir, with `extra`
    /// appended; `sync_always: false` drops its `sync_interval: always`.
    fn secure(extra: &str, sync_always: bool) -> NatsServer {
        let port = free_port();
        let secure = repo_root().join("nats/secure");
        let template = std::fs::read_to_string(secure.join("server.conf")).expect("server.conf");
        let users = std::fs::read_to_string(secure.join("users.conf")).expect("users.conf");
        let extra = extra.to_owned();
        NatsServer::start_config(port, move |store| {
            std::fs::write(store.join("users.conf"), users).expect("write users.conf");
            let text = template
                .replace("127.0.0.1:4222", &format!("127.0.0.1:{port}"))
                .replace("127.0.0.1:8222", &format!("127.0.0.1:{}", free_port()))
                .replace(
                    "\".tools/nats-data-secure\"",
                    &format!("{:?}", store.join("jetstream").display().to_string()),
                );
            assert!(
                text.contains(&port.to_string()),
                "server.conf has no listen line to template"
            );
            let sync = "  sync_interval: always\n";
            assert!(text.contains(sync), "server.conf has no {sync:?} line");
            let text = if sync_always {
                text
            } else {
                text.replace(sync, "")
            };
            format!("{text}\n{extra}\n")
        })
    }
}

/// Runs the CLI as a dev identity (its nkey signs every request); `None`: no credentials.
pub fn cli_as(nats_url: &str, identity: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(mycosynth_bin());
    command
        .arg("--nats-url")
        .arg(nats_url)
        .args(args)
        .env_remove("MYCOSYNTH_NKEY")
        .env_remove("MYCOSYNTH_NKEY_FILE")
        .env("MYCOSYNTH_AUTHOR", "self-declared-name")
        .env("NO_COLOR", "1");
    if let Some(identity) = identity {
        command.envs(identity_env(identity));
    }
    command.output().expect("run mycosynth")
}
