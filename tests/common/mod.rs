//! Shared harness for the end-to-end tests: start the real binary on a free port, speak
//! raw HTTP to it, stop it with a signal.
//!
//! The server is started with `--listen 127.0.0.1:0`; the harness reads the port from its
//! "listening" log line, so no port is guessed and nothing sleeps waiting for readiness.
//! Every other wait (for a log line, a count, a metric, a process to exit, nginx to
//! listen) goes through one loop, [`poll_until`] (or [`poll_value`] when the last reading
//! is wanted too), with a bound of its own.
//!
//! Also here: the seed video and the contract's token request (`SEED_VIDEO`,
//! `CONTRACT_BODY`, read from `tests/fixtures/seed-video.json`) with its sources and CDN
//! vectors; running the binary for a subcommand or a refused start (`run`,
//! `assert_fails_saying`); the files a test hands the server (`fixture` for the static
//! ones under `tests/fixtures/`, `write_file` and `write_cdns` for those made at run time).
//!
//! Submodules: [`nginx`] runs a real nginx for a test; [`store`] serves the tests that drive
//! the view stores without a server.
#![allow(dead_code)]

pub mod nginx;
pub mod store;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The seed video, byte for byte as `GET /video/12345` must answer it (the contract's
/// example document).
pub const SEED_VIDEO: &str = include_str!("../fixtures/seed-video.json");
const _: () = assert!(
    SEED_VIDEO.as_bytes()[SEED_VIDEO.len() - 1] == b'}',
    "fixtures/seed-video.json must end with its closing brace: no trailing newline"
);

/// The contract's example token request: the seed video, wrapped in `{"video": …}`.
pub const CONTRACT_BODY: &str = concat!(
    r#"{"video":"#,
    include_str!("../fixtures/seed-video.json"),
    "}"
);

/// The seed video's sources, as its document names them.
pub const SEED_SRC_1080: &str = "/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4";
pub const SEED_SRC_720: &str = "/Big_Buck_Bunny_720p_surround_FrostWire.com.mp4";

/// The contract's vectors for the seed video on the default CDNs ("AWS CDN 1" to 3), in
/// round-robin order: (address, 1080p token, 720p token).
pub const DEFAULT_CDN_VECTORS: [(&str, &str, &str); 3] = [
    (
        "https://d2usdis6r1u782.cloudfront.net",
        "c6346e68c6808c506faa8851ca0f6aef",
        "32f18240383a86ea77cd060475ab3c0d",
    ),
    (
        "https://d2oukvvww2uoq.cloudfront.net",
        "39ccd96eb02069a97a9cca39980e4c12",
        "cd358d0e3ae68b6268004dfb2e161c11",
    ),
    (
        "https://dbke9ww44or29.cloudfront.net",
        "5b52cf86a609afedc6b6a4a110f22325",
        "885c1e6f3d0e6cb191d3b73e8cc7f01a",
    ),
];

/// A running `video-server` process.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Keeps the temporary data directory alive (when the harness made it).
    _temp: Option<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
    /// What the process printed on standard output (the runtime's stack diagnostics).
    stdout: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server with a fresh data directory and `extra` arguments.
    pub fn start(extra: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().to_path_buf();
        let mut server = Server::start_in(&data_dir, extra);
        server._temp = Some(temp);
        server
    }

    /// Starts the server on an existing data directory.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        Server::spawn(data_dir, extra, None)
    }

    /// Starts the server with a fresh data directory in a process whose descriptor limit,
    /// soft and hard, is `limit` (as a container or systemd unit would set it).
    pub fn start_with_descriptor_limit(extra: &[&str], limit: u64) -> Server {
        Server::start_limited(extra, (libc::RLIMIT_NOFILE, limit))
    }

    /// Starts the server in a process that may write files of at most `bytes`: a disk
    /// that fills up, without the privileges a small tmpfs would need. Writes past it fail
    /// (`EFBIG`; the signal that would kill the process is ignored, as a real full disk
    /// sends none).
    pub fn start_with_file_size_limit(extra: &[&str], bytes: u64) -> Server {
        Server::start_limited(extra, (libc::RLIMIT_FSIZE, bytes))
    }

    fn start_limited(extra: &[&str], limit: (libc::__rlimit_resource_t, u64)) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = Server::spawn(temp.path(), extra, Some(limit));
        server._temp = Some(temp);
        server
    }

    fn spawn(
        data_dir: &Path,
        extra: &[&str],
        limit: Option<(libc::__rlimit_resource_t, u64)>,
    ) -> Server {
        use std::os::unix::process::CommandExt;
        let mut command = video_server();
        command
            .args(["--listen", "127.0.0.1:0", "--no-pin", "--workers", "2"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((resource, value)) = limit {
            let set_limit = move || -> std::io::Result<()> {
                if resource == libc::RLIMIT_FSIZE {
                    // SAFETY: changing a signal's disposition to "ignore" is
                    // async-signal-safe and touches no memory of ours.
                    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
                }
                let rlimit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                // SAFETY: setrlimit is async-signal-safe and only reads the struct above.
                if unsafe { libc::setrlimit(resource, &rlimit) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            // SAFETY: between fork and exec the closure runs only async-signal-safe calls
            // (signal, setrlimit) and allocates nothing.
            unsafe { command.pre_exec(set_limit) };
        }
        let mut child = command.spawn().expect("spawn video-server");
        let stderr = child.stderr.take().expect("stderr piped");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stdout_writer = Arc::clone(&stdout);
        let child_stdout = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in BufReader::new(child_stdout).lines() {
                let Ok(line) = line else { break };
                let mut stdout = stdout_writer.lock().expect("stdout lock");
                stdout.push_str(&line);
                stdout.push('\n');
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = listening_address(&line) {
                    let _ = address_tx.send(address);
                }
                let mut log = log_writer.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match address_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "video-server did not report a listening address (exit: {status:?})\n{}",
                    log.lock().expect("log lock")
                );
            }
        };
        Server {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
            log,
            stdout,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// What the process printed on standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").clone()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server still running");
        signal(child.id(), "TERM");
        wait_with_timeout(&mut child, Duration::from_secs(30))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server still running").id()
    }

    /// A line of the server's `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} not in /proc/PID/status"))
    }

    /// Sends a signal (`"HUP"`, `"TERM"`…) to the running server.
    pub fn send_signal(&self, name: &str) {
        let child = self.child.as_ref().expect("server still running");
        signal(child.id(), name);
    }

    /// Waits until the log has `needle` at least `count` times; false after 10 s.
    pub fn wait_for_log(&self, needle: &str, count: usize) -> bool {
        poll_until(Duration::from_secs(10), || {
            (self.log().matches(needle).count() >= count).then_some(())
        })
        .is_some()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        self.request_with(method, path, &[], body)
    }

    /// One request with these headers on a fresh connection.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> HttpResponse {
        let mut client = self.connect();
        client.send_request(method, path, headers, body);
        client.read_response()
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, None)
    }

    /// `GET` with these headers on a fresh connection.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.request_with("GET", path, headers, None)
    }

    pub fn post_token(&self, body: &str) -> HttpResponse {
        self.post_token_with(body, &[])
    }

    /// `POST /video/token` (JSON) with extra headers.
    pub fn post_token_with(&self, body: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        self.request_with("POST", "/video/token", &all, Some(body))
    }

    /// A metric's value from `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").text();
        text.lines()
            .find_map(|line| {
                let (metric, value) = line.rsplit_once(' ')?;
                (metric == name)
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .unwrap_or(0.0)
    }

    /// Polls `GET /video/:id/views` until it reaches `expected` or 10 s pass; the last
    /// count read.
    pub fn wait_for_views(&self, video_id: &str, expected: u64) -> u64 {
        poll_value(
            Duration::from_secs(10),
            || self.views(video_id),
            |&views| views >= expected,
        )
    }

    pub fn views(&self, video_id: &str) -> u64 {
        let response = self.get(&format!("/video/{video_id}/views"));
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()["views"]
            .as_u64()
            .expect("views is a number")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let start = line.find("addr=")? + "addr=".len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// An external program a test checks our output against (nginx, openssl), or `None` after
/// a loud notice when this machine lacks it. Under CI (`CI` set) a missing tool fails the
/// test instead: `scripts/test.sh` installs them, and CI must not pass by skipping.
pub fn external_tool(name: &str) -> Option<PathBuf> {
    // scripts/install-test-tools.sh puts PyPI tools (redbot) under target/test-tools/bin.
    let project_tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/bin");
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([
            "/usr/sbin".into(),
            "/usr/bin".into(),
            "/sbin".into(),
            project_tools,
        ])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let message = format!(
            "{name} is not installed: the test that checks our output against {name} cannot run \
             (scripts/test.sh installs it)"
        );
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("\n*** SKIPPED: {message} ***\n");
    }
    found
}

/// The `video-server` binary under test, as a command to add arguments to.
/// The binary under test: this build's, or the one `VIDEO_SERVER_TEST_BINARY` names (to
/// run a test against a release build, e.g. the stack-depth test).
pub fn video_server() -> Command {
    match std::env::var_os("VIDEO_SERVER_TEST_BINARY") {
        Some(binary) => Command::new(binary),
        None => Command::new(env!("CARGO_BIN_EXE_video-server")),
    }
}

/// Runs `video-server ARGS` to completion, with these extra environment variables.
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    video_server()
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run video-server")
}

