//! Micro-benchmarks of the token request's hot path, piece by piece:
//! signing (the contract's MD5 and SHA-256, then one source in every scheme of
//! `bench/cdns/`), payload validation, response rendering, and the whole parse-sign-render
//! handler body; and what every request pays for its metrics (the clock reads and the
//! count), against what `Instant` and the `prometheus` crate's own types cost. Run with
//! `cargo bench --bench hot_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use std::borrow::Cow;
use std::path::Path;

use video_server::metrics::Metrics;
use video_server::token::{default_cdns, load_cdns, write_token, ContractHash, RequestSigner};
use video_server::video::parse_token_request;

const CONTRACT_BODY: &[u8] = br#"{"video":{"_id":"6213a7299fa2604f1b188ee0","videoId":"12345","title":"Big Buck Bunny","sources":[{"src":"/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4","size":1080,"type":"video/mp4"},{"src":"/Big_Buck_Bunny_720p_surround_FrostWire.com.mp4","size":720,"type":"video/mp4"}]}}"#;
const SRC: &str = "/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4";

/// A token body with `sources` copies of the contract's 1080p source.
fn body_with_sources(sources: usize) -> Vec<u8> {
    let source = r#"{"src":"/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4","size":1080,"type":"video/mp4"}"#;
    let list = vec![source; sources].join(",");
    format!(r#"{{"video":{{"_id":"6213a7299fa2604f1b188ee0","videoId":"12345","title":"Big Buck Bunny","sources":[{list}]}}}}"#)
        .into_bytes()
}

fn signing(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign one source");
    let mut out = Vec::with_capacity(128);
    for (name, scheme) in [("md5", ContractHash::Md5), ("sha256", ContractHash::Sha256)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                write_token(&mut out, scheme, black_box(SRC), black_box("U5e0IskwtIfA"));
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// One source signed by each scheme's bench CDN, as a token request signs it.
fn signing_by_scheme(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign one source, by scheme");
    let mut out = Vec::with_capacity(1024);
    let cdn_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/cdns");
    for scheme in [
        "md5",
        "sha256",
        "nginx",
        "akamai",
        "cloudfront",
        "google",
        "bunny",
    ] {
        let cdns = load_cdns(&cdn_dir.join(format!("{scheme}.json"))).expect("bench CDN file");
        let signer = RequestSigner::new(&cdns[0], 1_700_000_000, None);
        let src = Cow::Borrowed(SRC);
        group.bench_function(scheme, |b| {
            b.iter(|| {
                out.clear();
                signer.write_signed_url(&mut out, black_box(&src), "video/mp4");
                black_box(&out);
            })
        });
        if scheme == "cloudfront" {
            // Every call a resource not seen before: the RSA signature itself.
            let mut counter = 0u64;
            group.bench_function("cloudfront, signature not cached", |b| {
                b.iter(|| {
                    counter += 1;
                    out.clear();
                    let src = Cow::Owned(format!("/uncached/{counter}.mp4"));
                    signer.write_signed_url(&mut out, &src, "video/mp4");
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

fn validation(c: &mut Criterion) {
    c.bench_function("validate contract body", |b| {
        b.iter(|| black_box(parse_token_request(black_box(CONTRACT_BODY)).is_ok()))
    });
}

fn rendering(c: &mut Criterion) {
    let video = parse_token_request(CONTRACT_BODY).expect("valid body");
    let cdn = &default_cdns()[0];
    let signer = RequestSigner::new(cdn, 1_700_000_000, None);
    let mut out = Vec::with_capacity(1024);
    c.bench_function("render signed response (2 sources)", |b| {
        b.iter(|| {
            out.clear();
            video.write_json(&mut out, Some(black_box(&signer)));
            black_box(&out);
        })
    });
}

fn whole_handler(c: &mut Criterion) {
    let cdn = &default_cdns()[0];
    let mut group = c.benchmark_group("parse + sign + render");
    let mut out = Vec::with_capacity(64 * 1024);
    for sources in [1, 2, 8, 64] {
        let body = body_with_sources(sources);
        group.throughput(Throughput::Elements(sources as u64));
        group.bench_function(format!("{sources} sources"), |b| {
            b.iter(|| {
                out.clear();
                let video = parse_token_request(black_box(&body)).expect("valid body");
                video.write_json(
                    &mut out,
                    Some(&RequestSigner::new(cdn, 1_700_000_000, None)),
                );
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// One request's accounting as the server does it (a start and an observation, in the
/// thread's own shard, on the TSC), beside the clock pair and the `prometheus` histogram
/// and counter it replaced.
fn request_accounting(c: &mut Criterion) {
    let mut group = c.benchmark_group("per-request accounting");
    group.bench_function("Instant::now + elapsed", |b| {
        b.iter(|| black_box(black_box(std::time::Instant::now()).elapsed()))
    });
    let clock = quanta::Clock::new();
    group.bench_function("quanta raw pair + delta", |b| {
        b.iter(|| {
            let start = black_box(clock.raw());
            black_box(clock.delta_as_nanos(start, clock.raw()))
        })
    });
    let metrics = Metrics::new(&["token"]).expect("metrics");
    group.bench_function("Metrics: request_started + observe_request", |b| {
        b.iter(|| {
            let started = metrics.request_started();
            metrics.observe_request(black_box(0), black_box(200), Some(started));
        })
    });
    let histogram = prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new("latency", "latency").buckets(vec![
            0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5,
            0.005, 0.01, 0.05, 0.1,
        ]),
    )
    .expect("histogram");
    let counter = prometheus::IntCounter::new("requests", "requests").expect("counter");
    group.bench_function("Instant pair + prometheus Histogram and IntCounter", |b| {
        b.iter(|| {
            let started = std::time::Instant::now();
            counter.inc();
            histogram.observe(black_box(started.elapsed()).as_secs_f64());
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    signing,
    signing_by_scheme,
    validation,
    rendering,
    whole_handler,
    request_accounting
);
criterion_main!(benches);
