//! Configuration: every option is a command-line flag with an environment fallback.
//!
//! The defaults just work: `video-server` with no option serves the contract on port 3002
//! with the embedded store under `./data` and the old service's three CDNs. `--help`
//! documents each option; the README's configuration table mirrors it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use scylla::statement::Consistency;

use crate::store::scylla::schema::schema_creation;
use crate::store::scylla::{Replication, ScyllaConfig, ScyllaSetupError, TlsFiles};
use crate::store::{RetryPolicy, DEFAULT_FLUSHES_IN_FLIGHT, DEFAULT_REPLAY_VIEWS_PER_SECOND};

use crate::cors::CorsOrigins;
use crate::http::{HttpConfig, Limits};
use crate::limiter::RateLimit;
use crate::token::SigningPolicy;
use crate::viewer::ClientIpMode;
use crate::views::BatchLimits;

/// Signs video URLs for CDNs and records who watched what.
///
/// Serves `GET /video/:videoId`, `POST /video/token`, `GET /video/:videoId/views`,
/// `GET /healthz` and `GET /metrics` (see README.md). Every option can also be set through
/// the environment variable named beside it.
// The field docs are `--help` text, written for a terminal: `<key>` and bare URLs are meant
// as they read there, not as rustdoc markup.
#[allow(rustdoc::invalid_html_tags, rustdoc::bare_urls)]
#[derive(Debug, Clone, Parser)]
#[command(
    name = "video-server",
    version,
    args_conflicts_with_subcommands = false
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address and port to listen on. Port 0 picks a free port (logged at start).
    #[arg(long, env = "VIDEO_SERVER_LISTEN", default_value = "0.0.0.0:3002")]
    pub listen: SocketAddr,

    /// Directory of the embedded store (created if missing). Holds the catalog and every
    /// recorded view in `video-server.sqlite3`.
    #[arg(
        long,
        global = true,
        env = "VIDEO_SERVER_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// HTTP worker threads. Default: one per CPU the process may run on (so `taskset -c 1
    /// video-server` runs one worker, on CPU 1).
    #[arg(long, env = "VIDEO_SERVER_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Do not pin each worker to its own CPU. Pinning is best when the server has its CPUs
    /// to itself; leave it off when sharing CPUs with other busy processes.
    #[arg(long, env = "VIDEO_SERVER_NO_PIN")]
    pub no_pin: bool,

    /// Answer requests on each connection's own coroutine stack, not on the worker's one
    /// hot stack. The hot stack keeps the deepest frames of every request in the CPU's
    /// caches, which saves about a quarter of the server's user-space CPU at 10,000
    /// connections; turn it off for tools that follow the stack pointer and lose track
    /// when it switches stacks, such as valgrind (bench/instructions.sh does).
    #[arg(long, env = "VIDEO_SERVER_NO_HOT_STACK")]
    pub no_hot_stack: bool,

    /// JSON file listing the CDNs to sign for, round robin: an array of {"name", "address",
    /// "scheme", "key" or "key_file", ...}. Schemes: "md5" (the default, the old service's
    /// token), "sha256", "nginx" (secure_link_md5), "akamai" (EdgeAuth 2.0), "cloudfront"
    /// (RSA key pair), "google" (Cloud CDN), "bunny" (token authentication); the README
    /// lists each scheme's fields. SIGHUP re-reads it (keys rotate without a restart; a
    /// file that does not load is refused and the running CDNs stay). Default: the old
    /// service's three CDNs, md5.
    #[arg(long, global = true, env = "VIDEO_SERVER_CDNS")]
    pub cdns: Option<PathBuf>,

    /// Which sources POST /video/token signs: "open" signs any source of any video (the old
    /// service's behaviour); "catalog" signs only the sources the catalog lists for that
    /// videoId, and answers 403 naming any other.
    #[arg(long, env = "VIDEO_SERVER_SIGNING_POLICY", value_enum, default_value_t = SigningPolicy::Open)]
    pub signing_policy: SigningPolicy,

    /// File of API keys, one per line (# starts a comment). With it, POST /video/token
    /// needs "Authorization: Bearer <key>" and answers 401 without a listed key. SIGHUP
    /// re-reads it. Default: no key needed.
    #[arg(long, env = "VIDEO_SERVER_API_KEYS")]
    pub api_keys: Option<PathBuf>,

    /// JSON file with an array of videos to import into the catalog at start (added or
    /// replaced by videoId). A fresh store is seeded with video 12345 either way.
    #[arg(long, env = "VIDEO_SERVER_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Write views to the store in batches of this many. While a backlog is queued, a batch
    /// grows up to 16 times this, so that a slow store catches up (fewer commits).
    #[arg(long, env = "VIDEO_SERVER_BATCH_SIZE", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,

    /// Write a batch once its oldest view has waited this many milliseconds.
    #[arg(long, env = "VIDEO_SERVER_FLUSH_INTERVAL_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub flush_interval_ms: u64,

    /// Views that may wait for the writer; past this, new views are dropped (and counted in
    /// /metrics) rather than slowing responses.
    #[arg(long, env = "VIDEO_SERVER_VIEW_QUEUE", default_value_t = 262_144,
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

    /// Memory, in bytes, that request buffers of all connections together may hold; a
    /// request that needs more gets 503 with Retry-After. Buffers grow only as bytes
    /// arrive. Default: an eighth of the machine's memory.
    #[arg(long, env = "VIDEO_SERVER_MAX_BUFFERED_BYTES",
          value_parser = clap::value_parser!(u64).range(65_536..))]
    pub max_buffered_bytes: Option<u64>,

    /// After an error response (a 413 for an oversized upload, say), keep reading and
    /// discarding what the client still sends for up to this many milliseconds, so that a
    /// client that uploads before it reads still gets the status (nginx's lingering close).
    #[arg(long, env = "VIDEO_SERVER_LINGER_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub linger_ms: u64,

    /// The most bytes discarded that way, per connection.
    #[arg(long, env = "VIDEO_SERVER_LINGER_BYTES", default_value_t = 64 << 20)]
    pub linger_bytes: u64,

    /// The most connections open at once. At the cap, the connection idle the longest is
    /// closed to make room (a newcomer is refused with 503 only when none is idle).
    /// Default: the descriptor limit (raised at start to the hard limit) less a tenth and
    /// 64, kept for the store and the log.
    #[arg(long, env = "VIDEO_SERVER_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Close a keep-alive connection after this many milliseconds without a request.
    #[arg(long, env = "VIDEO_SERVER_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// A keep-alive connection with no request for this many milliseconds gives up its
    /// coroutine and buffers and waits in the idle keeper (one epoll set) for the rest of
    /// its idle time, holding only its socket: a few hundred bytes per idle viewer instead
    /// of a stack and buffers. Its next request costs one wake-up more. 0: never.
    #[arg(long, env = "VIDEO_SERVER_PARK_IDLE_MS", default_value_t = 1_000)]
    pub park_idle_ms: u64,

    /// Stack of each connection coroutine, and of each worker's hot stack (where requests
    /// are answered), in bytes (rounded down to whole machine words). Only the pages a
    /// request touches become resident. The default is at least 5.8 times what the deepest
    /// request path of the release build takes on any one stack, with the hot stack or
    /// without it (11.1 KiB in place; tests/stack_depth.rs).
    /// A size that is an odd number of words makes the runtime print each coroutine's peak
    /// stack use when it ends, and each use of a hot stack: a diagnostic.
    #[arg(long, env = "VIDEO_SERVER_STACK_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u64).range(16 * 1024..=8 * 1024 * 1024))]
    pub stack_bytes: u64,

    /// Time a client has to send a whole request (headers and body) once its first byte
    /// arrived; a slower client gets 408. Protects against slow-header attacks.
    #[arg(long, alias = "header-timeout-ms", env = "VIDEO_SERVER_REQUEST_TIMEOUT_MS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,

    /// On SIGTERM or SIGINT, the whole stop takes at most this long: open requests get up
    /// to half of it, writing the views they recorded the rest. Views that cannot be
    /// written by then are logged with their count, and the exit status is 1.
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

    /// Web origins whose pages may read our responses (CORS), comma separated, e.g.
    /// "https://app.example.com,https://admin.example.com". Listed origins are answered
    /// with their own Access-Control-Allow-Origin and every response carries Vary: Origin;
    /// other origins get none. Default "*": any origin, exactly the old service's headers.
    #[arg(long, env = "VIDEO_SERVER_CORS_ORIGINS", default_value = "*",
          value_parser = CorsOrigins::parse)]
    pub cors_origins: CorsOrigins,

    /// Requests per second each client may make on each route, with an optional burst:
    /// "20" or "20/100". A client over it gets 429 with Retry-After (health and metrics
    /// are never limited). The client is the peer, or X-Forwarded-For from a trusted proxy.
    /// Off by default (the old service had no limit); the production setting.
    #[arg(long, env = "VIDEO_SERVER_RATE_LIMIT", value_parser = RateLimit::parse)]
    pub rate_limit: Option<RateLimit>,

    /// Plays of one video by one client within this many seconds count as one view.
    /// Default 0: every play counts, as the old service did.
    #[arg(long, env = "VIDEO_SERVER_VIEW_DEDUP_SECONDS", default_value_t = 0)]
    pub view_dedup_seconds: u32,

    /// What a stored view keeps of the client's address. "hash" (default): a keyed hash
    /// under a random salt of the UTC day, shared by every server of the store and deleted
    /// two days later, so it can be neither reversed nor linked across days; unique
    /// viewers per day still work. "truncate": the network only (IPv4 /24, IPv6 /48).
    /// "full": the address as it is.
    #[arg(long, env = "VIDEO_SERVER_CLIENT_IP", value_enum, default_value_t = ClientIpMode::Hash)]
    pub client_ip: ClientIpMode,

    /// Where views are written: "embedded" (SQLite under --data-dir) or "scylla" (a ScyllaDB
    /// cluster, with a local outbox under --data-dir while the cluster is unreachable).
    #[arg(long, global = true, env = "VIDEO_SERVER_STORE", value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,

    /// ScyllaDB nodes, host:port, comma separated. Falls back to $SCYLLA_URI, then
    /// 127.0.0.1:9042.
    #[arg(long, global = true, env = "SCYLLA_NODES", value_delimiter = ',')]
    pub scylla_nodes: Vec<String>,

    /// ScyllaDB keyspace (created if missing when the server creates the schema).
    #[arg(long, global = true, env = "VIDEO_SERVER_SCYLLA_KEYSPACE", default_value = "video_server",
          value_parser = parse_keyspace)]
    pub scylla_keyspace: String,

    /// Replication of a keyspace the server creates: "simple:N" (SimpleStrategy) or
    /// "network:dc1=3,dc2=3" (NetworkTopologyStrategy, for production). Required to create
    /// the keyspace, except when every node is a loopback address (development: simple:1).
    #[arg(long, global = true, env = "VIDEO_SERVER_SCYLLA_REPLICATION",
          value_parser = Replication::parse)]
    pub scylla_replication: Option<Replication>,

    /// Create the keyspace and tables at start (IF NOT EXISTS), and apply
    /// --scylla-view-ttl-days: "--scylla-create-schema" or "=true" to create, "=false" not
    /// to. Default: create only when every node is a loopback address (a developer's
    /// node). In production the schema is created once, not by every server at start:
    /// run scripts/schema.cql (its replication edited), or start one server with this flag
    /// and --scylla-replication. A server that does not create it logs what is missing.
    #[arg(long, global = true, env = "VIDEO_SERVER_SCYLLA_CREATE_SCHEMA", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub scylla_create_schema: Option<bool>,

    /// The datacenter this server runs in (Cassandra's default is "datacenter1"): requests
    /// go to its nodes only, token-aware, with no failover to another datacenter (views
    /// wait in the outbox while it is down), and local_quorum and local_one count its
    /// replicas. Without it every node is asked, and LOCAL_* levels are evaluated in the
    /// datacenter of whichever node coordinates a request. A name the cluster does not
    /// have fails the connection, naming the datacenters it has.
    #[arg(long, global = true, env = "VIDEO_SERVER_SCYLLA_LOCAL_DC", value_name = "NAME",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub scylla_local_dc: Option<String>,

    /// PEM file of the certificate authorities that sign the nodes' certificates: with it
    /// every connection to the cluster is TLS, and each node's certificate is verified
    /// against these authorities only (not the system's) and against the node's IP
    /// address, so it needs that address as an IP subject alternative name.
    #[arg(
        long,
        global = true,
        env = "VIDEO_SERVER_SCYLLA_TLS_CA",
        value_name = "FILE"
    )]
    pub scylla_tls_ca: Option<PathBuf>,

    /// PEM certificate chain this server presents to the nodes, for clusters that require
    /// client certificates. Needs --scylla-tls-key and --scylla-tls-ca.
    #[arg(long, global = true, env = "VIDEO_SERVER_SCYLLA_TLS_CERT", value_name = "FILE",
          requires_all = ["scylla_tls_key", "scylla_tls_ca"])]
    pub scylla_tls_cert: Option<PathBuf>,

    /// PEM private key of --scylla-tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        global = true,
        env = "VIDEO_SERVER_SCYLLA_TLS_KEY",
        value_name = "FILE",
        requires = "scylla_tls_cert"
    )]
    pub scylla_tls_key: Option<PathBuf>,

    /// Consistency of view writes: any, one, two, three, quorum, all, local_quorum,
    /// each_quorum, local_one.
    #[arg(long, global = true, env = "VIDEO_SERVER_SCYLLA_WRITE_CONSISTENCY", default_value = "local_quorum",
          value_parser = parse_consistency)]
    pub scylla_write_consistency: Consistency,

    /// Consistency of catalog and view-count reads (same levels as writes, except any).
    #[arg(long, global = true, env = "VIDEO_SERVER_SCYLLA_READ_CONSISTENCY", default_value = "local_quorum",
          value_parser = parse_consistency)]
    pub scylla_read_consistency: Consistency,

    /// Client-side timeout of one ScyllaDB request, in milliseconds.
    #[arg(long, global = true, env = "VIDEO_SERVER_SCYLLA_REQUEST_TIMEOUT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub scylla_request_timeout_ms: u64,

    /// ScyllaDB user name (password authentication).
    #[arg(long, global = true, env = "SCYLLA_USER", requires = "scylla_password")]
    pub scylla_user: Option<String>,

    /// ScyllaDB password (prefer the environment variable to the flag).
    #[arg(
        long,
        global = true,
        env = "SCYLLA_PASSWORD",
        hide_env_values = true,
        requires = "scylla_user"
    )]
    pub scylla_password: Option<String>,

    /// Days after which raw view rows (`view_log`) expire (0: never): the table's default
    /// TTL, set when the server creates or checks the schema. Counts are kept apart and
    /// never expire. The ScyllaDB counterpart of --view-retention-days: the cluster expires
    /// each row by itself, from the TTL the row was written with.
    #[arg(long, env = "VIDEO_SERVER_SCYLLA_VIEW_TTL_DAYS", default_value_t = 0)]
    pub scylla_view_ttl_days: u32,

    /// With the embedded store: days a raw view row (the `views` table) is kept; older rows
    /// are deleted by the batch writer between batches, in steps of about 5 ms. 0: kept
    /// forever. Counts, per day and unique viewers included, are kept apart and stay as
    /// they were. The embedded counterpart of --scylla-view-ttl-days (ignored, with a
    /// warning, under --store scylla, where that one applies).
    #[arg(long, env = "VIDEO_SERVER_VIEW_RETENTION_DAYS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub view_retention_days: u32,

    /// --view-retention-days in seconds, for tests and benchmarks that need a window they
    /// can wait out.
    #[arg(long, env = "VIDEO_SERVER_VIEW_RETENTION_SECONDS", hide = true,
          conflicts_with = "view_retention_days",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub view_retention_seconds: Option<u64>,

    /// With --store scylla: the most the local outbox may hold, in bytes (its file's pages
    /// in use). While the cluster fails and the outbox is full, new batches are dropped and
    /// counted (views_outbox_full_total), never silently. 0: no limit.
    #[arg(long, env = "VIDEO_SERVER_OUTBOX_MAX_BYTES", default_value_t = 1 << 30)]
    pub outbox_max_bytes: u64,

    /// Most ScyllaDB writes in flight at once while writing a batch.
    #[arg(long, env = "VIDEO_SERVER_SCYLLA_MAX_IN_FLIGHT", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub scylla_max_in_flight: u32,

    /// With --store scylla: batches written to ScyllaDB at once, each as up to
    /// --scylla-max-in-flight requests; the batch writer forms the next while they are
    /// out. A batch that fails goes to the outbox alone; counts stay exact in any order.
    #[arg(long, env = "VIDEO_SERVER_SCYLLA_FLUSHES_IN_FLIGHT",
          default_value_t = DEFAULT_FLUSHES_IN_FLIGHT as u32,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub scylla_flushes_in_flight: u32,

    /// With --store scylla: the most views replayed from the outbox per second (by a
    /// worker of its own, oldest first), so that a cluster that has just come back serves
    /// live writes first. 0: no limit.
    #[arg(long, env = "VIDEO_SERVER_OUTBOX_REPLAY_RATE",
          default_value_t = DEFAULT_REPLAY_VIEWS_PER_SECOND)]
    pub outbox_replay_rate: u32,

    /// With --store scylla: how often the catalog is re-read from ScyllaDB, in milliseconds.
    #[arg(long, env = "VIDEO_SERVER_CATALOG_REFRESH_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub catalog_refresh_ms: u64,

    /// With --store scylla: how stale a view count served by GET /video/:id/views may be, in
    /// milliseconds (counts are read from ScyllaDB in the background, never by the request).
    #[arg(long, env = "VIDEO_SERVER_VIEWS_CACHE_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub views_cache_ms: u64,

    /// With --store scylla: how often every video's counts are re-read so that GET
    /// /videos/top can rank the day's videos from memory, in milliseconds (one read per
    /// video per interval); 0 turns the ranking off (GET /videos/top then answers 501).
    #[arg(long, env = "VIDEO_SERVER_TOP_REFRESH_MS", default_value_t = 60_000)]
    pub top_refresh_ms: u64,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such as
    /// "video_server=debug".
    #[arg(long, global = true, env = "VIDEO_SERVER_LOG", default_value = "info")]
    pub log_level: String,
}

