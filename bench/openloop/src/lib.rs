//! openloop: a constant-rate HTTP/1.1 load generator, in the manner of wrk2.
//!
//! One thread drives every connection through one `mio` poll. Each connection keeps at
//! most one request in flight and follows its share of a fixed schedule
//! ([`schedule`]); each response is matched to its request by order ([`framing`]) and its
//! latency (completion minus *scheduled* send time) goes into an HDR histogram. Between
//! sends the thread spins on a zero-timeout poll when the next send is due within a
//! millisecond (epoll's timeout resolution), so the generator itself adds microseconds,
//! not milliseconds; the histogram of its own send lag is reported beside the latencies
//! so that a late generator is visible, never mistaken for a slow server.

pub mod framing;
pub mod schedule;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use framing::frame;
use schedule::Schedule;

/// What to send, where, how fast and for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    pub address: SocketAddr,
    /// The complete request, sent as is for every request.
    pub request: Vec<u8>,
    pub rate: f64,
    pub connections: usize,
    /// Sent but not measured, so that connections and caches are warm.
    pub warmup: Duration,
    pub duration: Duration,
    /// After the last scheduled send, how long to wait for responses still in flight.
    pub drain: Duration,
}

/// What a run measured. Latencies are in microseconds.
pub struct Report {
    pub plan_rate: f64,
    pub connections: usize,
    pub duration: Duration,
    /// Requests scheduled in the measured window and sent.
    pub sent: u64,
    /// Of those, responses received (whatever their status).
    pub completed: u64,
    /// Responses by status code, in the measured window.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Connection failures and unframeable responses (the request in flight is lost).
    pub errors: u64,
    /// Requests of the window still unanswered when the drain time ran out.
    pub unanswered: u64,
    pub latency_us: Histogram<u64>,
    /// How late the generator itself sent each request of the window, in microseconds:
    /// from the later of the scheduled time and the moment the connection became free
    /// (a wait for a late response is the server's, and is in the latency already).
    pub send_lag_us: Histogram<u64>,
}

impl Report {
    pub fn achieved_rate(&self) -> f64 {
        self.completed as f64 / self.duration.as_secs_f64()
    }
}

/// One connection's state.
struct Connection {
    stream: TcpStream,
    /// Index of the next request this connection will send.
    sequence: u64,
    /// Scheduled time of the request in flight, and whether it is measured.
    in_flight: Option<(Instant, bool)>,
    /// Bytes of the request in flight written so far.
    written: usize,
    /// When the previous response completed (or the connection opened).
    free_since: Instant,
    input: Vec<u8>,
    filled: usize,
}

fn connect(address: SocketAddr) -> io::Result<TcpStream> {
    let stream = std::net::TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(TcpStream::from_std(stream))
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The state one run shares across its connections.
struct Driver<'p> {
    plan: &'p Plan,
    poll: Poll,
    schedule: Schedule,
    /// Idle connections by the time their next request is due. A connection is either in
    /// flight or in here exactly once.
    idle: BinaryHeap<Reverse<(Instant, usize)>>,
    report: Report,
}

