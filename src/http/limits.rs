//! Descriptors and connections: the process's descriptor limit, the connection cap, and
//! what happens at it.
//!
//! A server that keeps idle keep-alive connections can run out of descriptors long before
//! it runs out of anything else (a common soft limit is 1,024). So at start the soft limit
//! is raised to the hard one, and the server takes at most `--max-connections` connections
//! (by default the limit less some headroom for the store and the log). At the cap, as
//! nginx reuses keep-alive connections, the one idle the longest is closed to make room;
//! only when none is idle is the new client refused (a 503). Every connection publishes
//! when it went idle ([`IdleMark`]) with one relaxed store; the cap's search runs only at
//! the cap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The descriptor limits before and after raising the soft one to the hard one.
#[derive(Debug, Clone, Copy)]
pub struct DescriptorLimits {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise_descriptor_limit() -> std::io::Result<DescriptorLimits> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct we pass, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let soft_before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads only the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(DescriptorLimits {
        soft_before,
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Connections the server takes with `descriptors` available: a tenth (and 64 more) is
/// kept for the listener, the store, the outbox, the log and the cluster's sessions.
pub fn default_max_connections(descriptors: u64) -> usize {
    let headroom = 64 + descriptors / 10;
    usize::try_from(descriptors.saturating_sub(headroom).max(16)).unwrap_or(usize::MAX)
}

/// When a connection went idle (waiting for its next request with nothing buffered), in
/// milliseconds since the server started plus one; zero while it is busy.
#[derive(Debug)]
pub struct IdleMark {
    since: AtomicU64,
}

impl IdleMark {
    pub fn new() -> Self {
        IdleMark {
            since: AtomicU64::new(0),
        }
    }

    pub fn set_idle(&self, epoch: Instant) {
        let millis = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.since.store(millis + 1, Ordering::Relaxed);
    }

    pub fn set_busy(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    /// When it went idle, if it is.
    pub fn idle_since(&self) -> Option<u64> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(since),
        }
    }

    /// Claims an idle connection for closing: false if it went busy meanwhile.
    pub fn claim(&self, since: u64) -> bool {
        self.since
            .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

impl Default for IdleMark {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts an event and logs it at most once a second, with how many happened since.
#[derive(Debug)]
pub struct QuietLog {
    last: Option<Instant>,
    count: u64,
}

impl QuietLog {
    pub fn new() -> Self {
        QuietLog {
            last: None,
            count: 0,
        }
    }

    /// Counts one event; calls `log` with the count when a second has passed since the
    /// last time it did (or never did).
    pub fn note(&mut self, log: impl FnOnce(u64)) {
        self.count += 1;
        let due = self
            .last
            .is_none_or(|last| last.elapsed() >= Duration::from_secs(1));
        if due {
            log(self.count);
            self.count = 0;
            self.last = Some(Instant::now());
        }
    }
}

impl Default for QuietLog {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limits = raise_descriptor_limit().expect("getrlimit");
        assert_eq!(limits.soft, limits.hard);
        assert!(limits.soft >= limits.soft_before);
    }

    #[test]
    fn the_default_cap_leaves_headroom() {
        assert_eq!(default_max_connections(1_024), 858);
        assert_eq!(default_max_connections(20_000), 17_936);
        assert_eq!(default_max_connections(10), 16);
    }

    #[test]
    fn idle_marks_are_claimed_once() {
        let mark = IdleMark::new();
        assert_eq!(mark.idle_since(), None);
        let epoch = Instant::now();
        mark.set_idle(epoch);
        let since = mark.idle_since().expect("idle");
        assert!(mark.claim(since));
        assert!(!mark.claim(since), "a second claim fails");
        assert_eq!(mark.idle_since(), None);
    }

    #[test]
    fn a_quiet_log_speaks_once_a_second_with_the_count() {
        let mut log = QuietLog::new();
        let mut said = Vec::new();
        for _ in 0..100 {
            log.note(|count| said.push(count));
        }
        assert_eq!(
            said,
            [1],
            "the first event is logged at once, the rest wait"
        );
        log.last = Some(Instant::now() - Duration::from_secs(2));
        log.note(|count| said.push(count));
        assert_eq!(said, [1, 100]);
    }
}
