//! The per-request metrics: responses by route and status, and how long each took.
//!
//! These two are touched by every request, so they are kept apart from the other metrics
//! and built for that. Each thread that answers requests (an HTTP worker) gets a shard of
//! its own: plain counters that only that thread writes, so an update is a load and a
//! store, not a locked read-modify-write (on x86 each `lock`ed instruction costs tens of
//! cycles, and the `prometheus` crate's histogram and counter took five per request). May's coroutines never yield inside an update, so two
//! coroutines on one thread cannot interleave there either; and the shard is looked up at
//! each update, never kept across a yield, since a coroutine may resume on another thread.
//! A thread past [`MAX_SHARDS`] shares one last shard, updated with real atomic additions.
//!
//! Time comes from the CPU's time-stamp counter (`quanta`): two reads and a subtraction
//! cost 40 % of what `Instant::now` and `elapsed` cost through the vDSO, which orders each
//! read with a fence (21.5 against 56 ns a pair on the machine the benchmarks run on).
//!
//! `GET /metrics` sums the shards ([`RequestMetrics`] is a Prometheus `Collector`): a
//! response counter appears once its route and status have been seen, a route's latency
//! histogram from the start, as `IntCounterVec` and `HistogramVec` showed them before.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto;

/// Status codes the server produces; anything else is counted under "other".
const STATUSES: [u16; 17] = [
    200, 204, 304, 400, 401, 403, 404, 405, 408, 413, 415, 417, 429, 431, 500, 501, 503,
];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

/// Upper bounds of the latency buckets, in nanoseconds (5 µs to 100 ms).
const BUCKET_BOUNDS_NANOS: [u64; 13] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];
/// One count per bucket, and one for `+Inf`.
const BUCKET_SLOTS: usize = BUCKET_BOUNDS_NANOS.len() + 1;
/// Per route: responses by status, latencies by bucket, and the latencies' sum.
const CELLS_PER_ROUTE: usize = STATUS_SLOTS + BUCKET_SLOTS + 1;

/// Threads with a shard of their own; more than any worker count this server runs with.
pub const MAX_SHARDS: usize = 256;

/// Each thread's shard index, given on its first request (process-wide, so one thread has
/// the same index in every server of a test process).
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The shard of the thread running now.
///
/// Never inlined, on purpose: a coroutine can yield on one thread and resume on another,
/// and the compiler, which assumes a function stays on its thread, may keep a thread-local
/// address computed before a yield and use it after. Inlined into the connection loop (which
/// yields on every read), this lookup could then name the previous thread's shard, and two
/// threads would write one shard. Behind a call, the address is computed where it is used.
#[inline(never)]
fn thread_shard() -> usize {
    SHARD.with(|shard| {
        if shard.get() == usize::MAX {
            shard.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed).min(MAX_SHARDS));
        }
        shard.get()
    })
}

/// When a request started, on the request clock.
#[derive(Debug, Clone, Copy)]
pub struct RequestStart(u64);

/// Responses and latencies of every route, sharded by thread.
pub struct RequestMetrics {
    route_names: &'static [&'static str],
    clock: quanta::Clock,
    /// `MAX_SHARDS` single-writer shards, each allocated by its thread on first use (in
    /// that thread's heap, away from the others' cache lines), then the shared one.
    shards: Box<[OnceLock<Box<[AtomicU64]>>]>,
    responses_desc: Desc,
    latency_desc: Desc,
}

