//! Test support for the sidecar: `mycosynth sidecar` processes, a plain HTTP/1.1 client and a
//! Server-Sent Events reader over raw TCP (what a client in any language sees on the wire).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{free_port, metric_sum, mycosynth_bin, LineTap};

/// A `mycosynth sidecar` process on a free loopback port.
pub struct SidecarProcess {
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    port: u16,
    log: Option<LineTap>,
}

impl SidecarProcess {
    /// Starts `mycosynth --nats-url URL sidecar NS ENV --listen 127.0.0.1:<free> EXTRA...` and
    /// waits until it listens (not until it serves: see [`SidecarProcess::wait_serving`]).
    pub fn start(nats_url: &str, namespace: &str, env: &str, extra: &[&str]) -> SidecarProcess {
        SidecarProcess::start_with_env(nats_url, (namespace, env), extra, &[])
    }

    /// [`SidecarProcess::start`] with environment variables (e.g. [`crate::identity_env`]).
    pub fn start_with_env(
        nats_url: &str,
        (namespace, env): (&str, &str),
        extra: &[&str],
        vars: &[(String, String)],
    ) -> SidecarProcess {
        let port = free_port();
        let mut args: Vec<String> = ["--nats-url", nats_url, "sidecar", namespace, env]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut sidecar = SidecarProcess {
            child: None,
            args,
            env: vars.to_vec(),
            port,
            log: None,
        };
        sidecar.launch();
        sidecar
    }

    /// Starts one and waits until `/health` answers 200.
    pub fn serving(nats_url: &str, namespace: &str, env: &str, extra: &[&str]) -> SidecarProcess {
        let sidecar = SidecarProcess::start(nats_url, namespace, env, extra);
        sidecar.wait_serving(Duration::from_secs(30));
        sidecar
    }

    fn launch(&mut self) {
        let mut child = Command::new(mycosynth_bin())
            .args(&self.args)
            .env_remove("MYCOSYNTH_NKEY")
            .env_remove("MYCOSYNTH_NKEY_FILE")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sidecar");
        let log = LineTap::new(child.stderr.take().expect("stderr"), "sidecar| ");
        let ready = log.wait_for(0, Duration::from_secs(30), |l| {
            l.contains("sidecar listening") || l.contains("mycosynth:")
        });
        assert!(
            ready.is_some_and(|(_, l)| l.contains("listening")),
            "sidecar did not start: {:?}",
            log.snapshot()
        );
        self.child = Some(child);
        self.log = Some(log);
    }

    /// Waits until `/health` answers 200.
    pub fn wait_serving(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.get("/health").status != 200 {
            assert!(
                Instant::now() < deadline,
                "sidecar not serving: {:?}",
                self.log_lines()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A GET.
    pub fn get(&self, path: &str) -> HttpReply {
        http(&self.addr(), "GET", path, &[], None)
    }

    /// A GET with headers.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        http(&self.addr(), "GET", path, headers, None)
    }

    /// A POST of `body` with `content_type` (none: no header).
    pub fn post(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> HttpReply {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| vec![("Content-Type", c)])
            .unwrap_or_default();
        http(&self.addr(), "POST", path, &headers, Some(body))
    }

    /// The sum of metric `name`'s series whose labels include `labels`, from `/metrics`.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        metric_sum(&self.get("/metrics").body, name, labels)
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.as_ref().map(LineTap::snapshot).unwrap_or_default()
    }

    /// The PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILLs it and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again with the same arguments (same port, same cache dir).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The status (0: no answer).
    pub status: u16,
    /// Header names lowercased, with their values.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl HttpReply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`); status 0 when nothing
/// answers.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpReply {
    let failed = HttpReply {
        status: 0,
        headers: Vec::new(),
        body: String::new(),
    };
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return failed;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    // The server may answer (413) and close before taking a large body; read what it said.
    let _ = stream.write_all(&bytes);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_reply(&raw).unwrap_or(failed)
}

fn parse_reply(raw: &[u8]) -> Option<HttpReply> {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Some(HttpReply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// One Server-Sent Event, or a comment line (a heartbeat).
#[derive(Debug, Clone, PartialEq)]
pub enum Sse {
    /// An event.
    Event {
        /// `id:`.
        id: String,
        /// `event:` (`message` when absent).
        event: String,
        /// `data:`, lines joined.
        data: String,
    },
    /// `: text`.
    Comment(String),
}

impl Sse {
    /// The data of an event as JSON (`Null` for a comment).
    pub fn json(&self) -> serde_json::Value {
        match self {
            Sse::Event { data, .. } => serde_json::from_str(data).unwrap_or_default(),
            Sse::Comment(_) => serde_json::Value::Null,
        }
    }
}

/// A change-stream client reading on its own thread.
pub struct SseClient {
    /// The response head.
    pub status: u16,
    events: mpsc::Receiver<Sse>,
    stream: TcpStream,
}

impl SseClient {
    /// GETs `path` with `headers` and reads events as they come.
    pub fn connect(addr: &str, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut stream = TcpStream::connect(addr).expect("connect to the sidecar");
        let _ = stream.set_nodelay(true);
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).expect("send request");
        let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
        let mut status_line = String::new();
        let _ = reader.read_line(&mut status_line);
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || read_events(reader, tx));
        SseClient {
            status,
            events,
            stream,
        }
    }

    /// The next event or comment, waiting up to `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Sse> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The next event (skipping comments), waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<Sse> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.next(left)? {
                Sse::Comment(_) => continue,
                event => return Some(event),
            }
        }
    }

    /// Closes the connection.
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads the rest of the head, then events, into `tx` until the stream ends. The body is
/// chunked: chunk-size lines are skipped (an SSE line never is a bare hex number with a CR).
fn read_events(mut reader: BufReader<TcpStream>, tx: mpsc::Sender<Sse>) {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let (mut id, mut event, mut data) = (String::new(), String::new(), Vec::<String>::new());
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.ends_with("\r\n") {
            continue; // chunk framing
        }
        let text = line.trim_end_matches('\n');
        if text.is_empty() {
            if !data.is_empty() {
                let sse = Sse::Event {
                    id: std::mem::take(&mut id),
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        std::mem::take(&mut event)
                    },
                    data: data.join("\n"),
                };
                data.clear();
                if tx.send(sse).is_err() {
                    return;
                }
            }
            continue;
        }
        if let Some(comment) = text.strip_prefix(':') {
            if tx.send(Sse::Comment(comment.trim().to_owned())).is_err() {
                return;
            }
        } else if let Some((field, value)) = text.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => id = value,
                "event" => event = value,
                "data" => data.push(value),
                _ => {}
            }
        }
    }
}

/// A client that sends the request and then never reads, with a receive buffer of a few KiB
/// (set before connecting, so the window never grows): the sidecar's socket buffer fills,
/// then its queue for this client.
pub fn stalled_client(addr: &str, path: &str) -> TcpStream {
    use std::os::fd::FromRawFd;
    let target: std::net::SocketAddrV4 = addr.parse().expect("an IPv4 address");
    // SAFETY: a fresh socket this function owns (handed to TcpStream, which closes it); the
    // option and address structs live across the calls that read them.
    let mut stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sockaddr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: target.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*target.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            fd,
            (&sockaddr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(connected, 0, "connect");
        TcpStream::from_raw_fd(fd)
    };
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    stream
}

/// Writes a JSON schema file in `dir` and returns its path.
pub fn write_schema(dir: &Path, schema: &serde_json::Value) -> String {
    let path = dir.join("schema.json");
    std::fs::write(&path, schema.to_string()).expect("write schema");
    path.display().to_string()
}