/// `video-server outbox ...`.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum OutboxAction {
    /// List the quarantined flushes: id, views, failed attempts, when, and the error.
    List,
    /// Put a quarantined flush back in line for replay (once the cause is fixed).
    Retry {
        /// The flush id, as `list` shows it.
        id: uuid::Uuid,
    },
    /// Delete a quarantined flush for good: its views are lost (the count is printed).
    Drop {
        /// The flush id, as `list` shows it.
        id: uuid::Uuid,
    },
}

/// What to do instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Look at and act on the flushes of views the ScyllaDB cluster refused for good, kept
    /// aside in the outbox under --data-dir (safe while the server runs).
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// Load a JSON array of videos into the configured store's catalog (added or replaced by
    /// videoId), then exit. Takes the same store options as the server.
    Import {
        /// The JSON file: an array of video objects as POST /video/token accepts them.
        file: PathBuf,
    },
    /// Print the signed URL of one source for one CDN of --cdns, as POST /video/token
    /// would sign it, then exit. For scripts and for debugging a CDN's verification.
    Sign {
        /// The CDN to sign for: its "name" in the --cdns file.
        #[arg(long)]
        cdn: String,
        /// The source, as a video lists it: "/films/a.mp4" or "/hls/a/master.m3u8".
        path: String,
        /// The client address the token is bound to (needed for a CDN with "bind_ip").
        #[arg(long)]
        ip: Option<IpAddr>,
        /// The source's media type; an HLS or DASH manifest gets a token for its whole
        /// folder. Default: a manifest type for .m3u8 and .mpd paths, else video/mp4.
        #[arg(long = "type", value_name = "TYPE")]
        media_type: Option<String>,
        /// Sign as if the clock read this Unix time, in seconds (default: now).
        #[arg(long, value_name = "UNIX_SECONDS")]
        at: Option<u64>,
    },
}

