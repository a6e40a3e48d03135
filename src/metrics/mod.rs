//! Prometheus metrics: what `GET /metrics` reports.
//!
//! Everything is registered once at start into one [`Metrics`] value shared by the HTTP
//! workers and the batch writer. What every request touches, its response count and
//! latency, lives in the `requests` module, sharded by worker thread so that no request
//! pays for an atomic read-modify-write; the rest are the `prometheus` crate's own
//! counters, gauges and histograms, updated once per batch, connection or event.

mod requests;

use std::sync::Arc;

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder};

pub use requests::RequestStart;
use requests::{Exposed, RequestMetrics};
/// The most routes a service may name.
pub const MAX_ROUTES: usize = 16;

/// All metrics of one server.
pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestMetrics>,
    /// Connections currently open.
    pub connections_open: IntGauge,
    /// Connections accepted since start.
    pub connections_accepted: IntCounter,
    /// Open connections idle long enough to be parked (no coroutine, no buffers).
    pub connections_parked: IntGauge,
    /// Views queued on the bus (dropped ones are not counted here).
    pub views_accepted: IntCounter,
    /// Views committed by the store.
    pub views_persisted: IntCounter,
    /// Views refused because the bus was full (the store was not keeping up).
    pub views_dropped: IntCounter,
    /// Views the writer gave up on: the store refused their batch for good (a permanent
    /// error), or kept failing until the shutdown deadline.
    pub views_failed: IntCounter,
    /// Accepted views neither persisted nor failed yet: in the channel or a batch.
    pub views_pending: IntGauge,
    /// Views per batch written.
    pub batch_size: Histogram,
    /// Time to write one batch, retries included.
    pub flush_duration: Histogram,
    /// Failed store writes (each attempt counts).
    pub store_errors: IntCounter,
    /// Writes to a remote store tried again after a transient failure.
    pub store_retries: IntCounter,
    /// Views kept in the local outbox because the remote store failed.
    pub views_spilled: IntCounter,
    /// Views replayed from the outbox into the remote store.
    pub views_replayed: IntCounter,
    /// Views waiting in the local outbox.
    pub outbox_depth: IntGauge,
    /// Views in flushes the remote store refused for good, kept aside in the outbox.
    pub outbox_quarantined: IntGauge,
    /// Views lost because the outbox had reached `--outbox-max-bytes`.
    pub views_outbox_full: IntCounter,
    /// Times the embedded database file was found deleted or replaced (and rebuilt).
    pub store_file_replaced: IntCounter,
    /// Plays not counted as views: the same client played the same video within
    /// `--view-dedup-seconds`.
    pub views_deduplicated: IntCounter,
    /// Raw view rows deleted by `--view-retention-days` (counts keep them).
    pub views_expired: IntCounter,
    /// Time of one retention step: how long the batch writer was held by it.
    pub retention_step_duration: Histogram,
}

