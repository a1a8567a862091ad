//! A `mycosynth console` process for the console's tests and bench: started on a free loopback
//! port against a NATS URL (open mode, or signed with a dev identity's key), stopped by its PID.
//! [`http`] sends a raw HTTP/1.0 request (no chunked answer to decode), for what a browser would never send (a form without
//! its CSRF token) and for timing renders without a browser.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{dev_seed_file, free_port, mycosynth_bin};

/// A running console.
pub struct ConsoleServer {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl ConsoleServer {
    /// Starts `mycosynth console` against `nats_url`: signed with `identity`'s dev key, or in
    /// open mode without one. Waits (up to 15 s) until it accepts connections.
    pub fn start(nats_url: &str, identity: Option<&str>) -> ConsoleServer {
        ConsoleServer::start_with(nats_url, identity, &[])
    }

    /// [`ConsoleServer::start`] with more arguments for `mycosynth console`.
    pub fn start_with(nats_url: &str, identity: Option<&str>, extra: &[&str]) -> ConsoleServer {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let stderr = log.reopen().expect("log file");
        let mut command = Command::new(mycosynth_bin());
        command
            .arg("--nats-url")
            .arg(nats_url)
            .args(["console", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env_remove("MYCOSYNTH_NKEY")
            .env_remove("MYCOSYNTH_NKEY_FILE")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        if let Some(identity) = identity {
            command.arg("--nkey-file").arg(dev_seed_file(identity));
        }
        let child = command.spawn().expect("start mycosynth console");
        let console = ConsoleServer { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "console on port {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        console
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ConsoleServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer: status, header lines (lowercase names), body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// `name: value` lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` to the console on `port` with the `Cookie` header `cookie` and a form
/// `body` (urlencoded), over one connection that closes after the answer.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the console");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut request =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        request.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let body = rest.to_owned();
    Answer {
        status,
        headers,
        body,
    }
}
