//! The catalog served by `GET /video/:videoId`, held in memory.
//!
//! The catalog is built from the store's documents at start and rebuilt whole by the
//! catalog watcher ([`super::watcher`]) when the stored catalog changes; the hot path never
//! touches the database, and swaps in a new catalog without a lock. Each [`CatalogEntry`]
//! keeps its JSON body rendered in advance and the count of its views that the store has
//! durably persisted: the batch writer adds to that count after each committed batch (or
//! the watcher sets it from a shared store), and `GET /video/:videoId/views` reads it with
//! one atomic load. A rebuilt catalog gives each video that it keeps the counter of the
//! entry it replaces, so a view credited to the old entry after the swap is not lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::document::VideoPayload;
use super::parse;
use crate::store::{DayCount, StoredVideo, DAYS_KEPT};

/// A video's counts, shared by every entry for it across catalog rebuilds.
#[derive(Debug, Default)]
struct Counts {
    /// Views persisted in all.
    total: AtomicU64,
    /// When these counts were last read from a shared store, in milliseconds since the Unix
    /// epoch (0: never; the embedded store's counts are exact in memory, not read).
    read_at_ms: AtomicI64,
    /// Views and distinct clients per UTC day, for the last [`DAYS_KEPT`] days, when the
    /// store counts per day.
    days: Mutex<BTreeMap<i64, (u64, u64)>>,
}

/// The video a fresh install starts with, exactly as the old service's seeder wrote it.
pub const SEED_VIDEO_JSON: &str = r#"{"_id":"6213a7299fa2604f1b188ee0","videoId":"12345","title":"Big Buck Bunny","sources":[{"src":"/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4","size":1080,"type":"video/mp4"},{"src":"/Big_Buck_Bunny_720p_surround_FrostWire.com.mp4","size":720,"type":"video/mp4"}]}"#;

/// One video as served.
#[derive(Debug)]
pub struct CatalogEntry {
    /// The key clients ask for (`videoId`), also the key views are recorded under.
    video_id: Box<str>,
    /// The response body of `GET /video/:videoId`, rendered once.
    body: Box<[u8]>,
    /// A strong entity tag of `body` (a hash, so equal documents share it across restarts
    /// and servers), computed once here so that a conditional request costs a comparison.
    etag: Box<str>,
    /// Each source's `src`, for `--signing-policy catalog`.
    sources: Box<[Box<str>]>,
    /// Views of this video the store has committed, in all and per day (loaded at start,
    /// then advanced by the batch writer, or set from a shared store's count by the catalog
    /// watcher). Shared with the entries that replace this one when the catalog is rebuilt.
    counts: Arc<Counts>,
    /// Set when a client asked for the count, so the catalog watcher re-reads it from a
    /// shared store; cleared by the watcher.
    count_wanted: AtomicBool,
}

impl CatalogEntry {
    pub fn new(video: &VideoPayload<'_>, persisted_views: u64) -> Self {
        let counts = Counts {
            total: AtomicU64::new(persisted_views),
            read_at_ms: AtomicI64::new(0),
            days: Mutex::new(BTreeMap::new()),
        };
        Self::with_counts(video, Arc::new(counts))
    }

    fn with_counts(video: &VideoPayload<'_>, counts: Arc<Counts>) -> Self {
        let mut body = Vec::with_capacity(256);
        video.write_json(&mut body, None);
        let etag = entity_tag(&body);
        CatalogEntry {
            etag,
            video_id: video.video_id.as_ref().into(),
            body: body.into_boxed_slice(),
            sources: video
                .sources
                .iter()
                .map(|source| source.src.as_ref().into())
                .collect(),
            counts,
            count_wanted: AtomicBool::new(false),
        }
    }

    pub fn video_id(&self) -> &str {
        &self.video_id
    }

    /// The JSON document, as `GET /video/:videoId` returns it.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The `ETag` of [`CatalogEntry::body`], quotes included.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// Whether `src` is one of this video's sources.
    pub fn has_source(&self, src: &str) -> bool {
        self.sources.iter().any(|known| known.as_ref() == src)
    }

    pub fn persisted_views(&self) -> u64 {
        self.counts.total.load(Ordering::Acquire)
    }

    /// Called by the batch writer once views of this video are committed.
    pub fn add_persisted_views(&self, count: u64) {
        self.counts.total.fetch_add(count, Ordering::AcqRel);
    }

    /// Sets the count read from a shared store.
    pub fn set_persisted_views(&self, count: u64) {
        self.counts.total.store(count, Ordering::Release);
    }

    /// Notes when the counts were read from a shared store.
    pub fn set_counts_read_at(&self, millis: i64) {
        self.counts.read_at_ms.store(millis, Ordering::Release);
    }

    /// When the counts were last read from a shared store (`None` if they never are, or
    /// were not yet).
    pub fn counts_read_at(&self) -> Option<i64> {
        Some(self.counts.read_at_ms.load(Ordering::Acquire)).filter(|at| *at > 0)
    }

