//! The plain-text ceiling: may_minihttp's hello world, the leanest HTTP server on the `may`
//! runtime, for `bench/compare.sh` to measure beside video-server's own `/plaintext`.
//! Usage: `minihttp-ceiling ADDRESS` (e.g. 127.0.0.1:3907). Benchmarks only.

use may_minihttp::{HttpServer, HttpService, Request, Response};
use std::io;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct HelloWorld;

impl HttpService for HelloWorld {
    fn call(&mut self, _request: Request, response: &mut Response) -> io::Result<()> {
        response.body("Hello, World!");
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
