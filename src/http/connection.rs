//! One client connection: read, parse, call the service, write, until the connection ends.
//!
//! Each connection runs in its own coroutine with its own input buffer (no lock on the
//! request path); the response buffers it answers into are lent by its worker thread's
//! pool ([`super::pool`]) and given back once written. The loop, per wake-up:
//!
//! 1. parse every complete request already buffered, in order; for each, the service
//!    writes a response and the serialized bytes are appended to the output buffer
//!    (pipelined requests are answered in order by construction);
//! 2. write the output buffer in one `write` (flushing early if a flood of pipelined
//!    requests makes it large);
//! 3. read more, with the idle timeout when nothing is buffered and the request timeout
//!    (counted from the request's first byte) when a request is partly received.
//!
//! A request the HTTP layer refuses (bad framing, limits, timeout) gets its error response
//! written, then the connection half-closes and drains what the client still sends for a
//! moment before closing: closing with unread input makes the kernel send a reset, which
//! can destroy the error response before the client reads it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use may::net::TcpStream;

use super::budget::BufferBudget;
use super::hot_stack;
use super::limits::IdleMark;
use super::pool::ResponseBuffers;
use super::request::{self, keeps_alive, HttpError, Parsed};
use super::response::ConnectionHeader;
use super::{HttpConfig, Service};

/// Bytes of read buffer a connection starts with (and returns to after a large body).
const INITIAL_INPUT: usize = 4 * 1024;
/// Output is written before this much accumulates from pipelined requests.
const OUTPUT_FLUSH_THRESHOLD: usize = 64 * 1024;

/// Bytes received and not yet consumed: `bytes[start..end]`.
///
/// It starts at [`INITIAL_INPUT`] and grows only as bytes arrive (doubling, never past the
/// size of the request being received), so a request that merely declares a large
/// `Content-Length` costs nothing until its body comes. Every byte above the starting size
/// is reserved in the server-wide [`BufferBudget`] and given back when the buffer shrinks
/// or the connection ends.
struct InputBuffer<'b> {
    /// Always fully initialized (zeroed once when grown), so reads need no `unsafe`.
    bytes: Vec<u8>,
    start: usize,
    end: usize,
    budget: &'b BufferBudget,
}

/// The server-wide budget had no room for a request's next bytes.
#[derive(Debug)]
struct OverBudget;

/// Why reading more input failed.
enum ReadError {
    /// The buffer may not grow (see [`BufferBudget`]).
    OverBudget,
    Io(io::Error),
}

impl<'b> InputBuffer<'b> {
    fn new(budget: &'b BufferBudget) -> Self {
        InputBuffer {
            bytes: vec![0; INITIAL_INPUT],
            start: 0,
            end: 0,
            budget,
        }
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, count: usize) {
        self.start += count;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.bytes.len() > INITIAL_INPUT {
                // A large body came and went: give the memory back.
                self.budget.release(self.bytes.len() - INITIAL_INPUT);
                self.bytes = vec![0; INITIAL_INPUT];
            }
        }
    }

    /// Room to read into. `total` is the size of the request being received when its
    /// head is known (0 otherwise): the buffer never grows past it, and grows toward it
    /// only by doubling as bytes arrive.
    fn spare(&mut self, total: usize) -> Result<&mut [u8], OverBudget> {
        if self.end == self.bytes.len() && self.start > 0 {
            // Consumed bytes at the front: move the rest there before growing.
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.bytes.len() {
            let buffered = self.end - self.start;
            let doubled = self.bytes.len() * 2;
            let grown = if total > buffered {
                doubled.min(total)
            } else {
                doubled
            };
            let extra = grown - self.bytes.len();
            if !self.budget.try_reserve(extra) {
                return Err(OverBudget);
            }
            self.bytes.resize(grown, 0);
        }
        Ok(&mut self.bytes[self.end..])
    }

    fn commit(&mut self, count: usize) {
        self.end += count;
    }

    /// Drops whatever is buffered and gives the memory back (the connection is closing).
    fn discard(&mut self) {
        self.consume(self.end - self.start);
    }
}

impl Drop for InputBuffer<'_> {
    fn drop(&mut self) {
        self.budget
            .release(self.bytes.len().saturating_sub(INITIAL_INPUT));
    }
}