/// Runs the plan and returns what it measured.
pub fn run(plan: &Plan) -> io::Result<Report> {
    assert!(plan.rate > 0.0 && plan.connections > 0);
    let start = Instant::now() + Duration::from_millis(20);
    let mut driver = Driver {
        plan,
        poll: Poll::new()?,
        schedule: Schedule::new(start, plan.rate, plan.connections),
        idle: BinaryHeap::with_capacity(plan.connections),
        report: Report {
            plan_rate: plan.rate,
            connections: plan.connections,
            duration: plan.duration,
            sent: 0,
            completed: 0,
            statuses: Default::default(),
            errors: 0,
            unanswered: 0,
            latency_us: histogram(),
            send_lag_us: histogram(),
        },
    };
    let mut connections = Vec::with_capacity(plan.connections);
    for index in 0..plan.connections {
        let connection = Connection {
            stream: driver.open(index)?,
            sequence: 0,
            in_flight: None,
            written: 0,
            free_since: Instant::now(),
            input: vec![0; 64 * 1024],
            filled: 0,
        };
        driver.reschedule(&connection, index);
        connections.push(connection);
    }

    let measure_from = start + plan.warmup;
    let stop_sending = measure_from + plan.duration;
    let give_up = stop_sending + plan.drain;
    let mut events = Events::with_capacity(1024);

    loop {
        let now = Instant::now();
        while let Some(&Reverse((due, index))) = driver.idle.peek() {
            if due > now || due >= stop_sending {
                break;
            }
            driver.idle.pop();
            let connection = &mut connections[index];
            let measured = due >= measure_from;
            connection.in_flight = Some((due, measured));
            connection.written = 0;
            connection.sequence += 1;
            if measured {
                driver.report.sent += 1;
                let late_from = due.max(connection.free_since);
                let _ = driver
                    .report
                    .send_lag_us
                    .record(micros(now.saturating_duration_since(late_from)));
            }
            if let Err(error) = send(connection, &plan.request) {
                driver.on_broken(connection, index, error)?;
            }
        }

        let in_flight = connections.iter().any(|c| c.in_flight.is_some());
        let next_due = driver
            .idle
            .peek()
            .map(|Reverse((due, _))| *due)
            .filter(|due| *due < stop_sending);
        if next_due.is_none() && (!in_flight || now >= give_up) {
            break;
        }
        let timeout = match next_due {
            Some(due) => {
                let wait = due.saturating_duration_since(now);
                // epoll waits whole milliseconds and may oversleep: spin on the last one.
                if wait > Duration::from_micros(1500) {
                    wait - Duration::from_millis(1)
                } else {
                    Duration::ZERO
                }
            }
            None => give_up
                .saturating_duration_since(now)
                .min(Duration::from_millis(10)),
        };
        match driver.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        for event in events.iter() {
            let index = event.token().0;
            let connection = &mut connections[index];
            let mut result = Ok(());
            if event.is_writable() && connection.in_flight.is_some() {
                result = send(connection, &plan.request);
            }
            if result.is_ok() && (event.is_readable() || event.is_read_closed()) {
                result = driver.receive(connection, index);
            }
            if let Err(error) = result {
                driver.on_broken(connection, index, error)?;
            }
        }
    }
    driver.report.unanswered = connections
        .iter()
        .filter(|c| matches!(c.in_flight, Some((_, true))))
        .count() as u64;
    Ok(driver.report)
}

fn micros(duration: Duration) -> u64 {
    (duration.as_micros() as u64).max(1)
}

/// Writes what remains of the request in flight, until done or the socket is full.
fn send(connection: &mut Connection, request: &[u8]) -> io::Result<()> {
    while connection.written < request.len() {
        match connection.stream.write(&request[connection.written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(count) => connection.written += count,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

impl Driver<'_> {
    /// Connects connection `index` and registers it with the poll.
    fn open(&self, index: usize) -> io::Result<TcpStream> {
        let mut stream = connect(self.plan.address)?;
        self.poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(stream)
    }

    /// Puts an idle connection on the schedule for its next request.
    fn reschedule(&mut self, connection: &Connection, index: usize) {
        let due = self.schedule.due(index, connection.sequence);
        self.idle.push(Reverse((due, index)));
    }

    /// Reads what arrived and completes the request in flight when its response is whole.
    fn receive(&mut self, connection: &mut Connection, index: usize) -> io::Result<()> {
        loop {
            if connection.filled == connection.input.len() {
                let grown = connection.input.len() * 2;
                connection.input.resize(grown, 0);
            }
            match connection
                .stream
                .read(&mut connection.input[connection.filled..])
            {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(count) => connection.filled += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            let framed = frame(&connection.input[..connection.filled])
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
            let Some(framed) = framed else { continue };
            let done = Instant::now();
            let Some((scheduled, measured)) = connection.in_flight.take() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a response arrived with no request in flight",
                ));
            };
            if measured {
                let report = &mut self.report;
                report.completed += 1;
                *report.statuses.entry(framed.status).or_default() += 1;
                let _ = report.latency_us.record(micros(done - scheduled));
            }
            connection
                .input
                .copy_within(framed.length..connection.filled, 0);
            connection.filled -= framed.length;
            connection.free_since = done;
            if connection.filled > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "more bytes than one response",
                ));
            }
            self.reschedule(connection, index);
        }
    }

    /// Counts the failure, replaces the connection and, if it was in flight, puts it back
    /// on the schedule (one that was idle is on it already).
    fn on_broken(
        &mut self,
        connection: &mut Connection,
        index: usize,
        error: io::Error,
    ) -> io::Result<()> {
        let was_in_flight = match connection.in_flight.take() {
            Some((_, measured)) => {
                if measured {
                    self.report.errors += 1;
                }
                true
            }
            None => false,
        };
        if self.report.errors <= 3 {
            eprintln!("openloop: connection {index}: {error}; reconnecting");
        }
        let _ = self.poll.registry().deregister(&mut connection.stream);
        connection.stream = self.open(index)?;
        connection.filled = 0;
        connection.written = 0;
        connection.free_since = Instant::now();
        if was_in_flight {
            self.reschedule(connection, index);
        }
        Ok(())
    }
}
