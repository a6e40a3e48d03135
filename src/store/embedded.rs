//! The embedded default store: SQLite (bundled, so nothing to install) in WAL mode.
//!
//! One file, `<data-dir>/video-server.sqlite3`, holds three tables:
//!
//! - `videos`: the catalog, one JSON document per `video_id`;
//! - `views`: every view (`video_id`, `client_ip`, `timestamp_ms`);
//! - `view_counts`: views per video, advanced in the same transaction as the inserts, so
//!   counts are exact and reading them at start does not scan `views`.
//!
//! The store also keeps the served catalog current: the batch writer owns it and, between
//! batches, notices through `PRAGMA data_version` that another process (a `video-server
//! import`) committed, reloads the catalog with its committed counts and swaps it in.
//!
//! The database file is watched, too. SQLite keeps writing to a file that was deleted
//! under it (the open descriptor still points at it), so a deleted or replaced database
//! would lose every view at the next restart without a word. About once a second the writer
//! compares the file at the path with the one it has open; when they differ, it rebuilds
//! the file at the path from the open connection (`VACUUM INTO`, so nothing committed is
//! lost), moves a replacement aside rather than overwrite it, reopens, and reports it in
//! `/healthz` and `/metrics`. At start, `PRAGMA quick_check` must pass: a damaged file is a
//! clear error, never a silent re-seed.
//!
//! Each batch is one transaction with a cached prepared insert: SQLite's cost is per commit
//! (one WAL append and, with `synchronous = FULL`, one fsync), so a thousand views cost
//! barely more than one. `FULL` makes a committed batch survive power loss, not just a
//! crash of this process; at most one commit per batch interval, it costs little.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::{StoreError, ViewStore};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::video::{self, Catalog, SharedCatalog, VideoPayload};
use crate::views::ViewEvent;

/// The database file's name inside `--data-dir`.
pub const DATABASE_FILE: &str = "video-server.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS videos (
    video_id TEXT PRIMARY KEY NOT NULL,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS views (
    id INTEGER PRIMARY KEY,
    video_id TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS views_by_video ON views (video_id, timestamp_ms);
CREATE TABLE IF NOT EXISTS view_counts (
    video_id TEXT PRIMARY KEY NOT NULL,
    views INTEGER NOT NULL
);
";

const INSERT_VIEW: &str =
    "INSERT INTO views (video_id, client_ip, timestamp_ms) VALUES (?1, ?2, ?3)";
/// Rows per multi-row view insert (3 parameters each, well under SQLite's 32,766).
const VIEWS_PER_INSERT: usize = 64;
static INSERT_VIEWS_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let rows = vec!["(?, ?, ?)"; VIEWS_PER_INSERT].join(", ");
    format!("INSERT INTO views (video_id, client_ip, timestamp_ms) VALUES {rows}")
});
const ADD_VIEW_COUNT: &str = "INSERT INTO view_counts (video_id, views) VALUES (?1, ?2)
     ON CONFLICT (video_id) DO UPDATE SET views = views + excluded.views";
const UPSERT_VIDEO: &str = "INSERT INTO videos (video_id, document) VALUES (?1, ?2)
     ON CONFLICT (video_id) DO UPDATE SET document = excluded.document";

/// How often the writer asks SQLite whether another process changed the catalog.
const CATALOG_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the writer checks that the file at the path is still the one it writes to.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long `/healthz` reports a rebuilt database file.
const REBUILT_SHOWN_FOR: Duration = Duration::from_secs(60);

/// The SQLite store.
pub struct EmbeddedStore {
    connection: Connection,
    path: PathBuf,
    /// Device and inode of the file the connection opened.
    identity: FileIdentity,
    /// Reused per batch to add up views per video before updating `view_counts`.
    counts_scratch: HashMap<Box<str>, i64>,
    /// The catalog the HTTP workers serve, when this store keeps it current.
    served: Option<ServedCatalog>,
    /// Where a deleted or replaced file is reported, when the server watches it.
    watch: Option<FileWatch>,
}

/// Which file a path names: (device, inode).
type FileIdentity = (u64, u64);

fn file_identity(path: &Path) -> Option<FileIdentity> {
    std::fs::metadata(path)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

/// Reporting for the file check.
struct FileWatch {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    checked: Instant,
}

/// The served catalog and what is needed to notice that it changed on disk.
struct ServedCatalog {
    catalog: SharedCatalog,
    /// `PRAGMA data_version` when the catalog was loaded. It changes when another
    /// connection commits (a `video-server import`), never for this connection's own
    /// view batches.
    data_version: i64,
    checked: Instant,
    /// Set by the first reload: queued views may point to entries of a replaced catalog, so
    /// counts are credited through the current catalog from then on.
    reloaded: bool,
}

pub(super) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |error| StoreError::Sqlite { context, error }
}

