//! Where videos and views are kept.
//!
//! Data flows one way through here: the batch writer hands a store plain
//! [`ViewRecord`]s (a video id, a client address, a time) and learns what became of them
//! ([`Persisted`]); the catalog watcher asks a [`CatalogSource`] for stored video documents
//! and counts. No store knows the in-memory catalog or the views pipeline.
//!
//! The [`ViewStore`] trait is the seam between the batch writer and a database: one call
//! writes one batch, and its error says whether trying again could help; a store that
//! writes several batches at once takes a batch in flight and acknowledges it later
//! ([`Settled`]). The
//! [`EmbeddedStore`] (SQLite, under `--data-dir`) is the default, so a fresh clone runs with
//! no server to install; it also keeps the catalog. A remote store ([`RemoteViewStore`],
//! e.g. ScyllaDB) is wrapped in a [`ResilientStore`], which writes a few flushes at once,
//! retries, spills to a local [`Outbox`] while the remote store fails, and replays it on a
//! worker thread of its own; it counts through a
//! [`CountLedger`] (each writer's running totals, written whole), so that several servers
//! count every view once. [`sqlite`] holds what the two SQLite files (the embedded
//! database and the outbox) share; [`retention`] deletes the embedded store's raw view rows
//! once they are older than `--view-retention-days`, which no count depends on.

mod embedded;
pub mod ledger;
pub mod outbox;
pub mod replay;
pub mod resilient;
pub mod retention;
pub mod scylla;
pub mod sqlite;

pub use embedded::{EmbeddedCatalogSource, EmbeddedStore};
pub use ledger::{CountLedger, CountRow};
pub use outbox::{Flush, Outbox, OutboxTally, PendingView};
pub use resilient::{
    RemoteViewStore, ResilientStore, RetryPolicy, DEFAULT_FLUSHES_IN_FLIGHT,
    DEFAULT_REPLAY_VIEWS_PER_SECOND,
};

use crate::video::{self, PayloadError, VideoPayload, SEED_VIDEO_JSON};
use crate::viewer::{Salt, Viewer};

/// One view as a store persists it: which video, who, when. Borrowed from the batch
/// writer's queue, so handing a batch to a store copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewRecord<'a> {
    pub video_id: &'a str,
    /// What `--client-ip` keeps of the client's address.
    pub viewer: Viewer,
    /// When the response was produced, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// The views of a batch grouped by (video, UTC day), in order of first appearance, with
/// their viewers: what both stores count per day.
pub fn group_by_video_day<'a>(views: &[ViewRecord<'a>]) -> Vec<((&'a str, i64), Vec<Viewer>)> {
    let mut group_of: std::collections::HashMap<(&str, i64), usize> =
        std::collections::HashMap::new();
    let mut groups: Vec<((&str, i64), Vec<Viewer>)> = Vec::new();
    // (key, group) of the view before: a batch is mostly runs of one video and day (a
    // popular video, a day's views), which then skip the hash.
    let mut previous: Option<((&str, i64), usize)> = None;
    for view in views {
        let key = (view.video_id, utc_day(view.timestamp_ms));
        let group = match previous {
            Some((previous_key, group)) if previous_key == key => group,
            _ => *group_of.entry(key).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            }),
        };
        previous = Some((key, group));
        groups[group].1.push(view.viewer);
    }
    groups
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970): the time base of
/// [`ViewRecord::timestamp_ms`].
pub fn epoch_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Days of per-day counts a store loads and the server keeps in memory per video: a year,
/// the longest range `GET /video/:id/views?from=&to=` may ask for.
pub const DAYS_KEPT: i64 = 366;

/// The UTC day (days since the Unix epoch) of a time in milliseconds since the epoch.
pub fn utc_day(timestamp_ms: i64) -> i64 {
    timestamp_ms.div_euclid(86_400_000)
}

/// One video's views on one UTC day, as a store counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayCount {
    /// Days since the Unix epoch.
    pub day: i64,
    pub views: u64,
    /// Distinct clients that day, estimated (see [`crate::hll`]).
    pub unique_viewers: u64,
}

