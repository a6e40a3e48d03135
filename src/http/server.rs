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

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::budget::BufferBudget;
use super::connection::Connection;
use super::{HttpConfig, Service};

/// State shared by the accept loop, the connections and the handle.
struct ServerState {
    stopping: AtomicBool,
    open_connections: AtomicUsize,
    /// The descriptor of every open connection, so shutdown can wake idle readers. An
    /// entry is removed (under this lock) before its socket is closed, so a descriptor in
    /// here is always open. Touched when a connection opens and closes, never per request.
    connections: Mutex<HashMap<u64, RawFd>>,
    next_connection_id: AtomicU64,
    /// Request buffer memory, across every connection.
    budget: BufferBudget,
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
}

/// Configures the runtime. Only the first call has an effect: `may` reads its
/// configuration when the scheduler starts.
fn configure_runtime(config: &HttpConfig) {
    may::config()
        .set_workers(config.workers)
        .set_stack_size(config.stack_bytes / std::mem::size_of::<usize>())
        .set_worker_pin(config.pin_workers);
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
    let listener = bind(address).map_err(|error| StartError::Bind { address, error })?;
    let local_addr = listener
        .local_addr()
        .map_err(|error| StartError::Bind { address, error })?;
    let state = Arc::new(ServerState {
        stopping: AtomicBool::new(false),
        open_connections: AtomicUsize::new(0),
        connections: Mutex::new(HashMap::new()),
        next_connection_id: AtomicU64::new(0),
        budget: BufferBudget::new(config.max_buffered_bytes),
    });
    let config = Arc::new(config);
    let acceptor_state = Arc::clone(&state);
    let accept_loop = move || accept_loop(listener, acceptor_state, config, service);
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

fn accept_loop<S: Service>(
    listener: may::net::TcpListener,
    state: Arc<ServerState>,
    config: Arc<HttpConfig>,
    service: Arc<S>,
) {
    loop {
        let accepted = listener.accept();
        if state.stopping.load(Ordering::Acquire) {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors or a connection reset before accept: keep serving
                // the connections we have, and pause briefly so a persistent error does
                // not spin.
                tracing::warn!(%error, "accept failed");
                may::coroutine::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let id = state.next_connection_id.fetch_add(1, Ordering::Relaxed);
        state.connections.lock().insert(id, stream.as_raw_fd());
        state.open_connections.fetch_add(1, Ordering::AcqRel);
        service.connection_opened();
        let (state, config, service) = (
            Arc::clone(&state),
            Arc::clone(&config),
            Arc::clone(&service),
        );
        let serve = move || {
            // Bookkeeping runs on drop, before the socket closes, so a connection whose
            // coroutine unwinds (a panic caught by the runtime, a cancellation) is still
            // forgotten and counted closed, and shutdown does not wait for it.
            let registration = Registration {
                id,
                state: &state,
                service: &*service,
            };
            Connection::new(
                registration,
                stream,
                peer,
                &*service,
                &config,
                &state.stopping,
                &state.budget,
            )
            .run();
        };
        // SAFETY: as for the accept loop: connection code keeps no thread-local
        // references across yields.
        unsafe { may::coroutine::spawn(serve) };
    }
}

/// An open connection's entry in the server state, removed when the connection ends.
struct Registration<'a, S: Service> {
    id: u64,
    state: &'a ServerState,
    service: &'a S,
}

impl<S: Service> Drop for Registration<'_, S> {
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
        for &fd in state.connections.lock().values() {
            // SAFETY: `fd` is open: a connection removes its entry under this same lock
            // before its socket is closed, and we hold the lock while using it.
            let socket = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = socket2::SockRef::from(&socket).shutdown(Shutdown::Read);
        }
        let open = || state.open_connections.load(Ordering::Acquire);
        let deadline = Instant::now() + grace;
        while open() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        ShutdownReport {
            abandoned_connections: open(),
        }
    }
}
