//! Writing views to a remote store without ever losing one: retries, spill, replay.
//!
//! ```text
//!  BatchWriter ──write_views──▶ ResilientStore ──write_flush──▶ RemoteViewStore (ScyllaDB)
//!                                    │   ▲ retried: capped, jittered backoff
//!                    spill on failure ▼   │ replay when the cluster answers again
//!                                 Outbox (SQLite under --data-dir)
//! ```
//!
//! Each batch becomes a [`Flush`] with stable ids (a time-based id per view, one id for the
//! flush) before its first attempt. A transient failure is retried a few times quickly;
//! if the remote store still fails (or failed recently: the store is then in backoff and
//! not hammered), the flush is committed to the [`Outbox`] instead, and the batch writer
//! moves on: HTTP never notices. [`ViewStore::maintain`] replays the oldest outbox flushes
//! once the backoff has passed; a replayed flush carries the same ids, so whatever part of
//! it reached the cluster before is overwritten, not duplicated.
//!
//! Counts go the same way but are formed once: when a batch becomes a flush, this writer's
//! [`CountLedger`] adds it to its running totals, and the flush carries the rows holding
//! them. Those rows are absolute and keep the largest total, so writing them again (a
//! retry, a replay, an older row arriving late) changes nothing; the outbox keeps only the
//! newest total of each tally and replays it apart from the views.
//!
//! A batch gets its ids and its place in the totals once. If neither the cluster nor the
//! outbox took it (the outbox failing too: a full disk), the batch writer tries the same
//! batch again, and this store hands the cluster the same flush, so a view written by the
//! first attempt is overwritten, not added, and no view is counted twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::timestamp::context::ContextV1;
use uuid::{Timestamp, Uuid};

use super::ledger::CountLedger;
use super::outbox::{Flush, Outbox, PendingView};
use super::{Persisted, StoreError, ViewRecord, ViewStore};
use crate::backoff::{Backoff, Jitter};
use crate::metrics::Metrics;

/// A remote database that takes whole flushes. Writes must be idempotent by the flush's
/// ids: the same flush may be written more than once.
pub trait RemoteViewStore: Send + 'static {
    fn write_flush(&mut self, flush: &Flush) -> Result<(), StoreError>;
}

/// How hard to try before spilling, and how patiently to replay.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts of a fresh flush before it is spilled.
    pub attempts: u32,
    /// First pause between attempts; doubled each time up to `max_pause`.
    pub first_pause: Duration,
    pub max_pause: Duration,
    /// First wait before replaying after a failure; doubled up to `max_replay_backoff`.
    pub first_replay_backoff: Duration,
    pub max_replay_backoff: Duration,
    /// Flushes replayed per call to `maintain`, at most.
    pub replay_flushes: usize,
    /// Wall time one call to `maintain` may spend replaying: the batch writer's live
    /// batches wait at most this long behind a replay.
    pub replay_budget: Duration,
    /// Failed replays after which a flush is quarantined, when other writes go through
    /// (a permanent error quarantines it at once).
    pub quarantine_after: u64,
    /// The outbox's size limit (`--outbox-max-bytes`): beyond it, batches that cannot
    /// reach the cluster are dropped and counted, never silently.
    pub outbox_max_bytes: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            first_pause: Duration::from_millis(20),
            max_pause: Duration::from_millis(250),
            first_replay_backoff: Duration::from_millis(200),
            max_replay_backoff: Duration::from_secs(30),
            replay_flushes: 16,
            replay_budget: Duration::from_millis(100),
            quarantine_after: 5,
            outbox_max_bytes: None,
        }
    }
}

/// How often the outbox is re-counted from its file (`video-server outbox retry` may have
/// put a flush back in line).
const RECOUNT_EVERY: Duration = Duration::from_secs(5);

/// Gives views and flushes their time-based ids.
struct IdGenerator {
    node: [u8; 6],
    context: ContextV1,
}

impl IdGenerator {
    fn new() -> Self {
        let mut node = [0u8; 6];
        node.iter_mut().for_each(|byte| *byte = fastrand::u8(..));
        // The multicast bit marks a node id that is random rather than a MAC address.
        node[0] |= 0x01;
        IdGenerator {
            node,
            context: ContextV1::new(fastrand::u16(..)),
        }
    }

