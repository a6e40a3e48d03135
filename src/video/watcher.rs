//! The catalog watcher: keeps the served catalog, and counts kept in a shared store,
//! current, off the request path. One watcher serves both stores.
//!
//! ```text
//!  CatalogSource (SQLite file / ScyllaDB) ──▶ CatalogWatcher thread ──swap──▶ SharedCatalog ──▶ HTTP workers
//! ```
//!
//! Every `catalog_every` the watcher asks its [`CatalogSource`] whether the stored catalog
//! changed (the embedded store can tell from a version row; ScyllaDB cannot, so it always
//! says yes), and if so reads it, builds a new [`Catalog`] that keeps each known video's
//! counter ([`Catalog::from_stored`]) and swaps it in: the HTTP workers pick it up on their
//! next request, without a lock.
//!
//! With `counts_every` set (a store shared by several servers, whose counts this server
//! does not see being written), `GET /video/:id/views` marks its entry as wanted and the
//! watcher re-reads the wanted counts older than `counts_every`. So a count is never much
//! staler than that, and a request never waits for the database. With it unset (the
//! embedded store), counts are exact in memory: the batch writer credits what it commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Catalog, SharedCatalog};
use crate::store::{CatalogSource, StoreError};

/// How often the watcher wakes to see whether something is due.
const TICK: Duration = Duration::from_millis(100);
/// At most one warning about a failing source per this long.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// What the watcher watches, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSettings {
    /// How often to ask whether the stored catalog changed.
    pub catalog_every: Duration,
    /// How stale a wanted count may be, when counts are read from the store.
    pub counts_every: Option<Duration>,
}

/// The running watcher.
pub struct CatalogWatcher {
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl CatalogWatcher {
    /// Starts watching `source` on a thread of its own, swapping new catalogs into
    /// `catalog`.
    pub fn spawn(
        source: impl CatalogSource,
        catalog: SharedCatalog,
        settings: WatchSettings,
    ) -> std::io::Result<Self> {
        let stopping = Arc::new(AtomicBool::new(false));
        let mut watch = Watch {
            source,
            catalog,
            settings,
            stopping: Arc::clone(&stopping),
            counted_at: HashMap::new(),
            last_warning: None,
        };
        let thread = std::thread::Builder::new()
            .name("catalog-watch".into())
            .spawn(move || watch.run())?;
        Ok(CatalogWatcher { stopping, thread })
    }

    pub fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        self.thread.thread().unpark();
        if self.thread.join().is_err() {
            tracing::warn!("the catalog watcher panicked");
        }
    }
}

struct Watch<S> {
    source: S,
    catalog: SharedCatalog,
    settings: WatchSettings,
    stopping: Arc<AtomicBool>,
    /// When each video's count was last read from the store.
    counted_at: HashMap<String, Instant>,
    last_warning: Option<Instant>,
}

impl<S: CatalogSource> Watch<S> {
    fn run(&mut self) {
        let mut next_catalog = Instant::now() + self.settings.catalog_every;
        while !self.stopping.load(Ordering::Acquire) {
            std::thread::park_timeout(TICK);
            if Instant::now() >= next_catalog {
                next_catalog = Instant::now() + self.settings.catalog_every;
                if let Err(error) = self.reload_if_changed() {
                    self.warn(&error);
                }
            }
            if let Some(counts_every) = self.settings.counts_every {
                if let Err(error) = self.refresh_wanted_counts(counts_every) {
                    self.warn(&error);
                }
            }
        }
    }

    fn reload_if_changed(&mut self) -> Result<(), StoreError> {
        if !self.source.catalog_changed()? {
            return Ok(());
        }
        let stored = self.source.load_videos()?;
        let previous = self.catalog.load();
        let fresh = Catalog::from_stored(&stored, Some(&previous));
        let differs = fresh.len() != previous.len()
            || fresh.entries().any(|entry| {
                previous
                    .get(entry.video_id())
                    .is_none_or(|known| known.etag() != entry.etag())
            });
        if differs {
            tracing::info!(
                videos = fresh.len(),
                "catalog changed in the store; reloaded"
            );
        }
        self.catalog.store(Arc::new(fresh));
        Ok(())
    }

