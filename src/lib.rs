//! video-server: signs video URLs for CDNs and records who watched what.
//!
//! # Layout
//!
//! The modules, in the order a request's data flows through them:
//!
//! - [`config`]: command-line flags and environment variables.
//! - [`http`]: our HTTP/1.1 server on `may` coroutines (connections, parsing, limits,
//!   graceful stop). Knows nothing of videos; the application plugs in as a [`http::Service`].
//! - [`api`]: the routes and their handlers, and how caches may keep each route's answers.
//! - [`cors`]: which web origins may read those answers (`--cors-origins`).
//! - [`page`]: the player page at `/` (HTML, CSS and JavaScript compiled in) and the
//!   `Content-Security-Policy` it is served with.
//! - [`video`]: the video document (strict parsing, rendering), the in-memory catalog, and
//!   the catalog watcher that keeps it (and counts kept in a shared store) current.
//! - [`token`]: the CDN file, the round robin over CDNs, one module per signing scheme a CDN
//!   verifies (the contract's md5/sha256, nginx, Akamai, CloudFront, Google, bunny.net), and
//!   who may sign (API keys, the catalog policy).
//! - [`viewer`]: what a view keeps of its client's address (`--client-ip`: a daily salted
//!   hash, the network, or the address).
//! - [`views`]: the view event, the non-blocking bus and the batch writer thread, which
//!   hands the store plain records and credits what it commits to the in-memory counts.
//! - [`store`]: the [`store::ViewStore`] and [`store::CatalogSource`] traits, the embedded
//!   SQLite store, and ScyllaDB (one module per job, one session) behind a resilient
//!   wrapper (a few batches in flight, retry, local outbox, a replay worker). Stores know
//!   nothing of the in-memory catalog.
//! - [`metrics`]: Prometheus metrics.
//! - [`health`]: what `/healthz` reports (problems noticed recently).
//! - [`limiter`]: per-client request rates and view de-duplication.
//! - [`json`]: writing JSON straight into response buffers.
//! - [`backoff`]: the one capped, jittered backoff every retry uses.
//! - [`hll`]: unique viewers as mergeable HyperLogLog sketches.
//! - [`calendar`]: UTC dates (`YYYY-MM-DD`) and day numbers.
//! - [`app`]: starting and stopping it all in order.
//!
//! ```text
//!            ┌──────────── may worker per CPU ─────────────┐
//!  client ──▶│ http::connection ─▶ api ─▶ video / token     │──▶ response
//!            │                      └─▶ views::ViewBus ──────┼──▶ channel ──▶ BatchWriter ──▶ store
//!            └──────────────────────────────────────────────┘                 (own thread)
//! ```

pub mod api;
pub mod app;
pub mod backoff;
pub mod calendar;
pub mod config;
pub mod cors;
pub mod health;
pub mod hll;
pub mod http;
pub mod json;
pub mod limiter;
pub mod metrics;
pub mod page;
pub mod store;
pub mod token;
pub mod video;
pub mod viewer;
pub mod views;

pub use app::App;
pub use config::Config;
