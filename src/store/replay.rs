//! The outbox replay worker: a thread of its own that writes what the outbox holds back to
//! the cluster, oldest first, at a bounded rate, while live batches go to the cluster
//! without waiting for it.
//!
//! ```text
//!  Outbox (its own connection) ──oldest flushes──▶ Replayer ──write_flush──▶ RemoteViewStore
//!        ▲ remove / record failure / quarantine       │ paced: --outbox-replay-rate views/s
//!        └────────────────────────────────────────────┘ then the count rows, newest totals
//! ```
//!
//! The worker owns a second connection to the outbox file and its own handle on the
//! cluster (a clone of the remote store: one session, shared), so nothing it does holds the
//! batch writer or the flushes in flight. It reads the oldest waiting flushes by the
//! outbox's index, writes each whole under the ids it was first given, and removes it once
//! the cluster took it; the rate budget spaces flushes so that a long outbox drains without
//! crowding out live writes on a cluster that has just come back.
//!
//! It knows the cluster's state from the `ClusterHealth` it shares with the flush workers:
//! while the cluster is failing it waits out the same backoff, and a live write that
//! succeeds again wakes it. A flush the cluster refuses for good is quarantined at
//! once; one that fails while other writes (live or replayed) go through is a suspect,
//! quarantined after `quarantine_after` passes; two failures in a row mean the cluster is
//! failing, and everything backs off. A pass that moved nothing waits a backoff of its
//! own before the next, so a flush or count row that keeps failing is never hammered.
//!
//! Stopping is prompt and loses nothing: the worker checks between flushes (and its pacing
//! waits wake at once), and a flush leaves the outbox only after the cluster took it, so
//! whatever was not replayed is still there for the next start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::outbox::{Flush, Outbox};
use super::resilient::{write_once, ClusterHealth, IdGenerator, RemoteViewStore, RetryPolicy};
use super::StoreError;
use crate::backoff::{Backoff, Jitter};
use crate::metrics::Metrics;

/// How often the outbox is re-counted from its file (`video-server outbox retry` may have
/// put a flush back in line).
const RECOUNT_EVERY: Duration = Duration::from_secs(5);

/// The longest the worker sleeps with nothing to replay; a spill wakes it sooner.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// How the worker is told to look again, or to stop.
struct Control {
    stop: AtomicBool,
    wake: Sender<()>,
    woken: Receiver<()>,
}

impl Control {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sleeps up to `pause`, less if woken or stopped; returns false once stopped.
    fn sleep(&self, pause: Duration) -> bool {
        if self.stopped() {
            return false;
        }
        match self.woken.recv_timeout(pause) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => !self.stopped(),
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Sleeps until `instant` unless stopped; returns false once stopped.
    fn sleep_until(&self, instant: Instant) -> bool {
        loop {
            let left = instant.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return !self.stopped();
            }
            if !self.sleep(left) {
                return false;
            }
        }
    }
}

/// Wakes the replay worker (a spill gave it work, the cluster answers again). Cheap and
/// never blocks: one pending wake-up is enough.
#[derive(Clone)]
pub(super) struct ReplayWaker {
    control: Arc<Control>,
}

impl ReplayWaker {
    pub(super) fn wake(&self) {
        let _ = self.control.wake.try_send(());
    }
}

/// The running replay worker.
pub(super) struct ReplayWorker {
    control: Arc<Control>,
    /// Disconnected when the thread ends.
    finished: Receiver<()>,
    thread: Option<JoinHandle<()>>,
    /// How long dropping the worker waits for it, once a stop was asked for.
    stop_by: Option<Instant>,
}

impl ReplayWorker {
    /// Starts replaying `outbox` (a connection of the worker's own) into `remote`.
    pub(super) fn spawn<R: RemoteViewStore>(
        remote: R,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
        health: Arc<ClusterHealth>,
    ) -> std::io::Result<ReplayWorker> {
        let (wake, woken) = crossbeam_channel::bounded(1);
        let control = Arc::new(Control {
            stop: AtomicBool::new(false),
            wake,
            woken,
        });
        let (finishing, finished) = crossbeam_channel::bounded::<()>(0);
        let replayer = Replayer::new(remote, outbox, metrics, policy, health);
        let thread_control = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("outbox-replay".into())
            .spawn(move || {
                replayer.run(&thread_control);
                drop(finishing);
            })?;
        Ok(ReplayWorker {
            control,
            finished,
            thread: Some(thread),
            stop_by: None,
        })
    }