/// How a connection's coroutine ended.
pub(super) enum Ended<G> {
    /// The connection is closed (or closing: its socket goes with the coroutine).
    Closed,
    /// The client sent nothing for the park delay: the connection is still open, and its
    /// socket and bookkeeping are handed back to be held without a coroutine.
    Idle {
        guard: G,
        stream: TcpStream,
        idle_since: Instant,
    },
}

/// What the connection does after processing what is buffered.
enum Next {
    /// Read more; the partial request (if any) will occupy this many bytes in total.
    Read { total: usize },
    /// Write what is pending, then close.
    Close { linger: bool },
    /// Write what is pending (a flood of pipelined answers), then answer the rest.
    Flush,
}

/// The state of one connection.
///
/// `G` is the server's bookkeeping for the connection. It is declared before `stream`, so
/// it is dropped first (on return and on unwinding alike): the server forgets the socket
/// before it is closed, and never touches a closed (or reused) descriptor.
pub(super) struct Connection<'a, S: Service, G> {
    guard: G,
    stream: TcpStream,
    peer: SocketAddr,
    service: &'a S,
    config: &'a HttpConfig,
    stopping: &'a AtomicBool,
    /// Where the connection says it is idle, so the server can close it at its cap.
    idle: &'a IdleMark,
    /// What idle times count from.
    epoch: Instant,
    input: InputBuffer<'a>,
    /// The response under construction and the output not yet written: held only while
    /// there is something to answer or write, lent by the thread's pool otherwise.
    buffers: Option<Box<ResponseBuffers>>,
    /// The read timeout currently set on the socket, so it is changed only when needed.
    read_timeout: Option<Duration>,
    /// When the first byte of the request being received arrived.
    request_started: Option<Instant>,
    /// Whether `100 Continue` was already sent for the request being received.
    continue_sent: bool,
}

/// What a connection shares with the server that accepted it.
pub(super) struct Shared<'a> {
    pub config: &'a HttpConfig,
    /// Set when the server stops.
    pub stopping: &'a AtomicBool,
    /// Request buffer memory across all connections.
    pub budget: &'a BufferBudget,
    /// Where this connection says it is idle.
    pub idle: &'a IdleMark,
    /// What idle times count from.
    pub epoch: Instant,
    /// A new socket (its options still to set), not one resumed after parking.
    pub fresh: bool,
}

impl<'a, S: Service, G> Connection<'a, S, G> {
    pub(super) fn new(
        guard: G,
        stream: TcpStream,
        peer: SocketAddr,
        service: &'a S,
        shared: Shared<'a>,
    ) -> Self {
        if shared.fresh {
            // Responses are written whole; Nagle would only delay them.
            let _ = stream.set_nodelay(true);
            let _ = stream.set_write_timeout(Some(shared.config.idle_timeout));
        }
        Connection {
            guard,
            stream,
            peer,
            service,
            config: shared.config,
            stopping: shared.stopping,
            idle: shared.idle,
            epoch: shared.epoch,
            input: InputBuffer::new(shared.budget),
            buffers: None,
            read_timeout: None,
            request_started: None,
            continue_sent: false,
        }
    }

