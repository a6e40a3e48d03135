//! Writing views to a remote store without ever losing one: retries, spill, replay.
//!
//! ```text
//!               submit: ids and totals, once per batch
//!  BatchWriter ───────────────────────────────▶ ResilientStore ──Job──▶ flush workers (≤ N flushes at once)
//!       ▲  acknowledgement: Settled per batch      │     ▲              │ write_flush, retried with
//!       └──────────────────────────────────────────┘     └────Done──────┘ capped, jittered backoff
//!                                                  │ what failed                  ▼
//!                                                  ▼                       RemoteViewStore (ScyllaDB)
//!                                 Outbox (SQLite under --data-dir)                ▲
//!                                                  └──── replay worker ───────────┘
//!                                                        (own thread, own connection, paced)
//! ```
//!
//! Batching, retrying and acknowledging are kept apart, as in Vector's sinks: the batch
//! writer batches; this store retries, in one place (a flush worker tries a flush a few
//! times, the outbox keeps what still failed, the replay worker writes it later); and each
//! batch is acknowledged back to the writer ([`Settled`]) once it is in the cluster or in
//! the outbox, or lost and said so.
//!
//! Each batch becomes a [`Flush`] with stable ids (a time-based id per view, one for the
//! flush) and its count rows when it is submitted, on the batch writer's thread, before its
//! first attempt. It keeps them through retries, spill and replay, so whatever part of it
//! reached the cluster before is overwritten, not duplicated.
//!
//! Up to `flushes_in_flight` flushes are written at once, each by a flush worker thread
//! with its own handle on the cluster (one session). Their order does not matter to the
//! counts: when a batch becomes a flush, this writer's [`CountLedger`] adds it to its
//! running totals, and the flush carries the rows holding them, written with the total as
//! their timestamp, so the cluster keeps the largest total whatever order the flushes land
//! in; writing a row again (a retry, a replay, an older row arriving late) changes nothing.
//! A flush that fails is kept in the [`Outbox`] on its own while the others go on; while
//! the cluster is failing (in backoff after a failure) a batch goes to the outbox at once,
//! untried. HTTP never notices.
//!
//! The outbox is replayed by a worker of its own ([`super::replay`]), oldest first at a
//! bounded rate, so live batches never wait behind it: they go to the cluster as soon as it
//! answers. The outbox keeps only the newest total of each tally and replays it apart from
//! the views.
//!
//! A flush is dropped (the outbox full at `--outbox-max-bytes`) only while it is the newest
//! flush formed: its views are then taken back out of the totals, and no later flush can
//! have carried them. While the outbox is full, flushes go one at a time so that this
//! holds; an outbox that fills up with flushes in flight may go over its limit by those.
//! If neither the cluster nor the outbox takes a flush (a full disk), it stays in flight
//! with its ids and totals and is tried again, cluster or outbox, whenever the batch writer
//! calls; once `flushes_in_flight` of them wait, new batches are refused (the writer backs
//! off, the view channel fills). What is still in flight at the shutdown deadline is
//! reported lost, its totals left standing (some of it may have reached the cluster).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use uuid::timestamp::context::ContextV1;
use uuid::{Timestamp, Uuid};

use super::ledger::CountLedger;
use super::outbox::{Flush, Outbox, OutboxTally, PendingView};
use super::replay::{ReplayWaker, ReplayWorker};
use super::{Persisted, Settled, StoreError, ViewRecord, ViewStore};
use crate::backoff::{Backoff, Jitter};
use crate::metrics::Metrics;

/// A remote database that takes whole flushes. Writes must be idempotent by the flush's
/// ids: the same flush may be written more than once. A clone is another handle on the
/// same database: each flush worker and the replay worker write through one of their own.
pub trait RemoteViewStore: Clone + Send + 'static {
    fn write_flush(&mut self, flush: &Flush) -> Result<(), StoreError>;
}

/// Flushes written at once by default (`--scylla-flushes-in-flight`): enough that a slow
/// replica or a long tail of one flush does not hold back the next, few enough that a
/// struggling cluster sees a bounded load (each flush is itself up to
/// `--scylla-max-in-flight` concurrent requests).
pub const DEFAULT_FLUSHES_IN_FLIGHT: usize = 4;

/// Views replayed from the outbox per second at most, by default (`--outbox-replay-rate`):
/// well under what one node took in `bench/cql_throughput.sh` (about 54,000 views/s), so a
/// cluster that has just come back serves live writes first; an hour's outbox at 1,000
/// views/s drains in three minutes.
pub const DEFAULT_REPLAY_VIEWS_PER_SECOND: u32 = 20_000;