/// One video's counts as a shared store answers them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoCounts {
    pub total: u64,
    /// Days with views, oldest first, the last [`DAYS_KEPT`] at most (empty from a store
    /// that does not count per day here).
    pub days: Vec<DayCount>,
}

/// What a batch did to one video's day: the views it added, and the day's distinct
/// clients now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayUpdate {
    pub video_id: String,
    pub day: i64,
    pub added: u64,
    pub unique_viewers: u64,
}

/// What a store did with a batch it accepted, which tells the batch writer whether to add
/// the batch to the counts served from memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persisted {
    /// Committed to this server's own database, whose counts the in-memory catalog
    /// mirrors: the writer credits them, total and per day.
    Counted(Vec<DayUpdate>),
    /// Taken by a database shared by several servers (or kept in the outbox until it
    /// answers): counts are read back from it by the catalog watcher, not credited here.
    CountedRemotely,
    /// Neither the remote store nor the outbox (full: `--outbox-max-bytes`) could take the
    /// batch: its views are lost, and counted as failed.
    Dropped,
    /// Taken in flight, not settled yet: [`ViewStore::settled`] tells what became of it,
    /// under this ticket.
    InFlight(u64),
}

/// What became of a batch a store took in flight.
#[derive(Debug)]
pub struct Settled {
    /// The ticket [`Persisted::InFlight`] gave the batch.
    pub ticket: u64,
    /// Never `InFlight`; an error is final (the store retried what could be retried).
    pub outcome: Result<Persisted, StoreError>,
    /// When the store was done with it (the batch writer may look later).
    pub at: std::time::Instant,
}

/// A database that persists batches of views. Implementations run on the batch writer's
/// own thread, so they may block.
pub trait ViewStore: Send + 'static {
    /// Durably writes every view of the batch, or none of them.
    fn write_views(&mut self, views: &[ViewRecord<'_>]) -> Result<Persisted, StoreError>;

    /// Hands a batch over, which the batch writer does: a store that writes several
    /// batches at once may answer [`Persisted::InFlight`] and settle it later (then it
    /// keeps the batch, and retries it, itself); by default, [`ViewStore::write_views`].
    fn submit_views(&mut self, views: &[ViewRecord<'_>]) -> Result<Persisted, StoreError> {
        self.write_views(views)
    }

    /// The batches taken in flight that have settled since the last call, waiting up to
    /// `wait` for one while any are in flight.
    fn settled(&mut self, _wait: std::time::Duration) -> Vec<Settled> {
        Vec::new()
    }

    /// The writer is stopping: background work ends (by `deadline`); batches in flight
    /// are still settled.
    fn stopping(&mut self, _deadline: std::time::Instant) {}

    /// Background work between batches (checking the database file); called by the
    /// writer on every turn of its loop, so it must return quickly
    /// when there is nothing to do.
    fn maintain(&mut self) {}
}

/// One stored video: its document as kept, and the views the store counted for it (when
/// the store keeps counts beside its documents), in all and for its recent days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVideo {
    pub video_id: String,
    pub document: String,
    pub views: Option<u64>,
    /// Per-day counts, oldest first, for the days the store keeps them (empty if none).
    pub days: Vec<DayCount>,
}

/// Where the catalog watcher reads the catalog and the counts from. Runs on the
/// watcher's own thread, so it may block.
pub trait CatalogSource: Send + 'static {
    /// Whether the stored catalog may have changed since the last call (the first call
    /// answers true). A source that cannot tell cheaply always answers true.
    fn catalog_changed(&mut self) -> Result<bool, StoreError>;

    /// Every stored video.
    fn load_videos(&mut self) -> Result<Vec<StoredVideo>, StoreError>;

    /// The views of one video, in all and per day for the last [`DAYS_KEPT`] days, as
    /// counted by every server writing to this store.
    fn view_counts(&mut self, video_id: &str) -> Result<VideoCounts, StoreError>;

    /// The counts of several videos, in the same order; a store that can read them at
    /// once (bounded) does, so that one slow video does not hold back the others.
    fn view_counts_of(&mut self, video_ids: &[&str]) -> Vec<Result<VideoCounts, StoreError>> {
        video_ids.iter().map(|id| self.view_counts(id)).collect()
    }

    /// The views of one video, in all.
    fn view_count(&mut self, video_id: &str) -> Result<u64, StoreError> {
        Ok(self.view_counts(video_id)?.total)
    }

    /// The salt every server of this store hashes clients with on `day` (days since the
    /// Unix epoch; `--client-ip hash`): the one stored, or else `proposed`, now stored. Two
    /// servers proposing at once agree on one of the two.
    fn agree_salt(&mut self, day: i64, proposed: Salt) -> Result<Salt, StoreError>;

    /// Deletes the salts of days before `day`: the hashes of those days can no longer be
    /// reversed or linked to anything.
    fn forget_salts_before(&mut self, day: i64) -> Result<(), StoreError>;
}