/// Which store receives views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// SQLite under --data-dir: nothing to install.
    Embedded,
    /// A ScyllaDB cluster.
    Scylla,
}

fn parse_keyspace(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphabetic());
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not a keyspace name (letters, digits and _, starting with a letter)"
        ))
    }
}

fn parse_consistency(text: &str) -> Result<Consistency, String> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "any" => Consistency::Any,
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        other => return Err(format!("{other:?} is not a consistency level")),
    })
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
            park_after: (self.park_idle_ms > 0).then(|| Duration::from_millis(self.park_idle_ms)),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            workers: self.workers.map_or(defaults.workers, usize::from),
            pin_workers: !self.no_pin,
            hot_stack: !self.no_hot_stack,
            stack_bytes: usize::try_from(self.stack_bytes).unwrap_or(defaults.stack_bytes),
            coroutine_pool: defaults.coroutine_pool,
            max_buffered_bytes: self
                .max_buffered_bytes
                .map_or(defaults.max_buffered_bytes, |bytes| {
                    usize::try_from(bytes).unwrap_or(usize::MAX)
                }),
            linger: Duration::from_millis(self.linger_ms),
            linger_bytes: usize::try_from(self.linger_bytes).unwrap_or(usize::MAX),
            max_connections: self.max_connections.map(|count| count as usize),
        }
    }

    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_views: self.batch_size as usize,
            max_age: Duration::from_millis(self.flush_interval_ms),
        }
    }

    /// The ScyllaDB settings; nodes from --scylla-nodes, else $SCYLLA_URI, else localhost.
    /// Refused before anything is sent: a keyspace to create with no replication given on
    /// nodes that are not loopback, or TLS files that cannot be used.
    pub fn scylla(&self) -> Result<ScyllaConfig, ScyllaSetupError> {
        let nodes = if self.scylla_nodes.is_empty() {
            let uri = std::env::var("SCYLLA_URI")
                .ok()
                .filter(|uri| !uri.trim().is_empty())
                .unwrap_or_else(|| "127.0.0.1:9042".into());
            uri.split(',').map(|node| node.trim().to_owned()).collect()
        } else {
            self.scylla_nodes.clone()
        };
        let created = schema_creation(
            &nodes,
            self.scylla_create_schema,
            self.scylla_replication.clone(),
        )?;
        if created.is_none() && self.scylla_view_ttl_days > 0 {
            tracing::warn!(
                "--scylla-view-ttl-days is applied only by a server that creates the schema"
            );
        }
        if self.view_retention().is_some() {
            tracing::warn!(
                "--view-retention-days applies to the embedded store; ScyllaDB's raw views expire by --scylla-view-ttl-days"
            );
        }
        let tls = match &self.scylla_tls_ca {
            Some(ca) => Some(
                TlsFiles {
                    ca: ca.clone(),
                    client: self
                        .scylla_tls_cert
                        .clone()
                        .zip(self.scylla_tls_key.clone()),
                }
                .client_config()?,
            ),
            None => None,
        };
        Ok(ScyllaConfig {
            nodes,
            keyspace: self.scylla_keyspace.clone(),
            create_schema: created.is_some(),
            replication: created.unwrap_or(Replication::Simple { factor: 1 }),
            write_consistency: self.scylla_write_consistency,
            read_consistency: self.scylla_read_consistency,
            request_timeout: Duration::from_millis(self.scylla_request_timeout_ms),
            connect_timeout: Duration::from_secs(3),
            credentials: self.scylla_user.clone().zip(self.scylla_password.clone()),
            view_ttl: (self.scylla_view_ttl_days > 0)
                .then(|| Duration::from_secs(u64::from(self.scylla_view_ttl_days) * 86_400)),
            max_in_flight: self.scylla_max_in_flight as usize,
            local_dc: self.scylla_local_dc.clone(),
            tls,
        })
    }

    /// How long the embedded store keeps raw view rows; `None`: for ever.
    pub fn view_retention(&self) -> Option<Duration> {
        self.view_retention_seconds
            .or((self.view_retention_days > 0)
                .then(|| u64::from(self.view_retention_days) * 86_400))
            .map(Duration::from_secs)
    }

    /// How the ScyllaDB store retries, spills, replays and overlaps its writes.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            outbox_max_bytes: (self.outbox_max_bytes > 0).then_some(self.outbox_max_bytes),
            replay_views_per_second: std::num::NonZeroU32::new(self.outbox_replay_rate),
            flushes_in_flight: self.scylla_flushes_in_flight as usize,
            ..RetryPolicy::default()
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
        assert_eq!(config.view_retention(), None, "raw views are kept for ever");
    }

    #[test]
    fn view_retention_is_days_or_for_tests_seconds_never_both() {
        let parse = |args: &[&str]| Config::try_parse_from([&["video-server"], args].concat());
        let days = parse(&["--view-retention-days", "30"]).expect("days");
        assert_eq!(
            days.view_retention(),
            Some(Duration::from_secs(30 * 86_400))
        );
        let off = parse(&["--view-retention-days", "0"]).expect("0 is off");
        assert_eq!(off.view_retention(), None);
        let seconds = parse(&["--view-retention-seconds", "5"]).expect("seconds");
        assert_eq!(seconds.view_retention(), Some(Duration::from_secs(5)));
        assert!(parse(&[
            "--view-retention-days",
            "1",
            "--view-retention-seconds",
            "5"
        ])
        .is_err());
        assert!(parse(&["--view-retention-days", "-1"]).is_err());
    }

    #[test]
    fn the_retry_policy_takes_the_outbox_and_overlap_flags() {
        let defaults = Config::try_parse_from(["video-server"]).expect("parses");
        let policy = defaults.retry_policy();
        assert_eq!(policy.flushes_in_flight, DEFAULT_FLUSHES_IN_FLIGHT);
        assert_eq!(
            policy.replay_views_per_second.map(|rate| rate.get()),
            Some(DEFAULT_REPLAY_VIEWS_PER_SECOND)
        );
        assert_eq!(policy.outbox_max_bytes, Some(1 << 30));
        let set = Config::try_parse_from([
            "video-server",
            "--scylla-flushes-in-flight",
            "1",
            "--outbox-replay-rate",
            "0",
            "--outbox-max-bytes",
            "0",
        ])
        .expect("parses")
        .retry_policy();
        assert_eq!(
            (
                set.flushes_in_flight,
                set.replay_views_per_second,
                set.outbox_max_bytes
            ),
            (1, None, None),
            "0: no limit"
        );
        assert!(
            Config::try_parse_from(["video-server", "--scylla-flushes-in-flight", "0"]).is_err()
        );
    }

    #[test]
    fn scylla_operator_settings_parse_and_are_checked() {
        let parse = |args: &[&str]| {
            let mut full = vec!["video-server", "--store", "scylla"];
            full.extend_from_slice(args);
            Config::try_parse_from(full)
        };
        let dev = parse(&["--scylla-nodes", "127.0.0.1:9042"]).expect("parses");
        let dev = dev.scylla().expect("development defaults");
        assert!(dev.create_schema && dev.tls.is_none() && dev.local_dc.is_none());
        assert_eq!(dev.replication, Replication::Simple { factor: 1 });

        let remote = ["--scylla-nodes", "10.0.0.5:9042,10.0.0.6:9042"];
        let production = parse(&remote).expect("parses").scylla().expect("no schema");
        assert!(!production.create_schema);
        let create = parse(&[&remote[..], &["--scylla-create-schema"]].concat()).expect("parses");
        let refused = create
            .scylla()
            .expect_err("replication required")
            .to_string();
        assert!(refused.contains("--scylla-replication"), "{refused}");
        let explicit = parse(
            &[
                &remote[..],
                &[
                    "--scylla-create-schema=true",
                    "--scylla-replication",
                    "network:dc1=3",
                ],
            ]
            .concat(),
        )
        .expect("parses")
        .scylla()
        .expect("explicit replication");
        assert!(explicit.create_schema);
        let off = parse(&["--scylla-create-schema=false"]).expect("parses");
        assert_eq!(off.scylla_create_schema, Some(false));
        assert!(!off.scylla().expect("off").create_schema);
        assert!(parse(&["--scylla-create-schema=maybe"]).is_err());

        let local = parse(&["--scylla-local-dc", "dc1"]).expect("parses");
        assert_eq!(local.scylla().expect("dc").local_dc.as_deref(), Some("dc1"));
        assert!(parse(&["--scylla-local-dc", ""]).is_err());

        // A client certificate needs its key and the CA; a key needs its certificate.
        for incomplete in [
            &["--scylla-tls-cert", "c.pem", "--scylla-tls-ca", "ca.pem"][..],
            &["--scylla-tls-cert", "c.pem", "--scylla-tls-key", "k.pem"][..],
            &["--scylla-tls-key", "k.pem", "--scylla-tls-ca", "ca.pem"][..],
        ] {
            let error = parse(incomplete).expect_err("incomplete client certificate");
            assert!(error.to_string().contains("--scylla-tls-"), "{error}");
        }
        let missing_ca = parse(&["--scylla-tls-ca", "/definitely/missing-ca.pem"])
            .expect("parses")
            .scylla()
            .expect_err("unreadable CA")
            .to_string();
        assert!(
            missing_ca.starts_with("--scylla-tls-ca /definitely/missing-ca.pem"),
            "{missing_ca}"
        );
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