    /// Serves the connection until it closes, or until it has waited the park delay for
    /// a request: then it is handed back ([`Ended::Idle`]) with none of its buffers.
    pub(super) fn run(mut self) -> Ended<G> {
        loop {
            let next = hot_stack::run(|| self.process_buffered());
            if let Next::Close { linger } = next {
                if self.flush().is_ok() && linger {
                    self.linger();
                }
                return Ended::Closed;
            }
            if self.flush().is_err() {
                return Ended::Closed;
            }
            let Next::Read { total } = next else {
                // Flushed early: answer the rest of what is buffered.
                continue;
            };
            if self.stopping.load(Ordering::Acquire) && self.input.is_empty() {
                return Ended::Closed;
            }
            let waiting = self.input.is_empty();
            if waiting {
                self.idle.set_idle(self.epoch);
            }
            let filled = self.fill(total);
            if waiting && matches!(filled, Ok(count) if count > 0) {
                // Still idle otherwise: a connection parked after its wait timed out is
                // the cap's to close.
                self.idle.set_busy();
            }
            match filled {
                Ok(0) => {
                    // A client that half-closes mid-request may still read: tell it why.
                    if !self.input.is_empty() {
                        self.reject(&HttpError::Malformed(
                            "connection closed before the whole request was sent",
                        ));
                        let _ = self.flush();
                    }
                    return Ended::Closed;
                }
                Ok(_) => {}
                Err(ReadError::OverBudget) => {
                    self.reject(&HttpError::Busy);
                    if self.flush().is_ok() {
                        self.linger();
                    }
                    return Ended::Closed;
                }
                Err(ReadError::Io(error))
                    if matches!(
                        error.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
                {
                    if !self.input.is_empty() {
                        self.reject(&HttpError::Timeout);
                        if self.flush().is_ok() {
                            self.linger();
                        }
                        return Ended::Closed;
                    }
                    return self.idle_end();
                }
                Err(_) => return Ended::Closed,
            }
        }
    }

    /// The wait for a request timed out: park the connection if that was the park delay,
    /// close it if it was the idle timeout.
    fn idle_end(self) -> Ended<G> {
        match self.config.park_after {
            Some(park_after) if park_after < self.config.idle_timeout => {
                let now = Instant::now();
                Ended::Idle {
                    guard: self.guard,
                    stream: self.stream,
                    idle_since: now.checked_sub(park_after).unwrap_or(now),
                }
            }
            _ => Ended::Closed,
        }
    }

    /// Answers every complete request in the input buffer (or as many as make the output
    /// worth flushing). Never yields: it writes no socket, so it can run on the worker's
    /// hot stack ([`hot_stack`]).
    fn process_buffered(&mut self) -> Next {
        loop {
            if self.input.is_empty() {
                return Next::Read { total: 0 };
            }
            let mut slots = request::header_slots();
            let parsed = request::parse(
                self.input.data(),
                &mut slots,
                self.peer,
                &self.config.limits,
            );
            match parsed {
                Err(error) => {
                    self.reject(&error);
                    return Next::Close { linger: true };
                }
                Ok(Parsed::NeedHead) => {
                    self.request_started.get_or_insert_with(Instant::now);
                    return Next::Read { total: 0 };
                }
                Ok(Parsed::NeedBody {
                    total,
                    expects_continue,
                }) => {
                    self.request_started.get_or_insert_with(Instant::now);
                    if expects_continue && !self.continue_sent {
                        self.buffers()
                            .output
                            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        self.continue_sent = true;
                    }
                    return Next::Read { total };
                }
                Ok(Parsed::Complete { request, length }) => {
                    let stopping = self.stopping.load(Ordering::Acquire);
                    let keep_alive = keeps_alive(&request) && !stopping;
                    let connection = match (keep_alive, request.minor_version) {
                        (false, _) => ConnectionHeader::Close,
                        (true, 0) => ConnectionHeader::KeepAlive,
                        (true, _) => ConnectionHeader::Default,
                    };
                    let head_only = request.method == "HEAD";
                    let service = self.service;
                    // The field, not `self.buffers()`: `request` still borrows the input.
                    let buffers = self.buffers.get_or_insert_with(ResponseBuffers::take);
                    buffers.response.clear();
                    service.call(&request, &mut buffers.response);
                    buffers.response.write_to(
                        &mut buffers.output,
                        service.common_headers(),
                        connection,
                        head_only,
                    );
                    let pending = buffers.output.len();
                    self.input.consume(length);
                    self.request_started = None;
                    self.continue_sent = false;
                    if !keep_alive {
                        return Next::Close { linger: true };
                    }
                    if pending >= OUTPUT_FLUSH_THRESHOLD {
                        return Next::Flush;
                    }
                }
            }
        }
    }

    /// Writes the error response for a request the HTTP layer refused.
    fn reject(&mut self, error: &HttpError) {
        self.service.rejected(error);
        let common_headers = self.service.common_headers();
        let buffers = self.buffers();
        buffers.response.clear();
        buffers
            .response
            .set_json_error(error.status(), &error.to_string());
        if error.status() == 503 {
            buffers.response.add_header("Retry-After", b"1");
        }
        buffers.response.write_to(
            &mut buffers.output,
            common_headers,
            ConnectionHeader::Close,
            false,
        );
    }

    /// The response buffers, taken from the thread's pool if the connection holds none.
    fn buffers(&mut self) -> &mut ResponseBuffers {
        self.buffers.get_or_insert_with(ResponseBuffers::take)
    }

    /// Writes the pending output and gives the buffers back to the pool (also when the
    /// write fails: the connection is closing then).
    fn flush(&mut self) -> io::Result<()> {
        let Some(buffers) = self.buffers.take() else {
            return Ok(());
        };
        let result = if buffers.output.is_empty() {
            Ok(())
        } else {
            self.stream.write_all(&buffers.output)
        };
        buffers.give_back();
        result
    }

    /// Reads more input, with the timeout that applies to the connection's state.
    fn fill(&mut self, total: usize) -> Result<usize, ReadError> {
        let timeout = match self.request_started {
            None => self.config.idle_wait(),
            Some(started) => {
                let remaining = self
                    .config
                    .request_timeout
                    .saturating_sub(started.elapsed());
                if remaining.is_zero() {
                    return Err(ReadError::Io(io::ErrorKind::TimedOut.into()));
                }
                remaining
            }
        };
        if self.read_timeout != Some(timeout) {
            self.stream
                .set_read_timeout(Some(timeout))
                .map_err(ReadError::Io)?;
            self.read_timeout = Some(timeout);
        }
        let spare = self
            .input
            .spare(total)
            .map_err(|OverBudget| ReadError::OverBudget)?;
        let count = self.stream.read(spare).map_err(ReadError::Io)?;
        self.input.commit(count);
        Ok(count)
    }

    /// Half-closes, then reads and discards what the client still sends, for up to
    /// `linger` and `linger_bytes` (nginx's lingering close), so that the response is not
    /// lost to a reset: a client that uploads a whole refused body before reading (many
    /// SDKs do) still reads its 413.
    fn linger(&mut self) {
        // What is buffered will never be answered: its memory goes back to the budget now.
        self.input.discard();
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + self.config.linger;
        let mut discarded = 0;
        let mut scratch = [0u8; 8 * 1024];
        while discarded < self.config.linger_bytes {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || self.stream.set_read_timeout(Some(remaining)).is_err() {
                break;
            }
            match self.stream.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(count) => discarded += count,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_buffer_grows_with_arriving_bytes_not_the_declared_length() {
        let budget = BufferBudget::new(usize::MAX);
        let mut input = InputBuffer::new(&budget);
        // A request declares a megabyte; nothing has arrived: no growth.
        let spare = input.spare(1_000_000).expect("room");
        assert_eq!(spare.len(), INITIAL_INPUT);
        let length = spare.len();
        input.commit(length);
        // Full: it doubles, and no further.
        assert_eq!(input.spare(1_000_000).expect("room").len(), INITIAL_INPUT);
        assert_eq!(budget.reserved(), INITIAL_INPUT);
        // Never past the request's own size.
        let mut small = InputBuffer::new(&budget);
        let length = small.spare(5_000).expect("room").len();
        small.commit(length);
        assert_eq!(
            small.spare(5_000).expect("room").len(),
            5_000 - INITIAL_INPUT
        );
        drop(small);
        input.consume(INITIAL_INPUT);
        assert_eq!(input.bytes.len(), INITIAL_INPUT);
        assert_eq!(budget.reserved(), 0, "given back on shrink and on drop");
    }

    #[test]
    fn input_buffer_compacts_before_growing() {
        let budget = BufferBudget::new(usize::MAX);
        let mut input = InputBuffer::new(&budget);
        let spare = input.spare(0).expect("room");
        let length = spare.len();
        spare.fill(b'x');
        input.commit(length);
        input.consume(length - 10);
        let spare = input.spare(0).expect("room");
        assert_eq!(
            spare.len(),
            INITIAL_INPUT - 10,
            "moved to the front, not grown"
        );
        assert_eq!(input.data(), &[b'x'; 10]);
    }

    #[test]
    fn input_buffer_refuses_to_grow_past_the_budget() {
        let budget = BufferBudget::new(INITIAL_INPUT);
        let mut first = InputBuffer::new(&budget);
        let length = first.spare(0).expect("room").len();
        first.commit(length);
        assert!(first.spare(0).is_ok(), "doubling fits the budget exactly");
        let mut second = InputBuffer::new(&budget);
        let length = second.spare(0).expect("room").len();
        second.commit(length);
        assert!(second.spare(0).is_err(), "no room left for a second one");
        drop(first);
        assert!(second.spare(0).is_ok());
    }
}