/// Opens (creating if needed) `<data_dir>/<file>` with the settings every local database
/// of ours uses (WAL, `synchronous = FULL`, a busy timeout) and applies `schema`.
pub(super) fn open_durable(
    data_dir: &Path,
    file: &str,
    schema: &str,
) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|error| StoreError::DataDir {
        path: data_dir.display().to_string(),
        error,
    })?;
    let connection = Connection::open(data_dir.join(file)).map_err(sqlite("open database"))?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite("enable WAL"))?;
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite("set synchronous"))?;
    // Another process (an operator's sqlite3 shell) may briefly hold the lock.
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sqlite("set busy timeout"))?;
    connection
        .execute_batch(schema)
        .map_err(sqlite("create schema"))?;
    Ok(connection)
}

/// Busy and locked databases, a full disk and I/O errors can clear up; a constraint
/// violation or a corrupt file cannot.
pub(super) fn is_retriable(error: &rusqlite::Error) -> bool {
    match error.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory,
        ) => true,
        Some(_) | None => false,
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database under `data_dir`, and checks it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let connection = open_durable(data_dir, DATABASE_FILE, SCHEMA)?;
        let path = data_dir.join(DATABASE_FILE);
        check_integrity(&connection, &path)?;
        let identity = file_identity(&path).ok_or_else(|| StoreError::DataDir {
            path: path.display().to_string(),
            error: std::io::Error::other("the database file vanished as it was opened"),
        })?;
        Ok(EmbeddedStore {
            connection,
            path,
            identity,
            counts_scratch: HashMap::new(),
            served: None,
            watch: None,
        })
    }

    /// Makes the writer check, about once a second, that the file at the path is still
    /// the one it writes to, rebuild it if not, and report that to `health` and `metrics`.
    pub fn watch_file(&mut self, health: Arc<Health>, metrics: Arc<Metrics>) {
        self.watch = Some(FileWatch {
            health,
            metrics,
            checked: Instant::now(),
        });
    }

    /// Rebuilds the database file if it was deleted or replaced since it was opened.
    fn check_file(&mut self) -> Result<(), StoreError> {
        match &mut self.watch {
            Some(watch) if watch.checked.elapsed() >= FILE_CHECK_EVERY => {
                watch.checked = Instant::now();
            }
            _ => return Ok(()),
        }
        let found = file_identity(&self.path);
        if found == Some(self.identity) {
            return Ok(());
        }
        let what = if found.is_none() {
            "deleted"
        } else {
            "replaced by another file"
        };
        let problem = format!(
            "the embedded database file {} was {what} while the server ran; rebuilt from the open connection, nothing lost",
            self.path.display()
        );
        tracing::error!(path = %self.path.display(), what, "the embedded database file changed under the server; rebuilding it");
        self.rebuild(found.is_some())?;
        if let Some(watch) = &self.watch {
            watch.metrics.store_file_replaced.inc();
            watch.health.report(&problem, REBUILT_SHOWN_FOR);
        }
        tracing::warn!(path = %self.path.display(), "rebuilt the embedded database file");
        Ok(())
    }

    /// Writes everything the open connection holds to a new file at the path (moving a
    /// file that replaced ours aside, never deleting it), then reopens there.
    fn rebuild(&mut self, replaced: bool) -> Result<(), StoreError> {
        let io = |action: &'static str| {
            move |error: std::io::Error| StoreError::DataDir {
                path: action.into(),
                error,
            }
        };
        let rebuilt = self.path.with_extension("sqlite3.rebuild");
        let _ = std::fs::remove_file(&rebuilt);
        self.connection
            .execute("VACUUM INTO ?1", [rebuilt.to_string_lossy()])
            .map_err(sqlite("copy the open database"))?;
        if replaced {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            let aside = self
                .path
                .with_extension(format!("sqlite3.replaced-{stamp}"));
            std::fs::rename(&self.path, &aside).map_err(io("move the replacing file aside"))?;
            tracing::warn!(aside = %aside.display(), "kept the file that replaced the database");
        }
        std::fs::rename(&rebuilt, &self.path)
            .map_err(io("move the rebuilt database into place"))?;
        // The old connection closes before the new one opens: closing removes its WAL by
        // name, which must not be left for the new file to read. Until the new one opens,
        // an empty in-memory placeholder stands in (nothing is written meanwhile).
        let old = std::mem::replace(
            &mut self.connection,
            Connection::open_in_memory().map_err(sqlite("swap connections"))?,
        );
        drop(old);
        let data_dir = self.path.parent().unwrap_or(Path::new("."));
        self.connection = open_durable(data_dir, DATABASE_FILE, SCHEMA)?;
        self.identity = file_identity(&self.path).unwrap_or_default();
        if let Some(served) = &mut self.served {
            // data_version counts per connection: start over with the new one.
            served.data_version = self
                .connection
                .query_row("PRAGMA data_version", [], |row| row.get(0))
                .map_err(sqlite("read data_version"))?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seeds the catalog with the contract's video `12345` if it holds no video at all.
    /// Returns whether it did.
    pub fn seed_if_empty(&mut self) -> Result<bool, StoreError> {
        let any: Option<i64> = self
            .connection
            .query_row("SELECT 1 FROM videos LIMIT 1", [], |row| row.get(0))
            .optional()
            .map_err(sqlite("check catalog"))?;
        if any.is_some() {
            return Ok(false);
        }
        let seed = super::seed_video()?;
        self.upsert_videos(&[seed])?;
        Ok(true)
    }

    /// Inserts or replaces videos by `videoId`, in one transaction.
    pub fn upsert_videos(&mut self, videos: &[VideoPayload<'_>]) -> Result<usize, StoreError> {
        let transaction = self
            .connection
            .transaction()
            .map_err(sqlite("begin catalog import"))?;
        {
            let mut upsert = transaction
                .prepare_cached(UPSERT_VIDEO)
                .map_err(sqlite("prepare catalog upsert"))?;
            let mut document = Vec::with_capacity(512);
            for video in videos {
                document.clear();
                video.write_json(&mut document, None);
                // write_json emits only UTF-8 (it copies validated strings).
                let text = String::from_utf8_lossy(&document);
                upsert
                    .execute(params![video.video_id.as_ref(), text.as_ref()])
                    .map_err(sqlite("upsert video"))?;
            }
        }
        transaction
            .commit()
            .map_err(sqlite("commit catalog import"))?;
        Ok(videos.len())
    }

    /// Reads the whole catalog with each video's persisted view count.
    pub fn load_catalog(&self) -> Result<Catalog, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT v.video_id, v.document, COALESCE(c.views, 0)
                 FROM videos v LEFT JOIN view_counts c ON c.video_id = v.video_id",
            )
            .map_err(sqlite("prepare catalog read"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .map_err(sqlite("read catalog"))?;
        let mut documents = Vec::new();
        for row in rows {
            documents.push(row.map_err(sqlite("read catalog row"))?);
        }
        let mut videos = Vec::with_capacity(documents.len());
        for (video_id, document, views) in &documents {
            let video = video::parse_stored_video(document.as_bytes()).map_err(|error| {
                StoreError::CorruptDocument {
                    video_id: video_id.clone(),
                    error,
                }
            })?;
            videos.push((video.into_owned(), u64::try_from(*views).unwrap_or(0)));
        }
        Ok(Catalog::new(videos))
    }

    /// Keeps `catalog` (loaded from this store) current: the batch writer, which owns the
    /// store, checks between batches whether another process committed to the database (a
    /// `video-server import` while the server runs) and, if so, reloads the catalog, with
    /// the counts committed so far, and swaps it in.
    pub fn serve_catalog(&mut self, catalog: SharedCatalog) -> Result<(), StoreError> {
        self.served = Some(ServedCatalog {
            catalog,
            data_version: self.data_version()?,
            checked: Instant::now(),
            reloaded: false,
        });
        Ok(())
    }

    fn data_version(&self) -> Result<i64, StoreError> {
        self.connection
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .map_err(sqlite("read data_version"))
    }

    /// Reloads the served catalog if the database changed under it. Checks at most once
    /// per [`CATALOG_CHECK_EVERY`], failed checks included (a failure is not retried in a
    /// tight loop).
    fn refresh_served_catalog(&mut self) -> Result<(), StoreError> {
        let loaded_version = match &mut self.served {
            Some(served) if served.checked.elapsed() >= CATALOG_CHECK_EVERY => {
                served.checked = Instant::now();
                served.data_version
            }
            _ => return Ok(()),
        };
        let version = self.data_version()?;
        if version == loaded_version {
            return Ok(());
        }
        let catalog = self.load_catalog()?;
        if let Some(served) = &mut self.served {
            tracing::info!(videos = catalog.len(), "catalog changed on disk; reloaded");
            served.catalog.store(std::sync::Arc::new(catalog));
            served.data_version = version;
            served.reloaded = true;
        }
        Ok(())
    }

    /// Views persisted for one video (for tools and tests; the server reads the catalog).
    pub fn view_count(&self, video_id: &str) -> Result<u64, StoreError> {
        let views: Option<i64> = self
            .connection
            .query_row(
                "SELECT views FROM view_counts WHERE video_id = ?1",
                [video_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(sqlite("read view count"))?;
        Ok(views.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    /// Rows in the `views` table for one video.
    pub fn view_rows(&self, video_id: &str) -> Result<u64, StoreError> {
        let rows: i64 = self
            .connection
            .query_row(
                "SELECT COUNT(*) FROM views WHERE video_id = ?1",
                [video_id],
                |row| row.get(0),
            )
            .map_err(sqlite("count views"))?;
        Ok(u64::try_from(rows).unwrap_or(0))
    }
}

impl ViewStore for EmbeddedStore {
    fn write_views(&mut self, views: &[ViewEvent]) -> Result<(), StoreError> {
        let counts = &mut self.counts_scratch;
        counts.clear();
        let transaction = self
            .connection
            .transaction()
            .map_err(sqlite("begin view batch"))?;
        {
            // Whole chunks go through one multi-row INSERT (one statement step for
            // VIEWS_PER_INSERT rows instead of one each); the remainder row by row.
            let mut insert_many = transaction
                .prepare_cached(&INSERT_VIEWS_MANY)
                .map_err(sqlite("prepare view insert"))?;
            let mut insert_one = transaction
                .prepare_cached(INSERT_VIEW)
                .map_err(sqlite("prepare view insert"))?;
            let mut ip_text = String::with_capacity(48);
            let (whole, rest) = views.split_at(views.len() - views.len() % VIEWS_PER_INSERT);
            for chunk in whole.chunks_exact(VIEWS_PER_INSERT) {
                bind_views(&mut insert_many, chunk, &mut ip_text, counts)?;
                insert_many.raw_execute().map_err(sqlite("insert views"))?;
            }
            for view in rest {
                bind_views(
                    &mut insert_one,
                    std::slice::from_ref(view),
                    &mut ip_text,
                    counts,
                )?;
                insert_one.raw_execute().map_err(sqlite("insert view"))?;
            }
            let mut add_count = transaction
                .prepare_cached(ADD_VIEW_COUNT)
                .map_err(sqlite("prepare view count"))?;
            for (video_id, count) in counts.iter() {
                add_count
                    .execute(params![video_id.as_ref(), count])
                    .map_err(sqlite("add view count"))?;
            }
        }
        transaction.commit().map_err(sqlite("commit view batch"))
    }

    fn maintain(&mut self) {
        if let Err(error) = self.check_file() {
            tracing::error!(%error, "cannot rebuild the embedded database file; views go to the unlinked file until restart");
            if let Some(watch) = &self.watch {
                watch.health.report(
                    &format!(
                        "the embedded database file {} is gone and could not be rebuilt: {error}",
                        self.path.display()
                    ),
                    REBUILT_SHOWN_FOR,
                );
            }
        }
        if let Err(error) = self.refresh_served_catalog() {
            tracing::warn!(%error, "cannot check the catalog for changes; serving the one loaded");
        }
    }

    fn credit_counts(&self, views: &[ViewEvent]) {
        match &self.served {
            Some(served) if served.reloaded => {
                let current = served.catalog.load();
                for view in views {
                    if let Some(entry) = current.get(view.video.video_id()) {
                        entry.add_persisted_views(1);
                    }
                }
            }
            _ => super::credit_each_view(views),
        }
    }
}

/// `PRAGMA quick_check`: a damaged database stops the start with what is wrong, instead
/// of being served (or replaced by a fresh one) without a word.
fn check_integrity(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let verdict: String = connection
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(sqlite("check integrity"))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(StoreError::Damaged {
            path: path.display().to_string(),
            problem: verdict,
        })
    }
}

/// Binds `views` as consecutive `(video_id, client_ip, timestamp_ms)` rows of `statement`
/// and counts them per video.
fn bind_views(
    statement: &mut rusqlite::CachedStatement<'_>,
    views: &[ViewEvent],
    ip_text: &mut String,
    counts: &mut HashMap<Box<str>, i64>,
) -> Result<(), StoreError> {
    use std::fmt::Write;
    for (row, view) in views.iter().enumerate() {
        ip_text.clear();
        // Writing to a String cannot fail.
        let _ = write!(ip_text, "{}", view.client_ip);
        let video_id = view.video.video_id();
        // rusqlite copies bound text (SQLITE_TRANSIENT), so ip_text can be reused at once.
        let first = row * 3 + 1;
        statement
            .raw_bind_parameter(first, video_id)
            .and_then(|()| statement.raw_bind_parameter(first + 1, ip_text.as_str()))
            .and_then(|()| statement.raw_bind_parameter(first + 2, view.timestamp_ms))
            .map_err(sqlite("bind view"))?;
        match counts.get_mut(video_id) {
            Some(count) => *count += 1,
            None => {
                counts.insert(video_id.into(), 1);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::SEED_VIDEO_JSON;
    use std::net::{IpAddr, Ipv6Addr};
    use std::sync::Arc;

    #[test]
    fn fresh_store_seeds_once_and_keeps_counts_across_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut store = EmbeddedStore::open(dir.path()).expect("open");
            assert!(store.seed_if_empty().expect("seed"));
            assert!(!store.seed_if_empty().expect("second seed is a no-op"));
            let catalog = store.load_catalog().expect("catalog");
            let entry = Arc::clone(catalog.get("12345").expect("seeded video"));
            assert_eq!(entry.body(), SEED_VIDEO_JSON.as_bytes());
            let views: Vec<ViewEvent> = (0..3)
                .map(|_| ViewEvent::now(Arc::clone(&entry), IpAddr::V6(Ipv6Addr::LOCALHOST)))
                .collect();
            store.write_views(&views).expect("write");
            store.write_views(&views[..1]).expect("write");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.view_count("12345").expect("count"), 4);
        assert_eq!(store.view_rows("12345").expect("rows"), 4);
        let catalog = store.load_catalog().expect("catalog");
        assert_eq!(catalog.get("12345").expect("video").persisted_views(), 4);
    }

    #[test]
    fn batches_spanning_multi_row_inserts_keep_every_row_and_value() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = EmbeddedStore::open(dir.path()).expect("open");
        store.seed_if_empty().expect("seed");
        let catalog = store.load_catalog().expect("catalog");
        let entry = catalog.get("12345").expect("seeded video");
        // Two whole multi-row inserts and a remainder of 5 single-row ones.
        let total = 2 * VIEWS_PER_INSERT + 5;
        let views: Vec<ViewEvent> = (0..total)
            .map(|index| {
                let mut view = ViewEvent::now(
                    Arc::clone(entry),
                    IpAddr::from([10, 0, (index / 256) as u8, (index % 256) as u8]),
                );
                view.timestamp_ms = 1_000 + index as i64;
                view
            })
            .collect();
        store.write_views(&views).expect("write");
        assert_eq!(store.view_count("12345").expect("count"), total as u64);
        let rows: Vec<(String, String, i64)> = store
            .connection
            .prepare("SELECT video_id, client_ip, timestamp_ms FROM views ORDER BY timestamp_ms")
            .expect("prepare")
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows.len(), total);
        for (index, (video_id, ip, timestamp)) in rows.iter().enumerate() {
            assert_eq!(video_id, "12345");
            assert_eq!(ip, &format!("10.0.{}.{}", index / 256, index % 256));
            assert_eq!(*timestamp, 1_000 + index as i64);
        }
    }

    #[test]
    fn imported_videos_replace_by_video_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = EmbeddedStore::open(dir.path()).expect("open");
        let videos = video::parse_catalog(
            br#"[{"videoId":"a","title":"first","sources":[]},
                {"videoId":"a","title":"second","sources":[]},
                {"videoId":"b","title":"other","sources":[{"src":"/b.mp4","size":1,"type":"video/mp4"}]}]"#,
        )
        .expect("catalog");
        store.upsert_videos(&videos).expect("import");
        assert!(!store.seed_if_empty().expect("not empty, so no seed"));
        let catalog = store.load_catalog().expect("catalog");
        assert_eq!(catalog.len(), 2);
        let body = catalog.get("a").expect("a").body();
        assert!(String::from_utf8_lossy(body).contains("second"));
    }

    #[test]
    fn retriable_errors_are_told_apart() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(is_retriable(&busy));
        assert!(!is_retriable(&constraint));
    }
}
