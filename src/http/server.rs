//! The listener, the accept loop, and stopping it all gracefully.
//!
//! [`start`] configures the `may` runtime (one worker per CPU, pinned), binds the listening
//! socket and spawns the accept coroutine; every accepted connection gets a coroutine of
//! its own running [`Connection`]. The returned [`ServerHandle`] stops the server:
//!
//! 1. set the stopping flag and wake the accept loop, which exits and closes the listener;
//! 2. shut down the read side of every open connection: idle ones see end-of-stream and
//!    close at once, while one that has already received a request answers it (with
//!    `Connection: close`) and then closes;
//! 3. wait, up to a grace period, until no connection is left.
//!
//! The accept loop also keeps the connection count under its cap (see [`super::limits`]):
//! at the cap it closes the connection idle the longest, and refuses a newcomer only when
//! none is idle. Accept errors (out of descriptors, say) back off up to a second and are
//! logged at most once a second, with their count.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::budget::BufferBudget;
use super::connection::{Connection, Ended, Shared};
use super::hot_stack;
use super::keeper::{IdleKeeper, Parkable};
use super::limits::{self, IdleMark, QuietLog};
use super::{HttpConfig, Service};
use crate::backoff::{Backoff, Jitter};

/// What the server knows of one open connection.
struct Tracked {
    fd: RawFd,
    /// Whether (and since when) it is idle, published by the connection itself.
    idle: Arc<IdleMark>,
}

/// State shared by the accept loop, the connections and the handle.
struct ServerState {
    stopping: AtomicBool,
    open_connections: AtomicUsize,
    /// The descriptor of every open connection, so shutdown can wake idle readers. An
    /// entry is removed (under this lock) before its socket is closed, so a descriptor in
    /// here is always open. Touched when a connection opens and closes, never per request.
    connections: Mutex<HashMap<u64, Tracked>>,
    next_connection_id: AtomicU64,
    /// Request buffer memory, across every connection.
    budget: BufferBudget,
    /// The time idle marks count from.
    epoch: Instant,
    /// The most connections open at once.
    max_connections: usize,
    config: HttpConfig,
    /// Holds connections idle past the park delay, without their coroutines.
    keeper: IdleKeeper,
}

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    state: Arc<ServerState>,
    acceptor: may::coroutine::JoinHandle<()>,
}

/// How shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the grace period ran out.
    pub abandoned_connections: usize,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {error}")]
    Bind {
        address: SocketAddr,
        error: io::Error,
    },
    #[error("cannot start the accept loop: {0}")]
    Spawn(io::Error),
    #[error("cannot start the idle connection keeper: {0}")]
    Keeper(io::Error),
}

/// Configures the runtime. Only the first call has an effect: `may` reads its
/// configuration when the scheduler starts.
fn configure_runtime(config: &HttpConfig) {
    may::config()
        .set_workers(config.workers)
        .set_stack_size(config.stack_bytes / std::mem::size_of::<usize>())
        .set_pool_capacity(config.coroutine_pool)
        .set_worker_pin(config.pin_workers);
    hot_stack::configure(config.stack_bytes, config.hot_stack);
}

fn bind(address: SocketAddr) -> io::Result<may::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    // SO_REUSEADDR (restart while old connections sit in TIME_WAIT) but not SO_REUSEPORT:
    // a second server on the same port must fail loudly, not silently share the traffic.
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    let listener: std::net::TcpListener = socket.into();
    let fd = listener.into_raw_fd();
    // SAFETY: `fd` is a listening TCP socket we own: `into_raw_fd` released it from the
    // std listener and nothing else holds it, so may's listener takes sole ownership.
    Ok(unsafe { may::net::TcpListener::from_raw_fd(fd) })
}