/// Why metrics could not be set up (a duplicate or malformed metric: a programming error).
#[derive(Debug, thiserror::Error)]
#[error("cannot register metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Registers every metric; `route_names` label the request metrics, indexed by the
    /// route index the service passes to [`Metrics::observe_request`].
    pub fn new(route_names: &'static [&'static str]) -> Result<Self, MetricsError> {
        assert!(route_names.len() <= MAX_ROUTES, "too many routes");
        let registry = Registry::new();
        let requests = Arc::new(RequestMetrics::new(route_names)?);
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("view_batch_size", "Views per batch written to the store").buckets(
                vec![
                    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
                ],
            ),
        )?;
        let flush_duration = Histogram::with_opts(
            HistogramOpts::new(
                "view_flush_duration_seconds",
                "Time to write one batch of views to the store, retries included",
            )
            .buckets(vec![
                0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                5.0,
            ]),
        )?;
        let retention_step_duration = Histogram::with_opts(
            HistogramOpts::new(
                "view_retention_step_seconds",
                "Time of one step deleting raw view rows older than --view-retention-days, during which the batch writer waits",
            )
            .buckets(vec![
                0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        let metrics = Metrics {
            connections_open: IntGauge::new("http_connections_open", "Connections open now")?,
            connections_accepted: IntCounter::new(
                "http_connections_accepted_total",
                "Connections accepted since start",
            )?,
            connections_parked: IntGauge::new(
                "http_connections_parked",
                "Open connections idle past --park-idle-ms, held without a coroutine or buffers",
            )?,
            views_accepted: IntCounter::new(
                "views_accepted_total",
                "Views recorded by GET /video/:videoId and queued for the store",
            )?,
            views_persisted: IntCounter::new(
                "views_persisted_total",
                "Views committed to the store",
            )?,
            views_dropped: IntCounter::new(
                "views_dropped_total",
                "Views not queued because the queue was full",
            )?,
            views_failed: IntCounter::new(
                "views_failed_total",
                "Queued views abandoned: the store refused them permanently, or kept failing until the shutdown deadline",
            )?,
            views_pending: IntGauge::new(
                "views_pending",
                "Views queued or batched but not yet committed",
            )?,
            batch_size,
            flush_duration,
            store_errors: IntCounter::new("store_errors_total", "Failed store writes")?,
            store_retries: IntCounter::new(
                "store_retries_total",
                "Remote store writes retried after a transient failure",
            )?,
            views_spilled: IntCounter::new(
                "views_spilled_total",
                "Views kept in the local outbox because the remote store failed",
            )?,
            views_replayed: IntCounter::new(
                "views_replayed_total",
                "Views replayed from the local outbox into the remote store",
            )?,
            outbox_depth: IntGauge::new("outbox_depth", "Views waiting in the local outbox")?,
            outbox_quarantined: IntGauge::new(
                "outbox_quarantined_views",
                "Views in flushes the remote store refused for good, kept aside in the outbox (video-server outbox list)",
            )?,
            views_outbox_full: IntCounter::new(
                "views_outbox_full_total",
                "Views lost because the outbox had reached --outbox-max-bytes",
            )?,
            views_deduplicated: IntCounter::new(
                "views_deduplicated_total",
                "Plays not counted: the same client played the same video within --view-dedup-seconds",
            )?,
            store_file_replaced: IntCounter::new(
                "store_file_replaced_total",
                "Times the embedded database file was found deleted or replaced, and rebuilt",
            )?,
            views_expired: IntCounter::new(
                "views_expired_total",
                "Raw view rows deleted because they were older than --view-retention-days (counts are kept)",
            )?,
            retention_step_duration,
            requests,
            registry,
        };
        metrics.register_all()?;
        Ok(metrics)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let registry = &self.registry;
        registry.register(Box::new(Exposed(self.requests.clone())))?;
        registry.register(Box::new(self.connections_open.clone()))?;
        registry.register(Box::new(self.connections_accepted.clone()))?;
        registry.register(Box::new(self.connections_parked.clone()))?;
        registry.register(Box::new(self.views_accepted.clone()))?;
        registry.register(Box::new(self.views_persisted.clone()))?;
        registry.register(Box::new(self.views_dropped.clone()))?;
        registry.register(Box::new(self.views_failed.clone()))?;
        registry.register(Box::new(self.views_pending.clone()))?;
        registry.register(Box::new(self.batch_size.clone()))?;
        registry.register(Box::new(self.flush_duration.clone()))?;
        registry.register(Box::new(self.store_errors.clone()))?;
        registry.register(Box::new(self.store_retries.clone()))?;
        registry.register(Box::new(self.views_spilled.clone()))?;
        registry.register(Box::new(self.views_replayed.clone()))?;
        registry.register(Box::new(self.outbox_depth.clone()))?;
        registry.register(Box::new(self.outbox_quarantined.clone()))?;
        registry.register(Box::new(self.views_outbox_full.clone()))?;
        registry.register(Box::new(self.store_file_replaced.clone()))?;
        registry.register(Box::new(self.views_deduplicated.clone()))?;
        registry.register(Box::new(self.views_expired.clone()))?;
        registry.register(Box::new(self.retention_step_duration.clone()))?;
        Ok(())
    }

    /// When a request starts, for [`Metrics::observe_request`].
    #[inline]
    pub fn request_started(&self) -> RequestStart {
        self.requests.start()
    }

    /// Counts one response of route index `route` and the time since `started` (`None`:
    /// refused before it started, counted as taking no time).
    #[inline]
    pub fn observe_request(&self, route: usize, status: u16, started: Option<RequestStart>) {
        self.requests.observe(route, status, started);
    }

    /// Renders the Prometheus text exposition format into `out`.
    pub fn render(&self, out: &mut Vec<u8>) {
        let accepted = self.views_accepted.get();
        // Dropped views were never accepted, so they are not part of the pending count.
        let settled = self.views_persisted.get() + self.views_failed.get();
        self.views_pending
            .set(i64::try_from(accepted.saturating_sub(settled)).unwrap_or(i64::MAX));
        // Encoding into a Vec cannot fail on I/O; a failure would be a malformed metric
        // name, which registration already rules out, so an error here only truncates.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), out) {
            tracing::warn!(%error, "metrics encoding failed");
        }
    }

    /// `text/plain; version=0.0.4`: the content type Prometheus expects.
    pub fn content_type() -> &'static str {
        "text/plain; version=0.0.4; charset=utf-8"
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let metrics = Metrics::new(&["token", "video"]).expect("metrics");
        metrics.observe_request(0, 200, Some(metrics.request_started()));
        metrics.observe_request(0, 200, None);
        metrics.observe_request(1, 404, None);
        metrics.observe_request(1, 299, None);
        metrics.views_accepted.inc_by(5);
        metrics.views_persisted.inc_by(3);
        let mut out = Vec::new();
        metrics.render(&mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains(r#"http_requests_total{route="token",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"http_requests_total{route="video",status="404"} 1"#));
        assert!(text.contains(r#"http_requests_total{route="video",status="other"} 1"#));
        assert!(text.contains(r#"http_request_duration_seconds_count{route="token"} 2"#));
        assert!(text.contains("views_pending 2"));
    }
}