/// Asserts that a run of `video-server` failed and said `expected` on stderr; `what`
/// names the run (its arguments) in the failure messages.
pub fn assert_fails_saying(output: &Output, what: &str, expected: &str) {
    assert!(!output.status.success(), "{what} succeeded; it should fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(expected), "{what}: {stderr}");
}

/// The path of a file under `tests/fixtures/` (see its README), for an option that takes
/// a file.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    assert!(Path::new(&path).is_file(), "no fixture {path}");
    path
}

/// Writes a file for a test (a catalog, a CDN file, API keys) into `dir`; its path.
pub fn write_file(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write a test file");
    path
}

/// Writes (or rewrites) `dir/cdns.json`, a `--cdns` file listing these CDN objects in
/// round-robin order; its path. For CDN files built at run time (an nginx's port, a key
/// that rotates); static ones are fixtures.
pub fn write_cdns(dir: &Path, cdns: &[serde_json::Value]) -> PathBuf {
    let json = serde_json::to_string_pretty(cdns).expect("CDN JSON");
    write_file(dir, "cdns.json", json)
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Waits for `child` to exit; kills it and panics after `timeout`.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    poll_until(timeout, || child.try_wait().expect("try_wait")).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("process did not exit within {timeout:?}");
    })
}

/// How long `poll_until` sleeps between two probes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The one polling loop of the tests: calls `probe` every [`POLL_INTERVAL`] until it
/// returns `Some`, and gives that value; `None` once `timeout` has passed. The probe runs
/// at least once, and once more at the deadline, so a slow machine's last chance counts.
pub fn poll_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// [`poll_until`] for a reading that is wanted either way: reads until `done` accepts
/// the value or `timeout` passes, and gives the last value read (for the assertion that
/// follows to show).
pub fn poll_value<T>(
    timeout: Duration,
    mut read: impl FnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let mut last = None;
    poll_until(timeout, || {
        let value = read();
        let finished = done(&value);
        last = Some(value);
        finished.then_some(())
    });
    last.expect("poll_until probes at least once")
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {}", self.text()))
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.text()))
            .to_owned()
    }
}