/// How hard to try before spilling, how patiently to replay, and how much at once.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts of a fresh flush before it is spilled.
    pub attempts: u32,
    /// First pause between attempts; doubled each time up to `max_pause`.
    pub first_pause: Duration,
    pub max_pause: Duration,
    /// First wait before writing to a failing cluster again (and before replaying, and
    /// between passes of a replay that moves nothing); doubled up to `max_replay_backoff`.
    pub first_replay_backoff: Duration,
    pub max_replay_backoff: Duration,
    /// Flushes the replay worker reads from the outbox at a time.
    pub replay_flushes: usize,
    /// Views replayed per second at most (`--outbox-replay-rate`); `None`: as fast as the
    /// cluster takes them.
    pub replay_views_per_second: Option<NonZeroU32>,
    /// Failed replays after which a flush is quarantined, when other writes go through
    /// (a permanent error quarantines it at once).
    pub quarantine_after: u64,
    /// The outbox's size limit (`--outbox-max-bytes`): beyond it, batches that cannot
    /// reach the cluster are dropped and counted, never silently.
    pub outbox_max_bytes: Option<u64>,
    /// Flushes written at once (`--scylla-flushes-in-flight`); at least 1.
    pub flushes_in_flight: usize,
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
            replay_views_per_second: NonZeroU32::new(DEFAULT_REPLAY_VIEWS_PER_SECOND),
            quarantine_after: 5,
            outbox_max_bytes: None,
            flushes_in_flight: DEFAULT_FLUSHES_IN_FLIGHT,
        }
    }
}

/// How long the writer's thread waits for a flush worker at a time when every slot is
/// taken (it looks again at flushes waiting to be tried meanwhile).
const SLOT_WAIT: Duration = Duration::from_millis(100);

/// What the flush workers and the replay worker know of the cluster, shared: whether it is
/// failing (nothing is sent to it until a backoff has passed) and how many writes it took.
pub(super) struct ClusterHealth {
    successes: AtomicU64,
    pace: Mutex<Pace>,
    /// Woken when the cluster takes a write after failing: the outbox can move again.
    replay: OnceLock<ReplayWaker>,
}

struct Pace {
    quiet_until: Option<Instant>,
    backoff: Backoff,
}

impl ClusterHealth {
    fn new(policy: &RetryPolicy) -> Self {
        ClusterHealth {
            successes: AtomicU64::new(0),
            pace: Mutex::new(Pace {
                quiet_until: None,
                backoff: Backoff::new(
                    policy.first_replay_backoff,
                    policy.max_replay_backoff,
                    Jitter::Equal,
                ),
            }),
            replay: OnceLock::new(),
        }
    }

    /// The cluster took a write: any backoff is over.
    pub(super) fn succeeded(&self) {
        self.successes.fetch_add(1, Ordering::AcqRel);
        let was_failing = {
            let mut pace = self.pace.lock();
            pace.backoff.reset();
            pace.quiet_until.take().is_some()
        };
        if was_failing {
            if let Some(replay) = self.replay.get() {
                replay.wake();
            }
        }
    }

    /// A write failed: nothing more is sent before a backoff, longer after each failure
    /// that follows one. Failures of writes sent before the backoff began (other flushes
    /// in flight) do not lengthen it.
    pub(super) fn failed(&self) {
        let mut pace = self.pace.lock();
        let now = Instant::now();
        if pace.quiet_until.is_some_and(|until| until > now) {
            return;
        }
        let pause = pace.backoff.next_pause();
        pace.quiet_until = Some(now + pause);
    }