    /// Called by the batch writer once views of `day` are committed: `added` more views,
    /// and the day's distinct clients now. Days older than [`DAYS_KEPT`] before `day` are
    /// forgotten.
    pub fn record_day(&self, day: i64, added: u64, unique_viewers: u64) {
        let mut days = self.counts.days.lock();
        let stats = days.entry(day).or_insert((0, 0));
        stats.0 += added;
        stats.1 = unique_viewers;
        while days
            .first_key_value()
            .is_some_and(|(oldest, _)| *oldest <= day - DAYS_KEPT)
        {
            days.pop_first();
        }
    }

    /// Views and distinct clients of each day of `first..=last` that has any, oldest first.
    pub fn days(&self, first: i64, last: i64) -> Vec<DayCount> {
        self.counts
            .days
            .lock()
            .range(first..=last)
            .map(|(day, (views, unique_viewers))| DayCount {
                day: *day,
                views: *views,
                unique_viewers: *unique_viewers,
            })
            .collect()
    }

    /// Views and distinct clients on `day` (zeros if none).
    pub fn day(&self, day: i64) -> (u64, u64) {
        self.counts.days.lock().get(&day).copied().unwrap_or((0, 0))
    }

    /// Replaces the per-day counts with those read from a shared store (none read: none).
    pub fn set_days(&self, stored: &[DayCount]) {
        let mut days = self.counts.days.lock();
        days.clear();
        for day in stored {
            days.insert(day.day, (day.views, day.unique_viewers));
        }
    }

    fn load_days(&self, stored: &[DayCount]) {
        let mut days = self.counts.days.lock();
        for day in stored {
            days.insert(day.day, (day.views, day.unique_viewers));
        }
    }

    /// Asks the catalog watcher (if it reads counts) to re-read this video's count soon.
    pub fn want_count(&self) {
        if !self.count_wanted.load(Ordering::Relaxed) {
            self.count_wanted.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a count was asked for since the last call.
    pub fn take_count_request(&self) -> bool {
        self.count_wanted.swap(false, Ordering::AcqRel)
    }
}

/// `"<first 16 hex digits of SHA-256(body)>"`: 64 bits tell documents apart well enough.
fn entity_tag(body: &[u8]) -> Box<str> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    let mut tag = String::with_capacity(18);
    tag.push('"');
    for byte in &digest[..8] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag.push('"');
    tag.into()
}

/// The catalog as the server holds it: replaced whole when a refresh brings a new one,
/// read without a lock.
pub type SharedCatalog = Arc<ArcSwap<Catalog>>;

/// The catalog's map. Every `GET /video/:id` looks one id up: foldhash (randomly seeded,
/// though with weaker guarantees against chosen collisions than `std`'s SipHash) costs a
/// fraction of SipHash's instructions for a short id. Only the catalog's own ids are ever
/// inserted, so a client's choice of ids can make a lookup miss but not fill the table
/// with colliding keys.
type Entries = HashMap<Box<str>, Arc<CatalogEntry>, foldhash::quality::RandomState>;

/// Every servable video, by `videoId`.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: Entries,
    /// The same entries in `videoId` order, for listing a page at a time.
    by_id: Vec<Arc<CatalogEntry>>,
}

