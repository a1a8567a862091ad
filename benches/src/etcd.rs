//! The peer a user would otherwise pick: etcd (Debian's `etcd-server`, installed by
//! `benches/provision.sh`), started here on free loopback ports with a temporary data dir and
//! stopped by the PID this process started. Measured as the tests measure NATS: a put on one
//! connection to the watch event on each of N others.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType};
use futures::future::join_all;

use crate::{histogram, Summary};

/// A running etcd server; killed on drop.
pub struct Etcd {
    child: Child,
    client_url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts `etcd` (from `$ETCD_BIN` or the `PATH`) and waits until it answers.
    pub async fn start() -> Result<Etcd, String> {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let (client, peer) = (
            mycosynth_testkit::free_port(),
            mycosynth_testkit::free_port(),
        );
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(&bin)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {bin:?} (run benches/provision.sh): {e}"))?;
        let etcd = Etcd {
            child,
            client_url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(mut c) = etcd.client().await {
                if c.put("ready", "1", None).await.is_ok() {
                    return Ok(etcd);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("etcd did not answer within 15 s".into())
    }

    async fn client(&self) -> Result<Client, etcd_client::Error> {
        Client::connect([self.client_url.as_str()], None).await
    }

    /// The version the server reports, for the report.
    pub fn version() -> String {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        Command::new(bin)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Put on one client to the watch event at the last of `watchers` clients, each on its own
    /// connection; one put in flight.
    pub async fn put_to_watch(&self, watchers: usize, warmup: u64, samples: u64) -> Summary {
        let mut writer = self.client().await.expect("etcd writer");
        let key = format!("floor{watchers}");
        let mut streams = Vec::with_capacity(watchers);
        for _ in 0..watchers {
            let mut client = self.client().await.expect("etcd watcher");
            streams.push(client.watch(key.as_str(), None).await.expect("watch"));
        }
        let mut h = histogram();
        for i in 0..warmup + samples {
            let started = Instant::now();
            let put = writer.put(key.as_str(), i.to_string(), None);
            let delivered = join_all(streams.iter_mut().map(|s| async move {
                // The first response of a watch only says it was created: wait for the put.
                while let Ok(Some(resp)) = s.message().await {
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Put)
                    {
                        break;
                    }
                }
            }));
            let (put, _) = tokio::join!(put, delivered);
            put.expect("etcd put");
            if i >= warmup {
                let _ = h.record(started.elapsed().as_nanos() as u64);
            }
        }
        Summary::of(&h)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
