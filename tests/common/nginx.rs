//! Debian's nginx, started by a test on a free loopback port with a configuration of its
//! own (daemon off, one process, everything under a temporary prefix), and stopped when the
//! value drops. Tests use it as the verifier of our signed URLs and as the caching proxy a
//! CDN would be.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::poll_until;

/// What one nginx serves. `http` (directives for the `http` block) and `locations` (for its
/// one `server` block, whose root is `{prefix}/root`) may say `{prefix}`.
pub struct NginxSite<'a> {
    /// Files to serve, `(path under the root, content)`.
    pub files: &'a [(&'a str, &'a str)],
    pub http: &'a str,
    pub locations: &'a str,
}

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(binary: &Path, site: &NginxSite<'_>) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("mkdir root");
        for (file, content) in site.files {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, content).expect("write file");
        }
        let prefix = dir.path().display().to_string();
        // The port is found free then handed to nginx; retry if someone took it meanwhile.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("free port")
                .port();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, configuration(&prefix, port, site)).expect("write nginx.conf");
            let mut child = Command::new(binary)
                .args(["-p", &prefix, "-e", "stderr", "-c"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn nginx");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // Ready once it accepts a connection; given up on if it exits (the port taken).
            let listening = poll_until(Duration::from_secs(10), || {
                if TcpStream::connect(addr).is_ok() {
                    Some(true)
                } else if let Ok(Some(_)) = child.try_wait() {
                    Some(false)
                } else {
                    None
                }
            });
            if listening == Some(true) {
                return Nginx {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let mut log = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut log);
            }
            eprintln!("nginx did not start on port {port}: {log}");
        }
        panic!("nginx did not start");
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GETs a URL on this nginx from the given source address (a loopback address of this
    /// machine): (status, body).
    pub fn fetch(&self, url: &str, from: IpAddr) -> (u16, String) {
        let path = url.strip_prefix(&self.base()).expect("a URL on this nginx");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .expect("bind the source address");
        socket.connect(&self.addr.into()).expect("connect to nginx");
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: cdn\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        (status, body.to_owned())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn configuration(prefix: &str, port: u16, site: &NginxSite<'_>) -> String {
    let http = site.http.replace("{prefix}", prefix);
    let locations = site.locations.replace("{prefix}", prefix);
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    {http}
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/root;
        {locations}
    }}
}}
"#
    )
}
