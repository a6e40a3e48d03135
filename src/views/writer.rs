//! The consumer side of the views pipeline: one thread that batches views into the store.
//!
//! The writer owns its store outright (blocking database calls happen only here), so the
//! HTTP workers never wait on it. A batch is written when it holds
//! [`BatchLimits::max_views`] views or its oldest view is [`BatchLimits::max_age`] old.
//! When the writer falls behind (a full batch's worth or more is already queued when a
//! batch fills), the batch keeps growing, up to [`BACKLOG_GROWTH`] times `max_views`:
//! a store's cost is mostly per commit (an fsync, a round trip), so bigger batches are how
//! the writer catches up instead of letting the queue fill and views be dropped.
//! While a batch is open (nothing is due before its age limit) on a queue that can hold
//! [`COLLECT_TICK_MIN_QUEUE`] views or more (the default `--view-queue` can), the writer
//! does not wait in the channel but wakes every [`COLLECT_TICK`] and takes what came. A
//! receiver waiting in a crossbeam channel makes each sender wake it: a system call on the
//! HTTP worker for each view at moderate rates, and a wake-up of the writer per view
//! (`RATE=20000 bench/ab.sh` measures what that costs). The price: a full batch may wait
//! up to a tick, and what came in a tick counts as backlog when the batch fills.
//! A failed write is retried with capped, jittered exponential backoff until it succeeds;
//! meanwhile the bounded channel fills and the bus counts what it cannot take as dropped.
//!
//! A store that writes several batches at once (the ScyllaDB store) takes a batch in
//! flight ([`Persisted::InFlight`]): the writer keeps the batch's views aside and goes on
//! batching, and the store acknowledges it later ([`ViewStore::settled`], looked at every
//! turn), when the writer counts it persisted (or lost) and credits it. Retrying such a
//! batch is the store's business; the writer only batches and keeps the books.
//!
//! Shutdown: [`WriterHandle::shutdown`] is called once the HTTP server has stopped, so no
//! new view can be accepted, with the deadline of the whole stop; the writer then tells the
//! store (whose background work stops), drains the channel, writes the last batches, waits
//! for the batches in flight and exits, reporting what it persisted. If the store still
//! fails, it retries until that one deadline (not a budget per batch: with the disk full
//! and many batches queued, that took minutes) and reports every view it could not write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::ViewEvent;
use crate::backoff::{Backoff, Jitter};
use crate::metrics::Metrics;
use crate::store::{DayUpdate, Persisted, Settled, ViewRecord, ViewStore};

/// When a batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Write as soon as the batch holds this many views.
    pub max_views: usize,
    /// Write once the oldest view in the batch has waited this long.
    pub max_age: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_views: 1_000,
            max_age: Duration::from_millis(50),
        }
    }
}

/// How many times `max_views` a batch may grow to while a backlog is queued.
pub const BACKLOG_GROWTH: usize = 16;

/// Whether a batch wants writing after a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Open,
    Full,
}

/// Views waiting to be written, and when the oldest arrived.
struct Batch {
    views: Vec<ViewEvent>,
    opened_at: Option<Instant>,
    limits: BatchLimits,
    /// The size at which this batch is full: `max_views`, more while catching up.
    target: usize,
}

impl Batch {
    fn new(limits: BatchLimits) -> Self {
        Batch {
            views: Vec::with_capacity(limits.max_views),
            opened_at: None,
            limits,
            target: limits.max_views,
        }
    }

    fn push(&mut self, view: ViewEvent) -> Fill {
        self.opened_at.get_or_insert_with(Instant::now);
        self.views.push(view);
        if self.views.len() >= self.target {
            Fill::Full
        } else {
            Fill::Open
        }
    }

    /// Lets a full batch take more views when at least a batch's worth is queued behind
    /// it; returns whether it grew (and so is no longer full).
    fn grow_for_backlog(&mut self, queued: usize) -> bool {
        let ceiling = self.limits.max_views.saturating_mul(BACKLOG_GROWTH);
        if queued < self.limits.max_views || self.target >= ceiling {
            return false;
        }
        self.target = ceiling.min(self.views.len() + queued);
        self.target > self.views.len()
    }

