//! One connection to the cluster, shared: the driver's tokio runtime, the session, and how
//! the driver's errors become [`StoreError`]s.
//!
//! The driver is tokio-only, and our HTTP workers are `may` coroutines, so the driver lives
//! on a tokio runtime of its own (one worker thread, named `scylla`). The threads that use
//! the cluster (the view store's flush workers and replay worker, the catalog watcher,
//! `video-server import`) call in with `block_on`, several at once: each caller waits for
//! its own requests, the driver's tasks run on the runtime's thread, and no HTTP worker is
//! involved.
//!
//! A [`Cluster`] is cheap to clone and every clone shares one runtime and one session. The
//! session is connected lazily, in the background: a caller waits at most the grace it
//! asks for ([`Cluster::session`]), so a flush never stalls on an unreachable cluster,
//! while a tool can wait for the connect timeout. Once connected, the session is
//! kept: the driver re-establishes broken connections itself.
//!
//! The session speaks TLS when `--scylla-tls-ca` is given (see [`super::tls`]), and with
//! `--scylla-local-dc` sends every request to that datacenter's nodes: the driver's
//! default policy, token-aware, preferring that datacenter and never failing over to
//! another (while the local datacenter is down, views wait in the outbox rather than
//! cross the WAN, and LOCAL_QUORUM keeps its meaning). A name that is not one of the
//! cluster's datacenters fails the connect, saying which they are.
//!
//! A server that does not create the schema checks at connect that its tables exist and
//! logs what to run if not; a statement refused for a missing keyspace or table becomes
//! [`MissingSchema`], which says the same, wherever it happens.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::policies::load_balancing::{DefaultPolicy, LoadBalancingPolicy};
use scylla::policies::retry::FallthroughRetryPolicy;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, Statement};