    pub(super) fn waker(&self) -> ReplayWaker {
        ReplayWaker {
            control: Arc::clone(&self.control),
        }
    }

    /// Asks the worker to stop (it ends between two flushes) without waiting for it;
    /// dropping the worker then waits for it until `deadline`.
    pub(super) fn ask_to_stop(&mut self, deadline: Instant) {
        self.control.stop.store(true, Ordering::Release);
        let _ = self.control.wake.try_send(());
        self.stop_by = Some(deadline);
    }

    /// Stops the worker and waits for it until `deadline`. A flush it is writing then is
    /// still in the outbox unless the cluster took it; past the deadline the thread is left
    /// to finish that one write on its own. Returns whether it ended in time.
    pub(super) fn stop(&mut self, deadline: Instant) -> bool {
        self.ask_to_stop(deadline);
        let Some(thread) = self.thread.take() else {
            return true;
        };
        match self.finished.recv_deadline(deadline) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                tracing::warn!("the outbox replay worker was still writing at the deadline; what it had not replayed stays in the outbox");
                false
            }
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                if thread.join().is_err() {
                    tracing::error!("the outbox replay worker panicked; the outbox is intact and replays at the next start");
                }
                true
            }
        }
    }
}

impl Drop for ReplayWorker {
    fn drop(&mut self) {
        let deadline = self
            .stop_by
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        self.stop(deadline);
    }
}

/// Replays the outbox; lives on the worker's thread.
pub(super) struct Replayer<R: RemoteViewStore> {
    remote: R,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
    health: Arc<ClusterHealth>,
    ids: IdGenerator,
    /// The cluster's successes when the last pass ended: more since then mean other writes
    /// went through, so a flush that failed is the problem, not the cluster.
    successes_seen: u64,
    /// When the next flush may be sent (the rate budget).
    next_send: Instant,
    /// Paces passes that moved nothing (a flush or count row that keeps failing while the
    /// cluster works).
    stalled: Backoff,
    recounted: Instant,
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pass {
    /// Flushes the cluster took (and the outbox forgot).
    pub replayed: usize,
    /// Whether the count rows waiting were written.
    pub counts_written: bool,
}

impl<R: RemoteViewStore> Replayer<R> {
    pub(super) fn new(
        remote: R,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
        health: Arc<ClusterHealth>,
    ) -> Self {
        Replayer {
            remote,
            outbox,
            metrics,
            stalled: Backoff::new(
                policy.first_replay_backoff,
                policy.max_replay_backoff,
                Jitter::Equal,
            ),
            policy,
            health,
            ids: IdGenerator::new(),
            successes_seen: 0,
            next_send: Instant::now(),
            recounted: Instant::now(),
        }
    }

    fn run(mut self, control: &Control) {
        let mut quiet_until: Option<Instant> = None;
        while !control.stopped() {
            if self.recounted.elapsed() >= RECOUNT_EVERY {
                self.recounted = Instant::now();
                if let Err(error) = self.outbox.recount() {
                    tracing::error!(%error, "cannot read the outbox");
                }
                self.update_gauges();
            }
            let tally = self.outbox.tally();
            let wait = if tally.depth == 0 && tally.pending_counts == 0 {
                Some(IDLE_WAIT)
            } else {
                let own = quiet_until
                    .map(|until| until.saturating_duration_since(Instant::now()))
                    .filter(|left| !left.is_zero());
                [self.health.quiet_for(), own].into_iter().flatten().max()
            };
            if let Some(wait) = wait {
                control.sleep(wait);
                continue;
            }
            match self.pass(control) {
                Ok(pass) if pass.replayed > 0 || pass.counts_written => {
                    self.stalled.reset();
                    quiet_until = None;
                }
                Ok(_) => quiet_until = Some(Instant::now() + self.stalled.next_pause()),
                Err(error) => {
                    tracing::error!(%error, "cannot read the outbox");
                    quiet_until = Some(Instant::now() + self.stalled.next_pause());
                }
            }
        }
    }

