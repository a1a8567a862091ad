//! A real headless Chromium driven over WebDriver, for the console's browser tests.
//!
//! [`Browser::start`] starts Debian's `chromedriver` (installed by `tests/provision.sh`,
//! which `make test` runs) on a free loopback port, waits until it answers `/status`, and opens
//! a `fantoccini` session with headless Chromium. [`Browser::close`] ends the session and stops
//! the chromedriver it started (by its PID); `Drop` does the same for a test that fails first,
//! so no browser is left running.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::{free_port, repo_root};

/// The window size every session starts with (screenshots are this size).
pub const WINDOW: (u32, u32) = (1280, 900);

/// The chromedriver binary: `$CHROMEDRIVER`, else Debian's `/usr/bin/chromedriver`.
pub fn chromedriver_bin() -> PathBuf {
    std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// Where screenshots go: `<workspace>/target/console/`.
pub fn screenshot_dir() -> PathBuf {
    repo_root().join("target/console")
}

/// A chromedriver process and one WebDriver session of headless Chromium.
pub struct Browser {
    client: Option<Client>,
    driver: Option<Child>,
    port: u16,
    session: Option<String>,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session.
    pub async fn start() -> Browser {
        let bin = chromedriver_bin();
        assert!(
            bin.exists(),
            "{} is missing: run tests/provision.sh (make test does)",
            bin.display()
        );
        let port = free_port();
        let driver = Command::new(&bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut browser = Browser {
            client: None,
            driver: Some(driver),
            port,
            session: None,
        };
        browser.wait_ready(Duration::from_secs(20));
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(chromium_capabilities())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("open a chromium session");
        browser.session = client.session_id().await.ok().flatten();
        client
            .set_window_size(WINDOW.0, WINDOW.1)
            .await
            .expect("set window size");
        browser.client = Some(client);
        browser
    }

    /// Polls chromedriver's `/status` until it says ready.
    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self
                .driver
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("chromedriver exited at start: {status}");
            }
            if http_request(self.port, "GET", "/status").is_some_and(|body| {
                body.contains("\"ready\":true") || body.contains("\"ready\": true")
            }) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "chromedriver on port {} did not answer in {timeout:?}",
            self.port
        );
    }

    /// The WebDriver client, for anything the helpers below do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("browser session is open")
    }

    /// The chromedriver's PID.
    pub fn driver_pid(&self) -> Option<u32> {
        self.driver.as_ref().map(Child::id)
    }

    /// Navigates to `url` and waits for the page load.
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Waits (up to the default wait) for the element `css` and returns its text.
    pub async fn text(&self, css: &str) -> String {
        let element = self
            .client()
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("element {css}: {e}"));
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// Saves a PNG of the window to `target/console/NAME.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.expect("take screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create target/console");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            if client.close().await.is_ok() {
                self.session = None;
            }
        }
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        if let Some(session) = self.session.take() {
            // Drop cannot await: end the session with a plain request so Chromium exits too.
            let _ = http_request(self.port, "DELETE", &format!("/session/{session}"));
        }
        if let Some(mut driver) = self.driver.take() {
            let _ = driver.kill();
            let _ = driver.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The client's connection task needs no more requests from here on.
        drop(self.client.take());
        self.stop_driver();
    }
}

/// Headless Chromium as the tests run it (root in a container: no sandbox, no /dev/shm).
fn chromium_capabilities() -> fantoccini::wd::Capabilities {
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".to_string(),
        "--disable-dev-shm-usage".to_string(),
        "--disable-gpu".to_string(),
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
    ];
    let mut options = serde_json::json!({ "args": args });
    if let Some(binary) = std::env::var_os("CHROMIUM") {
        options["binary"] = serde_json::json!(binary.to_string_lossy());
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), serde_json::json!("chrome"));
    caps.insert("goog:chromeOptions".into(), options);
    caps
}

/// One HTTP/1.1 request to chromedriver on loopback; the response text, or `None`.
///
/// chromedriver keeps the connection open after `Connection: close`, so the body is read by
/// its `Content-Length`, not to end of stream.
fn http_request(port: u16, method: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if response.len() >= head_end + 4 + length {
                break;
            }
        }
    }
    Some(String::from_utf8_lossy(&response).into_owned())
}
