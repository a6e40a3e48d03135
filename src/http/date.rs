//! The `Date` header value, formatted once per second and shared by every worker.
//!
//! Formatting an HTTP date per response would cost more than the rest of a small
//! response's head, and even reading the clock per response is a measurable share of a
//! pipelined one. So a thread of its own (`http-date`) re-formats the value as each second
//! begins, and a response only copies it. Workers share the value behind a sequence lock
//! made of atomics: readers never wait and never write a shared cache line. (A
//! thread-local cache is not an option: coroutines migrate between worker threads, and a
//! thread-local address cached across a yield would be another thread's.) If that thread
//! cannot be started, each response reads the clock and the first to see a new second
//! re-formats the value, as before.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT` is 29 bytes; stored in four 8-byte words.
const DATE_LEN: usize = 29;

struct DateCache {
    /// Odd while a writer is updating; readers retry.
    sequence: AtomicU64,
    /// The Unix second the words hold.
    second: AtomicU64,
    words: [AtomicU64; 4],
}

static CACHE: DateCache = DateCache {
    sequence: AtomicU64::new(0),
    second: AtomicU64::new(u64::MAX),
    words: [const { AtomicU64::new(0) }; 4],
};

/// Whether the `http-date` thread keeps the cache current.
static TICKING: AtomicBool = AtomicBool::new(false);
static START: Once = Once::new();

/// Appends the current HTTP date (IMF-fixdate) to `out`.
pub fn write_date(out: &mut Vec<u8>) {
    START.call_once(start_ticking);
    if !TICKING.load(Ordering::Relaxed) {
        refresh_when_idle(SystemTime::now());
    }
    loop {
        let sequence = CACHE.sequence.load(Ordering::Acquire);
        if sequence % 2 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(&CACHE.words) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        fence(Ordering::Acquire);
        if CACHE.sequence.load(Ordering::Relaxed) == sequence {
            out.extend_from_slice(&bytes[..DATE_LEN]);
            return;
        }
    }
}

fn since_epoch(now: SystemTime) -> Duration {
    now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// Formats the date now, then starts the thread that keeps it current.
fn start_ticking() {
    refresh_when_idle(SystemTime::now());
    let spawned = std::thread::Builder::new()
        .name("http-date".into())
        .spawn(|| loop {
            let now = SystemTime::now();
            refresh_when_idle(now);
            // Wake just after the next second begins.
            let into_second = since_epoch(now).subsec_nanos();
            let left = Duration::from_nanos(1_000_000_000 - u64::from(into_second));
            std::thread::sleep(left + Duration::from_millis(1));
        });
    match spawned {
        Ok(_) => TICKING.store(true, Ordering::Relaxed),
        Err(error) => {
            tracing::warn!(%error, "no thread for the Date header; each response reads the clock")
        }
    }
}

/// Re-formats the cached date for `now` unless it holds that second already, waiting out
/// another writer (without the thread, readers write) rather than skipping the second.
fn refresh_when_idle(now: SystemTime) {
    let second = since_epoch(now).as_secs();
    while CACHE.second.load(Ordering::Relaxed) != second {
        let sequence = CACHE.sequence.load(Ordering::Acquire);
        if sequence.is_multiple_of(2) {
            refresh(sequence, second, now);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Re-formats the cached date if no other thread is doing so.
fn refresh(sequence: u64, second: u64, now: SystemTime) {
    if CACHE
        .sequence
        .compare_exchange(sequence, sequence + 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    // Readers that see any of the new words must also see the odd sequence.
    fence(Ordering::Release);
    let text = httpdate::fmt_http_date(now);
    let mut bytes = [b' '; 32];
    let length = text.len().min(DATE_LEN);
    bytes[..length].copy_from_slice(&text.as_bytes()[..length]);
    for (chunk, word) in bytes.chunks_exact(8).zip(&CACHE.words) {
        let mut value = [0u8; 8];
        value.copy_from_slice(chunk);
        word.store(u64::from_ne_bytes(value), Ordering::Relaxed);
    }
    CACHE.second.store(second, Ordering::Relaxed);
    CACHE.sequence.store(sequence + 2, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_a_parseable_current_http_date() {
        let mut out = Vec::new();
        write_date(&mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert_eq!(text.len(), DATE_LEN, "{text}");
        let parsed = httpdate::parse_http_date(&text).expect("valid HTTP date");
        let skew = SystemTime::now()
            .duration_since(parsed)
            .unwrap_or(Duration::ZERO);
        assert!(skew < Duration::from_secs(5), "{text}");
    }

    #[test]
    fn the_date_moves_on_without_a_response_reading_the_clock() {
        let read = || {
            let mut out = Vec::new();
            write_date(&mut out);
            let text = String::from_utf8(out).expect("ascii");
            httpdate::parse_http_date(&text).expect("valid HTTP date")
        };
        let first = read();
        assert!(
            TICKING.load(Ordering::Relaxed),
            "the http-date thread did not start"
        );
        std::thread::sleep(Duration::from_millis(2100));
        let later = read();
        let moved = later.duration_since(first).unwrap_or(Duration::ZERO);
        assert!(moved >= Duration::from_secs(1), "{first:?} then {later:?}");
        let skew = SystemTime::now()
            .duration_since(later)
            .unwrap_or(Duration::ZERO);
        assert!(skew < Duration::from_secs(2), "{later:?}");
    }

    #[test]
    fn concurrent_readers_always_see_a_whole_date() {
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..20_000 {
                        let mut out = Vec::new();
                        write_date(&mut out);
                        let text = std::str::from_utf8(&out).expect("ascii");
                        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
                    }
                });
            }
        });
    }
}