    fn timeuuid(&self, timestamp_ms: i64) -> Uuid {
        let millis = u64::try_from(timestamp_ms).unwrap_or(0);
        let timestamp = Timestamp::from_unix(
            &self.context,
            millis / 1000,
            (millis % 1000) as u32 * 1_000_000,
        );
        Uuid::new_v1(timestamp, &self.node)
    }

    fn flush(&self, views: &[ViewRecord<'_>], ledger: &mut CountLedger) -> Flush {
        Flush {
            counts: ledger.account(views),
            id: self.timeuuid(super::epoch_millis()),
            views: views
                .iter()
                .map(|view| PendingView {
                    id: self.timeuuid(view.timestamp_ms),
                    video_id: view.video_id.to_owned(),
                    viewer: view.viewer,
                    timestamp_ms: view.timestamp_ms,
                })
                .collect(),
        }
    }
}

/// Whether `flush` was formed from exactly these views (the batch writer retrying a batch).
fn same_views(flush: &Flush, views: &[ViewRecord<'_>]) -> bool {
    flush.views.len() == views.len()
        && flush.views.iter().zip(views).all(|(formed, view)| {
            formed.video_id == view.video_id
                && formed.viewer == view.viewer
                && formed.timestamp_ms == view.timestamp_ms
        })
}

/// A [`ViewStore`] over a remote store, with a local outbox that never lets a view go.
pub struct ResilientStore<R: RemoteViewStore> {
    remote: R,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
    ids: IdGenerator,
    /// This writer's running totals.
    ledger: CountLedger,
    /// The flush of the last batch that neither the cluster nor the outbox took, for the
    /// batch writer's retry of the same batch.
    unsettled: Option<Flush>,
    /// Whether a write (live or replayed) went through since the last replay pass: then a
    /// flush that failed in that pass is the problem, not the cluster.
    wrote_since_replay: bool,
    /// When the outbox was last re-counted from its file.
    recounted: Instant,
    /// When a dropped batch (outbox full) was last logged.
    dropped_logged: Option<Instant>,
    /// Makes the outbox refuse every flush (a full disk, in tests).
    #[cfg(test)]
    refuse_spills: bool,
    /// No direct write or replay before this instant (set after a failure).
    quiet_until: Option<Instant>,
    /// Paces replays (and direct writes) after failures: longer each time, reset by a
    /// success.
    replay_backoff: Backoff,
}

impl<R: RemoteViewStore> ResilientStore<R> {
    pub fn new(remote: R, outbox: Outbox, metrics: Arc<Metrics>, policy: RetryPolicy) -> Self {
        metrics
            .outbox_depth
            .set(i64::try_from(outbox.depth()).unwrap_or(i64::MAX));
        ResilientStore {
            remote,
            outbox,
            metrics,
            replay_backoff: Backoff::new(
                policy.first_replay_backoff,
                policy.max_replay_backoff,
                Jitter::Equal,
            ),
            policy,
            ids: IdGenerator::new(),
            ledger: CountLedger::default(),
            unsettled: None,
            wrote_since_replay: false,
            recounted: Instant::now(),
            dropped_logged: None,
            #[cfg(test)]
            refuse_spills: false,
            quiet_until: None,
        }
    }

    pub fn outbox_depth(&self) -> u64 {
        self.outbox.depth()
    }

    /// Count rows waiting in the outbox.
    pub fn outbox_pending_counts(&self) -> u64 {
        self.outbox.pending_counts()
    }

    /// The id this writer's count rows carry.
    pub fn writer_id(&self) -> uuid::Uuid {
        self.ledger.writer_id()
    }

    fn in_backoff(&self) -> bool {
        self.quiet_until.is_some_and(|until| Instant::now() < until)
    }

    /// Tries a fresh flush a few times, pausing with full jitter between attempts.
    fn write_with_retries(&mut self, flush: &Flush) -> Result<(), StoreError> {
        let mut backoff =
            Backoff::new(self.policy.first_pause, self.policy.max_pause, Jitter::Full);
        let mut attempt = 1;
        loop {
            match self.remote.write_flush(flush) {
                Ok(()) => return Ok(()),
                // An unreachable cluster is not retried at once: the connection attempt
                // goes on in the background and the backoff paces the next try.
                Err(error)
                    if error.is_retriable()
                        && !matches!(error, StoreError::Unreachable { .. })
                        && attempt < self.policy.attempts =>
                {
                    self.metrics.store_errors.inc();
                    self.metrics.store_retries.inc();
                    std::thread::sleep(backoff.next_pause());
                    attempt += 1;
                }
                Err(error) => {
                    self.metrics.store_errors.inc();
                    return Err(error);
                }
            }
        }
    }

    /// Keeps a flush in the outbox, unless the outbox is full: then the flush is dropped,
    /// its views taken back out of the totals, and `Persisted::Dropped` says so.
    fn spill(&mut self, flush: &Flush) -> Result<Persisted, StoreError> {
        #[cfg(test)]
        if self.refuse_spills {
            return Err(StoreError::Forced { retriable: true });
        }
        if let Some(limit) = self.policy.outbox_max_bytes {
            let size = self.outbox.bytes()?;
            if size >= limit {
                self.ledger.forget(&flush.views);
                self.metrics
                    .views_outbox_full
                    .inc_by(flush.views.len() as u64);
                if self
                    .dropped_logged
                    .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
                {
                    tracing::error!(views = flush.views.len(), outbox_bytes = size, limit,
                        "the outbox is full (--outbox-max-bytes) and the cluster is failing: views are dropped (views_outbox_full_total)");
                    self.dropped_logged = Some(Instant::now());
                }
                return Ok(Persisted::Dropped);
            }
        }
        self.outbox.push(flush)?;
        self.metrics.views_spilled.inc_by(flush.views.len() as u64);
        self.update_depth();
        Ok(Persisted::CountedRemotely)
    }

    fn update_depth(&self) {
        self.metrics
            .outbox_depth
            .set(i64::try_from(self.outbox.depth()).unwrap_or(i64::MAX));
        self.metrics
            .outbox_quarantined
            .set(i64::try_from(self.outbox.quarantined()).unwrap_or(i64::MAX));
    }

    /// Backs off after a failure: the next replay (and direct write) waits longer each time.
    fn back_off(&mut self) {
        self.quiet_until = Some(Instant::now() + self.replay_backoff.next_pause());
    }

    fn recovered(&mut self) {
        self.quiet_until = None;
        self.replay_backoff.reset();
    }

    /// Sets a flush aside in quarantine (its views stay in the outbox file).
    fn quarantine(&mut self, flush_id: uuid::Uuid, error: &str) -> Result<(), StoreError> {
        let views = self.outbox.quarantine(flush_id, error)?;
        tracing::error!(%flush_id, views, %error,
            "a flush the cluster refuses was quarantined; later flushes replay (video-server outbox list)");
        self.update_depth();
        Ok(())
    }

    /// Writes a flush to the cluster, or else to the outbox.
    fn settle(&mut self, flush: &Flush) -> Result<Persisted, StoreError> {
        if self.in_backoff() {
            return self.spill(flush);
        }
        match self.write_with_retries(flush) {
            Ok(()) => {
                self.recovered();
                self.wrote_since_replay = true;
                Ok(Persisted::CountedRemotely)
            }
            Err(error) => {
                if error.is_retriable() {
                    tracing::warn!(%error, views = flush.views.len(),
                        "remote store failing; spilling the batch to the outbox");
                } else {
                    tracing::error!(%error, views = flush.views.len(),
                        "remote store refused the batch (permanent error); kept in the outbox");
                }
                self.back_off();
                self.spill(flush)
            }
        }
    }

    /// Replays the oldest outbox flushes, up to `replay_flushes` of them and for at most
    /// `replay_budget`. A flush the cluster refuses for good is quarantined at once; one
    /// that fails while other writes go through is a suspect, quarantined after
    /// `quarantine_after` such passes; two failures in a row mean the cluster is failing,
    /// and replay backs off.
    fn replay(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        let flushes = self.outbox.oldest(self.policy.replay_flushes)?;
        let mut suspects: Vec<(uuid::Uuid, String)> = Vec::new();
        let mut failed_in_a_row = 0;
        for flush in flushes {
            if started.elapsed() >= self.policy.replay_budget {
                break;
            }
            match self.remote.write_flush(&flush) {
                Ok(()) => {
                    self.outbox.remove(flush.id)?;
                    self.metrics.views_replayed.inc_by(flush.views.len() as u64);
                    self.wrote_since_replay = true;
                    failed_in_a_row = 0;
                }
                Err(error) => {
                    self.metrics.store_errors.inc();
                    if !error.is_retriable() {
                        self.quarantine(flush.id, &error.to_string())?;
                        continue;
                    }
                    suspects.push((flush.id, error.to_string()));
                    failed_in_a_row += 1;
                    if failed_in_a_row >= 2 {
                        break;
                    }
                }
            }
        }
        self.replay_counts()?;
        if self.wrote_since_replay {
            self.recovered();
            for (flush_id, error) in suspects {
                let attempts = self.outbox.record_failure(flush_id, &error)?;
                if attempts >= self.policy.quarantine_after {
                    let error = format!(
                        "failed {attempts} times while other writes went through; last: {error}"
                    );
                    self.quarantine(flush_id, &error)?;
                }
            }
        } else if let Some((_, error)) = suspects.first() {
            self.back_off();
            tracing::warn!(%error, outbox_views = self.outbox.depth(),
                "replay from the outbox failed; backing off");
        }
        self.wrote_since_replay = false;
        self.update_depth();
        if self.outbox.depth() == 0 && self.outbox.pending_counts() == 0 {
            tracing::info!("outbox replayed completely");
        }
        Ok(())
    }

    /// Writes the count rows waiting in the outbox (they need not wait for their views:
    /// those are safe in the outbox, and a total never goes backwards).
    fn replay_counts(&mut self) -> Result<(), StoreError> {
        if self.outbox.pending_counts() > 0 && !self.in_backoff() {
            let counts = self.outbox.counts()?;
            let flush = Flush {
                id: self.ids.timeuuid(super::epoch_millis()),
                views: Vec::new(),
                counts,
            };
            match self.remote.write_flush(&flush) {
                Ok(()) => {
                    self.outbox.counts_written(&flush.counts)?;
                    self.wrote_since_replay = true;
                }
                Err(error) => {
                    self.metrics.store_errors.inc();
                    self.back_off();
                    tracing::warn!(%error, "replaying counts from the outbox failed; backing off");
                }
            }
        }
        Ok(())
    }
}

impl<R: RemoteViewStore> ViewStore for ResilientStore<R> {
    fn write_views(&mut self, views: &[ViewRecord<'_>]) -> Result<Persisted, StoreError> {
        let flush =
            match self.unsettled.take() {
                Some(flush) if same_views(&flush, views) => flush,
                abandoned => {
                    if let Some(abandoned) = abandoned {
                        // Given up by the batch writer: its views are lost (and reported so),
                        // but some may have reached the cluster, so its totals stand.
                        tracing::warn!(views = abandoned.views.len(),
                        "a batch the outbox could not take was given up; its views stay counted");
                    }
                    self.ids.flush(views, &mut self.ledger)
                }
            };
        let result = self.settle(&flush);
        if result.is_err() {
            self.unsettled = Some(flush);
        }
        result
    }

    fn maintain(&mut self) {
        if self.recounted.elapsed() >= RECOUNT_EVERY {
            self.recounted = Instant::now();
            if let Err(error) = self.outbox.recount() {
                tracing::error!(%error, "cannot read the outbox");
            }
            self.update_depth();
        }
        let idle = self.outbox.depth() == 0 && self.outbox.pending_counts() == 0;
        if idle || self.in_backoff() {
            return;
        }
        if let Err(error) = self.replay() {
            tracing::error!(%error, "cannot read the outbox");
            self.back_off();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::collections::HashMap;

    /// A count row's key: (video, day, writer).
    type Tally = (String, i64, Uuid);

    /// A remote store that keeps rows by id and count rows by (video, day, writer) with the
    /// largest total (like the tables and their write timestamps), and fails while told to.
    #[derive(Clone, Default)]
    struct FakeCluster {
        rows: Arc<Mutex<HashMap<Uuid, PendingView>>>,
        totals: Arc<Mutex<HashMap<Tally, u64>>>,
        down: Arc<Mutex<bool>>,
        /// Fail only after writing this many rows of the next flush (a partial write).
        partial: Arc<Mutex<Option<usize>>>,
        /// Refuse every flush holding a view of this video: (video, permanently?).
        poison: Arc<Mutex<Option<(&'static str, bool)>>>,
        attempts: Arc<Mutex<u32>>,
    }

    impl RemoteViewStore for FakeCluster {
        fn write_flush(&mut self, flush: &Flush) -> Result<(), StoreError> {
            *self.attempts.lock() += 1;
            if *self.down.lock() {
                return Err(StoreError::Forced { retriable: true });
            }
            if let Some((video, permanent)) = *self.poison.lock() {
                if flush.views.iter().any(|view| view.video_id == video) {
                    return Err(StoreError::Forced {
                        retriable: !permanent,
                    });
                }
            }
            let mut rows = self.rows.lock();
            if let Some(written) = self.partial.lock().take() {
                for view in flush.views.iter().take(written) {
                    rows.insert(view.id, view.clone());
                }
                return Err(StoreError::Forced { retriable: true });
            }
            for view in &flush.views {
                rows.insert(view.id, view.clone());
            }
            let mut totals = self.totals.lock();
            for count in &flush.counts {
                let kept = totals
                    .entry((count.video_id.clone(), count.day, count.writer_id))
                    .or_default();
                *kept = (*kept).max(count.views);
            }
            Ok(())
        }
    }

    impl FakeCluster {
        fn count(&self, video_id: &str) -> u64 {
            self.totals
                .lock()
                .iter()
                .filter(|((video, _, _), _)| video == video_id)
                .map(|(_, count)| count)
                .sum()
        }
    }

    fn quick_policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            first_pause: Duration::from_millis(1),
            max_pause: Duration::from_millis(2),
            first_replay_backoff: Duration::from_millis(1),
            max_replay_backoff: Duration::from_millis(4),
            replay_flushes: 4,
            ..RetryPolicy::default()
        }
    }

    fn views(count: usize) -> Vec<ViewRecord<'static>> {
        let view = ViewRecord {
            video_id: "12345",
            viewer: Viewer::Address("198.51.100.7".parse().expect("ip")),
            timestamp_ms: 1_795_000_000_000,
        };
        vec![view; count]
    }

    fn store(cluster: &FakeCluster, dir: &Path) -> (ResilientStore<FakeCluster>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
        let outbox = Outbox::open(dir).expect("outbox");
        let store = ResilientStore::new(
            cluster.clone(),
            outbox,
            Arc::clone(&metrics),
            quick_policy(),
        );
        (store, metrics)
    }

    use crate::viewer::Viewer;
    use std::path::Path;

    fn drain(store: &mut ResilientStore<FakeCluster>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while (store.outbox_depth() > 0 || store.outbox_pending_counts() > 0)
            && Instant::now() < deadline
        {
            store.maintain();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn healthy_cluster_takes_flushes_directly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let (mut store, metrics) = store(&cluster, dir.path());
        store.write_views(&views(10)).expect("write");
        assert_eq!(cluster.count("12345"), 10);
        assert_eq!(cluster.rows.lock().len(), 10);
        assert_eq!(store.outbox_depth(), 0);
        assert_eq!(metrics.views_spilled.get(), 0);
    }

    #[test]
    fn an_unreachable_cluster_spills_everything_and_replay_loses_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        *cluster.down.lock() = true;
        let (mut store, metrics) = store(&cluster, dir.path());
        for _ in 0..5 {
            store.write_views(&views(7)).expect("spilled, not failed");
            store.maintain();
        }
        assert_eq!(store.outbox_depth(), 35);
        assert_eq!(metrics.outbox_depth.get(), 35);
        assert_eq!(metrics.views_spilled.get(), 35);
        assert!(metrics.store_retries.get() >= 1);
        assert_eq!(cluster.count("12345"), 0);

        *cluster.down.lock() = false;
        drain(&mut store);
        assert_eq!(store.outbox_depth(), 0);
        assert_eq!(metrics.views_replayed.get(), 35);
        assert_eq!(cluster.count("12345"), 35);
        assert_eq!(cluster.rows.lock().len(), 35);
    }

    #[test]
    fn a_partly_written_flush_is_replayed_without_duplicates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let (mut store, _) = store(&cluster, dir.path());
        // The first attempt writes 4 of 10 rows and times out; the retry succeeds.
        *cluster.partial.lock() = Some(4);
        store.write_views(&views(10)).expect("write");
        assert_eq!(cluster.rows.lock().len(), 10);
        assert_eq!(cluster.count("12345"), 10);

        // Partial write, then the cluster goes down: the flush goes to the outbox with the
        // same ids, and replaying it rewrites the 3 rows already there.
        *cluster.partial.lock() = Some(3);
        *cluster.down.lock() = false;
        let batch = views(6);
        store.policy.attempts = 1;
        store.write_views(&batch).expect("spilled");
        assert_eq!(store.outbox_depth(), 6);
        assert_eq!(cluster.rows.lock().len(), 13);
        drain(&mut store);
        assert_eq!(cluster.rows.lock().len(), 16);
        assert_eq!(cluster.count("12345"), 16);
    }

    #[test]
    fn a_batch_neither_the_cluster_nor_the_outbox_took_is_retried_under_the_same_ids() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let (mut store, _) = store(&cluster, dir.path());
        store.policy.attempts = 1;
        // 4 of 10 rows reach the cluster, then the outbox fails too (a full disk).
        *cluster.partial.lock() = Some(4);
        store.refuse_spills = true;
        let batch = views(10);
        assert!(store.write_views(&batch).is_err());
        assert_eq!(cluster.rows.lock().len(), 4);
        // The batch writer tries the same batch again: the same flush goes out.
        store.refuse_spills = false;
        store.quiet_until = None;
        store.write_views(&batch).expect("written");
        assert_eq!(cluster.rows.lock().len(), 10, "the 4 rows were overwritten");
        assert_eq!(cluster.count("12345"), 10, "counted once");
        // The next batch is a new flush.
        store.write_views(&views(3)).expect("written");
        assert_eq!(cluster.rows.lock().len(), 13);
        assert_eq!(cluster.count("12345"), 13);
    }

    fn views_of(video_id: &'static str, count: usize) -> Vec<ViewRecord<'static>> {
        let mut batch = views(count);
        batch.iter_mut().for_each(|view| view.video_id = video_id);
        batch
    }

    /// Spills a poisoned batch between two good ones, then heals the cluster but for the
    /// poison, and replays while live batches (one view each) go through.
    fn replay_around_a_poison(
        permanent: bool,
    ) -> (
        ResilientStore<FakeCluster>,
        FakeCluster,
        Arc<Metrics>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let (mut store, metrics) = store(&cluster, dir.path());
        *cluster.down.lock() = true;
        store.write_views(&views(3)).expect("spilled");
        store.write_views(&views_of("poison", 2)).expect("spilled");
        store.write_views(&views(4)).expect("spilled");
        assert_eq!(store.outbox_depth(), 9);
        *cluster.down.lock() = false;
        *cluster.poison.lock() = Some(("poison", permanent));
        for _ in 0..10 {
            store.quiet_until = None;
            store.maintain();
            store.write_views(&views_of("live", 1)).expect("live");
        }
        assert_eq!(
            cluster.count("live"),
            10,
            "live batches went straight through"
        );
        (store, cluster, metrics, dir)
    }

    #[test]
    fn a_flush_refused_for_good_is_quarantined_and_later_flushes_replay() {
        let (store, cluster, metrics, _dir) = replay_around_a_poison(true);
        assert_eq!(store.outbox_depth(), 0, "the flushes behind it replayed");
        assert_eq!(cluster.count("12345"), 7);
        assert_eq!(store.outbox.quarantined(), 2);
        assert_eq!(metrics.outbox_quarantined.get(), 2);
        let quarantined = store.outbox.quarantined_flushes().expect("list");
        assert_eq!(quarantined.len(), 1);
        assert_eq!(quarantined[0].views, 2);
        assert!(quarantined[0].error.contains("forced"), "{quarantined:?}");
    }

    #[test]
    fn a_flush_that_keeps_failing_while_others_go_through_is_quarantined() {
        let (mut store, cluster, _, _dir) = replay_around_a_poison(false);
        assert_eq!(store.outbox_depth(), 0);
        assert_eq!(cluster.count("12345"), 7);
        let quarantined = store.outbox.quarantined_flushes().expect("list");
        assert_eq!(quarantined.len(), 1);
        assert_eq!(quarantined[0].attempts, store.policy.quarantine_after);
        // Put back in line once the cluster takes it: it replays, counted once.
        *cluster.poison.lock() = None;
        assert!(store.outbox.release(quarantined[0].id).expect("release"));
        store.outbox.recount().expect("recount");
        drain(&mut store);
        assert_eq!(store.outbox.quarantined(), 0);
        assert_eq!(cluster.count("poison"), 2);
    }

    #[test]
    fn a_cluster_down_quarantines_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let (mut store, _) = store(&cluster, dir.path());
        *cluster.down.lock() = true;
        for _ in 0..3 {
            store.write_views(&views(2)).expect("spilled");
        }
        for _ in 0..50 {
            store.quiet_until = None;
            store.maintain();
        }
        assert_eq!(store.outbox.quarantined(), 0);
        assert_eq!(store.outbox_depth(), 6);
    }

    #[test]
    fn a_full_outbox_drops_batches_and_says_so_without_counting_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let (mut store, metrics) = store(&cluster, dir.path());
        *cluster.down.lock() = true;
        store.write_views(&views(5)).expect("spilled");
        let full = store.outbox.bytes().expect("size");
        store.policy.outbox_max_bytes = Some(full);
        store.quiet_until = None;
        assert_eq!(
            store.write_views(&views(3)).expect("answered"),
            Persisted::Dropped
        );
        assert_eq!(metrics.views_outbox_full.get(), 3);
        assert_eq!(store.outbox_depth(), 5);
        *cluster.down.lock() = false;
        store.quiet_until = None;
        store.write_views(&views(2)).expect("written");
        drain(&mut store);
        assert_eq!(
            cluster.count("12345"),
            7,
            "5 replayed + 2 written; the 3 dropped not counted"
        );
    }

