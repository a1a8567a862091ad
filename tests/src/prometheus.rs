//! A real Prometheus (Debian's `prometheus`, installed by `tests/provision.sh`) on a free
//! loopback port with a temporary store, scraping the given `/metrics` targets every 500 ms;
//! stopped by the PID it started.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    port: u16,
    /// Its config and store; removed when dropped.
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping each `host:port` target's `/metrics`.
    pub fn start(targets: &[String]) -> Prometheus {
        let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into());
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} is missing: run tests/provision.sh (make test does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n\
             scrape_configs:\n  - job_name: services\n    static_configs:\n      - targets: [{}]\n",
            quoted.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        prometheus
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The highest value of an instant query now (None: no series yet, or not answering).
    pub fn query(&self, query: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query", self.url());
        let body = ureq::get(&url)
            .query("query", query)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"]
            .as_array()?
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .reduce(f64::max)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
