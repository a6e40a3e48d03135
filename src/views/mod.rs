//! Views: who watched what, recorded off the request path.
//!
//! ```text
//!  GET /video/:id (any worker) ──try_send──▶ [bounded channel] ──▶ batch writer thread ──▶ ViewStore
//!        ViewBus::record                        crossbeam            BatchWriter::run       (SQLite, …)
//! ```
//!
//! A hit builds a [`ViewEvent`] and hands it to the [`ViewBus`], which never blocks: a full
//! channel means the store is not keeping up, and the view is counted as dropped rather than
//! stalling the worker. The [`BatchWriter`] thread drains the channel into batches, writes
//! each batch through the [`ViewStore`](crate::store::ViewStore) trait when it is full or
//! old enough, retries failed writes with capped, jittered backoff, and on shutdown flushes
//! everything that was accepted before it exits.

mod bus;
mod writer;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use bus::ViewBus;
pub use writer::{BatchLimits, BatchWriter, WriterHandle};

use crate::video::CatalogEntry;

/// One view of one video.
#[derive(Debug, Clone)]
pub struct ViewEvent {
    /// The video watched; the writer credits its persisted count once the view is committed.
    pub video: Arc<CatalogEntry>,
    /// The client's address: the TCP peer, or the `X-Forwarded-For` client behind a
    /// trusted proxy.
    pub client_ip: IpAddr,
    /// When the response was produced, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl ViewEvent {
    pub fn now(video: Arc<CatalogEntry>, client_ip: IpAddr) -> Self {
        ViewEvent {
            video,
            client_ip,
            timestamp_ms: epoch_millis(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn epoch_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