    /// How long the backoff still lasts, if one is on.
    pub(super) fn quiet_for(&self) -> Option<Duration> {
        self.pace
            .lock()
            .quiet_until
            .map(|until| until.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    pub(super) fn in_backoff(&self) -> bool {
        self.quiet_for().is_some()
    }

    /// Writes the cluster took so far, live or replayed.
    pub(super) fn successes(&self) -> u64 {
        self.successes.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(super) fn forget_backoff(&self) {
        self.pace.lock().quiet_until = None;
    }
}

/// Shows what the outbox holds in `/metrics`.
pub(super) fn show_outbox(metrics: &Metrics, tally: OutboxTally) {
    metrics
        .outbox_depth
        .set(i64::try_from(tally.depth).unwrap_or(i64::MAX));
    metrics
        .outbox_quarantined
        .set(i64::try_from(tally.quarantined).unwrap_or(i64::MAX));
}

/// Gives views and flushes their time-based ids.
pub(super) struct IdGenerator {
    node: [u8; 6],
    context: ContextV1,
}

impl IdGenerator {
    pub(super) fn new() -> Self {
        let mut node = [0u8; 6];
        node.iter_mut().for_each(|byte| *byte = fastrand::u8(..));
        // The multicast bit marks a node id that is random rather than a MAC address.
        node[0] |= 0x01;
        IdGenerator {
            node,
            context: ContextV1::new(fastrand::u16(..)),
        }
    }

    pub(super) fn timeuuid(&self, timestamp_ms: i64) -> Uuid {
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

/// Writes a flush once. A panic in the driver must lose neither the flush nor the thread
/// writing it: it becomes a failed write (the flush is kept in the outbox, and one that
/// keeps failing so is quarantined like any other).
pub(super) fn write_once<R: RemoteViewStore>(
    remote: &mut R,
    flush: &Flush,
) -> Result<(), StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| remote.write_flush(flush)))
        .unwrap_or(Err(StoreError::WritePanicked))
}

/// Tries a fresh flush a few times, pausing with full jitter between attempts.
fn write_with_retries<R: RemoteViewStore>(
    remote: &mut R,
    flush: &Flush,
    policy: &RetryPolicy,
    metrics: &Metrics,
) -> Result<(), StoreError> {
    let mut backoff = Backoff::new(policy.first_pause, policy.max_pause, Jitter::Full);
    let mut attempt = 1;
    loop {
        match write_once(remote, flush) {
            Ok(()) => return Ok(()),
            // An unreachable cluster is not retried at once: the connection attempt goes
            // on in the background and the backoff paces the next try.
            Err(error)
                if error.is_retriable()
                    && !matches!(error, StoreError::Unreachable { .. })
                    && attempt < policy.attempts =>
            {
                metrics.store_errors.inc();
                metrics.store_retries.inc();
                std::thread::sleep(backoff.next_pause());
                attempt += 1;
            }
            Err(error) => {
                metrics.store_errors.inc();
                return Err(error);
            }
        }
    }
}

/// A flush for a flush worker, under the ticket the batch writer knows its batch by.
struct Job {
    ticket: u64,
    flush: Flush,
}

/// A flush back from a worker: in the cluster, or not (then it goes to the outbox).
struct Done {
    ticket: u64,
    flush: Flush,
    result: Result<(), StoreError>,
    finished: Instant,
}

/// The threads that write flushes to the cluster, one flush each at a time.
struct FlushWorkers {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl FlushWorkers {
    fn spawn<R: RemoteViewStore>(
        remote: &R,
        count: usize,
        policy: RetryPolicy,
        metrics: &Arc<Metrics>,
        health: &Arc<ClusterHealth>,
    ) -> std::io::Result<FlushWorkers> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        let (report, done) = crossbeam_channel::unbounded::<Done>();
        let mut workers = FlushWorkers {
            jobs: Some(jobs),
            done,
            threads: Vec::with_capacity(count),
        };
        for index in 0..count {
            let (mut remote, queue, report) = (remote.clone(), queue.clone(), report.clone());
            let (metrics, health) = (Arc::clone(metrics), Arc::clone(health));
            let thread = std::thread::Builder::new()
                .name(format!("view-flush-{index}"))
                .spawn(move || {
                    for Job { ticket, flush } in queue {
                        let result = write_with_retries(&mut remote, &flush, &policy, &metrics);
                        match &result {
                            Ok(()) => health.succeeded(),
                            Err(_) => health.failed(),
                        }
                        if report
                            .send(Done {
                                ticket,
                                flush,
                                result,
                                finished: Instant::now(),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Hands a job to a worker; gives it back if none is left to take it.
    fn send(&self, job: Job) -> Result<(), Job> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|refused| refused.into_inner()),
            None => Err(job),
        }
    }
}

impl Drop for FlushWorkers {
    /// Lets the workers finish the flushes they hold, then joins them.
    fn drop(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a flush worker panicked");
            }
        }
    }
}

/// A flush neither the cluster nor the outbox took, waiting to be tried again.
struct Unsettled {
    ticket: u64,
    flush: Flush,
    error: String,
    next_try: Instant,
    backoff: Backoff,
}

/// A [`ViewStore`] over a remote store, with a local outbox that never lets a view go.
pub struct ResilientStore {
    outbox: Outbox,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
    ids: IdGenerator,
    /// This writer's running totals.
    ledger: CountLedger,
    health: Arc<ClusterHealth>,
    workers: FlushWorkers,
    replay: ReplayWorker,
    /// Flushes submitted and not settled yet (at a worker, or waiting to be tried again).
    in_flight: usize,
    next_ticket: u64,
    /// The newest flush formed: the only one that may be dropped (see the module doc).
    newest_formed: Option<Uuid>,
    unsettled: VecDeque<Unsettled>,
    /// Outcomes the batch writer has not collected yet.
    settled: Vec<Settled>,
    /// The outbox had reached its limit when last looked at: flushes go one at a time.
    outbox_full: bool,
    /// When a dropped batch (outbox full) was last logged.
    dropped_logged: Option<Instant>,
    /// Makes the outbox refuse every flush (a full disk, in tests).
    #[cfg(test)]
    refuse_spills: bool,
}

impl ResilientStore {
    /// Starts the flush workers and the replay worker (on a second connection to
    /// `outbox`), each with its own clone of `remote`.
    pub fn new<R: RemoteViewStore>(
        remote: R,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
    ) -> Result<Self, StoreError> {
        show_outbox(&metrics, outbox.tally());
        let health = Arc::new(ClusterHealth::new(&policy));
        let thread = |name: &'static str| move |source| StoreError::Thread { name, source };
        let workers = FlushWorkers::spawn(
            &remote,
            policy.flushes_in_flight.max(1),
            policy,
            &metrics,
            &health,
        )
        .map_err(thread("flush worker"))?;
        let replay = ReplayWorker::spawn(
            remote,
            outbox.another_connection()?,
            Arc::clone(&metrics),
            policy,
            Arc::clone(&health),
        )
        .map_err(thread("outbox replay"))?;
        let _ = health.replay.set(replay.waker());
        Ok(ResilientStore {
            outbox,
            metrics,
            policy,
            ids: IdGenerator::new(),
            ledger: CountLedger::default(),
            health,
            workers,
            replay,
            in_flight: 0,
            next_ticket: 0,
            newest_formed: None,
            unsettled: VecDeque::new(),
            settled: Vec::new(),
            outbox_full: false,
            dropped_logged: None,
            #[cfg(test)]
            refuse_spills: false,
        })
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

    /// Forms the batch's flush and sends it on its way: to a flush worker (answered
    /// `InFlight`), or, while the cluster is failing, to the outbox at once.
    fn submit(&mut self, views: &[ViewRecord<'_>]) -> Result<Persisted, StoreError> {
        self.collect(None);
        self.look_at_outbox_room();
        loop {
            let room = if self.outbox_full {
                1
            } else {
                self.policy.flushes_in_flight.max(1)
            };
            if self.in_flight < room {
                break;
            }
            if let Some(waiting) = self.unsettled.front() {
                // Nothing takes views: refuse the batch before it gets ids or totals.
                return Err(StoreError::Unsettled {
                    flushes: self.unsettled.len(),
                    last: waiting.error.clone(),
                });
            }
            self.collect(Some(Instant::now() + SLOT_WAIT));
        }
        let flush = self.ids.flush(views, &mut self.ledger);
        self.newest_formed = Some(flush.id);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        if self.health.in_backoff() {
            // The cluster is failing: to the outbox, untried.
            return match self.spill(&flush) {
                Ok(persisted) => Ok(persisted),
                Err(error) => {
                    self.in_flight += 1;
                    self.try_again_later(ticket, flush, &error);
                    Ok(Persisted::InFlight(ticket))
                }
            };
        }
        self.in_flight += 1;
        self.dispatch(ticket, flush);
        Ok(Persisted::InFlight(ticket))
    }

    /// Sends a flush (counted in flight) to a worker; with none left (they panicked), it
    /// is treated as a failed write: kept in the outbox, where the replay worker finds it.
    fn dispatch(&mut self, ticket: u64, flush: Flush) {
        if let Err(Job { ticket, flush }) = self.workers.send(Job { ticket, flush }) {
            self.returned(Done {
                ticket,
                flush,
                result: Err(StoreError::FlushWorkersGone),
                finished: Instant::now(),
            });
        }
    }

    /// Takes back the flushes the workers are done with (waiting until `until` for one,
    /// if given and any are out), after trying again those nothing took.
    fn collect(&mut self, until: Option<Instant>) {
        self.retry_unsettled();
        let mut done: Vec<Done> = self.workers.done.try_iter().collect();
        if let Some(until) = until.filter(|_| done.is_empty() && self.in_flight > 0) {
            let until = self
                .unsettled
                .iter()
                .map(|waiting| waiting.next_try)
                .fold(until, Instant::min);
            if let Ok(first) = self.workers.done.recv_deadline(until) {
                done.push(first);
                done.extend(self.workers.done.try_iter());
            }
        }
        for flush in done {
            self.returned(flush);
        }
    }

    /// A flush back from a worker: settled, or spilled to the outbox.
    fn returned(
        &mut self,
        Done {
            ticket,
            flush,
            result,
            finished,
        }: Done,
    ) {
        let Err(error) = result else {
            return self.settle_at(ticket, Ok(Persisted::CountedRemotely), finished);
        };
        if error.is_retriable() {
            tracing::warn!(%error, views = flush.views.len(),
                "remote store failing; spilling the batch to the outbox");
        } else {
            tracing::error!(%error, views = flush.views.len(),
                "remote store refused the batch (permanent error); kept in the outbox");
        }
        match self.spill(&flush) {
            Ok(persisted) => self.settle(ticket, Ok(persisted)),
            Err(error) => self.try_again_later(ticket, flush, &error),
        }
    }

    fn settle(&mut self, ticket: u64, outcome: Result<Persisted, StoreError>) {
        self.settle_at(ticket, outcome, Instant::now());
    }

    fn settle_at(&mut self, ticket: u64, outcome: Result<Persisted, StoreError>, at: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.settled.push(Settled {
            ticket,
            outcome,
            at,
        });
    }

    fn try_again_later(&mut self, ticket: u64, flush: Flush, error: &StoreError) {
        tracing::error!(%error, views = flush.views.len(),
            "neither the cluster nor the outbox took a batch; trying it again");
        let mut backoff = Backoff::new(
            self.policy.first_replay_backoff,
            self.policy.max_replay_backoff,
            Jitter::Full,
        );
        self.unsettled.push_back(Unsettled {
            ticket,
            flush,
            error: error.to_string(),
            next_try: Instant::now() + backoff.next_pause(),
            backoff,
        });
    }

    /// Tries again the flushes nothing took whose pause is over: the cluster if it is not
    /// in backoff (the same flush: same ids, same totals), else the outbox.
    fn retry_unsettled(&mut self) {
        let now = Instant::now();
        for _ in 0..self.unsettled.len() {
            let Some(mut waiting) = self.unsettled.pop_front() else {
                break;
            };
            if waiting.next_try > now {
                self.unsettled.push_back(waiting);
                continue;
            }
            if !self.health.in_backoff() {
                self.dispatch(waiting.ticket, waiting.flush);
                continue;
            }
            match self.spill(&waiting.flush) {
                Ok(persisted) => self.settle(waiting.ticket, Ok(persisted)),
                Err(error) => {
                    waiting.error = error.to_string();
                    waiting.next_try = now + waiting.backoff.next_pause();
                    self.unsettled.push_back(waiting);
                }
            }
        }
    }

    /// Once the outbox was full: whether the replay worker has made room since.
    fn look_at_outbox_room(&mut self) {
        if let (true, Some(limit)) = (self.outbox_full, self.policy.outbox_max_bytes) {
            self.outbox_full = self.outbox.bytes().map_or(true, |size| size >= limit);
        }
    }

    /// Keeps a flush in the outbox. When the outbox is full and the flush is the newest
    /// formed, it is dropped instead, its views taken back out of the totals, and
    /// `Persisted::Dropped` says so; an older one is kept over the limit (a later flush
    /// counted its views).
    fn spill(&mut self, flush: &Flush) -> Result<Persisted, StoreError> {
        #[cfg(test)]
        if self.refuse_spills {
            return Err(StoreError::Forced { retriable: true });
        }
        if let Some(limit) = self.policy.outbox_max_bytes {
            let size = self.outbox.bytes()?;
            self.outbox_full = size >= limit;
            if self.outbox_full && self.newest_formed == Some(flush.id) {
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
        show_outbox(&self.metrics, self.outbox.tally());
        if let Some(replay) = self.health.replay.get() {
            replay.wake();
        }
        Ok(Persisted::CountedRemotely)
    }
}

impl ViewStore for ResilientStore {
    /// Submits the batch and waits until it is settled.
    fn write_views(&mut self, views: &[ViewRecord<'_>]) -> Result<Persisted, StoreError> {
        let ticket = match self.submit(views)? {
            Persisted::InFlight(ticket) => ticket,
            settled => return Ok(settled),
        };
        loop {
            self.collect(Some(Instant::now() + SLOT_WAIT));
            if let Some(at) = self.settled.iter().position(|done| done.ticket == ticket) {
                return self.settled.remove(at).outcome;
            }
        }
    }

    fn submit_views(&mut self, views: &[ViewRecord<'_>]) -> Result<Persisted, StoreError> {
        self.submit(views)
    }

    fn settled(&mut self, wait: Duration) -> Vec<Settled> {
        self.collect((!wait.is_zero()).then(|| Instant::now() + wait));
        std::mem::take(&mut self.settled)
    }

    /// Asks the replay worker to stop now, so that it writes nothing more while the last
    /// batches go out; the store waits for it (until `deadline`) when it is dropped.
    fn stopping(&mut self, deadline: Instant) {
        self.replay.ask_to_stop(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::replay::{Pacer, Replayer};
    use crate::viewer::Viewer;
    use std::collections::HashMap;
    use std::path::Path;

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
        /// How long each write takes.
        delay: Arc<Mutex<Duration>>,
        /// The flushes with views the cluster took, in the order it took them.
        taken: Arc<Mutex<Vec<Uuid>>>,
        /// Panic on every flush holding a view of this video.
        crash: Arc<Mutex<Option<&'static str>>>,
    }

    impl RemoteViewStore for FakeCluster {
        fn write_flush(&mut self, flush: &Flush) -> Result<(), StoreError> {
            let delay = *self.delay.lock();
            std::thread::sleep(delay);
            if let Some(video) = *self.crash.lock() {
                assert!(
                    flush.views.iter().all(|view| view.video_id != video),
                    "a driver bug, forced"
                );
            }
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
            if !flush.views.is_empty() {
                self.taken.lock().push(flush.id);
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

        fn rows_of(&self, video_id: &str) -> usize {
            self.rows
                .lock()
                .values()
                .filter(|view| view.video_id == video_id)
                .count()
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
            replay_views_per_second: None,
            ..RetryPolicy::default()
        }
    }

    fn views_of(video_id: &'static str, count: usize) -> Vec<ViewRecord<'static>> {
        let view = ViewRecord {
            video_id,
            viewer: Viewer::Address("198.51.100.7".parse().expect("ip")),
            timestamp_ms: 1_795_000_000_000,
        };
        vec![view; count]
    }

    fn views(count: usize) -> Vec<ViewRecord<'static>> {
        views_of("12345", count)
    }

    fn store_with(
        cluster: &FakeCluster,
        dir: &Path,
        policy: RetryPolicy,
    ) -> (ResilientStore, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
        let outbox = Outbox::open(dir).expect("outbox");
        let store = ResilientStore::new(cluster.clone(), outbox, Arc::clone(&metrics), policy)
            .expect("store");
        (store, metrics)
    }

    fn store(cluster: &FakeCluster, dir: &Path) -> (ResilientStore, Arc<Metrics>) {
        store_with(cluster, dir, quick_policy())
    }

    /// Waits (up to 5 s) for the replay worker to empty the outbox.
    fn drain(store: &ResilientStore) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while (store.outbox_depth() > 0 || store.outbox_pending_counts() > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(store.outbox_depth(), 0, "the outbox did not drain");
        assert_eq!(store.outbox_pending_counts(), 0, "the counts did not drain");
    }

    /// Collects what the store settles until every one of `tickets` is among it.
    fn wait_for(store: &mut ResilientStore, tickets: &[u64]) -> Vec<Persisted> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen: HashMap<u64, Persisted> = HashMap::new();
        while tickets.iter().any(|ticket| !seen.contains_key(ticket)) {
            assert!(
                Instant::now() < deadline,
                "never settled: {tickets:?} ({seen:?})"
            );
            for done in store.settled(Duration::from_millis(10)) {
                seen.insert(done.ticket, done.outcome.expect("settled"));
            }
        }
        tickets
            .iter()
            .filter_map(|ticket| seen.remove(ticket))
            .collect()
    }

    fn ticket(persisted: Persisted) -> u64 {
        match persisted {
            Persisted::InFlight(ticket) => ticket,
            other => panic!("settled at once: {other:?}"),
        }
    }

    #[test]
    fn healthy_cluster_takes_flushes_directly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let (mut store, metrics) = store(&cluster, dir.path());
        assert_eq!(
            store.write_views(&views(10)).expect("write"),
            Persisted::CountedRemotely
        );
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
        }
        assert_eq!(store.outbox_depth(), 35);
        assert_eq!(metrics.outbox_depth.get(), 35);
        assert_eq!(metrics.views_spilled.get(), 35);
        assert!(metrics.store_retries.get() >= 1);
        assert_eq!(cluster.count("12345"), 0);

        *cluster.down.lock() = false;
        drain(&store);
        assert_eq!(metrics.views_replayed.get(), 35);
        let deadline = Instant::now() + Duration::from_secs(1);
        while metrics.outbox_depth.get() != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(metrics.outbox_depth.get(), 0);
        assert_eq!(cluster.count("12345"), 35);
        assert_eq!(cluster.rows.lock().len(), 35);
    }

    #[test]
    fn a_partly_written_flush_is_replayed_without_duplicates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        {
            let (mut store, _) = store(&cluster, dir.path());
            // The first attempt writes 4 of 10 rows and times out; the retry succeeds.
            *cluster.partial.lock() = Some(4);
            store.write_views(&views(10)).expect("write");
            assert_eq!(cluster.rows.lock().len(), 10);
            assert_eq!(cluster.count("12345"), 10);
        }
        // One attempt only: 3 of 6 rows reach the cluster, the flush goes to the outbox
        // with the same ids, and replaying it rewrites the 3 rows already there.
        let single = RetryPolicy {
            attempts: 1,
            ..quick_policy()
        };
        let (mut store, metrics) = store_with(&cluster, dir.path(), single);
        *cluster.partial.lock() = Some(3);
        store.write_views(&views(6)).expect("spilled");
        assert_eq!(metrics.views_spilled.get(), 6);
        drain(&store);
        assert_eq!(cluster.rows.lock().len(), 16);
        assert_eq!(cluster.count("12345"), 16, "the first writer's 10, then 6");
    }

    #[test]
    fn a_batch_neither_the_cluster_nor_the_outbox_took_is_tried_again_under_the_same_ids() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let policy = RetryPolicy {
            attempts: 1,
            flushes_in_flight: 1,
            ..quick_policy()
        };
        let (mut store, _) = store_with(&cluster, dir.path(), policy);
        // 4 of 10 rows reach the cluster, then the outbox fails too (a full disk).
        *cluster.partial.lock() = Some(4);
        store.refuse_spills = true;
        let first = ticket(store.submit_views(&views(10)).expect("taken"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.unsettled.is_empty() && Instant::now() < deadline {
            assert!(store.settled(Duration::from_millis(5)).is_empty());
        }
        assert_eq!(cluster.rows.lock().len(), 4);
        // Its one slot is taken by a flush nothing takes: the next batch is refused before
        // it gets ids or totals.
        *cluster.down.lock() = true;
        assert!(matches!(
            store.submit_views(&views(3)),
            Err(StoreError::Unsettled { flushes: 1, .. })
        ));
        // The cluster is back and the disk has room again: the same flush goes out.
        *cluster.down.lock() = false;
        store.refuse_spills = false;
        assert_eq!(
            wait_for(&mut store, &[first]),
            vec![Persisted::CountedRemotely]
        );
        drain(&store);
        assert_eq!(cluster.rows.lock().len(), 10, "the 4 rows were overwritten");
        assert_eq!(cluster.count("12345"), 10, "counted once");
        // The next batch is a new flush.
        store.write_views(&views(3)).expect("written");
        drain(&store);
        assert_eq!(cluster.rows.lock().len(), 13);
        assert_eq!(cluster.count("12345"), 13);
    }

    #[test]
    fn overlapping_flushes_land_in_any_order_and_count_every_view_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        *cluster.delay.lock() = Duration::from_millis(5);
        let (mut store, _) = store(&cluster, dir.path());
        let mut tickets = HashMap::new();
        for size in 1..=20 {
            let ticket = ticket(store.submit_views(&views(size)).expect("taken"));
            tickets.insert(ticket, size);
            // Some flushes take longer than others: later ones overtake them.
            *cluster.delay.lock() = Duration::from_millis(fastrand::u64(0..8));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !tickets.is_empty() && Instant::now() < deadline {
            for done in store.settled(Duration::from_millis(10)) {
                assert_eq!(done.outcome.expect("settled"), Persisted::CountedRemotely);
                tickets.remove(&done.ticket);
            }
        }
        assert!(tickets.is_empty(), "never settled: {tickets:?}");
        assert_eq!(store.in_flight, 0);
        assert_eq!(cluster.rows.lock().len(), 210);
        assert_eq!(cluster.count("12345"), 210, "the largest total won");
    }

    /// Spills a poisoned batch between two good ones, then heals the cluster but for the
    /// poison, and writes live batches (one view each) while the replay worker works.
    fn replay_around_a_poison(
        permanent: bool,
    ) -> (ResilientStore, FakeCluster, Arc<Metrics>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let (mut store, metrics) = store(&cluster, dir.path());
        *cluster.down.lock() = true;
        store.write_views(&views(3)).expect("spilled");
        store.write_views(&views_of("poison", 2)).expect("spilled");
        store.write_views(&views(4)).expect("spilled");
        assert_eq!(store.outbox_depth(), 9);
        *cluster.poison.lock() = Some(("poison", permanent));
        *cluster.down.lock() = false;
        let mut live = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while (store.outbox.quarantined() == 0
            || store.outbox_depth() > 0
            || store.outbox_pending_counts() > 0)
            && Instant::now() < deadline
        {
            store.health.forget_backoff();
            store.write_views(&views_of("live", 1)).expect("live");
            live += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            cluster.count("live"),
            live,
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
        // Put back in line once the cluster takes it (as `video-server outbox retry`
        // does): the replay worker picks it up at its next recount, counted once.
        *cluster.poison.lock() = None;
        assert!(store.outbox.release(quarantined[0].id).expect("release"));
        store.outbox.recount().expect("recount");
        show_outbox(&store.metrics, store.outbox.tally());
        if let Some(replay) = store.health.replay.get() {
            replay.wake();
        }
        drain(&store);
        assert_eq!(store.outbox.quarantined(), 0);
        assert_eq!(cluster.count("poison"), 2);
        assert_eq!(cluster.rows_of("poison"), 2);
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
        // The replay worker tries for a while, backing off.
        std::thread::sleep(Duration::from_millis(300));
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
        store.health.forget_backoff();
        assert_eq!(
            store.write_views(&views(3)).expect("answered"),
            Persisted::Dropped
        );
        assert_eq!(metrics.views_outbox_full.get(), 3);
        assert_eq!(store.outbox_depth(), 5);
        *cluster.down.lock() = false;
        store.health.forget_backoff();
        store.write_views(&views(2)).expect("written");
        drain(&store);
        assert_eq!(
            cluster.count("12345"),
            7,
            "5 replayed + 2 written; the 3 dropped not counted"
        );
        assert_eq!(cluster.rows_of("12345"), 7);
    }

    #[test]
    fn with_the_outbox_full_only_the_newest_flush_is_dropped_and_counts_stay_exact() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let (mut store, metrics) = store(&cluster, dir.path());
        *cluster.down.lock() = true;
        store.write_views(&views(5)).expect("spilled");
        store.policy.outbox_max_bytes = Some(store.outbox.bytes().expect("size"));
        store.health.forget_backoff();
        // Two flushes in flight into a failing cluster: the older one's views are in the
        // newer one's totals, so only the newer may be dropped; the older is kept over
        // the limit. (The delay must outlast the gap between the two submissions: if the
        // older failed first, the cluster would be in backoff and the newer spilled at
        // once. 30 ms did not, once, on a loaded machine.)
        *cluster.delay.lock() = Duration::from_millis(300);
        let older = ticket(store.submit_views(&views(4)).expect("taken"));
        let newer = ticket(store.submit_views(&views(3)).expect("taken"));
        assert_eq!(
            wait_for(&mut store, &[older, newer]),
            vec![Persisted::CountedRemotely, Persisted::Dropped]
        );
        assert_eq!(metrics.views_outbox_full.get(), 3);
        assert_eq!(store.outbox_depth(), 9);
        // While full, one flush at a time.
        assert!(store.outbox_full);
        *cluster.delay.lock() = Duration::ZERO;
        *cluster.down.lock() = false;
        store.health.forget_backoff();
        drain(&store);
        store.write_views(&views(1)).expect("written");
        assert_eq!(
            cluster.count("12345"),
            10,
            "5 + 4 + 1: the 3 dropped not counted"
        );
        assert_eq!(cluster.rows_of("12345"), 10);
        // Room again (a larger limit): flushes overlap again.
        store.policy.outbox_max_bytes = Some(u64::MAX);
        store.write_views(&views(1)).expect("written");
        assert!(!store.outbox_full);
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
        let (store, metrics) = store(&cluster, dir.path());
        assert_eq!(metrics.outbox_depth.get(), 9);
        drain(&store);
        assert_eq!(cluster.count("12345"), 9);
    }

    /// A cluster that cannot be reached at all.
    #[derive(Clone)]
    struct Unreachable;

    impl RemoteViewStore for Unreachable {
        fn write_flush(&mut self, _: &Flush) -> Result<(), StoreError> {
            Err(StoreError::Unreachable {
                context: "still connecting",
                source: None,
            })
        }
    }

    #[test]
    fn an_unreachable_cluster_is_not_retried_on_the_spot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
        let outbox = Outbox::open(dir.path()).expect("outbox");
        let mut store =
            ResilientStore::new(Unreachable, outbox, Arc::clone(&metrics), quick_policy())
                .expect("store");
        store.write_views(&views(3)).expect("spilled");
        assert_eq!(metrics.store_retries.get(), 0);
        assert_eq!(store.outbox_depth(), 3);
    }

    #[test]
    fn replay_goes_oldest_first_at_the_rate_budget() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let mut outbox = Outbox::open(dir.path()).expect("outbox");
        let ids = IdGenerator::new();
        let mut ledger = CountLedger::default();
        let pushed: Vec<Uuid> = (0..4)
            .map(|_| {
                let flush = ids.flush(&views(100), &mut ledger);
                outbox.push(&flush).expect("push");
                flush.id
            })
            .collect();
        let policy = RetryPolicy {
            replay_views_per_second: NonZeroU32::new(1_000),
            ..quick_policy()
        };
        let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
        let health = Arc::new(ClusterHealth::new(&policy));
        let replay_outbox = outbox.another_connection().expect("connection");
        let mut replayer = Replayer::new(cluster.clone(), replay_outbox, metrics, policy, health);

        /// Records when the pass asked to send, without sleeping.
        struct Clock(Mutex<Vec<Instant>>);
        impl Pacer for Clock {
            fn wait_until(&self, instant: Instant) -> bool {
                self.0.lock().push(instant);
                true
            }
        }
        let clock = Clock(Mutex::new(Vec::new()));
        let pass = replayer.pass(&clock).expect("pass");
        assert_eq!(pass.replayed, 4);
        assert!(pass.counts_written);
        assert_eq!(*cluster.taken.lock(), pushed, "oldest first");
        let sends = clock.0.lock();
        for pair in sends.windows(2) {
            let spacing = pair[1].duration_since(pair[0]);
            assert!(
                spacing >= Duration::from_millis(100),
                "100 views at 1,000 views/s take 100 ms: {spacing:?}"
            );
        }
        assert_eq!(outbox.depth(), 0, "the tally is shared by both connections");
        assert_eq!(cluster.count("12345"), 400);
    }

    #[test]
    fn the_replay_worker_stops_promptly_and_leaves_the_rest_in_the_outbox() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        *cluster.down.lock() = true;
        let (mut store, metrics) = store(&cluster, dir.path());
        for _ in 0..40 {
            store.write_views(&views(5)).expect("spilled");
        }
        // Back, but slow: the outbox takes seconds to replay.
        *cluster.delay.lock() = Duration::from_millis(50);
        *cluster.down.lock() = false;
        store.health.forget_backoff();
        std::thread::sleep(Duration::from_millis(200));
        let asked = Instant::now();
        assert!(store.replay.stop(asked + Duration::from_secs(2)));
        let took = asked.elapsed();
        assert!(took < Duration::from_millis(500), "stopping took {took:?}");
        let replayed = metrics.views_replayed.get();
        assert!(replayed > 0 && replayed < 200, "{replayed} replayed");
        assert_eq!(store.outbox_depth() + replayed, 200, "nothing lost");
        assert_eq!(cluster.rows.lock().len() as u64, replayed);
    }

    #[test]
    fn a_write_that_panics_keeps_its_flush_and_its_worker() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = FakeCluster::default();
        let policy = RetryPolicy {
            flushes_in_flight: 1,
            ..quick_policy()
        };
        let (mut store, metrics) = store_with(&cluster, dir.path(), policy);
        *cluster.crash.lock() = Some("crash");
        assert_eq!(
            store.write_views(&views_of("crash", 3)).expect("kept"),
            Persisted::CountedRemotely
        );
        assert_eq!(metrics.views_spilled.get(), 3);
        store.health.forget_backoff();
        // The one worker is still there for the next batch.
        store.write_views(&views(2)).expect("written");
        assert_eq!(cluster.count("12345"), 2);
        *cluster.crash.lock() = None;
        drain(&store);
        assert_eq!(cluster.rows_of("crash"), 3);
        assert_eq!(cluster.count("crash"), 3);
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
