//! One client connection: read, parse, call the service, write, until the connection ends.
//!
//! Each connection runs in its own coroutine with its own buffers (no lock on the request
//! path). The loop, per wake-up:
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

use super::request::{self, keeps_alive, HttpError, Parsed};
use super::response::{ConnectionHeader, Response};
use super::{HttpConfig, Service};

/// Bytes of read buffer a connection starts with (and returns to after a large body).
const INITIAL_INPUT: usize = 4 * 1024;
/// Output is written before this much accumulates from pipelined requests.
const OUTPUT_FLUSH_THRESHOLD: usize = 64 * 1024;
/// How long a closing connection keeps reading (and discarding) before it closes.
const LINGER: Duration = Duration::from_secs(1);
/// How much a closing connection discards at most.
const LINGER_BYTES: usize = 256 * 1024;

/// Bytes received and not yet consumed: `bytes[start..end]`.
struct InputBuffer {
    /// Always fully initialized (zeroed once when grown), so reads need no `unsafe`.
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl InputBuffer {
    fn new() -> Self {
        InputBuffer {
            bytes: vec![0; INITIAL_INPUT],
            start: 0,
            end: 0,
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
                self.bytes = vec![0; INITIAL_INPUT];
            }
        }
    }

    /// Room to read into, such that the buffered request can reach `total` bytes.
    fn spare(&mut self, total: usize) -> &mut [u8] {
        let buffered = self.end - self.start;
        let wanted = total.max(buffered + 1);
        if self.bytes.len() - self.start < wanted || self.end == self.bytes.len() {
            self.bytes.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = buffered;
        }
        if self.bytes.len() < wanted {
            let grown = wanted.max(self.bytes.len() * 2);
            self.bytes.resize(grown, 0);
        }
        &mut self.bytes[self.end..]
    }

    fn commit(&mut self, count: usize) {
        self.end += count;
    }
}

/// What the connection does after processing what is buffered.
enum Next {
    /// Read more; the partial request (if any) will occupy this many bytes in total.
    Read { total: usize },
    /// Write what is pending, then close.
    Close { linger: bool },
}

/// The state of one connection.
///
/// `G` is the server's bookkeeping for the connection. It is declared before `stream`, so
/// it is dropped first (on return and on unwinding alike): the server forgets the socket
/// before it is closed, and never touches a closed (or reused) descriptor.
pub(super) struct Connection<'a, S: Service, G> {
    _guard: G,
    stream: TcpStream,
    peer: SocketAddr,
    service: &'a S,
    config: &'a HttpConfig,
    stopping: &'a AtomicBool,
    input: InputBuffer,
    output: Vec<u8>,
    response: Response,
    /// The read timeout currently set on the socket, so it is changed only when needed.
    read_timeout: Option<Duration>,
    /// When the first byte of the request being received arrived.
    request_started: Option<Instant>,
    /// Whether `100 Continue` was already sent for the request being received.
    continue_sent: bool,
}

impl<'a, S: Service, G> Connection<'a, S, G> {
    pub(super) fn new(
        guard: G,
        stream: TcpStream,
        peer: SocketAddr,
        service: &'a S,
        config: &'a HttpConfig,
        stopping: &'a AtomicBool,
    ) -> Self {
        // Responses are written whole; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(config.idle_timeout));
        Connection {
            _guard: guard,
            stream,
            peer,
            service,
            config,
            stopping,
            input: InputBuffer::new(),
            output: Vec::new(),
            response: Response::default(),
            read_timeout: None,
            request_started: None,
            continue_sent: false,
        }
    }

    /// Serves the connection until it closes.
    pub(super) fn run(mut self) {
        loop {
            let next = self.process_buffered();
            if let Next::Close { linger } = next {
                if self.flush().is_ok() && linger {
                    self.linger();
                }
                return;
            }
            if self.flush().is_err() {
                return;
            }
            if self.stopping.load(Ordering::Acquire) && self.input.is_empty() {
                return;
            }
            let Next::Read { total } = next else { return };
            match self.fill(total) {
                Ok(0) => {
                    // A client that half-closes mid-request may still read: tell it why.
                    if !self.input.is_empty() {
                        self.reject(&HttpError::Malformed(
                            "connection closed before the whole request was sent",
                        ));
                        let _ = self.flush();
                    }
                    return;
                }
                Ok(_) => {}
                Err(error)
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
                    }
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Answers every complete request in the input buffer.
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
                        self.output
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
                    self.response.clear();
                    self.service.call(&request, &mut self.response);
                    self.response.write_to(
                        &mut self.output,
                        self.service.common_headers(),
                        connection,
                        head_only,
                    );
                    self.input.consume(length);
                    self.request_started = None;
                    self.continue_sent = false;
                    if !keep_alive {
                        return Next::Close { linger: true };
                    }
                    if self.output.len() >= OUTPUT_FLUSH_THRESHOLD && self.flush().is_err() {
                        return Next::Close { linger: false };
                    }
                }
            }
        }
    }

    /// Writes the error response for a request the HTTP layer refused.
    fn reject(&mut self, error: &HttpError) {
        self.service.rejected(error);
        self.response.clear();
        self.response
            .set_json_error(error.status(), &error.to_string());
        self.response.write_to(
            &mut self.output,
            self.service.common_headers(),
            ConnectionHeader::Close,
            false,
        );
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.output);
        self.output.clear();
        if self.output.capacity() > 4 * OUTPUT_FLUSH_THRESHOLD {
            self.output = Vec::new();
        }
        result
    }

    /// Reads more input, with the timeout that applies to the connection's state.
    fn fill(&mut self, total: usize) -> io::Result<usize> {
        let timeout = match self.request_started {
            None => self.config.idle_timeout,
            Some(started) => {
                let remaining = self
                    .config
                    .request_timeout
                    .saturating_sub(started.elapsed());
                if remaining.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                remaining
            }
        };
        if self.read_timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        let spare = self.input.spare(total);
        let count = self.stream.read(spare)?;
        self.input.commit(count);
        Ok(count)
    }

    /// Half-closes, then discards input briefly so the response is not lost to a reset.
    fn linger(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        if self.stream.set_read_timeout(Some(LINGER)).is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut discarded = 0;
        let mut scratch = [0u8; 4096];
        while discarded < LINGER_BYTES && Instant::now() < deadline {
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
    fn input_buffer_grows_for_a_body_and_shrinks_after() {
        let mut input = InputBuffer::new();
        let spare = input.spare(10_000);
        assert!(spare.len() >= 10_000);
        spare[..3].copy_from_slice(b"abc");
        input.commit(3);
        assert_eq!(input.data(), b"abc");
        input.consume(3);
        assert!(input.is_empty());
        assert_eq!(input.bytes.len(), INITIAL_INPUT);
    }

    #[test]
    fn input_buffer_compacts_before_growing() {
        let mut input = InputBuffer::new();
        let spare = input.spare(0);
        let length = spare.len();
        spare.fill(b'x');
        input.commit(length);
        input.consume(length - 10);
        let spare = input.spare(0);
        assert_eq!(
            spare.len(),
            INITIAL_INPUT - 10,
            "moved to the front, not grown"
        );
        assert_eq!(input.data(), &[b'x'; 10]);
    }
}
