//! Starting and stopping the whole service, in order.
//!
//! Start: CDNs → the embedded store (seed, `--catalog` import) → the catalog in memory and
//! its watcher → metrics → view bus and batch writer thread → HTTP server. With `--store
//! scylla` the catalog and the views go to the cluster instead (`start_scylla`); the
//! embedded store then only provides the catalog served while the cluster cannot be read.
//! Stop: HTTP server first (no new views can arrive once it has stopped), then the catalog
//! watcher, then the batch writer, which drains and flushes every view that was accepted.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_channel::Receiver;
use std::time::{Duration, Instant};

use crate::api::{ApiSettings, VideoApi, ROUTE_NAMES};
use crate::config::{Config, OutboxAction, StoreKind};
use crate::health::Health;
use crate::http::{self, ServerHandle};
use crate::metrics::{Metrics, MetricsError};
use crate::store::scylla::{Cluster, ScyllaCatalogStore, ScyllaSetupError, ScyllaViewStore};
use crate::store::{CatalogSource, EmbeddedStore, Outbox, ResilientStore, StoreError, ViewStore};
use crate::token::{unix_now, RequestSigner, SharedSigning, SigningSetup, SigningSetupError};
use crate::video::{
    self, Catalog, CatalogWatcher, PayloadError, SharedCatalog, VideoPayload, WatchSettings,
};
use crate::viewer::{ClientIpMode, ClientPrivacy, DailySalts};
use crate::views::{BatchWriter, ViewBus, ViewEvent, WriterHandle};