    /// Replays the oldest flushes (up to `replay_flushes`, paced by the rate budget), then
    /// the count rows. A flush the cluster refuses for good is quarantined at once; one
    /// that fails while other writes go through is a suspect, quarantined after
    /// `quarantine_after` such passes; two failures in a row mean the cluster is failing,
    /// and replay backs off.
    pub(super) fn pass(&mut self, control: &impl Pacer) -> Result<Pass, StoreError> {
        let mut pass = Pass::default();
        let flushes = self.outbox.oldest(self.policy.replay_flushes)?;
        let mut suspects: Vec<(uuid::Uuid, String)> = Vec::new();
        let mut failed_in_a_row = 0;
        for flush in flushes {
            if !control.wait_until(self.next_send) {
                // Stopping: what was not replayed stays in the outbox.
                return Ok(pass);
            }
            self.spend_budget(flush.views.len());
            match write_once(&mut self.remote, &flush) {
                Ok(()) => {
                    self.metrics.views_replayed.inc_by(flush.views.len() as u64);
                    self.outbox.remove(flush.id)?;
                    self.update_gauges();
                    self.health.succeeded();
                    pass.replayed += 1;
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
        pass.counts_written = self.replay_counts()?;
        let successes = self.health.successes();
        if successes != self.successes_seen {
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
            self.health.failed();
            tracing::warn!(%error, outbox_views = self.outbox.depth(),
                "replay from the outbox failed; backing off");
        }
        self.successes_seen = self.health.successes();
        self.update_gauges();
        let tally = self.outbox.tally();
        if pass.replayed > 0 && tally.depth == 0 && tally.pending_counts == 0 {
            tracing::info!("outbox replayed completely");
        }
        Ok(pass)
    }

    /// Moves the next send time on by the time `views` take at the rate budget.
    fn spend_budget(&mut self, views: usize) {
        if let Some(rate) = self.policy.replay_views_per_second {
            let start = self.next_send.max(Instant::now());
            self.next_send = start + Duration::from_secs_f64(views as f64 / f64::from(rate.get()));
        }
    }

    /// Writes the count rows waiting in the outbox (they need not wait for their views:
    /// those are safe in the outbox, and a total never goes backwards); returns whether
    /// they were written.
    fn replay_counts(&mut self) -> Result<bool, StoreError> {
        if self.outbox.pending_counts() == 0 || self.health.in_backoff() {
            return Ok(false);
        }
        let counts = self.outbox.counts()?;
        let flush = Flush {
            id: self.ids.timeuuid(super::epoch_millis()),
            views: Vec::new(),
            counts,
        };
        match write_once(&mut self.remote, &flush) {
            Ok(()) => {
                self.outbox.counts_written(&flush.counts)?;
                self.health.succeeded();
                Ok(true)
            }
            Err(error) => {
                self.metrics.store_errors.inc();
                if error.is_retriable() {
                    self.health.failed();
                    tracing::warn!(%error, "replaying counts from the outbox failed; backing off");
                } else {
                    // Refused for good: the cluster itself may be fine, so live writes go on;
                    // replay tries again after its own backoff.
                    tracing::error!(%error, rows = flush.counts.len(),
                        "the cluster refuses the count rows waiting in the outbox");
                }
                Ok(false)
            }
        }
    }

    /// Sets a flush aside in quarantine (its views stay in the outbox file).
    fn quarantine(&mut self, flush_id: uuid::Uuid, error: &str) -> Result<(), StoreError> {
        let views = self.outbox.quarantine(flush_id, error)?;
        tracing::error!(%flush_id, views, %error,
            "a flush the cluster refuses was quarantined; later flushes replay (video-server outbox list)");
        self.update_gauges();
        Ok(())
    }

    fn update_gauges(&self) {
        super::resilient::show_outbox(&self.metrics, self.outbox.tally());
    }
}

/// Waits between replayed flushes; a stop request ends the wait and the pass.
pub(super) trait Pacer {
    /// Waits until `instant`; false if the pass must end instead.
    fn wait_until(&self, instant: Instant) -> bool;
}

impl Pacer for Control {
    fn wait_until(&self, instant: Instant) -> bool {
        self.sleep_until(instant)
    }
}