    /// Whether the batch holds a view (and so has a deadline).
    fn is_open(&self) -> bool {
        self.opened_at.is_some()
    }

    /// When this batch must be written, if it holds anything.
    fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|opened| opened + self.limits.max_age)
    }

    fn clear(&mut self) {
        self.views.clear();
        self.opened_at = None;
        self.target = self.limits.max_views;
    }
}

/// Retry pacing for failed writes (full jitter, so a fleet of writers does not retry in
/// lockstep).
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// The longest the writer sleeps in the channel with nothing batched; bounds how long a
/// stop request waits to be noticed.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often the writer takes what is queued while a batch is open, on a queue large
/// enough (see [`BatchWriter::collects_by_tick`]).
const COLLECT_TICK: Duration = Duration::from_millis(2);
/// The smallest queue the writer collects from by tick: at one tick per 2 ms it holds 32
/// million views a second, far beyond what the HTTP workers can accept.
const COLLECT_TICK_MIN_QUEUE: usize = 65_536;

/// What the writer did over its life, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterReport {
    pub persisted: u64,
    pub failed: u64,
}

/// A batch the store took in flight, until it is settled.
struct InFlight {
    views: Vec<ViewEvent>,
    started: Instant,
    attempt: u32,
}

/// Drains the view channel into a [`ViewStore`].
pub struct BatchWriter<S: ViewStore> {
    receiver: Receiver<ViewEvent>,
    store: S,
    limits: BatchLimits,
    metrics: Arc<Metrics>,
    /// Set by [`WriterHandle::shutdown`]: drain what is queued, then exit.
    stopping: Arc<AtomicBool>,
    /// Set with `stopping`: after it, nothing more is written and what is left is lost.
    deadline: Arc<OnceLock<Instant>>,
    report: WriterReport,
    /// Batches the store took in flight, by ticket.
    in_flight: HashMap<u64, InFlight>,
}

/// Owns the writer thread.
pub struct WriterHandle {
    stopping: Arc<AtomicBool>,
    deadline: Arc<OnceLock<Instant>>,
    thread: JoinHandle<WriterReport>,
}

impl WriterHandle {
    /// Asks the writer to write everything queued by `deadline`, and waits for it to exit
    /// (shortly after the deadline at the latest, once a write in progress returns).
    pub fn shutdown(self, deadline: Instant) -> WriterReport {
        let _ = self.deadline.set(deadline);
        self.stopping.store(true, Ordering::Release);
        self.thread.thread().unpark();
        match self.thread.join() {
            Ok(report) => report,
            Err(_) => {
                tracing::error!("the batch writer thread panicked; queued views may be lost");
                WriterReport::default()
            }
        }
    }
}

impl<S: ViewStore> BatchWriter<S> {
    pub fn new(
        receiver: Receiver<ViewEvent>,
        store: S,
        limits: BatchLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        BatchWriter {
            receiver,
            store,
            limits,
            metrics,
            stopping: Arc::new(AtomicBool::new(false)),
            deadline: Arc::new(OnceLock::new()),
            report: WriterReport::default(),
            in_flight: HashMap::new(),
        }
    }

    /// Starts the writer on a thread of its own.
    pub fn spawn(self) -> std::io::Result<WriterHandle> {
        let stopping = Arc::clone(&self.stopping);
        let deadline = Arc::clone(&self.deadline);
        let thread = std::thread::Builder::new()
            .name("view-writer".into())
            .spawn(move || self.run())?;
        Ok(WriterHandle {
            stopping,
            deadline,
            thread,
        })
    }

