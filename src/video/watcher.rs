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
//! With `rank_every` set too, every video's counts are wanted that often, so that the top
//! videos of a day can be ranked from memory.
//!
//! With `--client-ip hash`, the watcher also keeps the daily salts: it agrees the salts of
//! today and tomorrow with the store ahead of time (so that midnight finds tomorrow's
//! ready), publishes them to the request path ([`DailySalts`]), and deletes from the store
//! the salts of days before yesterday.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Catalog, SharedCatalog};
use crate::store::{epoch_millis, utc_day, CatalogSource, StoreError};
use crate::viewer::{random_salt, DailySalts};

/// How often the watcher wakes to see whether something is due.
const TICK: Duration = Duration::from_millis(100);
/// At most one warning about a failing source per this long.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Videos whose counts the watcher asks the store for in one call.
const COUNTS_PER_CALL: usize = 64;
/// How often the salts are checked once agreed, and retried after a failure.
const SALTS_EVERY: Duration = Duration::from_secs(60);
const SALTS_RETRY: Duration = Duration::from_secs(5);

/// What the watcher watches, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSettings {
    /// How often to ask whether the stored catalog changed.
    pub catalog_every: Duration,
    /// How stale a wanted count may be, when counts are read from the store.
    pub counts_every: Option<Duration>,
    /// How often every video's counts are wanted, so that the videos of a day can be
    /// ranked (`GET /videos/top`) from memory, when counts are read from the store.
    pub rank_every: Option<Duration>,
}

