//! Where videos and views are kept.
//!
//! The [`ViewStore`] trait is the seam between the batch writer and a database: one call
//! writes one batch, and its error says whether trying again could help. The
//! [`EmbeddedStore`] (SQLite, under `--data-dir`) is the default, so a fresh clone runs with
//! no server to install; it also keeps the catalog, read once at start into memory.
//! A remote store ([`RemoteViewStore`], e.g. ScyllaDB) is wrapped in a [`ResilientStore`],
//! which retries, spills to a local [`Outbox`] while the remote store fails, and replays.

pub mod catalog_refresh;
mod embedded;
pub mod outbox;
pub mod resilient;
pub mod scylla;

pub use embedded::EmbeddedStore;
pub use outbox::{Flush, Outbox, PendingView};
pub use resilient::{RemoteViewStore, ResilientStore, RetryPolicy};

use crate::video::{self, PayloadError, VideoPayload, SEED_VIDEO_JSON};
use crate::views::ViewEvent;

/// A database that persists batches of views. Implementations run on the batch writer's
/// own thread, so they may block.
pub trait ViewStore: Send + 'static {
    /// Durably writes every view of the batch, or none of them.
    fn write_views(&mut self, views: &[ViewEvent]) -> Result<(), StoreError>;

    /// Background work between batches (replaying an outbox); called by the writer on
    /// every turn of its loop, so it must return quickly when there is nothing to do.
    fn maintain(&mut self) {}

    /// Adds committed views to the in-memory counts that `GET /video/:id/views` serves.
    /// A store whose counts are read back from the database (shared by several servers)
    /// does nothing here.
    fn credit_counts(&self, views: &[ViewEvent]) {
        credit_each_view(views);
    }
}

/// The seed video (12345) every fresh store starts with, as the old service's seeder did.
pub fn seed_video() -> Result<VideoPayload<'static>, StoreError> {
    video::parse_stored_video(SEED_VIDEO_JSON.as_bytes()).map_err(|error| {
        StoreError::CorruptDocument {
            video_id: "12345".into(),
            error,
        }
    })
}

/// Credits every view to the catalog entry it was recorded against.
pub fn credit_each_view(views: &[ViewEvent]) {
    for view in views {
        view.video.add_persisted_views(1);
    }
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {error}")]
    DataDir { path: String, error: std::io::Error },
    #[error("embedded store ({context}): {error}")]
    Sqlite {
        context: &'static str,
        error: rusqlite::Error,
    },
    #[error(
        "the embedded database {path} failed its integrity check ({problem}); restore it \
         from a backup, or move it aside to start with an empty one (it was left untouched)"
    )]
    Damaged { path: String, problem: String },
    #[error("stored video {video_id:?} is not a valid document: {error}")]
    CorruptDocument {
        video_id: String,
        error: PayloadError,
    },
    #[error("ScyllaDB unreachable: {message}")]
    Unreachable { message: String },
    #[error("ScyllaDB ({context}): {message}")]
    Remote {
        context: &'static str,
        message: String,
        retriable: bool,
    },
    #[error("store unavailable: {reason}")]
    Unavailable { reason: String, retriable: bool },
}

impl StoreError {
    /// Whether the same write may succeed if tried again later (busy, locked, out of
    /// space, I/O trouble), as opposed to a write that can never succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            StoreError::Sqlite { error, .. } => embedded::is_retriable(error),
            StoreError::Unavailable { retriable, .. } | StoreError::Remote { retriable, .. } => {
                *retriable
            }
            StoreError::Unreachable { .. } => true,
            StoreError::DataDir { .. }
            | StoreError::CorruptDocument { .. }
            | StoreError::Damaged { .. } => false,
        }
    }
}