    /// The writer loop; returns when stopped (and drained) or when every sender is gone.
    pub fn run(mut self) -> WriterReport {
        let mut batch = Batch::new(self.limits);
        loop {
            if self.stopping.load(Ordering::Acquire) {
                self.drain(&mut batch);
                break;
            }
            let wait = batch
                .deadline()
                .map_or(IDLE_POLL, |deadline| {
                    deadline.saturating_duration_since(Instant::now())
                })
                .min(IDLE_POLL);
            let disconnected = if batch.is_open() && self.collects_by_tick() {
                // A batch is open, so nothing is due before a tick: sleep off the channel
                // and take what came meanwhile. Waiting in the channel instead would make
                // every request that sends a view while the writer sleeps pay a futex
                // wake-up (a system call on the HTTP worker), for each view at moderate
                // rates. A stop unparks the thread.
                std::thread::park_timeout(wait.min(COLLECT_TICK));
                self.take_queued(&mut batch)
            } else {
                match self.receiver.recv_timeout(wait) {
                    Ok(view) => {
                        self.add(&mut batch, view);
                        self.take_queued(&mut batch)
                    }
                    Err(RecvTimeoutError::Timeout) => false,
                    Err(RecvTimeoutError::Disconnected) => true,
                }
            };
            if disconnected {
                self.drain(&mut batch);
                break;
            }
            if batch
                .deadline()
                .is_some_and(|deadline| deadline <= Instant::now())
            {
                self.flush(&mut batch);
            }
            self.store.maintain();
            self.acknowledge(Duration::ZERO);
        }
        self.report
    }