/// Starts serving `service` on `address`.
pub fn start<S: Service>(
    address: SocketAddr,
    config: HttpConfig,
    service: Arc<S>,
) -> Result<ServerHandle, StartError> {
    configure_runtime(&config);
    let max_connections = match limits::raise_descriptor_limit() {
        Ok(descriptors) => {
            let max_connections = config
                .max_connections
                .unwrap_or_else(|| limits::default_max_connections(descriptors.soft));
            tracing::info!(
                soft_limit_before = descriptors.soft_before,
                soft_limit = descriptors.soft,
                hard_limit = descriptors.hard,
                max_connections,
                "descriptor limit"
            );
            max_connections
        }
        Err(error) => {
            let max_connections = config.max_connections.unwrap_or(1_024);
            tracing::warn!(%error, max_connections, "cannot read or raise the descriptor limit");
            max_connections
        }
    };
    let listener = bind(address).map_err(|error| StartError::Bind { address, error })?;
    let local_addr = listener
        .local_addr()
        .map_err(|error| StartError::Bind { address, error })?;
    let keeper = IdleKeeper::start(config.idle_timeout).map_err(StartError::Keeper)?;
    let state = Arc::new(ServerState {
        stopping: AtomicBool::new(false),
        open_connections: AtomicUsize::new(0),
        connections: Mutex::new(HashMap::new()),
        next_connection_id: AtomicU64::new(0),
        budget: BufferBudget::new(config.max_buffered_bytes),
        epoch: Instant::now(),
        max_connections,
        config,
        keeper,
    });
    let acceptor_state = Arc::clone(&state);
    let accept_loop = move || accept_loop(listener, acceptor_state, service);
    // SAFETY: `may` requires that a coroutine not keep thread-local references across
    // yields, since it may resume on another worker thread. The accept loop and the
    // connections it spawns use no thread-local storage; the shared caches they need
    // (the Date header) are process-wide atomics for exactly this reason.
    let acceptor = unsafe {
        may::coroutine::Builder::new()
            .name("accept".into())
            .spawn(accept_loop)
    }
    .map_err(StartError::Spawn)?;
    Ok(ServerHandle {
        local_addr,
        state,
        acceptor,
    })
}

/// Pauses after a failed accept: 10 ms doubling to 1 s.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_CAP: Duration = Duration::from_secs(1);

fn accept_loop<S: Service>(
    listener: may::net::TcpListener,
    state: Arc<ServerState>,
    service: Arc<S>,
) {
    let mut accept_errors = QuietLog::new();
    let mut at_cap = QuietLog::new();
    // Out of descriptors or a connection reset before accept: keep serving the
    // connections we have, and back off so a persistent error neither spins nor floods
    // the log.
    let mut backoff = Backoff::new(ACCEPT_BACKOFF_FIRST, ACCEPT_BACKOFF_CAP, Jitter::Equal);
    loop {
        let accepted = listener.accept();
        if state.stopping.load(Ordering::Acquire) {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(error) => {
                let pause = backoff.next_pause();
                accept_errors.note(|count| {
                    tracing::warn!(%error, count, retry_in_ms = pause.as_millis() as u64, "accept failed");
                });
                may::coroutine::sleep(pause);
                continue;
            }
        };
        if state.open_connections.load(Ordering::Acquire) >= state.max_connections {
            let evicted = close_longest_idle(&state);
            at_cap.note(|count| {
                tracing::warn!(
                    max_connections = state.max_connections,
                    count,
                    evicted_idle = evicted,
                    "at the connection limit: closing the longest-idle connection, or refusing when none is idle"
                );
            });
            if !evicted {
                refuse(stream);
                continue;
            }
        }
        let id = state.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let idle = Arc::new(IdleMark::new());
        state.connections.lock().insert(
            id,
            Tracked {
                fd: stream.as_raw_fd(),
                idle: Arc::clone(&idle),
            },
        );
        state.open_connections.fetch_add(1, Ordering::AcqRel);
        service.connection_opened();
        let connection = OpenConnection {
            registration: Registration {
                id,
                state: Arc::clone(&state),
                service: Arc::clone(&service),
                idle,
            },
            stream,
            peer,
        };
        // SAFETY: as for the accept loop: connection code keeps no thread-local
        // references across yields.
        unsafe { may::coroutine::spawn(move || serve(connection, true)) };
    }
}

/// An open connection, between coroutines: at accept, and while parked.
struct OpenConnection<S: Service> {
    /// Declared before the socket, so it is dropped first: the server forgets the socket
    /// before it closes.
    registration: Registration<S>,
    stream: may::net::TcpStream,
    peer: SocketAddr,
}

/// Serves `connection` in the calling coroutine until it closes or goes idle long enough
/// to be parked. `fresh`: just accepted (its socket options are still to set).
fn serve<S: Service>(connection: OpenConnection<S>, fresh: bool) {
    let OpenConnection {
        registration,
        stream,
        peer,
    } = connection;
    let state = Arc::clone(&registration.state);
    let service = Arc::clone(&registration.service);
    let idle = Arc::clone(&registration.idle);
    // The registration goes into the connection as its guard: its bookkeeping runs on
    // drop, before the socket closes, so a connection whose coroutine unwinds (a panic
    // caught by the runtime, a cancellation) is still forgotten and counted closed, and
    // shutdown does not wait for it.
    let ended = Connection::new(
        registration,
        stream,
        peer,
        &*service,
        Shared {
            config: &state.config,
            stopping: &state.stopping,
            budget: &state.budget,
            idle: &idle,
            epoch: state.epoch,
            fresh,
        },
    )
    .run();
    if let Ended::Idle {
        guard,
        stream,
        idle_since,
    } = ended
    {
        let parked = OpenConnection {
            registration: guard,
            stream,
            peer,
        };
        state.keeper.park(Box::new(parked), idle_since);
    }
}