/// A raw HTTP/1.1 client over one connection.
pub struct Client {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        Client {
            stream,
            buffer: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn send_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        if let Some(body) = body {
            request.push_str(body);
        }
        self.send_raw(request.as_bytes());
    }

    /// Reads the response to a HEAD request: a head whose Content-Length announces a body
    /// that is not sent.
    pub fn read_head_response(&mut self) -> HttpResponse {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buffer.drain(..end + 4).collect();
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut response = httparse::Response::new(&mut headers);
                response.parse(&head).expect("valid response head");
                return HttpResponse {
                    status: response.code.expect("status"),
                    headers: response
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: Vec::new(),
                };
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => panic!("connection closed before a response head"),
                Ok(count) => self.buffer.extend_from_slice(&chunk[..count]),
            }
        }
    }

    /// Reads one response (panics if the connection closes first).
    pub fn read_response(&mut self) -> HttpResponse {
        self.try_read_response().unwrap_or_else(|| {
            panic!(
                "connection closed before a full response; got {:?}",
                String::from_utf8_lossy(&self.buffer)
            )
        })
    }

    /// Reads one response, or `None` if the connection closes before one arrives.
    pub fn try_read_response(&mut self) -> Option<HttpResponse> {
        loop {
            if let Some((response, used)) = parse_response(&self.buffer) {
                self.buffer.drain(..used);
                return Some(response);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(count) => self.buffer.extend_from_slice(&chunk[..count]),
            }
        }
    }

    /// Whether the server closed the connection (EOF or reset) within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// Parses one response with a Content-Length (or none) from the front of `buffer`.
fn parse_response(buffer: &[u8]) -> Option<(HttpResponse, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buffer).expect("valid response head") {
        httparse::Status::Complete(length) => length,
        httparse::Status::Partial => return None,
    };
    let status = response.code.expect("status code");
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>().expect("numeric length"))
        .unwrap_or(0);
    if buffer.len() < head + length {
        return None;
    }
    let body = buffer[head..head + length].to_vec();
    Some((
        HttpResponse {
            status,
            headers,
            body,
        },
        head + length,
    ))
}
