//! The memory all connections together may hold in request buffers (`--max-buffered-bytes`).
//!
//! Each connection's input buffer starts small and grows only as bytes actually arrive
//! (never to the length a request merely declares). Growth beyond the starting size is
//! reserved here first; when the total would pass the limit, the request that needed more
//! room is refused with `503 Service Unavailable` and `Retry-After`, so a flood of large or
//! slow bodies costs the server a bounded amount of memory instead of an allocation failure.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of request buffers reserved across all connections, against a limit.
#[derive(Debug)]
pub struct BufferBudget {
    limit: usize,
    reserved: AtomicUsize,
}

impl BufferBudget {
    pub fn new(limit: usize) -> Self {
        BufferBudget {
            limit,
            reserved: AtomicUsize::new(0),
        }
    }

    /// Reserves `bytes` if the total stays within the limit; whether it did.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |reserved| {
                reserved
                    .checked_add(bytes)
                    .filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back bytes reserved earlier.
    pub fn release(&self, bytes: usize) {
        self.reserved.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Acquire)
    }
}

/// A default limit for this machine: an eighth of its memory (1 GiB when that cannot be
/// read), at least 64 MiB.
pub fn default_limit() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .unwrap_or(8 << 30);
    (total / 8).max(64 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_come_back() {
        let budget = BufferBudget::new(100);
        assert!(budget.try_reserve(60));
        assert!(!budget.try_reserve(41));
        assert!(budget.try_reserve(40));
        assert_eq!(budget.reserved(), 100);
        budget.release(60);
        assert!(budget.try_reserve(41));
        assert!(!budget.try_reserve(usize::MAX));
    }

    #[test]
    fn the_default_is_a_share_of_memory() {
        let limit = default_limit();
        assert!(limit >= 64 << 20, "{limit}");
    }
}