use super::schema::{schema_statements, TABLES};
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
    /// is under way), including the wait for another thread checking on the same attempt.
    /// `Unreachable` if there is no session by then: the attempt goes on in the background
    /// for the next caller.
    pub fn session(&self, grace: Duration) -> Result<Arc<Session>, StoreError> {
        if let Some(session) = self.shared.session.load_full() {
            return Ok(session);
        }
        let asked = std::time::Instant::now();
        let Some(mut attempt) = self.shared.attempt.try_lock_for(grace) else {
            return Err(unreachable("connecting", None));
        };
        // Connected by the thread that held the lock while we waited for it.
        if let Some(session) = self.shared.session.load_full() {
            return Ok(session);
        }
        let handle = attempt.get_or_insert_with(|| self.spawn_attempt());
        let left = grace.saturating_sub(asked.elapsed());
        let outcome = self
            .shared
            .runtime
            .block_on(async { tokio::time::timeout(left, handle).await });
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
    ///
    /// The driver does not retry writes (its fall-through policy): the
    /// [`ResilientStore`](crate::store::ResilientStore) does, with backoff, then spills to
    /// the outbox, so retries happen in one place instead of the two multiplied.
    pub async fn prepare_write(
        &self,
        session: &Session,
        cql: String,
    ) -> Result<PreparedStatement, StoreError> {
        let mut statement = self
            .prepare(session, cql, self.shared.config.write_consistency)
            .await?;
        statement.set_retry_policy(Some(Arc::new(FallthroughRetryPolicy::new())));
        Ok(statement)
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

/// The load balancing of `--scylla-local-dc`: the driver's default policy (token-aware,
/// replicas shuffled), with that datacenter's nodes as the only ones asked.
pub fn local_dc_policy(local_dc: &str) -> Arc<dyn LoadBalancingPolicy> {
    DefaultPolicy::builder()
        .prefer_datacenter(local_dc.to_owned())
        .token_aware(true)
        .permit_dc_failover(false)
        .build()
}

/// Opens a session (over TLS, preferring the local datacenter, if configured) and creates
/// the schema or checks that it is there.
async fn connect_session(config: &ScyllaConfig) -> Result<Session, StoreError> {
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(config.connect_timeout)
        .fetch_schema_metadata(false)
        .fetch_full_schema_metadata(false);
    if let Some((user, password)) = &config.credentials {
        builder = builder.user(user, password);
    }
    if let Some(local_dc) = &config.local_dc {
        let profile = ExecutionProfile::builder()
            .load_balancing_policy(local_dc_policy(local_dc))
            .build();
        builder = builder.default_execution_profile_handle(profile.into_handle());
    }
    if let Some(tls) = &config.tls {
        builder = builder.tls_context(Some(Arc::clone(tls)));
    }
    // A node that accepts the connection but never answers could hold build() forever.
    let session = tokio::time::timeout(config.connect_timeout * 2, builder.build())
        .await
        .map_err(|elapsed| unreachable("connect timed out", Some(Box::new(elapsed))))?
        .map_err(|error| {
            // A node that requires TLS resets a plain connection: say what may be missing.
            let reset = error.to_string().contains("reset by peer");
            let context = if reset && config.tls.is_none() {
                "connect; a node that requires TLS resets plain connections: --scylla-tls-ca"
            } else {
                "connect"
            };
            unreachable(context, Some(Box::new(error)))
        })?;
    check_datacenters(&session, config)?;
    if config.create_schema {
        for statement in schema_statements(&config.keyspace, &config.replication, config.view_ttl) {
            session
                .query_unpaged(statement, ())
                .await
                .map_err(execution("create schema"))?;
        }
    } else {
        report_missing_tables(&session, &config.keyspace).await;
    }
    Ok(session)
}

/// The datacenters of the cluster's nodes, as the driver learnt them (empty if it could
/// not read the topology).
fn datacenters(session: &Session) -> BTreeSet<String> {
    session
        .get_cluster_state()
        .get_nodes_info()
        .iter()
        .filter_map(|node| node.datacenter.clone())
        .collect()
}

/// Refuses a `--scylla-local-dc` that names no datacenter of the cluster (every request
/// would find no node), and warns when LOCAL_* levels span several datacenters with no
/// local one named.
fn check_datacenters(session: &Session, config: &ScyllaConfig) -> Result<(), StoreError> {
    let known = datacenters(session);
    match &config.local_dc {
        Some(local_dc) if known.is_empty() => {
            tracing::warn!(%local_dc, "cannot check --scylla-local-dc: the cluster named no datacenter");
        }
        Some(local_dc) if !known.contains(local_dc) => {
            return Err(StoreError::Remote {
                context: "connect",
                source: Box::new(UnknownDatacenter {
                    name: local_dc.clone(),
                    known: known.into_iter().collect(),
                }),
                retriable: false,
            });
        }
        Some(_) => {}
        None => {
            let local = |level| matches!(level, Consistency::LocalQuorum | Consistency::LocalOne);
            if known.len() > 1
                && (local(config.write_consistency) || local(config.read_consistency))
            {
                tracing::warn!(datacenters = ?known,
                    "LOCAL_* consistency on a cluster of several datacenters without --scylla-local-dc: \
                     it is evaluated in the datacenter of whichever node coordinates each request");
            }
        }
    }
    Ok(())
}

/// Logs, once per connect, the tables a server that does not create the schema finds
/// missing, and what to run. Quiet if the schema cannot be read (the writes will say).
async fn report_missing_tables(session: &Session, keyspace: &str) {
    let mut query =
        Statement::new("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?");
    query.set_consistency(Consistency::One);
    let found: Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> = async {
        let rows = session
            .query_unpaged(query, (keyspace,))
            .await?
            .into_rows_result()?;
        let names = rows
            .rows::<(String,)>()?
            .map(|row| row.map(|(name,)| name))
            .collect::<Result<_, _>>()?;
        Ok(names)
    }
    .await;
    match found {
        Ok(found) => {
            let missing: Vec<&str> = TABLES
                .into_iter()
                .filter(|table| !found.iter().any(|name| name == table))
                .collect();
            if !missing.is_empty() {
                tracing::error!(%keyspace, ?missing,
                    "the ScyllaDB schema is missing and this server does not create it \
                     (--scylla-create-schema is off): {CREATE_IT}; until then views wait in the outbox");
            }
        }
        Err(error) => tracing::debug!(%error, "cannot read the schema to check it"),
    }
}

/// What to do about a missing schema, as every message about it says.
const CREATE_IT: &str = "create it once with `cqlsh -f scripts/schema.cql` (its replication \
    edited for the cluster), or start one server with --scylla-create-schema and \
    --scylla-replication";

/// A statement refused because the keyspace or a table does not exist.
#[derive(Debug, thiserror::Error)]
#[error("the keyspace or a table is missing ({detail}): {CREATE_IT}")]
pub struct MissingSchema {
    /// The driver's error, as it reads.
    pub detail: String,
}

/// `--scylla-local-dc` names no datacenter of the cluster.
#[derive(Debug, thiserror::Error)]
#[error("--scylla-local-dc {name:?} is not a datacenter of this cluster (it has: {})", known.join(", "))]
pub struct UnknownDatacenter {
    pub name: String,
    pub known: Vec<String>,
}

/// Whether a driver error says the keyspace or a table does not exist (as Cassandra and
/// ScyllaDB word it: "unconfigured table X", "Keyspace X does not exist").
fn is_missing_schema(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("unconfigured table")
        || (text.contains("keyspace") && text.contains("does not exist"))
}

/// A driver error as a [`StoreError`]: [`MissingSchema`] (not retriable: it lasts until an
/// operator acts) when it says so, else `Remote` with the error as its source.
fn remote_error<E>(context: &'static str, error: E, retriable: bool) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let text = error.to_string();
    if is_missing_schema(&text) {
        return StoreError::Remote {
            context,
            source: Box::new(MissingSchema { detail: text }),
            retriable: false,
        };
    }
    StoreError::Remote {
        context,
        source: Box::new(error),
        retriable,
    }
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
    move |error| remote_error(context, error, retriable)
}

/// Maps a failed execute to a [`StoreError`], saying whether it may succeed if retried.
pub fn execution(context: &'static str) -> impl FnOnce(ExecutionError) -> StoreError {
    move |error| {
        let retriable = is_retriable(&error);
        remote_error(context, error, retriable)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_dc_policy_prefers_that_datacenter_token_aware_without_failover() {
        let policy = format!("{:?}", local_dc_policy("dc-east"));
        assert!(policy.contains(r#"Datacenter("dc-east")"#), "{policy}");
        assert!(policy.contains("is_token_aware: true"), "{policy}");
        assert!(policy.contains("permit_dc_failover: false"), "{policy}");
    }

    #[test]
    fn a_missing_keyspace_or_table_says_what_to_run() {
        for text in [
            "Database returned an error: The query is syntactically correct but invalid, Error message: unconfigured table view_log",
            "Database returned an error: The query is syntactically correct but invalid, Error message: Keyspace video_server does not exist",
        ] {
            let error = remote_error("prepare", std::io::Error::other(text), true);
            assert!(!error.is_retriable(), "an operator must act first");
            let message = error.to_string();
            assert!(message.contains("scripts/schema.cql"), "{message}");
            assert!(message.contains("--scylla-create-schema"), "{message}");
        }
        let timeout = remote_error("prepare", std::io::Error::other("timed out"), true);
        assert!(timeout.is_retriable());
        assert!(!timeout.to_string().contains("schema"));
    }
}
