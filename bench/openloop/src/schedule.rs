//! When each request is due.
//!
//! The aggregate schedule sends request `n` at `start + n / rate`. Request `n` belongs to
//! connection `n mod connections`, so connection `i` sends its `k`-th request at
//! `start + (i + k * connections) / rate`: evenly spread, never bunched. A connection whose
//! previous response is late sends as soon as it arrives, and that request's latency is
//! still counted from its scheduled time: a stall shows up as the queueing every waiting
//! request saw (no coordinated omission).

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    /// Nanoseconds between two consecutive requests of the whole run.
    gap_ns: f64,
    connections: u64,
}

impl Schedule {
    pub fn new(start: Instant, rate_per_second: f64, connections: usize) -> Self {
        Schedule {
            start,
            gap_ns: 1e9 / rate_per_second,
            connections: connections as u64,
        }
    }

    /// When connection `connection` sends its `sequence`-th request (from 0).
    pub fn due(&self, connection: usize, sequence: u64) -> Instant {
        let index = connection as u64 + sequence * self.connections;
        self.start + Duration::from_nanos((index as f64 * self.gap_ns) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_of_all_connections_interleave_evenly() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 1000.0, 4);
        let mut all: Vec<Duration> = (0..4)
            .flat_map(|c| (0..5).map(move |k| (c, k)))
            .map(|(c, k)| schedule.due(c, k) - start)
            .collect();
        all.sort();
        for (n, due) in all.iter().enumerate() {
            assert_eq!(*due, Duration::from_millis(n as u64), "request {n}");
        }
    }

    #[test]
    fn one_connection_sends_at_the_per_connection_rate() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 20_000.0, 100);
        assert_eq!(
            schedule.due(7, 1) - schedule.due(7, 0),
            Duration::from_millis(5)
        );
    }
}
