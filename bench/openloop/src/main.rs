//! `openloop`: sends HTTP/1.1 requests at a constant rate and reports latency percentiles
//! measured from each request's scheduled send time (see the library docs).

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use openloop::{run, Plan, Report};

/// Constant-rate (open-loop) HTTP/1.1 load generator, latency corrected like wrk2.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Target, `http://host:port/path` (plain HTTP only).
    url: String,
    /// Requests per second, for all connections together.
    #[arg(short, long)]
    rate: f64,
    /// Connections, each with at most one request in flight.
    #[arg(short, long, default_value_t = 100)]
    connections: usize,
    /// Seconds measured.
    #[arg(short, long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds sent at the same rate before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait for responses still in flight after the last send.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Request method.
    #[arg(short, long, default_value = "GET")]
    method: String,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body, read from this file.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Err(message) = run_cli(&args) {
        eprintln!("openloop: {message}");
        std::process::exit(1);
    }
}

fn run_cli(args: &Args) -> Result<(), String> {
    let positive = |value: f64| value.is_finite() && value > 0.0;
    if !positive(args.rate) || args.connections == 0 || !positive(args.duration) {
        return Err("--rate, --connections and --duration must be positive".into());
    }
    let rest = args
        .url
        .strip_prefix("http://")
        .ok_or("the URL must start with http://")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let address = authority
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {authority}: {error}"))?
        .next()
        .ok_or_else(|| format!("{authority} has no address"))?;
    let body = match &args.body_file {
        Some(path) => std::fs::read(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
        None => Vec::new(),
    };
    let mut request = format!("{} {path} HTTP/1.1\r\nHost: {authority}\r\n", args.method);
    for header in &args.headers {
        if !header.contains(':') || header.contains(['\r', '\n']) {
            return Err(format!("bad header {header:?}: expected `Name: value`"));
        }
        request.push_str(header);
        request.push_str("\r\n");
    }
    if !body.is_empty() || args.method == "POST" || args.method == "PUT" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(&body);

    let plan = Plan {
        address,
        request,
        rate: args.rate,
        connections: args.connections,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        drain: Duration::from_secs_f64(args.drain),
    };
    let report = run(&plan).map_err(|error| format!("{address}: {error}"))?;
    print_text(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&to_json(&report)).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    Ok(())
}

/// Percentiles reported, and plotted as the latency curve.
const PERCENTILES: &[f64] = &[
    50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
];

fn ms(histogram: &hdrhistogram::Histogram<u64>, percentile: f64) -> f64 {
    histogram.value_at_percentile(percentile) as f64 / 1000.0
}

fn print_text(report: &Report) {
    println!(
        "target {:.0} req/s over {} connections for {:.1} s: sent {}, completed {} ({:.0} req/s), errors {}, unanswered {}",
        report.plan_rate,
        report.connections,
        report.duration.as_secs_f64(),
        report.sent,
        report.completed,
        report.achieved_rate(),
        report.errors,
        report.unanswered
    );
    let statuses: Vec<String> = report
        .statuses
        .iter()
        .map(|(status, count)| format!("{status}: {count}"))
        .collect();
    println!("statuses: {}", statuses.join(", "));
    println!("latency from scheduled send (ms):");
    for &percentile in PERCENTILES {
        println!(
            "  p{percentile:<6} {:>10.3}",
            ms(&report.latency_us, percentile)
        );
    }
    println!(
        "generator send lag (ms): p50 {:.3}, p99 {:.3}, max {:.3}",
        ms(&report.send_lag_us, 50.0),
        ms(&report.send_lag_us, 99.0),
        report.send_lag_us.max() as f64 / 1000.0
    );
}

fn to_json(report: &Report) -> serde_json::Value {
    let curve: Vec<serde_json::Value> = PERCENTILES
        .iter()
        .map(|&p| serde_json::json!([p, ms(&report.latency_us, p)]))
        .collect();
    let statuses: serde_json::Map<String, serde_json::Value> = report
        .statuses
        .iter()
        .map(|(status, count)| (status.to_string(), (*count).into()))
        .collect();
    serde_json::json!({
        "target_rate": report.plan_rate,
        "connections": report.connections,
        "duration_s": report.duration.as_secs_f64(),
        "sent": report.sent,
        "completed": report.completed,
        "achieved_rate": report.achieved_rate(),
        "statuses": statuses,
        "errors": report.errors,
        "unanswered": report.unanswered,
        "latency_ms": {
            "p50": ms(&report.latency_us, 50.0),
            "p90": ms(&report.latency_us, 90.0),
            "p99": ms(&report.latency_us, 99.0),
            "p99.9": ms(&report.latency_us, 99.9),
            "max": report.latency_us.max() as f64 / 1000.0,
            "mean": report.latency_us.mean() / 1000.0,
        },
        "latency_curve_ms": curve,
        "send_lag_ms": {
            "p50": ms(&report.send_lag_us, 50.0),
            "p99": ms(&report.send_lag_us, 99.0),
            "max": report.send_lag_us.max() as f64 / 1000.0,
        },
    })
}