    /// Adds whatever is already queued, without sleeping between views; whether every
    /// sender is gone.
    fn take_queued(&mut self, batch: &mut Batch) -> bool {
        loop {
            match self.receiver.try_recv() {
                Ok(view) => self.add(batch, view),
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    /// Whether an open batch collects views by tick rather than by waiting in the channel:
    /// only on a queue that a tick of the fastest arrivals cannot fill, so a small
    /// `--view-queue` never drops a view for it.
    fn collects_by_tick(&self) -> bool {
        self.receiver
            .capacity()
            .is_some_and(|capacity| capacity >= COLLECT_TICK_MIN_QUEUE)
    }

    /// Adds a view; writes the batch when it is full and no backlog lets it grow.
    fn add(&mut self, batch: &mut Batch, view: ViewEvent) {
        if batch.push(view) == Fill::Full && !batch.grow_for_backlog(self.receiver.len()) {
            self.flush(batch);
        }
    }

    /// Writes everything still queued, and waits for the batches in flight (until the
    /// shutdown deadline, if there is one): what is still in flight then is lost.
    fn drain(&mut self, batch: &mut Batch) {
        if let Some(deadline) = self.deadline.get() {
            self.store.stopping(*deadline);
        }
        while let Ok(view) = self.receiver.try_recv() {
            self.add(batch, view);
        }
        self.flush(batch);
        while !self.in_flight.is_empty() {
            let left = self.time_left();
            if left.is_some_and(|left| left.is_zero()) {
                break;
            }
            self.acknowledge(left.unwrap_or(IDLE_POLL).min(IDLE_POLL));
        }
        let lost: usize = self.in_flight.values().map(|kept| kept.views.len()).sum();
        if lost > 0 {
            tracing::error!(
                views = lost,
                batches = self.in_flight.len(),
                "batches still in flight at the shutdown deadline are lost"
            );
            self.lose(lost as u64);
            self.in_flight.clear();
        }
    }

    /// Books the batches the store has settled since the last look (waiting up to `wait`
    /// for one while any are in flight).
    fn acknowledge(&mut self, wait: Duration) {
        if self.in_flight.is_empty() {
            return;
        }
        for Settled {
            ticket,
            outcome,
            at,
        } in self.store.settled(wait)
        {
            let Some(kept) = self.in_flight.remove(&ticket) else {
                tracing::warn!(ticket, "the store settled a batch the writer does not know");
                continue;
            };
            match outcome {
                Ok(Persisted::Dropped) => self.lose(kept.views.len() as u64),
                Ok(persisted) => {
                    let took = at.saturating_duration_since(kept.started);
                    self.persisted(&kept.views, persisted, took, kept.attempt);
                }
                Err(error) => {
                    tracing::error!(%error, views = kept.views.len(), "the store could not keep a batch of views");
                    self.lose(kept.views.len() as u64);
                }
            }
        }
    }

    /// How long is left before the shutdown deadline, once there is one.
    fn time_left(&self) -> Option<Duration> {
        self.deadline
            .get()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Counts a batch as lost (never written) and clears it.
    fn give_up(&mut self, batch: &mut Batch) {
        self.lose(batch.views.len() as u64);
        batch.clear();
    }

    fn lose(&mut self, views: u64) {
        self.metrics.views_failed.inc_by(views);
        self.report.failed += views;
    }

    /// Books a batch the store has: credited to the counts served if the store says so.
    fn persisted(
        &mut self,
        views: &[ViewEvent],
        persisted: Persisted,
        took: Duration,
        attempt: u32,
    ) {
        let count = views.len() as u64;
        if let Persisted::Counted(days) = persisted {
            credit_counts(views, &days);
        }
        self.metrics.views_persisted.inc_by(count);
        self.metrics.batch_size.observe(count as f64);
        self.metrics.flush_duration.observe(took.as_secs_f64());
        self.report.persisted += count;
        if attempt > 1 {
            tracing::info!(views = count, attempt, "batch written after retries");
        }
    }

    /// Writes the batch, retrying until it is committed (or, once stopping, until the
    /// shutdown deadline).
    fn flush(&mut self, batch: &mut Batch) {
        if batch.views.is_empty() {
            return;
        }
        if self.time_left().is_some_and(|left| left.is_zero()) {
            // Past the deadline: what is still queued is lost, and counted, not retried.
            return self.give_up(batch);
        }
        let started = Instant::now();
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_CAP, Jitter::Full);
        let records: Vec<ViewRecord<'_>> = batch.views.iter().map(ViewEvent::record).collect();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.store.submit_views(&records) {
                Ok(Persisted::Dropped) => {
                    // The store said why, once; the views are lost and counted so.
                    return self.give_up(batch);
                }
                Ok(Persisted::InFlight(ticket)) => {
                    // The store keeps its own copy; the views wait here to be booked.
                    let views = std::mem::replace(
                        &mut batch.views,
                        Vec::with_capacity(self.limits.max_views),
                    );
                    self.in_flight.insert(
                        ticket,
                        InFlight {
                            views,
                            started,
                            attempt,
                        },
                    );
                    break;
                }
                Ok(persisted) => {
                    self.persisted(&batch.views, persisted, started.elapsed(), attempt);
                    break;
                }
                Err(error) => {
                    self.metrics.store_errors.inc();
                    let time_left = self.time_left();
                    if !error.is_retriable() || time_left.is_some_and(|left| left.is_zero()) {
                        tracing::error!(%error, views = batch.views.len(), attempt, "giving up on a batch of views");
                        return self.give_up(batch);
                    }
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(%error, views = batch.views.len(), attempt, "store write failed; retrying");
                    }
                    let pause = backoff.next_pause();
                    // Parked, not asleep: a shutdown unparks the writer so that it meets
                    // the deadline instead of finishing a long backoff first.
                    std::thread::park_timeout(time_left.map_or(pause, |left| pause.min(left)));
                }
            }
        }
        batch.clear();
    }
}