impl Catalog {
    /// Builds the catalog from videos and their persisted view counts; a later video with
    /// the same `videoId` replaces an earlier one.
    pub fn new<'a>(videos: impl IntoIterator<Item = (VideoPayload<'a>, u64)>) -> Self {
        let entries = videos
            .into_iter()
            .map(|(video, views)| {
                let entry = Arc::new(CatalogEntry::new(&video, views));
                (entry.video_id.clone(), entry)
            })
            .collect();
        Self::with_entries(entries)
    }

    fn with_entries(entries: Entries) -> Self {
        let mut by_id: Vec<Arc<CatalogEntry>> = entries.values().cloned().collect();
        by_id.sort_unstable_by(|a, b| a.video_id.cmp(&b.video_id));
        Catalog { entries, by_id }
    }

    /// Builds the catalog from stored documents, skipping (and logging) any that are not
    /// valid. A video that `previous` holds keeps its counter (see the module docs); a new
    /// one starts from the count stored beside it, or 0.
    pub fn from_stored(stored: &[StoredVideo], previous: Option<&Catalog>) -> Self {
        let mut entries = Entries::with_capacity_and_hasher(stored.len(), Default::default());
        for video in stored {
            let document = match parse::parse_stored_video(video.document.as_bytes()) {
                Ok(document) => document,
                Err(error) => {
                    tracing::warn!(video_id = %video.video_id, %error, "skipping an invalid stored video document");
                    continue;
                }
            };
            let entry = match previous.and_then(|catalog| catalog.get(&video.video_id)) {
                Some(known) => CatalogEntry::with_counts(&document, Arc::clone(&known.counts)),
                None => {
                    let entry = CatalogEntry::new(&document, video.views.unwrap_or(0));
                    entry.load_days(&video.days);
                    entry
                }
            };
            entries.insert(entry.video_id.clone(), Arc::new(entry));
        }
        Self::with_entries(entries)
    }

    #[inline]
    pub fn get(&self, video_id: &str) -> Option<&Arc<CatalogEntry>> {
        self.entries.get(video_id)
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<CatalogEntry>> {
        self.entries.values()
    }

    /// Up to `limit` entries in `videoId` order, starting after `after` (from the first
    /// without it), and whether more follow.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (&[Arc<CatalogEntry>], bool) {
        let start = after.map_or(0, |after| {
            self.by_id
                .partition_point(|entry| entry.video_id() <= after)
        });
        let end = start.saturating_add(limit).min(self.by_id.len());
        (&self.by_id[start..end], end < self.by_id.len())
    }

    /// Makes a shareable, swappable catalog.
    pub fn shared(self) -> SharedCatalog {
        Arc::new(ArcSwap::from_pointee(self))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::parse_stored_video;

    #[test]
    fn seed_video_is_served_byte_for_byte() {
        let seed = parse_stored_video(SEED_VIDEO_JSON.as_bytes()).expect("seed parses");
        let catalog = Catalog::new([(seed, 7)]);
        let entry = catalog.get("12345").expect("seeded");
        assert_eq!(entry.body(), SEED_VIDEO_JSON.as_bytes());
        assert_eq!(entry.persisted_views(), 7);
        // The tag is the hash of the served bytes: `sha256sum` of the seed document.
        assert_eq!(entry.etag(), "\"d5d10806ec493748\"");
        assert!(entry.has_source("/Big_Buck_Bunny_720p_surround_FrostWire.com.mp4"));
        assert!(!entry.has_source("/Big_Buck_Bunny_720p_surround_FrostWire.com"));
        entry.add_persisted_views(3);
        assert_eq!(entry.persisted_views(), 10);
        assert!(catalog.get("nope").is_none());
    }

    fn stored(video_id: &str, document: &str, views: Option<u64>) -> StoredVideo {
        StoredVideo {
            video_id: video_id.into(),
            document: document.into(),
            views,
            days: Vec::new(),
        }
    }

    #[test]
    fn pages_list_every_video_once_in_id_order() {
        let documents: Vec<StoredVideo> = ["c", "a", "e", "b", "d"]
            .iter()
            .map(|id| {
                stored(
                    id,
                    &format!(r#"{{"videoId":"{id}","title":"t","sources":[]}}"#),
                    None,
                )
            })
            .collect();
        let catalog = Catalog::from_stored(&documents, None);
        let ids = |page: &[Arc<CatalogEntry>]| -> Vec<String> {
            page.iter()
                .map(|entry| entry.video_id().to_owned())
                .collect()
        };
        let (first, more) = catalog.page(None, 2);
        assert_eq!(
            (ids(first), more),
            (vec!["a".to_owned(), "b".to_owned()], true)
        );
        let (second, more) = catalog.page(Some("b"), 2);
        assert_eq!(
            (ids(second), more),
            (vec!["c".to_owned(), "d".to_owned()], true)
        );
        let (last, more) = catalog.page(Some("d"), 2);
        assert_eq!((ids(last), more), (vec!["e".to_owned()], false));
        // After an id that is not (or no longer) in the catalog: the next one in order.
        let (between, _) = catalog.page(Some("bb"), 1);
        assert_eq!(ids(between), vec!["c".to_owned()]);
        assert!(catalog.page(Some("z"), 5).0.is_empty());
    }

    #[test]
    fn a_rebuilt_catalog_keeps_counts_credited_to_replaced_entries() {
        let first = Catalog::from_stored(&[stored("12345", SEED_VIDEO_JSON, Some(4))], None);
        let old_entry = Arc::clone(first.get("12345").expect("seed"));
        assert_eq!(old_entry.persisted_views(), 4);
        let renamed = SEED_VIDEO_JSON.replace("Big Buck Bunny", "Bunny");
        let rebuilt = Catalog::from_stored(
            &[
                // The stored count is older than the in-memory one: the counter wins.
                stored("12345", &renamed, Some(1)),
                stored(
                    "new",
                    r#"{"videoId":"new","title":"n","sources":[]}"#,
                    Some(2),
                ),
                stored("bad", "{not json", None),
            ],
            Some(&first),
        );
        assert_eq!(rebuilt.len(), 2, "the invalid document is skipped");
        let new_entry = rebuilt.get("12345").expect("kept");
        assert!(String::from_utf8_lossy(new_entry.body()).contains("\"Bunny\""));
        // A view queued before the swap is credited to the old entry afterwards.
        old_entry.add_persisted_views(1);
        assert_eq!(new_entry.persisted_views(), 5);
        assert_eq!(rebuilt.get("new").expect("new").persisted_views(), 2);
    }
}