impl<S: Service> Parkable for OpenConnection<S> {
    fn socket(&self) -> &may::net::TcpStream {
        &self.stream
    }

    fn resume(self: Box<Self>) {
        let connection = *self;
        // SAFETY: as for the accept loop: connection code keeps no thread-local
        // references across yields.
        unsafe { may::coroutine::spawn(move || serve(connection, false)) };
    }

    fn set_parked(&self, parked: bool) {
        self.registration.service.connection_parked(parked);
    }
}

/// Closes the connection idle the longest (as a graceful stop does: its read ends); whether
/// there was one.
fn close_longest_idle(state: &ServerState) -> bool {
    let connections = state.connections.lock();
    let oldest = connections
        .values()
        .filter_map(|tracked| Some((tracked.idle.idle_since()?, tracked)))
        .min_by_key(|(since, _)| *since);
    let Some((since, tracked)) = oldest else {
        return false;
    };
    if !tracked.idle.claim(since) {
        return false;
    }
    // SAFETY: `fd` is open: a connection removes its entry under this same lock before its
    // socket is closed, and we hold the lock while using it.
    let socket = unsafe { BorrowedFd::borrow_raw(tracked.fd) };
    let _ = socket2::SockRef::from(&socket).shutdown(Shutdown::Read);
    true
}

/// Answers a connection the server cannot take with a 503, without waiting on it.
fn refuse(stream: may::net::TcpStream) {
    const BODY: &str = r#"{"error":"the server is at its connection limit; retry shortly"}"#;
    let answer = move || {
        use std::io::Write;
        let mut stream = stream;
        let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
        let _ = write!(
            stream,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
             Cache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
    };
    // SAFETY: as for connections: no thread-local references across yields.
    unsafe { may::coroutine::spawn(answer) };
}

/// An open connection's entry in the server state, removed when the connection ends.
struct Registration<S: Service> {
    id: u64,
    state: Arc<ServerState>,
    service: Arc<S>,
    /// Where the connection says it is idle (shared with the server's entry).
    idle: Arc<IdleMark>,
}

impl<S: Service> Drop for Registration<S> {
    fn drop(&mut self) {
        self.state.connections.lock().remove(&self.id);
        self.state.open_connections.fetch_sub(1, Ordering::AcqRel);
        self.service.connection_closed();
    }
}

impl ServerHandle {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn open_connections(&self) -> usize {
        self.state.open_connections.load(Ordering::Acquire)
    }

    /// Open connections parked in the idle keeper (no coroutine, no buffers).
    pub fn parked_connections(&self) -> usize {
        self.state.keeper.parked()
    }

    /// Stops accepting, lets in-flight requests finish, and waits up to `grace` for every
    /// connection to close.
    pub fn shutdown(self, grace: Duration) -> ShutdownReport {
        let ServerHandle {
            local_addr,
            state,
            acceptor,
        } = self;
        state.stopping.store(true, Ordering::Release);
        // Wake the accept loop with a connection of our own; it sees the flag and exits.
        let wake_address = match local_addr {
            SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], v4.port()))
            }
            SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
            }
            other => other,
        };
        match StdTcpStream::connect_timeout(&wake_address, Duration::from_secs(1)) {
            Ok(_) => {
                if acceptor.join().is_err() {
                    tracing::warn!("the accept loop ended with a panic");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not wake the accept loop; cancelling it");
                // SAFETY: the accept loop holds no lock and owns nothing but the listener;
                // cancelling unwinds it at its blocking accept, dropping the listener.
                unsafe { acceptor.coroutine().cancel() };
            }
        }
        for tracked in state.connections.lock().values() {
            // SAFETY: `fd` is open: a connection removes its entry under this same lock
            // before its socket is closed, and we hold the lock while using it.
            let socket = unsafe { BorrowedFd::borrow_raw(tracked.fd) };
            let _ = socket2::SockRef::from(&socket).shutdown(Shutdown::Read);
        }
        let open = || state.open_connections.load(Ordering::Acquire);
        let deadline = Instant::now() + grace;
        while open() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Parked connections were woken by the read shutdown above and closed by their
        // coroutines; whatever the keeper still holds is closed with it.
        state.keeper.stop();
        ShutdownReport {
            abandoned_connections: open(),
        }
    }
}
