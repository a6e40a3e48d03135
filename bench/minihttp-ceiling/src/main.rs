//! The plain-text ceiling: may_minihttp's hello world, the leanest HTTP server on the `may`
//! runtime, for `bench/run.sh` to measure beside video-server's own `/plaintext` and nginx.
//! Usage: `minihttp-ceiling ADDRESS` (e.g. 127.0.0.1:3907). Benchmarks only.
//!
//! Every path answers `Hello, World!` and is counted, except `GET /requests`, which answers
//! the count: bench/run.sh reads it before and after a steady window of a load run, as it
//! reads video-server's `/metrics` and nginx's `stub_status`, so that every server's CPU per
//! response is divided by responses the server itself counted. One relaxed atomic add per
//! request (a few nanoseconds against microseconds of syscalls) is all it costs.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use may_minihttp::{HttpServer, HttpService, Request, Response};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hello-world responses sent since start.
static ANSWERED: AtomicU64 = AtomicU64::new(0);

#[derive(Clone)]
struct HelloWorld;

impl HttpService for HelloWorld {
    fn call(&mut self, request: Request, response: &mut Response) -> io::Result<()> {
        if request.path() == "/requests" {
            let answered = ANSWERED.load(Ordering::Relaxed);
            response.body_vec(answered.to_string().into_bytes());
        } else {
            ANSWERED.fetch_add(1, Ordering::Relaxed);
            response.body("Hello, World!");
        }
        Ok(())
    }
}

fn main() -> io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3907".to_owned());
    let server = HttpServer(HelloWorld).start(address)?;
    server.wait();
    Ok(())
}