/// How often the embedded store's catalog version is checked for another process's import.
const EMBEDDED_CATALOG_CHECK: Duration = Duration::from_secs(1);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Signing(#[from] SigningSetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read catalog file {path}: {source}")]
    CatalogRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog file {path}: {source}")]
    CatalogInvalid {
        path: String,
        #[source]
        source: PayloadError,
    },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot start the batch writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
    #[error("cannot start the catalog watcher thread: {0}")]
    WatcherThread(#[source] std::io::Error),
    #[error("cannot start the ScyllaDB driver's runtime: {0}")]
    ScyllaRuntime(#[source] std::io::Error),
    #[error(transparent)]
    ScyllaSetup(#[from] ScyllaSetupError),
    #[error(transparent)]
    Http(#[from] http::StartError),
    #[error("no quarantined flush {0} in the outbox (video-server outbox list shows them)")]
    NoSuchFlush(uuid::Uuid),
}

/// The running service.
pub struct App {
    http: ServerHandle,
    /// CDNs and API keys; [`App::reload_signing`] replaces them.
    signing: SharedSigning,
    writer: WriterHandle,
    watcher: CatalogWatcher,
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

/// The store side of a running service: what serves the catalog, and what writes views.
struct Storage {
    catalog: SharedCatalog,
    watcher: CatalogWatcher,
    writer: WriterHandle,
    /// Where views go, for the start log line.
    summary: String,
}

impl App {
    pub fn start(config: Config) -> Result<App, StartError> {
        let signing = SigningSetup::load(config.cdns.as_deref(), config.api_keys.as_deref())?;
        let cdn_summary = signing.summary();
        let api_keys = signing.api_keys.as_ref().map_or(0, |keys| keys.len());
        let signing: SharedSigning = Arc::new(ArcSwap::from_pointee(signing));

        let metrics = Arc::new(Metrics::new(&ROUTE_NAMES)?);
        let health = Arc::new(Health::new());
        let (bus, receiver) = ViewBus::new(config.view_queue as usize, Arc::clone(&metrics));
        let salts = Arc::new(DailySalts::default());
        let kept_salts = (config.client_ip == ClientIpMode::Hash).then(|| Arc::clone(&salts));
        let Storage {
            catalog,
            watcher,
            writer,
            summary: store_summary,
        } = match config.store {
            StoreKind::Embedded => {
                start_embedded(&config, receiver, &metrics, &health, kept_salts)?
            }
            StoreKind::Scylla => start_scylla(&config, receiver, &metrics, kept_salts)?,
        };

        let api = VideoApi::new(
            Arc::clone(&catalog),
            Arc::clone(&signing),
            bus,
            Arc::clone(&metrics),
            health,
            ApiSettings {
                signing_policy: config.signing_policy,
                trusted_proxies: config.trusted_proxies.0.clone(),
                cors: config.cors_origins.clone(),
                rate_limit: config.rate_limit,
                view_dedup: (config.view_dedup_seconds > 0)
                    .then(|| Duration::from_secs(u64::from(config.view_dedup_seconds))),
                top_videos: config.store == StoreKind::Embedded || config.top_refresh_ms > 0,
                privacy: ClientPrivacy::new(config.client_ip, salts),
            },
        );
        let http_config = config.http();
        let http = http::start(config.listen, http_config.clone(), Arc::new(api))?;

        tracing::info!(
            addr = %http.local_addr(),
            store = %store_summary,
            videos = catalog.load().len(),
            workers = http_config.workers,
            pinned = http_config.pin_workers,
            cdns = ?cdn_summary,
            signing_policy = ?config.signing_policy,
            api_keys,
            batch_size = config.batch_size,
            flush_interval_ms = config.flush_interval_ms,
            view_queue = config.view_queue,
            max_body_bytes = config.max_body_bytes,
            max_head_bytes = config.max_head_bytes,
            idle_timeout_ms = config.idle_timeout_ms,
            request_timeout_ms = config.request_timeout_ms,
            trusted_proxies = ?config.trusted_proxies.0,
            cors_origins = ?config.cors_origins,
            rate_limit = ?config.rate_limit,
            view_dedup_seconds = config.view_dedup_seconds,
            "listening"
        );
        Ok(App {
            http,
            signing,
            writer,
            watcher,
            metrics,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Re-reads the `--cdns` and `--api-keys` files (on `SIGHUP`). On success the new CDNs
    /// and keys serve every request that starts from now on; on failure nothing changes.
    pub fn reload_signing(&self) -> Result<Vec<String>, SigningSetupError> {
        let setup =
            SigningSetup::load(self.config.cdns.as_deref(), self.config.api_keys.as_deref())?;
        let summary = setup.summary();
        self.signing.store(Arc::new(setup));
        Ok(summary)
    }

    /// Stops serving, then writes every accepted view to the store, all within
    /// `--shutdown-timeout-ms`: open requests get up to half of it, the views the rest.
    /// Views that could not be written by then are logged with their count and reported
    /// in the summary (the binary then exits non-zero).
    pub fn shutdown(self) -> StopSummary {
        let timeout = self.config.shutdown_timeout();
        let deadline = Instant::now() + timeout;
        let report = self.http.shutdown(timeout / 2);
        if report.abandoned_connections > 0 {
            tracing::warn!(
                connections = report.abandoned_connections,
                "connections still open after half the shutdown timeout; closing them"
            );
        }
        // The watcher first: its read-only connection must be closed before the writer's
        // closes, so that the writer's, as the last one, checkpoints the log into the file.
        self.watcher.stop();
        let written = self.writer.shutdown(deadline);
        if written.failed > 0 {
            tracing::error!(
                lost = written.failed,
                persisted = written.persisted,
                timeout_ms = timeout.as_millis() as u64,
                "views could not be written before the shutdown deadline and are lost"
            );
        } else {
            tracing::info!(
                persisted = written.persisted,
                failed = written.failed,
                "view writer stopped"
            );
        }
        StopSummary {
            abandoned_connections: report.abandoned_connections,
            views_persisted_total: self.metrics.views_persisted.get(),
            views_failed_total: self.metrics.views_failed.get(),
            views_dropped_total: self.metrics.views_dropped.get(),
        }
    }
}

/// The embedded store, seeded on first start and given the `--catalog` videos; returns
/// it and the videos imported.
fn open_embedded(
    config: &Config,
) -> Result<(EmbeddedStore, Vec<VideoPayload<'static>>), StartError> {
    let mut store = EmbeddedStore::open(&config.data_dir)?;
    if store.seed_if_empty()? {
        tracing::info!("seeded the catalog with video 12345");
    }
    let imported = match &config.catalog {
        Some(path) => read_catalog_file(path)?,
        None => Vec::new(),
    };
    if !imported.is_empty() {
        store.upsert_videos(&imported)?;
        tracing::info!(videos = imported.len(), "imported catalog");
    }
    Ok((store, imported))
}

/// `--store embedded`: catalog, counts and views in one SQLite file. Counts are exact in
/// memory (the writer credits what it commits); the watcher picks up imports made by
/// another process while the server runs.
fn start_embedded(
    config: &Config,
    receiver: Receiver<ViewEvent>,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    salts: Option<Arc<DailySalts>>,
) -> Result<Storage, StartError> {
    let (mut store, _) = open_embedded(config)?;
    let mut source = store.catalog_source()?;
    // Read the version first: an import from now on is seen by the watcher.
    source.catalog_changed()?;
    let catalog = Catalog::from_stored(&source.load_videos()?, None).shared();
    let settings = WatchSettings {
        catalog_every: EMBEDDED_CATALOG_CHECK,
        counts_every: None,
        rank_every: None,
    };
    let watcher = CatalogWatcher::spawn(source, Arc::clone(&catalog), settings, salts)
        .map_err(StartError::WatcherThread)?;
    store.watch_file(Arc::clone(health), Arc::clone(metrics));
    if let Some(keep) = config.view_retention() {
        store.retain_views(keep, Arc::clone(metrics));
        tracing::info!(
            seconds = keep.as_secs(),
            "raw view rows older than this are deleted; counts are kept"
        );
    }
    let summary = store.path().display().to_string();
    let writer = spawn_writer(store, receiver, config, metrics)?;
    Ok(Storage {
        catalog,
        watcher,
        writer,
        summary,
    })
}

/// `--store scylla`: catalog and views in the cluster, views through the outbox while it
/// fails; counts are read back from the cluster by the watcher, since every server adds to
/// them.
fn start_scylla(
    config: &Config,
    receiver: Receiver<ViewEvent>,
    metrics: &Arc<Metrics>,
    salts: Option<Arc<DailySalts>>,
) -> Result<Storage, StartError> {
    let scylla = config.scylla()?;
    let (local, imported) = open_embedded(config)?;
    let summary = format!("scylla {:?} keyspace {}", scylla.nodes, scylla.keyspace);
    let cluster = Cluster::new(scylla).map_err(StartError::ScyllaRuntime)?;
    let mut remote = ScyllaCatalogStore::new(cluster.clone());
    let catalog = match load_remote_catalog(&mut remote, &imported) {
        Ok(catalog) => catalog,
        Err(error) => {
            tracing::warn!(%error, "cannot read the catalog from ScyllaDB; serving the local catalog until it answers");
            Catalog::from_stored(&local.load_videos()?, None)
        }
    }
    .shared();
    // Counts come from the cluster: ask for all of them once.
    catalog
        .load()
        .entries()
        .for_each(|entry| entry.want_count());
    let settings = WatchSettings {
        catalog_every: Duration::from_millis(config.catalog_refresh_ms),
        counts_every: Some(Duration::from_millis(config.views_cache_ms)),
        rank_every: (config.top_refresh_ms > 0)
            .then(|| Duration::from_millis(config.top_refresh_ms)),
    };
    let watcher = CatalogWatcher::spawn(remote, Arc::clone(&catalog), settings, salts)
        .map_err(StartError::WatcherThread)?;

    let outbox = Outbox::open(&config.data_dir)?;
    if outbox.depth() > 0 {
        tracing::info!(
            views = outbox.depth(),
            "outbox holds views from an earlier run; replaying"
        );
    }
    let resilient = ResilientStore::new(
        ScyllaViewStore::new(cluster),
        outbox,
        Arc::clone(metrics),
        config.retry_policy(),
    )?;
    let writer = spawn_writer(resilient, receiver, config, metrics)?;
    Ok(Storage {
        catalog,
        watcher,
        writer,
        summary,
    })
}

/// Starts the batch writer thread, the only owner of `store`.
fn spawn_writer(
    store: impl ViewStore,
    receiver: Receiver<ViewEvent>,
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<WriterHandle, StartError> {
    BatchWriter::new(receiver, store, config.batch_limits(), Arc::clone(metrics))
        .spawn()
        .map_err(StartError::WriterThread)
}

fn read_catalog_file(path: &Path) -> Result<Vec<VideoPayload<'static>>, StartError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| StartError::CatalogRead {
        path: shown.clone(),
        source,
    })?;
    video::parse_catalog(&bytes).map_err(|source| StartError::CatalogInvalid {
        path: shown,
        source,
    })
}

/// Reads the catalog from ScyllaDB, seeding a fresh cluster with video 12345 and adding the
/// `--catalog` videos first.
fn load_remote_catalog(
    remote: &mut ScyllaCatalogStore,
    imported: &[VideoPayload<'_>],
) -> Result<Catalog, StoreError> {
    let mut stored = CatalogSource::load_videos(remote)?;
    if stored.is_empty() || !imported.is_empty() {
        if stored.is_empty() {
            let seed = crate::store::seed_video()?;
            remote.upsert_videos(&[seed])?;
            tracing::info!("seeded the ScyllaDB catalog with video 12345");
        }
        remote.upsert_videos(imported)?;
        stored = CatalogSource::load_videos(remote)?;
    }
    Ok(Catalog::from_stored(&stored, None))
}

/// `video-server import FILE`: loads a JSON array of videos into the configured store.
/// `video-server outbox list|retry|drop`: what the command prints, or why it failed.
pub fn outbox(config: &Config, action: OutboxAction) -> Result<String, StartError> {
    let mut outbox = Outbox::open(&config.data_dir)?;
    let text = match action {
        OutboxAction::List => {
            let flushes = outbox.quarantined_flushes()?;
            let mut text = format!(
                "{} quarantined flush(es), {} views; {} views waiting for replay\n",
                flushes.len(),
                outbox.quarantined(),
                outbox.depth()
            );
            for flush in flushes {
                let when = httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH
                        + Duration::from_millis(
                            u64::try_from(flush.quarantined_at_ms).unwrap_or(0),
                        ),
                );
                text.push_str(&format!(
                    "{}  views={}  attempts={}  quarantined={}  error: {}\n",
                    flush.id, flush.views, flush.attempts, when, flush.error
                ));
            }
            text
        }
        OutboxAction::Retry { id } => {
            if !outbox.release(id)? {
                return Err(StartError::NoSuchFlush(id));
            }
            format!("flush {id} is back in line; the server replays it within seconds\n")
        }
        OutboxAction::Drop { id } => match outbox.drop_quarantined(id)? {
            0 => return Err(StartError::NoSuchFlush(id)),
            views => format!("flush {id} deleted: {views} views lost\n"),
        },
    };
    Ok(text)
}

pub fn import(config: &Config, path: &Path) -> Result<usize, StartError> {
    let videos = read_catalog_file(path)?;
    match config.store {
        StoreKind::Embedded => {
            let mut store = EmbeddedStore::open(&config.data_dir)?;
            Ok(store.upsert_videos(&videos)?)
        }
        StoreKind::Scylla => {
            let cluster = Cluster::new(config.scylla()?).map_err(StartError::ScyllaRuntime)?;
            Ok(ScyllaCatalogStore::new(cluster).upsert_videos(&videos)?)
        }
    }
}

/// Why `video-server sign` could not sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Cdns(#[from] SigningSetupError),
    #[error("no CDN named {name:?} (the CDNs are: {known})")]
    UnknownCdn { name: String, known: String },
    #[error("CDN {name:?} binds tokens to the client's address: give --ip")]
    NeedsIp { name: String },
}

/// `video-server sign`: the signed URL of one source, as `POST /video/token` would sign it.
pub fn sign(
    config: &Config,
    cdn_name: &str,
    src: &str,
    ip: Option<IpAddr>,
    media_type: Option<&str>,
    at: Option<u64>,
) -> Result<String, SignError> {
    let setup = SigningSetup::load(config.cdns.as_deref(), None)?;
    let Some(cdn) = setup.cdns.find(cdn_name) else {
        let known: Vec<&str> = setup.cdns.cdns().iter().map(|cdn| cdn.name()).collect();
        return Err(SignError::UnknownCdn {
            name: cdn_name.into(),
            known: known.join(", "),
        });
    };
    if cdn.binds_ip() && ip.is_none() {
        return Err(SignError::NeedsIp {
            name: cdn_name.into(),
        });
    }
    let media_type = media_type.unwrap_or_else(|| media_type_of(src));
    let signer = RequestSigner::new(cdn, at.unwrap_or_else(unix_now), ip);
    Ok(signer.signed_url(src, media_type))
}

/// The media type a path's extension suggests: manifests by name, anything else a file.
fn media_type_of(src: &str) -> &'static str {
    let path = src.split_once('?').map_or(src, |(path, _)| path);
    if path.ends_with(".m3u8") {
        "application/vnd.apple.mpegurl"
    } else if path.ends_with(".mpd") {
        "application/dash+xml"
    } else {
        "video/mp4"
    }
}