    /// Re-reads the counts clients asked for whose last read is older than `counts_every`;
    /// stops at the first failure (the store is likely down) and keeps the request.
    fn refresh_wanted_counts(&mut self, counts_every: Duration) -> Result<(), StoreError> {
        let current = self.catalog.load();
        for entry in current.entries() {
            if !entry.take_count_request() {
                continue;
            }
            let fresh = self
                .counted_at
                .get(entry.video_id())
                .is_some_and(|at| at.elapsed() < counts_every);
            if fresh {
                // Asked again before its refresh is due: keep the request.
                entry.want_count();
                continue;
            }
            match self.source.view_count(entry.video_id()) {
                Ok(count) => {
                    entry.set_persisted_views(count);
                    self.counted_at
                        .insert(entry.video_id().to_owned(), Instant::now());
                }
                Err(error) => {
                    entry.want_count();
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    fn warn(&mut self, error: &StoreError) {
        if self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY)
        {
            tracing::warn!(%error, "cannot refresh the catalog from the store; serving what is in memory");
            self.last_warning = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredVideo;
    use crate::video::SEED_VIDEO_JSON;
    use parking_lot::Mutex;

    /// A store whose catalog and counts the test changes.
    #[derive(Clone, Default)]
    struct FakeSource {
        videos: Arc<Mutex<Vec<StoredVideo>>>,
        changed: Arc<AtomicBool>,
        count: Arc<Mutex<u64>>,
    }

    impl CatalogSource for FakeSource {
        fn catalog_changed(&mut self) -> Result<bool, StoreError> {
            Ok(self.changed.swap(false, Ordering::AcqRel))
        }
        fn load_videos(&mut self) -> Result<Vec<StoredVideo>, StoreError> {
            Ok(self.videos.lock().clone())
        }
        fn view_count(&mut self, _video_id: &str) -> Result<u64, StoreError> {
            Ok(*self.count.lock())
        }
    }

    fn seed() -> StoredVideo {
        StoredVideo {
            video_id: "12345".into(),
            document: SEED_VIDEO_JSON.into(),
            views: Some(3),
            days: Vec::new(),
        }
    }

    fn wait_for(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_changed_catalog_is_swapped_in_and_keeps_counts() {
        let source = FakeSource::default();
        source.videos.lock().push(seed());
        let catalog = Catalog::from_stored(&source.videos.lock(), None).shared();
        let settings = WatchSettings {
            catalog_every: Duration::from_millis(10),
            counts_every: None,
        };
        let watcher =
            CatalogWatcher::spawn(source.clone(), Arc::clone(&catalog), settings).expect("spawn");
        let old_entry = Arc::clone(catalog.load().get("12345").expect("seed"));
        source.videos.lock().push(StoredVideo {
            video_id: "new".into(),
            document: r#"{"videoId":"new","title":"n","sources":[]}"#.into(),
            views: None,
            days: Vec::new(),
        });
        source.changed.store(true, Ordering::Release);
        assert!(wait_for(|| catalog.load().get("new").is_some()), "reloaded");
        old_entry.add_persisted_views(1);
        let current = catalog.load();
        assert_eq!(current.get("12345").expect("kept").persisted_views(), 4);
        watcher.stop();
    }

    #[test]
    fn wanted_counts_are_read_from_a_shared_store() {
        let source = FakeSource::default();
        source.videos.lock().push(seed());
        *source.count.lock() = 42;
        let catalog = Catalog::from_stored(&source.videos.lock(), None).shared();
        let settings = WatchSettings {
            catalog_every: Duration::from_secs(3600),
            counts_every: Some(Duration::from_millis(1)),
        };
        let watcher =
            CatalogWatcher::spawn(source.clone(), Arc::clone(&catalog), settings).expect("spawn");
        let entry = Arc::clone(catalog.load().get("12345").expect("seed"));
        assert_eq!(entry.persisted_views(), 3, "not read until wanted");
        entry.want_count();
        assert!(wait_for(|| entry.persisted_views() == 42), "count read");
        watcher.stop();
    }
}
