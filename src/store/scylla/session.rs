//! One connection to the cluster, shared: the driver's tokio runtime, the session, and how
//! the driver's errors become [`StoreError`]s.
//!
//! The driver is tokio-only, and our HTTP workers are `may` coroutines, so the driver lives
//! on a tokio runtime of its own (one worker thread, named `scylla`). The threads that use
//! the cluster (the batch writer, the catalog watcher, `video-server import`) call in with
//! `block_on`: the caller waits, the driver's tasks run on the runtime's thread, and no HTTP
//! worker is involved.
//!
//! A [`Cluster`] is cheap to clone and every clone shares one runtime and one session. The
//! session is connected lazily, in the background: a caller waits at most the grace it
//! asks for ([`Cluster::session`]), so the batch writer never stalls on an unreachable
//! cluster, while a tool can wait for the connect timeout. Once connected, the session is
//! kept: the driver re-establishes broken connections itself.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Statement;

use super::schema::schema_statements;
use super::ScyllaConfig;
use crate::store::{RemoteCause, StoreError};

/// A connection attempt running on the runtime.
type Attempt = tokio::task::JoinHandle<Result<Session, StoreError>>;

/// The cluster as every user of the ScyllaDB store reaches it: one runtime, one session.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    config: ScyllaConfig,
    runtime: tokio::runtime::Runtime,
    /// The session, once connected.
    session: ArcSwapOption<Session>,
    /// The connection attempt under way, if any; locked only to start or check on it.
    attempt: Mutex<Option<Attempt>>,
}

impl Cluster {
    /// Builds the runtime and starts connecting in the background.
    pub fn new(config: ScyllaConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("scylla")
            .enable_all()
            .build()?;
        let cluster = Cluster {
            shared: Arc::new(Shared {
                config,
                runtime,
                session: ArcSwapOption::empty(),
                attempt: Mutex::new(None),
            }),
        };
        // Start connecting now, so the first batch usually finds a session ready.
        *cluster.shared.attempt.lock() = Some(cluster.spawn_attempt());
        Ok(cluster)
    }

    pub fn config(&self) -> &ScyllaConfig {
        &self.shared.config
    }

    /// Runs a future on the driver's runtime, blocking this (non-HTTP) thread until it is
    /// done.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.shared.runtime.block_on(future)
    }

    fn spawn_attempt(&self) -> Attempt {
        let config = self.shared.config.clone();
        self.shared
            .runtime
            .spawn(async move { connect_session(&config).await })
    }

    /// The session, waiting at most `grace` for a connection attempt (starting one if none
    /// is under way). `Unreachable` if there is no session by then: the attempt goes on in
    /// the background for the next caller. When another thread is checking on the attempt,
    /// a caller with a short grace gives up at once rather than queue behind it.
    pub fn session(&self, grace: Duration) -> Result<Arc<Session>, StoreError> {
        if let Some(session) = self.shared.session.load_full() {
            return Ok(session);
        }
        let attempt = if grace < self.shared.config.connect_timeout {
            self.shared.attempt.try_lock()
        } else {
            Some(self.shared.attempt.lock())
        };
        let Some(mut attempt) = attempt else {
            return Err(unreachable("connecting", None));
        };
        // Connected by the thread that held the lock while we waited for it.
        if let Some(session) = self.shared.session.load_full() {
            return Ok(session);
        }
        let handle = attempt.get_or_insert_with(|| self.spawn_attempt());
        let outcome = self
            .shared
            .runtime
            .block_on(async { tokio::time::timeout(grace, handle).await });
        let result = match outcome {
            Err(_still_connecting) => return Err(unreachable("still connecting", None)),
            Ok(Ok(Ok(session))) => {
                let session = Arc::new(session);
                tracing::info!(nodes = ?self.shared.config.nodes, keyspace = %self.shared.config.keyspace, "connected to ScyllaDB");
                self.shared.session.store(Some(Arc::clone(&session)));
                Ok(session)
            }
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(join_error)) => Err(unreachable("connection task", Some(Box::new(join_error)))),
        };
        *attempt = None;
        result
    }

    /// Waits up to `timeout` for a session (for tools and tests; the writer never waits).
    pub fn wait_until_connected(&self, timeout: Duration) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.session(left.max(Duration::from_millis(1))) {
                Ok(_) => return Ok(()),
                Err(error) if std::time::Instant::now() >= deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Prepares a write: idempotent (safe to retry), with the configured consistency and
    /// client-side timeout.
    pub async fn prepare_write(
        &self,
        session: &Session,
        cql: String,
    ) -> Result<PreparedStatement, StoreError> {
        self.prepare(session, cql, self.shared.config.write_consistency)
            .await
    }

    /// Prepares a read: idempotent, with the configured read consistency and timeout.
    pub async fn prepare_read(
        &self,
        session: &Session,
        cql: String,
    ) -> Result<PreparedStatement, StoreError> {
        self.prepare(session, cql, self.shared.config.read_consistency)
            .await
    }

    async fn prepare(
        &self,
        session: &Session,
        cql: String,
        consistency: scylla::statement::Consistency,
    ) -> Result<PreparedStatement, StoreError> {
        let mut statement = session
            .prepare(cql)
            .await
            .map_err(remote("prepare", true))?;
        statement.set_is_idempotent(true);
        statement.set_consistency(consistency);
        statement.set_request_timeout(Some(self.shared.config.request_timeout));
        Ok(statement)
    }

    /// A read with the configured read consistency and timeout. Reads run unprepared
    /// for now; they are rare (a catalog refresh, a wanted count) next to the writes.
    pub fn read_statement(&self, cql: String) -> Statement {
        let config = &self.shared.config;
        let mut statement = Statement::new(cql);
        statement.set_consistency(config.read_consistency);
        statement.set_request_timeout(Some(config.request_timeout));
        statement.set_is_idempotent(true);
        statement
    }
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
        .map_err(|elapsed| unreachable("connect timed out", Some(Box::new(elapsed))))?
        .map_err(|error| unreachable("connect", Some(Box::new(error))))?;
    if config.create_schema {
        for statement in schema_statements(&config.keyspace, &config.replication, config.view_ttl) {
            session
                .query_unpaged(statement, ())
                .await
                .map_err(execution("create schema"))?;
        }
    }
    Ok(session)
}

fn unreachable(context: &'static str, source: Option<RemoteCause>) -> StoreError {
    StoreError::Unreachable { context, source }
}

/// Maps a driver error other than an execution error to a [`StoreError`], keeping it as
/// the source.
pub fn remote<E>(context: &'static str, retriable: bool) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |error| StoreError::Remote {
        context,
        source: Box::new(error),
        retriable,
    }
}

/// Maps a failed execute to a [`StoreError`], saying whether it may succeed if retried.
pub fn execution(context: &'static str) -> impl FnOnce(ExecutionError) -> StoreError {
    move |error| StoreError::Remote {
        context,
        retriable: is_retriable(&error),
        source: Box::new(error),
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
