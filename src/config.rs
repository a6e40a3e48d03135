//! Configuration: every option is a command-line flag with an environment fallback.
//!
//! The defaults just work: `video-server` with no option serves the contract on port 3002
//! with the embedded store under `./data` and the old service's three CDNs. `--help`
//! documents each option; the README's configuration table mirrors it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;

use crate::http::{HttpConfig, Limits};
use crate::views::BatchLimits;

/// Signs video URLs for CDNs and records who watched what.
///
/// Serves `GET /video/:videoId`, `POST /video/token`, `GET /video/:videoId/views`,
/// `GET /healthz` and `GET /metrics` (see README.md). Every option can also be set through
/// the environment variable named beside it.
#[derive(Debug, Clone, Parser)]
#[command(name = "video-server", version)]
pub struct Config {
    /// Address and port to listen on. Port 0 picks a free port (logged at start).
    #[arg(long, env = "VIDEO_SERVER_LISTEN", default_value = "0.0.0.0:3002")]
    pub listen: SocketAddr,

    /// Directory of the embedded store (created if missing). Holds the catalog and every
    /// recorded view in `video-server.sqlite3`.
    #[arg(long, env = "VIDEO_SERVER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// HTTP worker threads. Default: one per CPU the process may run on (so `taskset -c 1
    /// video-server` runs one worker, on CPU 1).
    #[arg(long, env = "VIDEO_SERVER_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Do not pin each worker to its own CPU. Pinning is best when the server has its CPUs
    /// to itself; leave it off when sharing CPUs with other busy processes.
    #[arg(long, env = "VIDEO_SERVER_NO_PIN")]
    pub no_pin: bool,

    /// JSON file listing the CDNs to sign for: an array of {"name", "address", "key",
    /// "scheme"}, where scheme is "md5" (default) or "sha256". Default: the old service's
    /// three CloudFront CDNs.
    #[arg(long, env = "VIDEO_SERVER_CDNS")]
    pub cdns: Option<PathBuf>,

    /// JSON file with an array of videos to import into the catalog at start (added or
    /// replaced by videoId). A fresh store is seeded with video 12345 either way.
    #[arg(long, env = "VIDEO_SERVER_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Write views to the store in batches of at most this many.
    #[arg(long, env = "VIDEO_SERVER_BATCH_SIZE", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,

    /// Write a batch once its oldest view has waited this many milliseconds.
    #[arg(long, env = "VIDEO_SERVER_FLUSH_INTERVAL_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub flush_interval_ms: u64,

    /// Views that may wait for the writer; past this, new views are dropped (and counted in
    /// /metrics) rather than slowing responses.
    #[arg(long, env = "VIDEO_SERVER_VIEW_QUEUE", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub view_queue: u32,

    /// Largest request body accepted, in bytes; larger requests get 413.
    #[arg(long, env = "VIDEO_SERVER_MAX_BODY_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u32).range(1..=1_073_741_824))]
    pub max_body_bytes: u32,

    /// Largest request line plus headers accepted, in bytes; larger requests get 431.
    #[arg(long, env = "VIDEO_SERVER_MAX_HEAD_BYTES", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(256..=1_048_576))]
    pub max_head_bytes: u32,

    /// Close a keep-alive connection after this many milliseconds without a request.
    #[arg(long, env = "VIDEO_SERVER_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// Time a client has to send a whole request (headers and body) once its first byte
    /// arrived; a slower client gets 408. Protects against slow-header attacks.
    #[arg(long, alias = "header-timeout-ms", env = "VIDEO_SERVER_REQUEST_TIMEOUT_MS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,

    /// On SIGTERM or SIGINT, wait at most this long for open requests to finish before
    /// flushing views and exiting.
    #[arg(
        long,
        env = "VIDEO_SERVER_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub shutdown_timeout_ms: u64,

    /// Proxies whose X-Forwarded-For header is believed, as addresses or CIDR blocks,
    /// comma separated (e.g. "10.0.0.0/8,127.0.0.1"). Views from other peers record the TCP
    /// peer address.
    #[arg(long, env = "VIDEO_SERVER_TRUSTED_PROXIES", default_value = "",
          value_parser = parse_trusted_proxies)]
    pub trusted_proxies: TrustedProxies,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such as
    /// "video_server=debug".
    #[arg(long, env = "VIDEO_SERVER_LOG", default_value = "info")]
    pub log_level: String,
}

/// The parsed `--trusted-proxies` list.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

fn parse_trusted_proxies(list: &str) -> Result<TrustedProxies, String> {
    crate::api::parse_trusted_proxies(list).map(TrustedProxies)
}

impl Config {
    pub fn http(&self) -> HttpConfig {
        let defaults = HttpConfig::default();
        HttpConfig {
            limits: Limits {
                max_head_bytes: self.max_head_bytes as usize,
                max_body_bytes: self.max_body_bytes as usize,
            },
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            workers: self.workers.map_or(defaults.workers, usize::from),
            pin_workers: !self.no_pin,
            stack_bytes: defaults.stack_bytes,
        }
    }

    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_views: self.batch_size as usize,
            max_age: Duration::from_millis(self.flush_interval_ms),
        }
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_valid() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::try_parse_from(["video-server"]).expect("defaults parse");
        assert_eq!(config.listen, "0.0.0.0:3002".parse().expect("address"));
        assert_eq!(config.batch_size, 1_000);
        assert_eq!(config.http().limits.max_body_bytes, 1_048_576);
        assert!(config.http().pin_workers);
        assert!(config.trusted_proxies.0.is_empty());
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        let cases: [&[&str]; 4] = [
            &["video-server", "--listen", "nowhere"],
            &["video-server", "--batch-size", "0"],
            &["video-server", "--trusted-proxies", "10.0.0.0/8,bogus"],
            &["video-server", "--workers", "0"],
        ];
        for args in cases {
            let error = Config::try_parse_from(args).expect_err("invalid");
            assert!(!error.to_string().is_empty());
        }
    }
}