    #[test]
    fn the_outbox_survives_a_restart_and_is_replayed_by_the_next_process() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        *cluster.down.lock() = true;
        {
            let (mut store, _) = store(&cluster, dir.path());
            store.write_views(&views(9)).expect("spilled");
        }
        *cluster.down.lock() = false;
        let (mut store, metrics) = store(&cluster, dir.path());
        assert_eq!(metrics.outbox_depth.get(), 9);
        drain(&mut store);
        assert_eq!(cluster.count("12345"), 9);
    }

    /// A cluster that cannot be reached at all.
    struct Unreachable {
        attempts: Arc<Mutex<u32>>,
    }

    impl RemoteViewStore for Unreachable {
        fn write_flush(&mut self, _: &Flush) -> Result<(), StoreError> {
            *self.attempts.lock() += 1;
            Err(StoreError::Unreachable {
                context: "still connecting",
                source: None,
            })
        }
    }

    #[test]
    fn an_unreachable_cluster_is_not_retried_on_the_spot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let attempts = Arc::new(Mutex::new(0));
        let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
        let remote = Unreachable {
            attempts: Arc::clone(&attempts),
        };
        let outbox = Outbox::open(dir.path()).expect("outbox");
        let mut store = ResilientStore::new(remote, outbox, Arc::clone(&metrics), quick_policy());
        store.write_views(&views(3)).expect("spilled");
        assert_eq!(*attempts.lock(), 1);
        assert_eq!(metrics.store_retries.get(), 0);
        assert_eq!(store.outbox_depth(), 3);
    }

    #[test]
    fn view_ids_are_unique_even_within_one_millisecond() {
        let ids = IdGenerator::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.timeuuid(1_795_000_000_000);
            assert_eq!(id.get_version_num(), 1);
            assert!(seen.insert(id), "duplicate {id}");
        }
    }
}
