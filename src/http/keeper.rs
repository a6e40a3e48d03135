//! Idle keep-alive connections, held without a coroutine or a buffer: the idle keeper.
//!
//! ```text
//!  connection coroutine ──no request for park_after──▶ IdleKeeper::park ──▶ parked map
//!          ▲                                              │ one epoll set (polling)
//!          └──── spawn a fresh coroutine ◀── readable ────┤
//!                               closed ◀── idle_timeout ──┘ (checked every tick)
//! ```
//!
//! A player keeps its connection open between segments, often for minutes; a server that
//! holds a coroutine stack and read/write buffers for each of them pays tens of KiB per
//! viewer. So a connection that has waited [`HttpConfig::park_after`] for its next request
//! ends its coroutine instead: its stack goes back to the runtime, its buffers to the
//! allocator, and only the socket and its bookkeeping (a few hundred bytes) wait here, in
//! one epoll set watched by one thread. When the client sends again (or hangs up, or a
//! graceful stop shuts the socket's read side), the keeper spawns a fresh coroutine for
//! it; when the idle timeout passes first, the keeper closes it.
//!
//! A busy connection never comes here: it stays in its coroutine between requests, so the
//! request path pays nothing for this.
//!
//! [`HttpConfig::park_after`]: super::HttpConfig::park_after

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use polling::{Event, Events, Poller};

/// How often the keeper looks for connections past their idle timeout: a parked
/// connection is closed at most this late.
const TICK: Duration = Duration::from_millis(250);

/// A connection the keeper can hold: the socket to watch, and how to serve it again.
pub(super) trait Parkable: Send + 'static {
    /// The socket watched for the client's next bytes.
    fn socket(&self) -> &may::net::TcpStream;
    /// Serves the connection again, in a fresh coroutine.
    fn resume(self: Box<Self>);
    /// Told when the connection enters the keeper (`true`) and when it leaves.
    fn set_parked(&self, parked: bool);
}

/// One parked connection and when its idleness began.
struct Parked {
    connection: Box<dyn Parkable>,
    idle_since: Instant,
}

/// What the keeper thread and the connections that park share.
struct Shared {
    poller: Poller,
    parked: Mutex<HashMap<usize, Parked>>,
    next_key: AtomicUsize,
    idle_timeout: Duration,
    stopping: AtomicBool,
}

/// The idle keeper of one server: a thread and the connections it holds.
pub(super) struct IdleKeeper {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl IdleKeeper {
    /// Starts the keeper's thread.
    pub(super) fn start(idle_timeout: Duration) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            poller: Poller::new()?,
            parked: Mutex::new(HashMap::new()),
            next_key: AtomicUsize::new(0),
            idle_timeout,
            stopping: AtomicBool::new(false),
        });
        let watched = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("idle-keeper".into())
            .spawn(move || watched.watch())?;
        Ok(IdleKeeper {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Holds `connection`, idle since `idle_since`, until its client sends again or its
    /// idle timeout passes. A socket the keeper cannot watch is closed (the client
    /// reconnects, as after any idle close).
    pub(super) fn park(&self, connection: Box<dyn Parkable>, idle_since: Instant) {
        let shared = &self.shared;
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let key = shared.next_key.fetch_add(1, Ordering::Relaxed);
        let fd = connection.socket().as_raw_fd();
        connection.set_parked(true);
        // In the map before it is watched: its event may arrive at once.
        shared.parked.lock().insert(
            key,
            Parked {
                connection,
                idle_since,
            },
        );
        // SAFETY: the socket stays open while it is in the epoll set: it is owned by the
        // map entry, and every path that takes an entry out (`take`) deletes the socket
        // from the set before the connection can be dropped.
        let watched = unsafe { shared.poller.add(fd, Event::readable(key)) };
        if let Err(error) = watched {
            tracing::warn!(%error, "cannot watch an idle connection; closing it");
            if let Some(parked) = shared.parked.lock().remove(&key) {
                parked.connection.set_parked(false);
            }
        }
    }

    /// Connections parked now.
    pub(super) fn parked(&self) -> usize {
        self.shared.parked.lock().len()
    }

    /// Stops the thread and closes every connection still parked.
    pub(super) fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.shared.poller.notify();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::warn!("the idle keeper ended with a panic");
            }
        }
        let keys: Vec<usize> = self.shared.parked.lock().keys().copied().collect();
        for key in keys {
            drop(self.shared.take(key));
        }
    }
}

impl Drop for IdleKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    /// The keeper thread: resumes connections whose clients wrote, closes those idle too
    /// long, until stopped.
    fn watch(&self) {
        let mut events = Events::new();
        let mut next_sweep = Instant::now() + TICK;
        while !self.stopping.load(Ordering::Acquire) {
            events.clear();
            if let Err(error) = self.poller.wait(&mut events, Some(TICK)) {
                if error.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(%error, "the idle keeper cannot wait; retrying");
                    std::thread::sleep(TICK);
                }
                continue;
            }
            for event in events.iter() {
                if let Some(parked) = self.take(event.key) {
                    parked.connection.resume();
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + TICK;
                self.close_expired(now);
            }
        }
    }

    /// Takes a parked connection out of the map and the epoll set.
    fn take(&self, key: usize) -> Option<Parked> {
        let parked = self.parked.lock().remove(&key)?;
        // SAFETY: the descriptor is open: the connection that owns it is in our hands.
        let socket = unsafe { BorrowedFd::borrow_raw(parked.connection.socket().as_raw_fd()) };
        let _ = self.poller.delete(socket);
        parked.connection.set_parked(false);
        Some(parked)
    }

    fn close_expired(&self, now: Instant) {
        let expired: Vec<usize> = self
            .parked
            .lock()
            .iter()
            .filter(|(_, parked)| now.duration_since(parked.idle_since) >= self.idle_timeout)
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            drop(self.take(key));
        }
    }
}
