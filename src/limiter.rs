//! Per-client limits: a request rate per client and route (`--rate-limit`), and a view
//! counted once per client and video within a window (`--view-dedup-seconds`).
//!
//! Without them one client can pipeline 100,000 plays in a second, each one a view. Both
//! are off by default (the contract counts every hit) and are what a production
//! deployment turns on. A client is its address as [`crate::api`] determines it (the peer,
//! or `X-Forwarded-For` from a trusted proxy).
//!
//! Both keep their state in the same bounded structure, `Shards`: a fixed number of
//! mutex-guarded maps keyed by a keyed hash (SipHash with a random key, so a client cannot
//! aim its addresses at one shard). A request locks one shard for a few nanoseconds. When
//! a shard reaches its cap, entries that no longer matter (a full bucket, an expired
//! window) are dropped; if it is still full, the shard is cleared: memory stays bounded
//! under a flood of addresses, at the price of forgetting some clients' recent history.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Shards per structure: with the per-shard cap, at most 64 × 8,192 entries (a few MiB).
const SHARDS: usize = 64;
const SHARD_CAP: usize = 8_192;

/// A hash-sharded map with bounded size.
struct Shards<V> {
    shards: Box<[Mutex<HashMap<u64, V>>]>,
    hasher: std::hash::RandomState,
}

impl<V> Shards<V> {
    fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn key(&self, value: impl Hash) -> u64 {
        self.hasher.hash_one(value)
    }

    /// Runs `f` on the entry for `key`, making room first if its shard is full (dropping
    /// entries for which `stale` says so, or everything if that is not enough).
    fn with<R>(
        &self,
        key: u64,
        stale: impl Fn(&V) -> bool,
        f: impl FnOnce(&mut Option<V>) -> R,
    ) -> R {
        let mut shard = self.shards[(key % SHARDS as u64) as usize].lock();
        if shard.len() >= SHARD_CAP && !shard.contains_key(&key) {
            shard.retain(|_, value| !stale(value));
            if shard.len() >= SHARD_CAP {
                shard.clear();
            }
        }
        let mut entry = shard.remove(&key);
        let result = f(&mut entry);
        if let Some(value) = entry {
            shard.insert(key, value);
        }
        result
    }
}

/// `--rate-limit RATE[/BURST]`: requests per second, and how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl RateLimit {
    /// `50` (50 per second, bursts of 50) or `50/200` (bursts of 200).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (rate, burst) = match text.split_once('/') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (text, None),
        };
        let per_second: f64 = rate
            .trim()
            .parse()
            .ok()
            .filter(|rate: &f64| rate.is_finite() && *rate > 0.0)
            .ok_or_else(|| {
                format!("{text:?}: the rate must be a positive number of requests per second")
            })?;
        let burst = match burst {
            None => per_second.ceil(),
            Some(burst) => burst
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|burst| *burst >= 1)
                .map(f64::from)
                .ok_or_else(|| {
                    format!("{text:?}: the burst must be a whole number of at least 1")
                })?,
        };
        Ok(RateLimit { per_second, burst })
    }
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Requests per client and route, as token buckets.
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Shards<Bucket>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: Shards::new(),
        }
    }

    /// Takes a token for this client on this route; `Err(wait)` when there is none, with
    /// how long until there will be.
    pub fn check(&self, client: IpAddr, route: usize) -> Result<(), Duration> {
        let now = Instant::now();
        let limit = self.limit;
        let refill_time = Duration::from_secs_f64(limit.burst / limit.per_second);
        let key = self.buckets.key((client, route));
        self.buckets.with(
            key,
            // A bucket that has refilled completely is the same as no bucket.
            |bucket| now.duration_since(bucket.updated) >= refill_time,
            |entry| {
                let bucket = entry.get_or_insert(Bucket {
                    tokens: limit.burst,
                    updated: now,
                });
                let elapsed = now.duration_since(bucket.updated).as_secs_f64();
                bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(limit.burst);
                bucket.updated = now;
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    Ok(())
                } else {
                    Err(Duration::from_secs_f64(
                        (1.0 - bucket.tokens) / limit.per_second,
                    ))
                }
            },
        )
    }
}

/// Views counted per client and video, within a window.
pub struct ViewDedup {
    window: Duration,
    last_counted: Shards<Instant>,
}

impl ViewDedup {
    pub fn new(window: Duration) -> Self {
        ViewDedup {
            window,
            last_counted: Shards::new(),
        }
    }

    /// Whether this play counts as a view: the first from this client for this video in
    /// the window does; the others within it do not (and do not extend it).
    pub fn counts(&self, client: IpAddr, video_id: &str) -> bool {
        let now = Instant::now();
        let window = self.window;
        let key = self.last_counted.key((client, video_id));
        self.last_counted.with(
            key,
            |counted| now.duration_since(*counted) >= window,
            |entry| match entry {
                Some(counted) if now.duration_since(*counted) < window => false,
                _ => {
                    *entry = Some(now);
                    true
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn rates_parse_with_an_optional_burst() {
        assert_eq!(
            RateLimit::parse("50").expect("valid"),
            RateLimit {
                per_second: 50.0,
                burst: 50.0
            }
        );
        assert_eq!(
            RateLimit::parse("0.5/3").expect("valid"),
            RateLimit {
                per_second: 0.5,
                burst: 3.0
            }
        );
        assert_eq!(RateLimit::parse("0.5").expect("valid").burst, 1.0);
        for bad in ["", "0", "-1", "abc", "10/0", "10/x", "inf", "NaN"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_says_how_long_to_wait() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert_eq!(limiter.check(CLIENT, 0), Ok(()));
        }
        let wait = limiter.check(CLIENT, 0).expect_err("burst spent");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Other clients and other routes have buckets of their own.
        assert_eq!(limiter.check(OTHER, 0), Ok(()));
        assert_eq!(limiter.check(CLIENT, 1), Ok(()));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(limiter.check(CLIENT, 0), Ok(()), "refilled");
    }

    #[test]
    fn a_view_counts_once_per_client_and_video_in_the_window() {
        let dedup = ViewDedup::new(Duration::from_millis(100));
        assert!(dedup.counts(CLIENT, "12345"));
        assert!(!dedup.counts(CLIENT, "12345"));
        assert!(dedup.counts(CLIENT, "other"));
        assert!(dedup.counts(OTHER, "12345"));
        std::thread::sleep(Duration::from_millis(110));
        assert!(dedup.counts(CLIENT, "12345"), "a new window");
    }

    #[test]
    fn a_flood_of_clients_keeps_the_memory_bounded() {
        let dedup = ViewDedup::new(Duration::from_secs(3600));
        for n in 0..(SHARDS * SHARD_CAP * 2) as u32 {
            dedup.counts(IpAddr::V4(n.into()), "12345");
        }
        let entries: usize = dedup
            .last_counted
            .shards
            .iter()
            .map(|shard| shard.lock().len())
            .sum();
        assert!(entries <= SHARDS * SHARD_CAP, "{entries}");
    }
}
