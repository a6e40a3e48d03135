//! The producer side of the views pipeline: a bounded channel that never blocks.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::ViewEvent;
use crate::metrics::Metrics;

/// At most one "views dropped" warning per this many milliseconds.
const DROP_LOG_INTERVAL_MS: i64 = 5_000;

/// Hands views from request handlers to the batch writer.
#[derive(Debug, Clone)]
pub struct ViewBus {
    sender: Sender<ViewEvent>,
    metrics: Arc<Metrics>,
    /// When the last drop warning was logged (epoch ms), so a flood logs once per interval.
    last_drop_log_ms: Arc<AtomicI64>,
}

impl ViewBus {
    /// A bus holding at most `capacity` views in flight, and the receiver the batch writer
    /// drains.
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> (ViewBus, Receiver<ViewEvent>) {
        let (sender, receiver) = crossbeam_channel::bounded(capacity);
        let bus = ViewBus {
            sender,
            metrics,
            last_drop_log_ms: Arc::new(AtomicI64::new(i64::MIN)),
        };
        (bus, receiver)
    }

    /// Queues a view without ever blocking; returns whether it was accepted.
    #[inline]
    pub fn record(&self, view: ViewEvent) -> bool {
        match self.sender.try_send(view) {
            Ok(()) => {
                self.metrics.views_accepted.inc();
                true
            }
            Err(TrySendError::Full(view)) => {
                self.drop_view(&view, "the view queue is full: the store is not keeping up");
                false
            }
            Err(TrySendError::Disconnected(view)) => {
                self.drop_view(&view, "the batch writer has stopped");
                false
            }
        }
    }

    fn drop_view(&self, view: &ViewEvent, reason: &str) {
        self.metrics.views_dropped.inc();
        let last = self.last_drop_log_ms.load(Ordering::Relaxed);
        let now = view.timestamp_ms;
        if now.saturating_sub(last) >= DROP_LOG_INTERVAL_MS
            && self
                .last_drop_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = self.metrics.views_dropped.get(),
                "dropping views: {reason}"
            );
        }
    }

    /// Views waiting in the channel.
    pub fn queued(&self) -> usize {
        self.sender.len()
    }
}
