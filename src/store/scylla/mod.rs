//! ScyllaDB: the production view store and catalog, through the official `scylla` driver.
//!
//! One module per job, all sharing one [`Cluster`] (one tokio runtime, one session):
//!
//! - [`schema`]: the keyspace, tables and statements (and `scripts/schema.cql`), and who
//!   creates them with which replication;
//! - [`session`]: the runtime, the lazily connected session (local datacenter, TLS), and
//!   driver errors mapped to [`StoreError`](crate::store::StoreError)s with their cause kept;
//! - [`tls`]: the certificate files of TLS to the cluster, read once at start;
//! - [`view_store`]: flushes of views, written for the [`ResilientStore`] around it;
//! - [`catalog_store`]: the video documents (start, seeding, `video-server import`);
//! - [`refresh`]: what the catalog watcher reads: the catalog, and the counts every server
//!   adds to.
//!
//! ```text
//!  BatchWriter ─▶ ResilientStore ─▶ flush workers ─▶ ScyllaViewStore (a clone each) ─┐
//!                       └─ Outbox ─▶ replay worker ─▶ ScyllaViewStore (a clone) ─────┤
//!                                                                                    ├─▶ Cluster (runtime + session) ─▶ nodes
//!  CatalogWatcher ─▶ ScyllaCatalogStore ─────────────────────────────────────────────┘
//! ```
//!
//! The session is connected lazily and re-established after a failed connect: the server
//! starts and serves with the cluster unreachable, while the [`ResilientStore`] keeps every
//! view in the outbox.
//!
//! [`ResilientStore`]: super::ResilientStore

pub mod catalog_store;
pub mod refresh;
pub mod schema;
pub mod session;
pub mod tls;
pub mod view_store;

use std::sync::Arc;
use std::time::Duration;

use scylla::statement::Consistency;

pub use catalog_store::ScyllaCatalogStore;
pub use schema::{schema_script, schema_statements, Replication, VIEW_SHARDS};
pub use session::{is_retriable, Cluster};
pub use tls::{TlsError, TlsFiles};
pub use view_store::ScyllaViewStore;

/// How to reach and write to the cluster.
#[derive(Debug, Clone)]
pub struct ScyllaConfig {
    /// `host:port` of one or more nodes.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// The keyspace's replication (used only when the server creates the keyspace).
    pub replication: Replication,
    pub write_consistency: Consistency,
    /// Consistency of catalog and view-count reads.
    pub read_consistency: Consistency,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub credentials: Option<(String, String)>,
    /// TTL of raw view rows, if they should expire (the `view_log` table's default).
    pub view_ttl: Option<Duration>,
    /// Concurrent executes per flush.
    pub max_in_flight: usize,
    /// Create the keyspace and tables at connect (`IF NOT EXISTS`); when false, a missing
    /// table is reported at connect, naming what to run.
    pub create_schema: bool,
    /// The datacenter whose nodes take every request (`--scylla-local-dc`); `None`: any
    /// node, and LOCAL_* consistency counts in whichever datacenter the coordinator is.
    pub local_dc: Option<String>,
    /// TLS to every node (`--scylla-tls-ca`); `None`: plain connections.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Settings that cannot work, found at start before anything is sent to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ScyllaSetupError {
    #[error(
        "creating the keyspace on {nodes} needs --scylla-replication (e.g. network:dc1=3): the \
         server creates no keyspace with one replica on nodes that are not on this machine. Or \
         leave --scylla-create-schema off and create the schema once with scripts/schema.cql"
    )]
    ReplicationRequired { nodes: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}
