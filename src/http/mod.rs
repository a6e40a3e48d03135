//! Our HTTP/1.1 server on the `may` coroutine runtime.
//!
//! ```text
//!  listener ──accept──▶ connection coroutine (one per client, buffers of its own)
//!                         read ─▶ request::parse ─▶ Service::call ─▶ Response::write_to ─▶ write
//!                                 └──────── on the worker's hot stack ─────────┘
//!                           │ no request for `park_after` ▲ its client writes again
//!                           ▼                              │
//!                         idle keeper (socket only: no coroutine, no buffers)
//! ```
//!
//! `may_minihttp` showed how lean a coroutine server can be, but it cannot face real
//! clients (16 headers at most, panics on a bad `Content-Length`, no limits, no timeouts,
//! `Connection: close` ignored). This layer keeps its shape (a connection loop that
//! answers every buffered pipelined request, then writes once) and adds what clients and
//! attackers need: limits on head, header count and body ([`Limits`]), strict
//! `Content-Length` framing, keep-alive rules for HTTP/1.0 and 1.1, `Expect:
//! 100-continue`, idle and request timeouts, error responses that reach the client, and a
//! graceful stop ([`ServerHandle::shutdown`]).
//!
//! The application plugs in through [`Service`]; the HTTP layer knows nothing of videos.

mod budget;
pub mod conditional;
mod connection;
mod date;
mod hot_stack;
mod keeper;
pub mod limits;
mod pool;
pub mod request;
pub mod response;
mod server;

use std::time::Duration;

pub use budget::default_limit as default_max_buffered_bytes;
pub use request::{HttpError, Limits, Request};
pub use response::Response;
pub use server::{start, ServerHandle, ShutdownReport, StartError};

/// The application behind the server. One value serves every connection, concurrently.
pub trait Service: Send + Sync + 'static {
    /// Answers one complete request by filling `response` (cleared beforehand).
    fn call(&self, request: &Request<'_>, response: &mut Response);

    /// Complete header lines (`Name: value\r\n`) added to every response, including the
    /// errors the HTTP layer produces itself.
    fn common_headers(&self) -> &[u8] {
        b""
    }

    /// Told of each request the HTTP layer refused before it reached [`Service::call`].
    fn rejected(&self, _error: &HttpError) {}

    /// Told when a connection opens.
    fn connection_opened(&self) {}

    /// Told when a connection closes.
    fn connection_closed(&self) {}

    /// Told when an idle connection is parked (`true`: it gave up its coroutine and
    /// buffers) and when it leaves the keeper (its client wrote, or it is closing).
    fn connection_parked(&self, _parked: bool) {}
}

/// How the HTTP layer runs.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub limits: Limits,
    /// How long a keep-alive connection may sit with no request before it is closed.
    pub idle_timeout: Duration,
    /// How long a connection waits for its next request in its own coroutine before it
    /// is parked in the idle keeper (no coroutine, no buffers) for the rest of its idle
    /// time; `None`: never parked.
    pub park_after: Option<Duration>,
    /// How long a client may take to send one whole request once its first byte arrived
    /// (slow-header and slow-body protection); past it the client gets a 408.
    pub request_timeout: Duration,
    /// `may` worker threads.
    pub workers: usize,
    /// Pin each worker to one CPU of the process's affinity mask.
    pub pin_workers: bool,
    /// Stack size of each coroutine, and of each worker's hot stack, in bytes.
    pub stack_bytes: usize,
    /// Answer requests on each worker's hot stack (`hot_stack`), not on the coroutine's.
    pub hot_stack: bool,
    /// Finished coroutines whose stacks the runtime keeps for reuse. Each holds the stack
    /// pages its last request touched, so this bounds what a burst of connections that
    /// then park leaves resident (may's default, 1,000, is 10–15 MiB).
    pub coroutine_pool: usize,
    /// Request buffer memory all connections together may hold; a request that needs more
    /// gets a 503.
    pub max_buffered_bytes: usize,
    /// After an error response, how long the connection keeps reading (and discarding)
    /// what the client still sends before it closes.
    pub linger: Duration,
    /// The most bytes discarded that way.
    pub linger_bytes: usize,
    /// The most connections open at once; `None`: from the descriptor limit.
    pub max_connections: Option<usize>,
}

impl HttpConfig {
    /// How long a connection's coroutine waits for the next request before it ends: at
    /// the idle timeout the connection closes, at the park delay it is parked.
    fn idle_wait(&self) -> Duration {
        match self.park_after {
            Some(park_after) => park_after.min(self.idle_timeout),
            None => self.idle_timeout,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(60),
            park_after: Some(Duration::from_secs(1)),
            request_timeout: Duration::from_secs(10),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            pin_workers: true,
            stack_bytes: 64 * 1024,
            hot_stack: true,
            coroutine_pool: 256,
            max_buffered_bytes: budget::default_limit(),
            linger: Duration::from_secs(5),
            linger_bytes: 64 << 20,
            max_connections: None,
        }
    }
}