/// The seed video (12345) every fresh store starts with, as the old service's seeder did.
pub fn seed_video() -> Result<VideoPayload<'static>, StoreError> {
    video::parse_stored_video(SEED_VIDEO_JSON.as_bytes()).map_err(|source| {
        StoreError::CorruptDocument {
            video_id: "12345".into(),
            source,
        }
    })
}

/// The cause of a remote store's failure, as its driver reported it.
pub type RemoteCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the data directory ({action}) {path}: {source}")]
    DataDir {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded store ({context}): {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the embedded database {path} failed its integrity check ({problem}); restore it \
         from a backup, or move it aside to start with an empty one (it was left untouched)"
    )]
    Damaged { path: String, problem: String },
    #[error("stored video {video_id:?} is not a valid document: {source}")]
    CorruptDocument {
        video_id: String,
        #[source]
        source: PayloadError,
    },
    #[error("the outbox holds a row with an invalid {field}; it cannot be replayed")]
    CorruptOutbox { field: &'static str },
    /// No session to the cluster (still connecting, or the last attempt failed): nothing
    /// was sent.
    #[error("ScyllaDB unreachable ({context}){}", cause_suffix(.source))]
    Unreachable {
        context: &'static str,
        #[source]
        source: Option<RemoteCause>,
    },
    /// The cluster was reached and a statement failed.
    #[error("ScyllaDB ({context}): {source}")]
    Remote {
        context: &'static str,
        #[source]
        source: RemoteCause,
        retriable: bool,
    },
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the flush worker threads have stopped; batches go to the outbox")]
    FlushWorkersGone,
    #[error("writing a flush panicked (a bug); it is kept in the outbox")]
    WritePanicked,
    /// Flushes that neither the cluster nor the outbox took hold every slot.
    #[error(
        "neither the cluster nor the outbox takes views ({flushes} flush(es) waiting to be \
         tried again); last error: {last}"
    )]
    Unsettled { flushes: usize, last: String },
    /// A failure forced by a test double.
    #[cfg(test)]
    #[error("forced failure")]
    Forced { retriable: bool },
}

fn cause_suffix(source: &Option<RemoteCause>) -> String {
    source
        .as_ref()
        .map_or(String::new(), |cause| format!(": {cause}"))
}

impl StoreError {
    /// Whether the same write may succeed if tried again later (busy, locked, out of
    /// space, I/O trouble, an unreachable or overloaded cluster), as opposed to a write
    /// that can never succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => sqlite::is_retriable(source),
            StoreError::Remote { retriable, .. } => *retriable,
            #[cfg(test)]
            StoreError::Forced { retriable } => *retriable,
            StoreError::Unreachable { .. } | StoreError::Unsettled { .. } => true,
            StoreError::DataDir { .. }
            | StoreError::CorruptDocument { .. }
            | StoreError::CorruptOutbox { .. }
            | StoreError::Damaged { .. }
            | StoreError::Thread { .. }
            | StoreError::FlushWorkersGone => false,
            // Retried by the replay worker, later, like any flush in the outbox.
            StoreError::WritePanicked => true,
        }
    }
}
