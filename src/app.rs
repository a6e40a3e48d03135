//! Starting and stopping the whole service, in order.
//!
//! Start: CDNs → embedded store (seed, import) → catalog in memory → metrics → view bus and
//! batch writer thread → HTTP server. Stop: HTTP server first (no new views can arrive
//! once it has stopped), then the batch writer, which drains and flushes every view that
//! was accepted.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{VideoApi, ROUTE_NAMES};
use crate::config::{Config, StoreKind};
use crate::http::{self, ServerHandle};
use crate::metrics::{Metrics, MetricsError};
use crate::store::scylla::ScyllaViewStore;
use crate::store::{EmbeddedStore, Outbox, ResilientStore, RetryPolicy, StoreError};
use crate::token::{self, CdnConfigError, CdnRing};
use crate::video::{self, PayloadError};
use crate::views::{BatchWriter, ViewBus, WriterHandle};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Cdns(#[from] CdnConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read catalog file {path}: {error}")]
    CatalogRead { path: String, error: std::io::Error },
    #[error("catalog file {path}: {error}")]
    CatalogInvalid { path: String, error: PayloadError },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot start the batch writer thread: {0}")]
    Writer(std::io::Error),
    #[error(transparent)]
    Http(#[from] http::StartError),
}

/// The running service.
pub struct App {
    http: ServerHandle,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    config: Config,
}

/// What stopping the service did.
#[derive(Debug, Clone, Copy)]
pub struct StopSummary {
    pub abandoned_connections: usize,
    pub views_persisted_total: u64,
    pub views_failed_total: u64,
    pub views_dropped_total: u64,
}

impl App {
    pub fn start(config: Config) -> Result<App, StartError> {
        let cdns = match &config.cdns {
            Some(path) => token::load_cdns(path)?,
            None => token::default_cdns(),
        };
        let cdn_summary: Vec<String> = cdns
            .iter()
            .map(|cdn| format!("{} ({:?}, {})", cdn.name, cdn.scheme, cdn.address))
            .collect();
        let ring = CdnRing::new(cdns).ok_or_else(|| CdnConfigError::Empty {
            path: "(built-in)".into(),
        })?;

        let mut store = EmbeddedStore::open(&config.data_dir)?;
        if store.seed_if_empty()? {
            tracing::info!("seeded the catalog with video 12345");
        }
        if let Some(path) = &config.catalog {
            let shown = path.display().to_string();
            let bytes = std::fs::read(path).map_err(|error| StartError::CatalogRead {
                path: shown.clone(),
                error,
            })?;
            let videos =
                video::parse_catalog(&bytes).map_err(|error| StartError::CatalogInvalid {
                    path: shown.clone(),
                    error,
                })?;
            let imported = store.upsert_videos(&videos)?;
            tracing::info!(file = %shown, videos = imported, "imported catalog");
        }
        let catalog = Arc::new(store.load_catalog()?);

        let metrics = Arc::new(Metrics::new(ROUTE_NAMES)?);
        let (bus, receiver) = ViewBus::new(config.view_queue as usize, Arc::clone(&metrics));
        let limits = config.batch_limits();
        let (store_summary, writer) = match config.store {
            StoreKind::Embedded => (
                store.path().display().to_string(),
                BatchWriter::new(receiver, store, limits, Arc::clone(&metrics)).spawn(),
            ),
            StoreKind::Scylla => {
                let scylla = config.scylla();
                let summary = format!("scylla {:?} keyspace {}", scylla.nodes, scylla.keyspace);
                let remote = ScyllaViewStore::new(scylla).map_err(StartError::Writer)?;
                let outbox = Outbox::open(&config.data_dir)?;
                if outbox.depth() > 0 {
                    tracing::info!(
                        views = outbox.depth(),
                        "outbox holds views from an earlier run; replaying"
                    );
                }
                let resilient = ResilientStore::new(
                    remote,
                    outbox,
                    Arc::clone(&metrics),
                    RetryPolicy::default(),
                );
                (
                    summary,
                    BatchWriter::new(receiver, resilient, limits, Arc::clone(&metrics)).spawn(),
                )
            }
        };
        let writer = writer.map_err(StartError::Writer)?;

        let api = VideoApi::new(
            Arc::clone(&catalog),
            ring,
            bus,
            Arc::clone(&metrics),
            config.trusted_proxies.0.clone(),
        );
        let http_config = config.http();
        let http = http::start(config.listen, http_config.clone(), Arc::new(api))?;

        tracing::info!(
            addr = %http.local_addr(),
            store = %store_summary,
            videos = catalog.len(),
            workers = http_config.workers,
            pinned = http_config.pin_workers,
            cdns = ?cdn_summary,
            batch_size = config.batch_size,
            flush_interval_ms = config.flush_interval_ms,
            view_queue = config.view_queue,
            max_body_bytes = config.max_body_bytes,
            max_head_bytes = config.max_head_bytes,
            idle_timeout_ms = config.idle_timeout_ms,
            request_timeout_ms = config.request_timeout_ms,
            trusted_proxies = ?config.trusted_proxies.0,
            "listening"
        );
        Ok(App {
            http,
            writer,
            metrics,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Stops serving, then flushes every accepted view to the store.
    pub fn shutdown(self) -> StopSummary {
        let report = self.http.shutdown(self.config.shutdown_timeout());
        if report.abandoned_connections > 0 {
            tracing::warn!(
                connections = report.abandoned_connections,
                "connections still open after the shutdown timeout"
            );
        }
        let written = self.writer.shutdown();
        tracing::info!(
            persisted = written.persisted,
            failed = written.failed,
            "view writer stopped"
        );
        StopSummary {
            abandoned_connections: report.abandoned_connections,
            views_persisted_total: self.metrics.views_persisted.get(),
            views_failed_total: self.metrics.views_failed.get(),
            views_dropped_total: self.metrics.views_dropped.get(),
        }
    }
}