/// Adds committed views to the counts served from memory, through the entries the views
/// were recorded against. A catalog reload gives a video's new entry the same counter as
/// its old one (see [`crate::video::Catalog::from_stored`]), so a view queued before a reload
/// still lands in the count served after it.
fn credit_counts(views: &[ViewEvent], days: &[DayUpdate]) {
    for view in views {
        view.video.add_persisted_views(1);
    }
    if days.is_empty() {
        return;
    }
    let mut entries: HashMap<&str, &ViewEvent> = HashMap::new();
    let mut previous: Option<&str> = None;
    for view in views {
        let video_id = view.video.video_id();
        // Runs of one video (the usual batch) hash once.
        if previous != Some(video_id) {
            entries.entry(video_id).or_insert(view);
            previous = Some(video_id);
        }
    }
    for day in days {
        if let Some(view) = entries.get(day.video_id.as_str()) {
            view.video
                .record_day(day.day, day.added, day.unique_viewers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use crate::video::{parse_stored_video, CatalogEntry, SEED_VIDEO_JSON};
    use crate::views::ViewBus;
    use parking_lot::Mutex;
    use std::net::{IpAddr, Ipv4Addr};

    /// An in-memory store that records batch sizes and fails on demand.
    #[derive(Clone, Default)]
    struct RecordingStore {
        batches: Arc<Mutex<Vec<usize>>>,
        failures_left: Arc<Mutex<u32>>,
        retriable: bool,
        /// Time every successful write takes (a slow disk).
        delay: Duration,
        /// Whether the store says its counts are read back from a shared database.
        counted_remotely: bool,
    }

    impl ViewStore for RecordingStore {
        fn write_views(&mut self, views: &[ViewRecord<'_>]) -> Result<Persisted, StoreError> {
            let mut failures = self.failures_left.lock();
            if *failures > 0 {
                *failures -= 1;
                return Err(StoreError::Forced {
                    retriable: self.retriable,
                });
            }
            std::thread::sleep(self.delay);
            self.batches.lock().push(views.len());
            Ok(if self.counted_remotely {
                Persisted::CountedRemotely
            } else {
                Persisted::Counted(Vec::new())
            })
        }
    }

    /// The sizes of the batches `store` has written, once there are `count` of them (or
    /// after 5 s, for the caller's assertion to report).
    fn wait_for_batches(store: &RecordingStore, count: usize) -> Vec<usize> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.batches.lock().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        store.batches.lock().clone()
    }

    /// A shutdown deadline far enough for any healthy test store.
    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn entry() -> Arc<CatalogEntry> {
        let video = parse_stored_video(SEED_VIDEO_JSON.as_bytes()).expect("seed");
        Arc::new(CatalogEntry::new(&video, 0))
    }

    fn view(video: &Arc<CatalogEntry>) -> ViewEvent {
        ViewEvent::now(
            Arc::clone(video),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &crate::viewer::ClientPrivacy::default(),
        )
    }

    fn setup(limits: BatchLimits, store: impl ViewStore) -> (ViewBus, WriterHandle, Arc<Metrics>) {
        setup_with_queue(limits, store, 10_000)
    }

    fn setup_with_queue(
        limits: BatchLimits,
        store: impl ViewStore,
        queue: usize,
    ) -> (ViewBus, WriterHandle, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
        let (bus, receiver) = ViewBus::new(queue, Arc::clone(&metrics));
        let writer = BatchWriter::new(receiver, store, limits, Arc::clone(&metrics));
        (bus, writer.spawn().expect("spawn writer"), metrics)
    }

    #[test]
    fn on_a_large_queue_an_open_batch_collects_by_tick_and_keeps_every_limit() {
        let store = RecordingStore::default();
        let limits = BatchLimits {
            max_views: 10,
            max_age: Duration::from_secs(1),
        };
        let (bus, handle, _) = setup_with_queue(limits, store.clone(), COLLECT_TICK_MIN_QUEUE);
        let video = entry();
        // Views that trickle in while a batch is open all land in it, written by age.
        let started = Instant::now();
        for _ in 0..6 {
            assert!(bus.record(view(&video)));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(wait_for_batches(&store, 1), vec![6]);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "written by age, not before"
        );
        // The size limit still writes at once, long before the age limit.
        let sent = Instant::now();
        for _ in 0..10 {
            assert!(bus.record(view(&video)));
        }
        assert_eq!(wait_for_batches(&store, 2), vec![6, 10]);
        assert!(sent.elapsed() < Duration::from_secs(1), "written by size");
        // A stop wakes the ticking writer, which writes what is left and reports it all.
        for _ in 0..5 {
            assert!(bus.record(view(&video)));
        }
        let stopping = Instant::now();
        let report = handle.shutdown(soon());
        assert!(stopping.elapsed() < Duration::from_secs(1));
        assert_eq!(store.batches.lock().clone(), vec![6, 10, 5]);
        assert_eq!(report.persisted, 21);
    }

    #[test]
    fn full_batches_are_written_at_the_size_limit() {
        let store = RecordingStore::default();
        let limits = BatchLimits {
            max_views: 10,
            max_age: Duration::from_secs(3600),
        };
        let (bus, handle, _) = setup(limits, store.clone());
        let video = entry();
        for _ in 0..10 {
            assert!(bus.record(view(&video)));
        }
        assert_eq!(
            wait_for_batches(&store, 1),
            vec![10],
            "written at 10, not aged"
        );
        for _ in 0..5 {
            assert!(bus.record(view(&video)));
        }
        let report = handle.shutdown(soon());
        assert_eq!(report.persisted, 15);
        assert_eq!(
            store.batches.lock().clone(),
            vec![10, 5],
            "the rest at shutdown"
        );
        assert_eq!(video.persisted_views(), 15);
    }

    #[test]
    fn per_day_counts_reported_by_the_store_reach_the_catalog_entry() {
        let video = entry();
        let views = vec![view(&video), view(&video)];
        let days = [
            DayUpdate {
                video_id: "12345".into(),
                day: 20_000,
                added: 2,
                unique_viewers: 1,
            },
            DayUpdate {
                video_id: "not-in-this-batch".into(),
                day: 20_000,
                added: 9,
                unique_viewers: 9,
            },
        ];
        credit_counts(&views, &days);
        credit_counts(
            &views[..1],
            &[DayUpdate {
                added: 1,
                unique_viewers: 2,
                ..days[0].clone()
            }],
        );
        assert_eq!(video.persisted_views(), 3);
        assert_eq!(video.day(20_000), (3, 2));
        assert_eq!(video.day(19_999), (0, 0));
    }

    #[test]
    fn views_a_shared_store_counts_are_not_credited_twice() {
        let store = RecordingStore {
            counted_remotely: true,
            ..RecordingStore::default()
        };
        let (bus, handle, _) = setup(BatchLimits::default(), store.clone());
        let video = entry();
        for _ in 0..7 {
            assert!(bus.record(view(&video)));
        }
        let report = handle.shutdown(soon());
        assert_eq!(report.persisted, 7);
        assert_eq!(store.batches.lock().iter().sum::<usize>(), 7);
        assert_eq!(
            video.persisted_views(),
            0,
            "the catalog watcher reads these counts back from the shared store"
        );
    }

    #[test]
    fn a_backlog_grows_batches_so_a_slow_store_catches_up() {
        // 20 ms per write and 100 views per batch would take 1 s for 5,000 views; with a
        // backlog queued, batches grow up to 16 × 100, so a handful of writes do it.
        let store = RecordingStore {
            delay: Duration::from_millis(20),
            ..RecordingStore::default()
        };
        let limits = BatchLimits {
            max_views: 100,
            max_age: Duration::from_millis(10),
        };
        let (bus, handle, metrics) = setup(limits, store.clone());
        let video = entry();
        for _ in 0..5_000 {
            assert!(bus.record(view(&video)));
        }
        let report = handle.shutdown(soon());
        assert_eq!(report.persisted, 5_000);
        assert_eq!(metrics.views_dropped.get(), 0);
        let batches = store.batches.lock().clone();
        assert_eq!(batches.iter().sum::<usize>(), 5_000);
        assert!(batches.len() < 20, "{} writes: {batches:?}", batches.len());
        assert!(batches.iter().any(|&size| size > 100), "{batches:?}");
        assert!(batches.iter().all(|&size| size <= 1_600), "{batches:?}");
    }

    #[test]
    fn a_batch_grows_only_while_a_batch_worth_is_queued() {
        let limits = BatchLimits {
            max_views: 10,
            max_age: Duration::from_secs(1),
        };
        let mut batch = Batch::new(limits);
        let video = entry();
        for _ in 0..9 {
            assert_eq!(batch.push(view(&video)), Fill::Open);
        }
        assert_eq!(batch.push(view(&video)), Fill::Full);
        assert!(
            !batch.grow_for_backlog(9),
            "less than a batch queued: write now"
        );
        assert!(batch.grow_for_backlog(25));
        for _ in 0..24 {
            assert_eq!(batch.push(view(&video)), Fill::Open);
        }
        assert_eq!(batch.push(view(&video)), Fill::Full, "grown to 10 + 25");
        assert!(batch.grow_for_backlog(1_000));
        assert_eq!(batch.target, 160, "never beyond 16 × max_views");
        batch.clear();
        assert_eq!(batch.target, 10);
    }

    #[test]
    fn a_partial_batch_is_written_when_it_ages() {
        let store = RecordingStore::default();
        let limits = BatchLimits {
            max_views: 1_000,
            max_age: Duration::from_millis(20),
        };
        let (bus, handle, metrics) = setup(limits, store.clone());
        let video = entry();
        for _ in 0..3 {
            bus.record(view(&video));
        }
        // Not a sleep for readiness: the writer must flush by age with no stop request.
        let deadline = Instant::now() + Duration::from_secs(5);
        while video.persisted_views() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(video.persisted_views(), 3, "aged batch was not flushed");
        assert_eq!(metrics.views_persisted.get(), 3);
        handle.shutdown(soon());
    }

    #[test]
    fn transient_failures_are_retried_until_written() {
        let store = RecordingStore {
            retriable: true,
            ..RecordingStore::default()
        };
        *store.failures_left.lock() = 3;
        let (bus, handle, metrics) = setup(BatchLimits::default(), store.clone());
        let video = entry();
        for _ in 0..50 {
            bus.record(view(&video));
        }
        let report = handle.shutdown(soon());
        assert_eq!(
            report,
            WriterReport {
                persisted: 50,
                failed: 0
            }
        );
        assert_eq!(metrics.store_errors.get(), 3);
        assert_eq!(video.persisted_views(), 50);
    }

    #[test]
    fn a_failing_store_cannot_hold_shutdown_past_its_deadline() {
        // The disk is full: every write fails, retriably. 100 batches are queued; with a
        // give-up budget per batch this took minutes. One deadline bounds them all.
        let store = RecordingStore {
            retriable: true,
            ..RecordingStore::default()
        };
        *store.failures_left.lock() = u32::MAX;
        let limits = BatchLimits {
            max_views: 10,
            max_age: Duration::from_millis(5),
        };
        let (bus, handle, metrics) = setup(limits, store.clone());
        let video = entry();
        for _ in 0..1_000 {
            assert!(bus.record(view(&video)));
        }
        let started = Instant::now();
        let report = handle.shutdown(started + Duration::from_millis(300));
        let took = started.elapsed();
        assert!(took < Duration::from_millis(800), "shutdown took {took:?}");
        assert_eq!(
            report,
            WriterReport {
                persisted: 0,
                failed: 1_000
            }
        );
        assert_eq!(metrics.views_failed.get(), 1_000);
    }

    /// A store that takes every batch in flight and settles it only once released, as a
    /// store writing several batches at once does.
    #[derive(Clone, Default)]
    struct InFlightStore {
        /// Batches taken and not settled: (ticket, views).
        pending: Arc<Mutex<Vec<(u64, usize)>>>,
        released: Arc<AtomicBool>,
        /// The deadline the writer told the store it is stopping by.
        stopping: Arc<Mutex<Option<Instant>>>,
        next_ticket: u64,
    }

    impl ViewStore for InFlightStore {
        fn write_views(&mut self, _: &[ViewRecord<'_>]) -> Result<Persisted, StoreError> {
            unreachable!("the writer submits")
        }

        fn submit_views(&mut self, views: &[ViewRecord<'_>]) -> Result<Persisted, StoreError> {
            self.next_ticket += 1;
            self.pending.lock().push((self.next_ticket, views.len()));
            Ok(Persisted::InFlight(self.next_ticket))
        }

        fn settled(&mut self, wait: Duration) -> Vec<Settled> {
            if !self.released.load(Ordering::Acquire) {
                std::thread::sleep(wait);
                return Vec::new();
            }
            self.pending
                .lock()
                .drain(..)
                .map(|(ticket, _)| Settled {
                    ticket,
                    outcome: Ok(Persisted::CountedRemotely),
                    at: Instant::now(),
                })
                .collect()
        }

        fn stopping(&mut self, deadline: Instant) {
            *self.stopping.lock() = Some(deadline);
        }
    }

    /// A writer over an [`InFlightStore`], given 25 views in batches of 10.
    fn twenty_five_views_in_flight() -> (InFlightStore, ViewBus, WriterHandle, Arc<Metrics>) {
        let store = InFlightStore::default();
        let limits = BatchLimits {
            max_views: 10,
            max_age: Duration::from_millis(5),
        };
        let (bus, handle, metrics) = setup(limits, store.clone());
        let video = entry();
        for _ in 0..25 {
            assert!(bus.record(view(&video)));
        }
        (store, bus, handle, metrics)
    }

    #[test]
    fn batches_in_flight_are_booked_when_settled_and_shutdown_waits_for_them() {
        let (store, bus, handle, metrics) = twenty_five_views_in_flight();
        eventually(|| {
            store
                .pending
                .lock()
                .iter()
                .map(|(_, views)| views)
                .sum::<usize>()
                == 25
        });
        assert_eq!(
            metrics.views_persisted.get(),
            0,
            "not before the store settles"
        );
        store.released.store(true, Ordering::Release);
        eventually(|| metrics.views_persisted.get() == 25);
        let video = entry();
        for _ in 0..5 {
            assert!(bus.record(view(&video)));
        }
        let deadline = soon();
        let report = handle.shutdown(deadline);
        assert_eq!(
            report,
            WriterReport {
                persisted: 30,
                failed: 0
            }
        );
        assert_eq!(*store.stopping.lock(), Some(deadline), "the store was told");
    }

    #[test]
    fn batches_still_in_flight_at_the_deadline_are_counted_lost() {
        let (_store, _bus, handle, metrics) = twenty_five_views_in_flight();
        let started = Instant::now();
        let report = handle.shutdown(started + Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_millis(600));
        assert_eq!(
            report,
            WriterReport {
                persisted: 0,
                failed: 25
            }
        );
        assert_eq!(metrics.views_failed.get(), 25);
    }

    /// Polls `done` for up to 5 s.
    fn eventually(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn permanent_failures_are_counted_not_retried_forever() {
        let store = RecordingStore {
            retriable: false,
            ..RecordingStore::default()
        };
        *store.failures_left.lock() = 1;
        let (bus, handle, metrics) = setup(BatchLimits::default(), store.clone());
        let video = entry();
        for _ in 0..5 {
            bus.record(view(&video));
        }
        let report = handle.shutdown(soon());
        assert_eq!(report.persisted + report.failed, 5);
        assert_eq!(metrics.views_failed.get(), report.failed);
        assert_eq!(video.persisted_views(), report.persisted);
    }

    #[test]
    fn a_full_channel_drops_without_blocking() {
        let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
        let (bus, _receiver) = ViewBus::new(2, Arc::clone(&metrics));
        let video = entry();
        assert!(bus.record(view(&video)));
        assert!(bus.record(view(&video)));
        assert!(!bus.record(view(&video)));
        assert_eq!(metrics.views_accepted.get(), 2);
        assert_eq!(metrics.views_dropped.get(), 1);
    }
}
