//! Keeps the in-memory catalog and view counts current from ScyllaDB, off the request path.
//!
//! One thread owns a [`ScyllaCatalogStore`]. Every `catalog_every` it reads the `videos`
//! table, builds a new [`Catalog`] (carrying over the counts it knows) and swaps it in: the
//! HTTP workers pick it up on their next request, without a lock. `GET /video/:id/views`
//! marks its entry as wanted; every tick the refresher re-reads the wanted counts (the sum
//! of the video's rollups, written by every server of the cluster) that are older than
//! `count_every`. So a count is never more than about `count_every` stale, and a request
//! never waits for the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::scylla::ScyllaCatalogStore;
use super::StoreError;
use crate::video::{self, Catalog, SharedCatalog, VideoPayload};

const TICK: Duration = Duration::from_millis(100);

/// Builds a catalog from stored documents, skipping (and logging) any that are invalid, and
/// carrying each video's known count over from `previous`.
pub fn catalog_from_documents(
    documents: &[(String, String)],
    previous: Option<&Catalog>,
) -> Catalog {
    let mut videos: Vec<(VideoPayload<'_>, u64)> = Vec::with_capacity(documents.len());
    for (video_id, document) in documents {
        match video::parse_stored_video(document.as_bytes()) {
            Ok(video) => {
                let views = previous
                    .and_then(|catalog| catalog.get(video_id))
                    .map_or(0, |entry| entry.persisted_views());
                videos.push((video, views));
            }
            Err(error) => {
                tracing::warn!(%video_id, %error, "skipping an invalid video document in ScyllaDB");
            }
        }
    }
    Catalog::new(videos)
}

/// The running refresher.
pub struct CatalogRefresher {
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl CatalogRefresher {
    pub fn spawn(
        mut store: ScyllaCatalogStore,
        catalog: SharedCatalog,
        catalog_every: Duration,
        count_every: Duration,
    ) -> std::io::Result<Self> {
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("catalog-refresh".into())
            .spawn(move || {
                let mut next_catalog = Instant::now() + catalog_every;
                let mut counted_at: HashMap<String, Instant> = HashMap::new();
                let mut last_warning: Option<Instant> = None;
                let mut warn = |error: &StoreError| {
                    if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
                        tracing::warn!(%error, "catalog refresh from ScyllaDB failed; serving what is in memory");
                        last_warning = Some(Instant::now());
                    }
                };
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(TICK);
                    if Instant::now() >= next_catalog {
                        next_catalog = Instant::now() + catalog_every;
                        match store.load_videos() {
                            Ok(documents) => {
                                let previous = catalog.load();
                                let fresh = catalog_from_documents(&documents, Some(&previous));
                                catalog.store(Arc::new(fresh));
                            }
                            Err(error) => warn(&error),
                        }
                    }
                    let current = catalog.load();
                    for entry in current.entries() {
                        if !entry.take_count_request() {
                            continue;
                        }
                        let fresh = counted_at
                            .get(entry.video_id())
                            .is_some_and(|at| at.elapsed() < count_every);
                        if fresh {
                            // Asked again before its refresh is due: keep the request.
                            entry.want_count();
                            continue;
                        }
                        match store.view_count(entry.video_id()) {
                            Ok(count) => {
                                entry.set_persisted_views(count);
                                counted_at.insert(entry.video_id().to_owned(), Instant::now());
                            }
                            Err(error) => {
                                entry.want_count();
                                warn(&error);
                                break;
                            }
                        }
                    }
                }
            })?;
        Ok(CatalogRefresher { stopping, thread })
    }

    pub fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        if self.thread.join().is_err() {
            tracing::warn!("the catalog refresher panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::SEED_VIDEO_JSON;

    #[test]
    fn documents_become_a_catalog_keeping_known_counts_and_skipping_bad_ones() {
        let documents = vec![
            ("12345".to_owned(), SEED_VIDEO_JSON.to_owned()),
            ("bad".to_owned(), r#"{"videoId":"bad"}"#.to_owned()),
        ];
        let first = catalog_from_documents(&documents, None);
        assert_eq!(first.len(), 1);
        first.get("12345").expect("seed").set_persisted_views(42);
        let second = catalog_from_documents(&documents, Some(&first));
        assert_eq!(second.get("12345").expect("seed").persisted_views(), 42);
        assert!(second.get("bad").is_none());
    }
}