/// The running watcher.
pub struct CatalogWatcher {
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl CatalogWatcher {
    /// Starts watching `source` on a thread of its own, swapping new catalogs into
    /// `catalog`, and keeping `salts` if given. The first salts are agreed before this
    /// returns, so the first views are hashed with them (if the store answers).
    pub fn spawn(
        source: impl CatalogSource,
        catalog: SharedCatalog,
        settings: WatchSettings,
        salts: Option<Arc<DailySalts>>,
    ) -> std::io::Result<Self> {
        let stopping = Arc::new(AtomicBool::new(false));
        let mut watch = Watch {
            source,
            catalog,
            settings,
            stopping: Arc::clone(&stopping),
            counted_at: HashMap::new(),
            last_warning: None,
            salts,
            salts_due: Instant::now(),
            salts_forgotten_before: None,
        };
        watch.keep_salts();
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
    /// The daily salts the request path hashes with, when it hashes.
    salts: Option<Arc<DailySalts>>,
    salts_due: Instant,
    /// The day before which the store's salts were last deleted.
    salts_forgotten_before: Option<i64>,
}

impl<S: CatalogSource> Watch<S> {
    fn run(&mut self) {
        let mut next_catalog = Instant::now() + self.settings.catalog_every;
        let mut next_rank = Instant::now();
        while !self.stopping.load(Ordering::Acquire) {
            std::thread::park_timeout(TICK);
            if Instant::now() >= next_catalog {
                next_catalog = Instant::now() + self.settings.catalog_every;
                if let Err(error) = self.reload_if_changed() {
                    self.warn(&error);
                }
            }
            self.keep_salts();
            if let Some(rank_every) = self.settings.rank_every {
                if Instant::now() >= next_rank {
                    next_rank = Instant::now() + rank_every;
                    self.catalog
                        .load()
                        .entries()
                        .for_each(|entry| entry.want_count());
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

    /// Re-reads the counts clients asked for whose last read is older than `counts_every`,
    /// [`COUNTS_PER_CALL`] videos per call to the store (which may read them at once). A
    /// video whose read fails keeps its request and its counts (with the time they were
    /// read, which `GET /video/:id/views` reports as `asOf`), and is tried again when due;
    /// the others are still read. A call in which every read failed ends the pass (the
    /// store is down).
    fn refresh_wanted_counts(&mut self, counts_every: Duration) -> Result<(), StoreError> {
        let current = self.catalog.load();
        let mut due = Vec::new();
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
            } else {
                due.push(entry);
            }
        }
        let mut last_error = None;
        let mut chunks = due.chunks(COUNTS_PER_CALL);
        for chunk in chunks.by_ref() {
            let ids: Vec<&str> = chunk.iter().map(|entry| entry.video_id()).collect();
            let results = self.source.view_counts_of(&ids);
            let mut any_read = false;
            for (entry, result) in chunk.iter().zip(results) {
                self.counted_at
                    .insert(entry.video_id().to_owned(), Instant::now());
                match result {
                    Ok(counts) => {
                        entry.set_persisted_views(counts.total);
                        entry.set_days(&counts.days);
                        entry.set_counts_read_at(epoch_millis());
                        any_read = true;
                    }
                    Err(error) => {
                        // Kept wanted, tried again when due, not on every tick.
                        entry.want_count();
                        last_error = Some(error);
                    }
                }
            }
            if !any_read {
                break;
            }
        }
        // The videos not reached (the store is down) keep their requests.
        chunks.flatten().for_each(|entry| entry.want_count());
        last_error.map_or(Ok(()), Err)
    }

    /// Agrees the salts of today and tomorrow if not yet agreed, and deletes those of
    /// days before yesterday; when due (every minute, every few seconds after a failure).
    fn keep_salts(&mut self) {
        let Some(salts) = self.salts.clone() else {
            return;
        };
        // Tomorrow's salt is agreed a day ahead, so waiting a minute between checks never
        // leaves a day without one.
        if Instant::now() < self.salts_due {
            return;
        }
        let today = utc_day(epoch_millis());
        let keep_from = today - 1;
        let mut result = Ok(());
        for day in [today, today + 1] {
            if salts.agreed(day).is_some() {
                continue;
            }
            match self.source.agree_salt(day, random_salt()) {
                Ok(salt) => salts.publish(day, salt, keep_from),
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        if result.is_ok() && self.salts_forgotten_before != Some(keep_from) {
            result = self.source.forget_salts_before(keep_from);
            if result.is_ok() {
                self.salts_forgotten_before = Some(keep_from);
            }
        }
        match result {
            Ok(()) => self.salts_due = Instant::now() + SALTS_EVERY,
            Err(error) => {
                self.salts_due = Instant::now() + SALTS_RETRY;
                self.warn(&error);
            }
        }
    }

    fn warn(&mut self, error: &StoreError) {
        if self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY)
        {
            tracing::warn!(%error, "the store did not answer the catalog watcher; serving what is in memory");
            self.last_warning = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoredVideo, VideoCounts};
    use crate::video::SEED_VIDEO_JSON;
    use crate::viewer::Salt;
    use parking_lot::Mutex;

    /// A store whose catalog and counts the test changes.
    #[derive(Clone, Default)]
    struct FakeSource {
        videos: Arc<Mutex<Vec<StoredVideo>>>,
        changed: Arc<AtomicBool>,
        count: Arc<Mutex<u64>>,
        /// Videos whose count reads fail.
        failing: Arc<Mutex<Vec<String>>>,
        /// Salts by day; `salts_fail` makes agreeing them fail.
        salts: Arc<Mutex<std::collections::BTreeMap<i64, Salt>>>,
        salts_fail: Arc<AtomicBool>,
    }

    impl CatalogSource for FakeSource {
        fn catalog_changed(&mut self) -> Result<bool, StoreError> {
            Ok(self.changed.swap(false, Ordering::AcqRel))
        }
        fn load_videos(&mut self) -> Result<Vec<StoredVideo>, StoreError> {
            Ok(self.videos.lock().clone())
        }
        fn view_counts(&mut self, video_id: &str) -> Result<VideoCounts, StoreError> {
            if self
                .failing
                .lock()
                .iter()
                .any(|failing| failing == video_id)
            {
                return Err(StoreError::Forced { retriable: true });
            }
            Ok(VideoCounts {
                total: *self.count.lock(),
                days: Vec::new(),
            })
        }
        fn agree_salt(&mut self, day: i64, proposed: Salt) -> Result<Salt, StoreError> {
            if self.salts_fail.load(Ordering::Acquire) {
                return Err(StoreError::Forced { retriable: true });
            }
            Ok(*self.salts.lock().entry(day).or_insert(proposed))
        }
        fn forget_salts_before(&mut self, day: i64) -> Result<(), StoreError> {
            self.salts.lock().retain(|known, _| *known >= day);
            Ok(())
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
            rank_every: None,
        };
        let watcher = CatalogWatcher::spawn(source.clone(), Arc::clone(&catalog), settings, None)
            .expect("spawn");
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
            rank_every: None,
        };
        let watcher = CatalogWatcher::spawn(source.clone(), Arc::clone(&catalog), settings, None)
            .expect("spawn");
        let entry = Arc::clone(catalog.load().get("12345").expect("seed"));
        assert_eq!(entry.persisted_views(), 3, "not read until wanted");
        entry.want_count();
        assert!(wait_for(|| entry.persisted_views() == 42), "count read");
        watcher.stop();
    }

    #[test]
    fn a_video_whose_count_cannot_be_read_does_not_hold_back_the_others() {
        let source = FakeSource::default();
        let video = |id: &str| StoredVideo {
            video_id: id.into(),
            document: format!(r#"{{"videoId":"{id}","title":"t","sources":[]}}"#),
            views: None,
            days: Vec::new(),
        };
        source.videos.lock().extend([video("a"), video("b")]);
        source.failing.lock().push("a".into());
        *source.count.lock() = 9;
        let catalog = Catalog::from_stored(&source.videos.lock(), None).shared();
        let settings = WatchSettings {
            catalog_every: Duration::from_secs(3600),
            counts_every: Some(Duration::from_millis(1)),
            rank_every: None,
        };
        let watcher = CatalogWatcher::spawn(source.clone(), Arc::clone(&catalog), settings, None)
            .expect("spawn");
        let (a, b) = {
            let current = catalog.load();
            (
                Arc::clone(current.get("a").expect("a")),
                Arc::clone(current.get("b").expect("b")),
            )
        };
        a.want_count();
        b.want_count();
        assert!(
            wait_for(|| b.persisted_views() == 9),
            "b read though a fails"
        );
        assert!(b.counts_read_at().is_some(), "and says when");
        assert_eq!((a.persisted_views(), a.counts_read_at()), (0, None));
        // Once a can be read again, its request (kept) is served.
        source.failing.lock().clear();
        assert!(
            wait_for(|| a.persisted_views() == 9),
            "a read once it can be"
        );
        watcher.stop();
    }

    #[test]
    fn every_count_is_read_when_videos_are_ranked() {
        let source = FakeSource::default();
        source.videos.lock().push(seed());
        *source.count.lock() = 42;
        let catalog = Catalog::from_stored(&source.videos.lock(), None).shared();
        let settings = WatchSettings {
            catalog_every: Duration::from_secs(3600),
            counts_every: Some(Duration::from_millis(1)),
            rank_every: Some(Duration::from_secs(3600)),
        };
        let watcher = CatalogWatcher::spawn(source.clone(), Arc::clone(&catalog), settings, None)
            .expect("spawn");
        let entry = Arc::clone(catalog.load().get("12345").expect("seed"));
        assert!(
            wait_for(|| entry.persisted_views() == 42),
            "read without a client asking"
        );
        watcher.stop();
    }

    #[test]
    fn salts_of_today_and_tomorrow_are_agreed_at_start_and_old_ones_deleted() {
        let source = FakeSource::default();
        let today = utc_day(epoch_millis());
        // Another server agreed today's salt; an old one lingers.
        source.salts.lock().insert(today, [9; 16]);
        source.salts.lock().insert(today - 2, [1; 16]);
        let catalog = Catalog::default().shared();
        let settings = WatchSettings {
            catalog_every: Duration::from_secs(3600),
            counts_every: None,
            rank_every: None,
        };
        let salts = Arc::new(DailySalts::default());
        let watcher =
            CatalogWatcher::spawn(source.clone(), catalog, settings, Some(Arc::clone(&salts)))
                .expect("spawn");
        assert_eq!(salts.agreed(today), Some([9; 16]), "the stored salt wins");
        let tomorrow = salts.agreed(today + 1).expect("tomorrow's agreed ahead");
        assert_eq!(source.salts.lock().get(&(today + 1)), Some(&tomorrow));
        assert_eq!(
            source.salts.lock().keys().copied().collect::<Vec<_>>(),
            vec![today, today + 1],
            "the salt of two days ago is gone"
        );
        watcher.stop();
    }

    #[test]
    fn without_an_agreed_salt_views_are_hashed_under_a_salt_of_this_process() {
        let source = FakeSource::default();
        source.salts_fail.store(true, Ordering::Release);
        let settings = WatchSettings {
            catalog_every: Duration::from_secs(3600),
            counts_every: None,
            rank_every: None,
        };
        let salts = Arc::new(DailySalts::default());
        let watcher = CatalogWatcher::spawn(
            source.clone(),
            Catalog::default().shared(),
            settings,
            Some(Arc::clone(&salts)),
        )
        .expect("spawn");
        let today = utc_day(epoch_millis());
        assert_eq!(salts.agreed(today), None);
        let privacy = crate::viewer::ClientPrivacy::new(
            crate::viewer::ClientIpMode::Hash,
            Arc::clone(&salts),
        );
        let ip = std::net::IpAddr::from([192, 0, 2, 1]);
        let now = epoch_millis();
        assert!(matches!(
            privacy.viewer(ip, now),
            crate::viewer::Viewer::Hashed(_)
        ));
        assert!(source.salts.lock().is_empty());
        watcher.stop();
    }
}
