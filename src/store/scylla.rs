//! ScyllaDB: the production view store, through the official `scylla` driver.
//!
//! The driver is tokio-only, and our HTTP workers are `may` coroutines, so the driver
//! lives on a tokio runtime of its own (one worker thread, named `scylla`). The batch
//! writer's thread hands it one [`Flush`] at a time with `block_on`: the writer thread waits,
//! the driver's tasks run on the runtime's own thread, and no HTTP worker is involved.
//!
//! Writes: statements are prepared once per session, marked idempotent, with the configured
//! consistency and timeout; token-aware and shard-aware routing stay on (the driver's
//! defaults). A flush is written as bounded concurrent executes (at most
//! `max_in_flight` at a time), view rows first, then one count rollup per video keyed by
//! the flush id, so a count never runs ahead of its rows and a retried flush overwrites
//! rather than adds (counters could not be retried safely).
//!
//! The session is connected lazily and re-established after a failed connect: the server
//! starts and serves with the cluster unreachable, while the [`ResilientStore`] around
//! this store keeps every view in the outbox.
//!
//! [`ResilientStore`]: super::ResilientStore

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, TryStreamExt};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use scylla::value::{CqlDate, CqlTimestamp, CqlTimeuuid};

use super::outbox::{Flush, PendingView};
use super::resilient::RemoteViewStore;
use super::StoreError;

/// View rows of one video and day are spread over this many partitions.
pub const VIEW_BUCKETS: i32 = 8;

/// How to reach and write to the cluster.
#[derive(Debug, Clone)]
pub struct ScyllaConfig {
    /// `host:port` of one or more nodes.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// The keyspace's replication (used when the server creates the keyspace).
    pub replication: Replication,
    pub write_consistency: Consistency,
    /// Consistency of catalog and view-count reads.
    pub read_consistency: Consistency,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub credentials: Option<(String, String)>,
    /// TTL of view rows, if they should expire.
    pub view_ttl: Option<Duration>,
    /// Concurrent executes per flush.
    pub max_in_flight: usize,
    /// Create the keyspace and tables at connect (`IF NOT EXISTS`).
    pub create_schema: bool,
}

/// Keyspace replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    Simple {
        factor: u32,
    },
    /// Per datacenter replication factors.
    NetworkTopology(Vec<(String, u32)>),
}

impl Replication {
    /// Parses `simple:3` or `network:dc1=3,dc2=2`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: expected simple:N or network:dc=N,..."))?;
        let factor = |value: &str| {
            value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{value:?} is not a replication factor"))
        };
        match kind.trim() {
            "simple" => Ok(Replication::Simple {
                factor: factor(rest)?,
            }),
            "network" => rest
                .split(',')
                .map(|pair| {
                    let (dc, n) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("{pair:?}: expected datacenter=N"))?;
                    let dc = dc.trim();
                    if dc.is_empty()
                        || !dc
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
                    {
                        return Err(format!("{dc:?} is not a datacenter name"));
                    }
                    Ok((dc.to_owned(), factor(n)?))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Replication::NetworkTopology),
            other => Err(format!("{other:?}: replication is simple or network")),
        }
    }

    fn cql(&self) -> String {
        match self {
            Replication::Simple { factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Replication::NetworkTopology(dcs) => {
                let pairs: Vec<String> = dcs.iter().map(|(dc, n)| format!("'{dc}': {n}")).collect();
                format!(
                    "{{'class': 'NetworkTopologyStrategy', {}}}",
                    pairs.join(", ")
                )
            }
        }
    }
}