impl RequestMetrics {
    pub fn new(route_names: &'static [&'static str]) -> Result<Self, prometheus::Error> {
        Ok(RequestMetrics {
            route_names,
            clock: quanta::Clock::new(),
            shards: (0..=MAX_SHARDS).map(|_| OnceLock::new()).collect(),
            responses_desc: Desc::new(
                "http_requests_total".into(),
                "HTTP responses sent, by route and status".into(),
                vec!["route".into(), "status".into()],
                Default::default(),
            )?,
            latency_desc: Desc::new(
                "http_request_duration_seconds".into(),
                "Time from a request's head being parsed to its response being ready".into(),
                vec!["route".into()],
                Default::default(),
            )?,
        })
    }

    /// Now, on the clock [`RequestMetrics::observe`] measures against.
    #[inline]
    pub fn start(&self) -> RequestStart {
        RequestStart(self.clock.raw())
    }

    /// Counts one response of `route` with `status`, and the time since `started` (none
    /// for a request refused before it started).
    #[inline]
    pub fn observe(&self, route: usize, status: u16, started: Option<RequestStart>) {
        let nanos = match started {
            Some(RequestStart(raw)) => self.clock.delta_as_nanos(raw, self.clock.raw()),
            None => 0,
        };
        self.record(route, status, nanos);
    }

    #[inline]
    fn record(&self, route: usize, status: u16, nanos: u64) {
        let status_slot = STATUSES
            .iter()
            .position(|&known| known == status)
            .unwrap_or(STATUSES.len());
        let bucket = BUCKET_BOUNDS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BUCKET_BOUNDS_NANOS.len());
        let shard = thread_shard();
        let cells = self.shards[shard].get_or_init(|| self.new_shard());
        let route_cells = &cells[route * CELLS_PER_ROUTE..(route + 1) * CELLS_PER_ROUTE];
        let add = |cell: &AtomicU64, amount: u64| {
            if shard < MAX_SHARDS {
                // Only this thread writes this shard: see the module documentation.
                cell.store(cell.load(Ordering::Relaxed) + amount, Ordering::Relaxed);
            } else {
                cell.fetch_add(amount, Ordering::Relaxed);
            }
        };
        add(&route_cells[status_slot], 1);
        add(&route_cells[STATUS_SLOTS + bucket], 1);
        add(&route_cells[CELLS_PER_ROUTE - 1], nanos);
    }

    fn new_shard(&self) -> Box<[AtomicU64]> {
        (0..self.route_names.len() * CELLS_PER_ROUTE)
            .map(|_| AtomicU64::new(0))
            .collect()
    }

    /// One cell of a route, summed over the shards.
    fn total(&self, route: usize, cell: usize) -> u64 {
        self.shards
            .iter()
            .filter_map(OnceLock::get)
            .map(|cells| cells[route * CELLS_PER_ROUTE + cell].load(Ordering::Relaxed))
            .sum()
    }

    fn responses_family(&self) -> proto::MetricFamily {
        let mut metrics = Vec::new();
        for (route, route_name) in self.route_names.iter().enumerate() {
            for slot in 0..STATUS_SLOTS {
                let count = self.total(route, slot);
                if count == 0 {
                    continue;
                }
                let status = match STATUSES.get(slot) {
                    Some(status) => status.to_string(),
                    None => "other".to_owned(),
                };
                let mut counter = proto::Counter::default();
                counter.set_value(count as f64);
                let mut metric = proto::Metric::default();
                metric.set_label(vec![label("route", route_name), label("status", &status)]);
                metric.set_counter(counter);
                metrics.push(metric);
            }
        }
        family(&self.responses_desc, proto::MetricType::COUNTER, metrics)
    }

    fn latency_family(&self) -> proto::MetricFamily {
        let mut metrics = Vec::new();
        for (route, route_name) in self.route_names.iter().enumerate() {
            let mut cumulative = 0;
            let mut buckets = Vec::with_capacity(BUCKET_BOUNDS_NANOS.len());
            for (index, bound) in BUCKET_BOUNDS_NANOS.iter().enumerate() {
                cumulative += self.total(route, STATUS_SLOTS + index);
                let mut bucket = proto::Bucket::default();
                bucket.set_cumulative_count(cumulative);
                bucket.set_upper_bound(*bound as f64 / 1e9);
                buckets.push(bucket);
            }
            let count = cumulative + self.total(route, STATUS_SLOTS + BUCKET_BOUNDS_NANOS.len());
            let mut histogram = proto::Histogram::default();
            histogram.set_sample_count(count);
            histogram.set_sample_sum(self.total(route, CELLS_PER_ROUTE - 1) as f64 / 1e9);
            histogram.set_bucket(buckets);
            let mut metric = proto::Metric::default();
            metric.set_label(vec![label("route", route_name)]);
            metric.set_histogram(histogram);
            metrics.push(metric);
        }
        family(&self.latency_desc, proto::MetricType::HISTOGRAM, metrics)
    }
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn family(
    desc: &Desc,
    kind: proto::MetricType,
    metrics: Vec<proto::Metric>,
) -> proto::MetricFamily {
    let mut family = proto::MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// The registry's handle on the request metrics, which the server's [`super::Metrics`]
/// also holds.
pub struct Exposed(pub Arc<RequestMetrics>);

impl Collector for Exposed {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.responses_desc, &self.0.latency_desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        vec![self.0.responses_family(), self.0.latency_family()]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use prometheus::{Encoder, Registry, TextEncoder};

    use super::*;

    fn render(metrics: &Arc<RequestMetrics>) -> String {
        let registry = Registry::new();
        registry
            .register(Box::new(Exposed(metrics.clone())))
            .expect("register");
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("encode");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn latencies_fall_in_the_bucket_whose_bound_they_do_not_exceed() {
        let metrics = Arc::new(RequestMetrics::new(&["token", "video"]).expect("metrics"));
        metrics.record(0, 200, 5_000);
        metrics.record(0, 200, 5_001);
        metrics.record(0, 200, 200_000_000);
        let text = render(&metrics);
        for line in [
            r#"http_request_duration_seconds_bucket{route="token",le="0.000005"} 1"#,
            r#"http_request_duration_seconds_bucket{route="token",le="0.00001"} 2"#,
            r#"http_request_duration_seconds_bucket{route="token",le="0.1"} 2"#,
            r#"http_request_duration_seconds_bucket{route="token",le="+Inf"} 3"#,
            r#"http_request_duration_seconds_sum{route="token"} 0.200010001"#,
            r#"http_request_duration_seconds_count{route="token"} 3"#,
            // Every route's histogram is shown from the start.
            r#"http_request_duration_seconds_count{route="video"} 0"#,
            r#"http_requests_total{route="token",status="200"} 3"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // A status never seen has no series.
        assert!(!text.contains(r#"route="video",status"#), "{text}");
    }

    #[test]
    fn counts_from_many_threads_add_up_even_past_the_last_own_shard() {
        // More threads than shards, all at once: the last ones share the atomic shard.
        const THREADS: usize = MAX_SHARDS + 8;
        const EACH: u64 = 2_000;
        let metrics = Arc::new(RequestMetrics::new(&["video"]).expect("metrics"));
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (metrics, barrier) = (metrics.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..EACH {
                        metrics.record(0, 404, 1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let total = THREADS as u64 * EACH;
        assert_eq!(metrics.total(0, 6), total, "404 is the seventh status slot");
        assert_eq!(metrics.total(0, CELLS_PER_ROUTE - 1), total, "latency sum");
        assert!(
            metrics.shards[MAX_SHARDS].get().is_some(),
            "the shared shard was used"
        );
    }
}
