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
//! everything that was accepted before it exits. A store that writes several batches at
//! once takes them in flight and acknowledges each later; the writer books a batch as
//! persisted only then.
//!
//! The flow is one way: the writer hands the store plain
//! [`crate::store::ViewRecord`] values, and the store reports what it persisted; it is
//! the writer, which holds each view's catalog entry, that credits committed views to the
//! counts `GET /video/:id/views` serves.

mod bus;
mod writer;

use std::net::IpAddr;
use std::sync::Arc;

pub use bus::ViewBus;
pub use writer::{BatchLimits, BatchWriter, WriterHandle, WriterReport};

use crate::store::{epoch_millis, ViewRecord};
use crate::video::CatalogEntry;
use crate::viewer::{ClientPrivacy, Viewer};

/// One view of one video, as it travels from a request to the batch writer.
#[derive(Debug, Clone)]
pub struct ViewEvent {
    /// The video watched: the writer hands its id to the store and, when the store says
    /// so, credits the committed view to its count.
    pub video: Arc<CatalogEntry>,
    /// What is kept of the client's address (`--client-ip`), decided before the view
    /// leaves the request.
    pub viewer: Viewer,
    /// When the response was produced, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl ViewEvent {
    /// A view by `client_ip` (the TCP peer, or the `X-Forwarded-For` client behind a
    /// trusted proxy) now, keeping of the address what `privacy` allows.
    pub fn now(video: Arc<CatalogEntry>, client_ip: IpAddr, privacy: &ClientPrivacy) -> Self {
        let timestamp_ms = epoch_millis();
        ViewEvent {
            video,
            viewer: privacy.viewer(client_ip, timestamp_ms),
            timestamp_ms,
        }
    }

    /// The view as a store persists it, borrowed from this event.
    pub fn record(&self) -> ViewRecord<'_> {
        ViewRecord {
            video_id: self.video.video_id(),
            viewer: self.viewer,
            timestamp_ms: self.timestamp_ms,
        }
    }
}