/// The schema, as statements: what `scripts/schema.cql` holds for the defaults.
pub fn schema_statements(keyspace: &str, replication: &Replication) -> Vec<String> {
    vec![
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
            replication.cql()
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.videos (\n    video_id text PRIMARY KEY,\n    document text\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.views (\n    video_id text,\n    day date,\n    bucket int,\n    id timeuuid,\n    client_ip inet,\n    viewed_at timestamp,\n    PRIMARY KEY ((video_id, day, bucket), id)\n) WITH CLUSTERING ORDER BY (id DESC)\n  AND compaction = {{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.view_rollups (\n    video_id text,\n    flush_id timeuuid,\n    views bigint,\n    PRIMARY KEY (video_id, flush_id)\n)"
        ),
    ]
}

/// The schema as a CQL script (`scripts/schema.cql`).
pub fn schema_script(keyspace: &str, replication: &Replication) -> String {
    let mut script = String::from(
        "-- video-server's ScyllaDB schema. The server creates it itself at start\n\
         -- (IF NOT EXISTS); this file is for operators who create it by hand:\n\
         --   cqlsh -f scripts/schema.cql\n\
         -- Regenerate with: cargo test --lib schema_script_is_current -- --ignored\n\n",
    );
    for statement in schema_statements(keyspace, replication) {
        script.push_str(&statement);
        script.push_str(";\n\n");
    }
    script
}

/// Opens a session and, if configured, creates the schema.
async fn connect_session(config: &ScyllaConfig) -> Result<Session, StoreError> {
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(config.connect_timeout)
        .fetch_schema_metadata(false)
        .fetch_full_schema_metadata(false);
    if let Some((user, password)) = &config.credentials {
        builder = builder.user(user, password);
    }
    // A node that accepts the connection but never answers could hold build() forever.
    let session = tokio::time::timeout(config.connect_timeout * 2, builder.build())
        .await
        .map_err(|_| "timed out".to_owned())
        .map_err(remote("connect", true))?
        .map_err(|error| error.to_string())
        .map_err(remote("connect", true))?;
    if config.create_schema {
        for statement in schema_statements(&config.keyspace, &config.replication) {
            session
                .query_unpaged(statement, ())
                .await
                .map_err(|error| execution("create schema", &error))?;
        }
    }
    Ok(session)
}

/// Prepares a write: idempotent (safe to retry), with the configured consistency and
/// client-side timeout.
async fn prepare_write(
    session: &Session,
    config: &ScyllaConfig,
    cql: String,
) -> Result<PreparedStatement, StoreError> {
    let mut statement = session
        .prepare(cql)
        .await
        .map_err(|error| error.to_string())
        .map_err(remote("prepare", true))?;
    statement.set_is_idempotent(true);
    statement.set_consistency(config.write_consistency);
    statement.set_request_timeout(Some(config.request_timeout));
    Ok(statement)
}

fn execution(context: &'static str, error: &ExecutionError) -> StoreError {
    StoreError::Remote {
        context,
        message: error.to_string(),
        retriable: is_retriable(error),
    }
}

/// The statements the writer prepares.
pub fn insert_view_cql(keyspace: &str, ttl: Option<Duration>) -> String {
    let ttl = ttl.map_or(String::new(), |ttl| {
        format!(" USING TTL {}", ttl.as_secs().max(1))
    });
    format!(
        "INSERT INTO {keyspace}.views (video_id, day, bucket, id, client_ip, viewed_at) VALUES (?, ?, ?, ?, ?, ?){ttl}"
    )
}

pub fn insert_rollup_cql(keyspace: &str) -> String {
    format!("INSERT INTO {keyspace}.view_rollups (video_id, flush_id, views) VALUES (?, ?, ?)")
}

struct Connected {
    session: Arc<Session>,
    insert_view: PreparedStatement,
    insert_rollup: PreparedStatement,
}

/// The state of the writer's session.
enum Link {
    /// Not connected and not trying (after a failed attempt).
    Idle,
    /// A connection attempt running on the driver's runtime; the writer never waits for it.
    Connecting(tokio::task::JoinHandle<Result<Connected, StoreError>>),
    Connected(Box<Connected>),
}

/// How long a write waits for a connection attempt already under way: enough for a healthy
/// cluster to answer, short enough that an unreachable one never stalls the batch writer.
const CONNECT_GRACE: Duration = Duration::from_millis(200);

/// The ScyllaDB view store.
pub struct ScyllaViewStore {
    config: ScyllaConfig,
    runtime: tokio::runtime::Runtime,
    link: Link,
}

fn remote(context: &'static str, retriable: bool) -> impl FnOnce(String) -> StoreError {
    move |message| StoreError::Remote {
        context,
        message,
        retriable,
    }
}

/// Whether a failed execute may succeed later: timeouts, overload, unavailable replicas and
/// broken connections may; a statement the cluster refuses (syntax, schema, auth) may not.
pub fn is_retriable(error: &ExecutionError) -> bool {
    match error {
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::DbError(db_error, _) => matches!(
                db_error,
                DbError::WriteTimeout { .. }
                    | DbError::ReadTimeout { .. }
                    | DbError::Overloaded
                    | DbError::Unavailable { .. }
                    | DbError::IsBootstrapping
                    | DbError::ServerError
                    | DbError::RateLimitReached { .. }
                    | DbError::TruncateError
            ),
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            _ => false,
        },
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan => true,
        _ => false,
    }
}

impl ScyllaViewStore {
    /// Builds the store and its runtime; does not connect yet.
    pub fn new(config: ScyllaConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("scylla")
            .enable_all()
            .build()?;
        let mut store = ScyllaViewStore {
            config,
            runtime,
            link: Link::Idle,
        };
        // Start connecting now, so the first batch usually finds a session ready.
        store.start_connecting();
        Ok(store)
    }

    fn start_connecting(&mut self) {
        let config = self.config.clone();
        self.link = Link::Connecting(
            self.runtime
                .spawn(async move { Self::connect(&config).await }),
        );
    }

    /// Waits up to `timeout` for a session (for tools and tests; the writer never waits).
    pub fn wait_until_connected(&mut self, timeout: Duration) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.ensure_connected() {
                Ok(()) => return Ok(()),
                Err(error) if std::time::Instant::now() >= deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Makes sure there is a session: starts or checks on a connection attempt, and answers
    /// `Unreachable` after at most [`CONNECT_GRACE`] rather than waiting for it.
    fn ensure_connected(&mut self) -> Result<(), StoreError> {
        if matches!(self.link, Link::Idle) {
            self.start_connecting();
        }
        if let Link::Connecting(handle) = &mut self.link {
            let attempt = self
                .runtime
                .block_on(async { tokio::time::timeout(CONNECT_GRACE, handle).await });
            match attempt {
                Err(_still_connecting) => {
                    return Err(StoreError::Unreachable {
                        message: "still connecting to ScyllaDB".into(),
                    })
                }
                Ok(Ok(Ok(connected))) => {
                    let connected = Box::new(connected);
                    tracing::info!(nodes = ?self.config.nodes, keyspace = %self.config.keyspace, "connected to ScyllaDB");
                    self.link = Link::Connected(connected);
                }
                Ok(Ok(Err(error))) => {
                    self.link = Link::Idle;
                    return Err(StoreError::Unreachable {
                        message: error.to_string(),
                    });
                }
                Ok(Err(join_error)) => {
                    self.link = Link::Idle;
                    return Err(StoreError::Unreachable {
                        message: format!("connection task failed: {join_error}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Connects (if not connected), creating the schema and preparing the statements.
    async fn connect(config: &ScyllaConfig) -> Result<Connected, StoreError> {
        let session = connect_session(config).await?;
        let insert_view = prepare_write(
            &session,
            config,
            insert_view_cql(&config.keyspace, config.view_ttl),
        )
        .await?;
        let insert_rollup =
            prepare_write(&session, config, insert_rollup_cql(&config.keyspace)).await?;
        Ok(Connected {
            session: Arc::new(session),
            insert_view,
            insert_rollup,
        })
    }

    async fn write(
        connected: &Connected,
        flush: &Flush,
        max_in_flight: usize,
    ) -> Result<(), ExecutionError> {
        let session = &connected.session;
        stream::iter(flush.views.iter().map(Ok))
            .try_for_each_concurrent(max_in_flight, |view: &PendingView| async move {
                session
                    .execute_unpaged(&connected.insert_view, view_row(view))
                    .await
                    .map(|_| ())
            })
            .await?;
        let mut per_video: HashMap<&str, i64> = HashMap::new();
        for view in &flush.views {
            *per_video.entry(view.video_id.as_str()).or_default() += 1;
        }
        let flush_id = CqlTimeuuid::from(flush.id);
        stream::iter(per_video.into_iter().map(Ok))
            .try_for_each_concurrent(max_in_flight, |(video_id, views)| async move {
                session
                    .execute_unpaged(&connected.insert_rollup, (video_id, flush_id, views))
                    .await
                    .map(|_| ())
            })
            .await
    }
}

/// The bind values of one view row.
fn view_row(
    view: &PendingView,
) -> (
    &str,
    CqlDate,
    i32,
    CqlTimeuuid,
    std::net::IpAddr,
    CqlTimestamp,
) {
    const DAY_MS: i64 = 86_400_000;
    let days = view.timestamp_ms.div_euclid(DAY_MS);
    // CQL dates count days with 2^31 as the Unix epoch.
    let day = CqlDate((1u32 << 31).wrapping_add_signed(days as i32));
    let bytes = view.id.as_bytes();
    // The clock sequence advances with every id: an even spread over the buckets.
    let sequence = u16::from_be_bytes([bytes[8] & 0x3f, bytes[9]]);
    let bucket = i32::from(sequence) % VIEW_BUCKETS;
    (
        view.video_id.as_str(),
        day,
        bucket,
        CqlTimeuuid::from(view.id),
        view.client_ip,
        CqlTimestamp(view.timestamp_ms),
    )
}

impl RemoteViewStore for ScyllaViewStore {
    fn write_flush(&mut self, flush: &Flush) -> Result<(), StoreError> {
        let max_in_flight = self.config.max_in_flight.max(1);
        self.ensure_connected()?;
        let Link::Connected(connected) = &self.link else {
            return Err(StoreError::Unreachable {
                message: "not connected to ScyllaDB".into(),
            });
        };
        let written = self
            .runtime
            .block_on(Self::write(connected, flush, max_in_flight));
        written.map_err(|error| StoreError::Remote {
            context: "write views",
            retriable: is_retriable(&error),
            message: error.to_string(),
        })
    }
}

/// Reads and writes the catalog, and reads view counts (summed rollups), on a runtime of
/// its own: used at start, by `video-server import`, and by the catalog refresher thread.
pub struct ScyllaCatalogStore {
    config: ScyllaConfig,
    runtime: tokio::runtime::Runtime,
    session: Option<Arc<Session>>,
}

impl ScyllaCatalogStore {
    pub fn new(config: ScyllaConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("scylla-catalog")
            .enable_all()
            .build()?;
        Ok(ScyllaCatalogStore {
            config,
            runtime,
            session: None,
        })
    }

    fn session(&mut self) -> Result<Arc<Session>, StoreError> {
        if let Some(session) = &self.session {
            return Ok(Arc::clone(session));
        }
        let session = Arc::new(self.runtime.block_on(connect_session(&self.config))?);
        self.session = Some(Arc::clone(&session));
        Ok(session)
    }

    fn statement(&self, cql: String, consistency: Consistency) -> scylla::statement::Statement {
        let mut statement = scylla::statement::Statement::new(cql);
        statement.set_consistency(consistency);
        statement.set_request_timeout(Some(self.config.request_timeout));
        statement.set_is_idempotent(true);
        statement
    }

    /// Every video document, by id.
    pub fn load_videos(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let session = self.session()?;
        let cql = format!(
            "SELECT video_id, document FROM {}.videos",
            self.config.keyspace
        );
        let statement = self.statement(cql, self.config.read_consistency);
        self.runtime.block_on(async {
            let pager = session
                .query_iter(statement, ())
                .await
                .map_err(|error| error.to_string())
                .map_err(remote("read catalog", true))?;
            let mut rows = pager
                .rows_stream::<(String, String)>()
                .map_err(|error| error.to_string())
                .map_err(remote("read catalog", false))?;
            let mut videos = Vec::new();
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(|error| error.to_string())
                .map_err(remote("read catalog", true))?
            {
                videos.push(row);
            }
            Ok(videos)
        })
    }

    /// Inserts or replaces videos by id.
    pub fn upsert_videos(
        &mut self,
        videos: &[crate::video::VideoPayload<'_>],
    ) -> Result<usize, StoreError> {
        let session = self.session()?;
        let cql = format!(
            "INSERT INTO {}.videos (video_id, document) VALUES (?, ?)",
            self.config.keyspace
        );
        let config = &self.config;
        self.runtime.block_on(async {
            let insert = prepare_write(&session, config, cql).await?;
            let mut document = Vec::with_capacity(512);
            for video in videos {
                document.clear();
                video.write_json(&mut document, None);
                let text = String::from_utf8_lossy(&document);
                session
                    .execute_unpaged(&insert, (video.video_id.as_ref(), text.as_ref()))
                    .await
                    .map_err(|error| execution("insert video", &error))?;
            }
            Ok(videos.len())
        })
    }

    /// Views of one video: the sum of its rollups.
    pub fn view_count(&mut self, video_id: &str) -> Result<u64, StoreError> {
        let session = self.session()?;
        let cql = format!(
            "SELECT SUM(views) FROM {}.view_rollups WHERE video_id = ?",
            self.config.keyspace
        );
        let statement = self.statement(cql, self.config.read_consistency);
        self.runtime.block_on(async {
            let result = session
                .query_unpaged(statement, (video_id,))
                .await
                .map_err(|error| execution("read view count", &error))?;
            let rows = result
                .into_rows_result()
                .map_err(|error| error.to_string())
                .map_err(remote("read view count", false))?;
            let (sum,) = rows
                .maybe_first_row::<(Option<i64>,)>()
                .map_err(|error| error.to_string())
                .map_err(remote("read view count", false))?
                .unwrap_or((None,));
            Ok(sum.and_then(|sum| u64::try_from(sum).ok()).unwrap_or(0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_parses_both_strategies() {
        assert_eq!(
            Replication::parse("simple:3"),
            Ok(Replication::Simple { factor: 3 })
        );
        assert_eq!(
            Replication::parse("network:dc1=3,dc2=2"),
            Ok(Replication::NetworkTopology(vec![
                ("dc1".into(), 3),
                ("dc2".into(), 2)
            ]))
        );
        for bad in [
            "simple:0",
            "simple",
            "network:dc1",
            "ring:3",
            "network:d'c=1",
        ] {
            assert!(Replication::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shipped_schema_script_matches_the_server_schema() {
        let shipped = include_str!("../../scripts/schema.cql");
        let generated = schema_script("video_server", &Replication::Simple { factor: 1 });
        assert_eq!(
            shipped, generated,
            "scripts/schema.cql is stale: run the ignored test schema_script_is_current"
        );
    }

    /// Rewrites scripts/schema.cql from the code: `cargo test --lib schema_script_is_current -- --ignored`.
    #[test]
    #[ignore = "writes scripts/schema.cql"]
    fn schema_script_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/schema.cql");
        let generated = schema_script("video_server", &Replication::Simple { factor: 1 });
        std::fs::write(path, generated).expect("write schema.cql");
    }

    #[test]
    fn view_rows_land_on_the_right_day_and_spread_over_buckets() {
        let ids = (0..64).map(|i| {
            let context = uuid::timestamp::context::ContextV1::new(i);
            uuid::Uuid::new_v1(
                uuid::Timestamp::from_unix(&context, 1_795_000_000, 0),
                &[1; 6],
            )
        });
        let mut buckets = std::collections::HashSet::new();
        for id in ids {
            let view = PendingView {
                id,
                video_id: "12345".into(),
                client_ip: "192.0.2.1".parse().expect("ip"),
                timestamp_ms: 86_400_000 * 3 + 5,
            };
            let (_, day, bucket, _, _, _) = view_row(&view);
            assert_eq!(day.0, (1u32 << 31) + 3);
            assert!((0..VIEW_BUCKETS).contains(&bucket));
            buckets.insert(bucket);
        }
        assert_eq!(buckets.len(), VIEW_BUCKETS as usize);
    }
}
