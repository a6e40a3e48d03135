//! The embedded default store: SQLite (bundled, so nothing to install) in WAL mode.
//!
//! One file, `<data-dir>/video-server.sqlite3`, holds three tables:
//!
//! - `videos`: the catalog, one JSON document per `video_id`;
//! - `views`: every view (`video_id`, `client_ip`: what `--client-ip` keeps of the
//!   address, `timestamp_ms`), or with `--view-retention-days` those of the last days (see
//!   [`super::retention`]); no count is read from it, so it has no index but its rowid
//!   (see [`SCHEMA_VERSION`]);
//! - `view_counts`: views per video, and `view_days`: views and a unique-viewer sketch per
//!   video and UTC day, advanced in the same transaction as the inserts, so counts are
//!   exact and reading them at start does not scan `views`;
//! - `salts`: the salt of each day whose views are hashed (`--client-ip hash`), kept by the
//!   catalog watcher and deleted two days later.
//!
//! A `catalog_version` row, advanced by triggers on `videos`, tells the catalog watcher
//! ([`EmbeddedCatalogSource`], on its own connection) that another process (a
//! `video-server import`) changed the catalog, without reading the catalog to find out.
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

use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::retention::Retention;
use super::sqlite::{self, open_durable, sqlite};
use super::{
    utc_day, CatalogSource, DayCount, DayUpdate, Persisted, StoreError, StoredVideo, VideoCounts,
    ViewRecord, ViewStore, DAYS_KEPT,
};
use crate::health::Health;
use crate::hll::Sketch;
use crate::metrics::Metrics;
use crate::video::VideoPayload;
use crate::viewer::{Salt, Viewer};

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
CREATE TABLE IF NOT EXISTS view_counts (
    video_id TEXT PRIMARY KEY NOT NULL,
    views INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS view_days (
    video_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    views INTEGER NOT NULL,
    sketch BLOB NOT NULL,
    PRIMARY KEY (video_id, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS salts (
    day INTEGER PRIMARY KEY NOT NULL,
    salt BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS catalog_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO catalog_version (id, version) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS video_inserted AFTER INSERT ON videos
    BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS video_updated AFTER UPDATE ON videos
    BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS video_deleted AFTER DELETE ON videos
    BEGIN UPDATE catalog_version SET version = version + 1; END;
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
const UPSERT_VIEW_DAY: &str = "INSERT INTO view_days (video_id, day, views, sketch)
     VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (video_id, day) DO UPDATE SET views = views + excluded.views, sketch = excluded.sketch";
/// `PRAGMA user_version` of the current schema; older files are migrated at open:
/// - 2: `view_days` holds every stored view (rebuilt from `views`);
/// - 3: no index on `views` by video. No read of the server used it, and keeping it cost
///   about 40 % of the batch writer's CPU per view and 30 % of the bytes per view
///   (`bench/instructions.sh`, `bench/view_storage.sh`). Counts are read from
///   `view_counts` and `view_days`; an analyst who queries raw views of one video often
///   can create an index of their own.
const SCHEMA_VERSION: i64 = 3;
/// The schema version from which `view_days` holds every stored view.
const DAYS_COUNTED_VERSION: i64 = 2;
const UPSERT_VIDEO: &str = "INSERT INTO videos (video_id, document) VALUES (?1, ?2)
     ON CONFLICT (video_id) DO UPDATE SET document = excluded.document";

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
    /// The catalog watcher's connection, if it has one: opened, closed and replaced only
    /// by this store (see [`EmbeddedCatalogSource`]).
    watcher_reader: Option<Reader>,
    /// Distinct-client sketches of the days being written (today, yesterday, and any
    /// older day a late view touched in this batch), so a batch merges into memory
    /// instead of reading its sketch back.
    day_sketches: HashMap<(Box<str>, i64), Sketch>,
    /// Where a deleted or replaced file is reported, when the server watches it.
    watch: Option<FileWatch>,
    /// Deletes raw view rows past `--view-retention-days`, between batches.
    retention: Option<Retention>,
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

impl EmbeddedStore {
    /// Opens (creating if needed) the database under `data_dir`, and checks it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let connection = open_durable(data_dir, DATABASE_FILE, SCHEMA)?;
        let path = data_dir.join(DATABASE_FILE);
        check_integrity(&connection, &path)?;
        let identity = file_identity(&path).ok_or_else(|| {
            sqlite::data_dir("open", &path)(std::io::Error::other(
                "the database file vanished as it was opened",
            ))
        })?;
        let mut store = EmbeddedStore {
            connection,
            path,
            identity,
            watcher_reader: None,
            day_sketches: HashMap::new(),
            watch: None,
            retention: None,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Brings an older file up to date (see [`SCHEMA_VERSION`]), in one transaction.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(sqlite("read the schema version"))?;
        if version >= SCHEMA_VERSION {
            // A binary from before version 3 run on this file (a rollback) creates the
            // index again without lowering the version, so it is dropped at every open;
            // when it is absent this costs a schema lookup.
            return drop_index_by_video(&self.connection);
        }
        let transaction = self
            .connection
            .transaction()
            .map_err(sqlite("begin migration"))?;
        let days = if version < DAYS_COUNTED_VERSION {
            count_stored_days(&transaction)?
        } else {
            0
        };
        drop_index_by_video(&transaction)?;
        transaction
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sqlite("set the schema version"))?;
        transaction.commit().map_err(sqlite("commit migration"))?;
        if days > 0 {
            tracing::info!(days, "counted the stored views per day");
        }
        Ok(())
    }

    /// The sketch of `(video_id, day)`, read from the file the first time.
    fn day_sketch(&mut self, video_id: &str, day: i64) -> Result<&mut Sketch, StoreError> {
        let key = (Box::<str>::from(video_id), day);
        if !self.day_sketches.contains_key(&key) {
            let stored: Option<Vec<u8>> = self
                .connection
                .query_row(
                    "SELECT sketch FROM view_days WHERE video_id = ?1 AND day = ?2",
                    params![video_id, day],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sqlite("read a day's sketch"))?;
            let sketch = match stored {
                Some(bytes) => Sketch::from_bytes(&bytes).unwrap_or_else(|error| {
                    tracing::warn!(%video_id, day, %error, "starting the day's unique viewers afresh");
                    Sketch::new()
                }),
                None => Sketch::new(),
            };
            self.day_sketches.insert(key.clone(), sketch);
        }
        Ok(self.day_sketches.entry(key).or_default())
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

    /// Makes the writer delete, between batches, raw view rows stamped more than `keep`
    /// ago (counts are kept; see [`super::retention`]), reporting in `metrics`.
    pub fn retain_views(&mut self, keep: Duration, metrics: Arc<Metrics>) {
        self.retention = Some(Retention::new(keep, metrics));
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
            std::fs::rename(&self.path, &aside).map_err(sqlite::data_dir(
                "move the replacing file aside",
                &self.path,
            ))?;
            tracing::warn!(aside = %aside.display(), "kept the file that replaced the database");
        }
        std::fs::rename(&rebuilt, &self.path).map_err(sqlite::data_dir(
            "move the rebuilt database into place",
            &self.path,
        ))?;
        // The old connections close before the new one opens: closing the last removes the
        // WAL by name, which must not be left for the new file to read. The watcher's goes
        // first (it waits on the lock meanwhile). Until the new one opens, an empty
        // in-memory placeholder stands in (nothing is written meanwhile).
        let mut reader = self.watcher_reader.as_ref().map(|reader| reader.lock());
        if let Some(slot) = reader.as_mut() {
            **slot = None;
        }
        let old = std::mem::replace(
            &mut self.connection,
            Connection::open_in_memory().map_err(sqlite("swap connections"))?,
        );
        drop(old);
        let data_dir = self.path.parent().unwrap_or(Path::new("."));
        self.connection = open_durable(data_dir, DATABASE_FILE, SCHEMA)?;
        self.identity = file_identity(&self.path).unwrap_or_default();
        if let Some(slot) = reader.as_mut() {
            **slot = Some(open_reader(&self.path)?);
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader of this database for the catalog watcher, on a connection of its own.
    pub fn catalog_source(&mut self) -> Result<EmbeddedCatalogSource, StoreError> {
        let reader = Arc::new(Mutex::new(Some(open_reader(&self.path)?)));
        self.watcher_reader = Some(Arc::clone(&reader));
        Ok(EmbeddedCatalogSource {
            reader,
            seen_version: None,
        })
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

    /// Every stored video with its persisted view count.
    pub fn load_videos(&self) -> Result<Vec<StoredVideo>, StoreError> {
        read_videos(&self.connection)
    }

    /// Views persisted for one video (for tools and tests; the server reads the catalog).
    pub fn view_count(&self, video_id: &str) -> Result<u64, StoreError> {
        read_view_count(&self.connection, video_id)
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
    fn write_views(&mut self, views: &[ViewRecord<'_>]) -> Result<Persisted, StoreError> {
        // Per (video, day): the views this batch adds, and the sketch with its clients.
        // Merging into the cached sketch before the commit is safe: adding the same
        // clients again on a retry leaves a sketch unchanged.
        let groups = super::group_by_video_day(views);
        let mut updates = Vec::with_capacity(groups.len());
        let mut sketches = Vec::with_capacity(groups.len());
        for ((video_id, day), clients) in &groups {
            let sketch = self.day_sketch(video_id, *day)?;
            for client in clients {
                sketch.insert(client.key().bytes());
            }
            updates.push(DayUpdate {
                video_id: (*video_id).to_owned(),
                day: *day,
                added: clients.len() as u64,
                unique_viewers: sketch.estimate(),
            });
            sketches.push(sketch.to_bytes());
        }
        // Views per video for `view_counts`, from the same groups.
        let mut per_video: Vec<(&str, i64)> = Vec::new();
        for ((video_id, _), clients) in &groups {
            match per_video.iter_mut().find(|(known, _)| known == video_id) {
                Some((_, count)) => *count += clients.len() as i64,
                None => per_video.push((video_id, clients.len() as i64)),
            }
        }
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
                bind_views(&mut insert_many, chunk, &mut ip_text)?;
                insert_many.raw_execute().map_err(sqlite("insert views"))?;
            }
            for view in rest {
                bind_views(&mut insert_one, std::slice::from_ref(view), &mut ip_text)?;
                insert_one.raw_execute().map_err(sqlite("insert view"))?;
            }
            let mut add_count = transaction
                .prepare_cached(ADD_VIEW_COUNT)
                .map_err(sqlite("prepare view count"))?;
            for (video_id, count) in &per_video {
                add_count
                    .execute(params![video_id, count])
                    .map_err(sqlite("add view count"))?;
            }
            let mut add_day = transaction
                .prepare_cached(UPSERT_VIEW_DAY)
                .map_err(sqlite("prepare view day"))?;
            for (update, sketch) in updates.iter().zip(&sketches) {
                add_day
                    .execute(params![
                        update.video_id,
                        update.day,
                        update.added as i64,
                        sketch
                    ])
                    .map_err(sqlite("add view day"))?;
            }
        }
        transaction.commit().map_err(sqlite("commit view batch"))?;
        // Keep the sketches of today and yesterday; an older day is read again if a late
        // view touches it.
        if let Some(newest) = updates.iter().map(|update| update.day).max() {
            self.day_sketches.retain(|(_, day), _| *day >= newest - 1);
        }
        Ok(Persisted::Counted(updates))
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
        if let Some(retention) = &mut self.retention {
            retention.run_due(&self.connection, super::epoch_millis());
        }
    }
}

/// The catalog watcher's connection, shared with the batch writer that replaces it.
type Reader = Arc<Mutex<Option<Connection>>>;

/// The embedded database as the catalog watcher reads it: on a connection of its own, so
/// that it never contends with the writer's. It only reads, but for the daily salts (a
/// few rows a day).
///
/// Only the batch writer opens the file at the path: it opens this connection beside its
/// own and, when it rebuilds a deleted or replaced file, closes it with its own and opens
/// a new one. A connection opened on whatever file is at the path could be one that
/// replaced ours, and SQLite, which pairs a database with its `-wal` by name, would then
/// checkpoint our log into that file when it closes; and a connection left open on the old
/// file would keep the old log, by name, for the rebuilt file to read.
pub struct EmbeddedCatalogSource {
    reader: Reader,
    /// `catalog_version` when the catalog was last read.
    seen_version: Option<i64>,
}

impl EmbeddedCatalogSource {
    /// Runs `read` on the watcher's connection (waiting while the writer rebuilds the file).
    fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.reader.lock().as_ref() {
            Some(connection) => read(connection),
            None => Err(StoreError::Sqlite {
                context: "watch the catalog (the database is being rebuilt)",
                source: rusqlite::Error::InvalidQuery,
            }),
        }
    }
}

/// Opens a second connection to the database the writer has just opened. Read-write, so
/// that it does not stop the writer's connection, the last to close, from checkpointing
/// the log into the file (a read-only one does); it only ever reads.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("open the database to watch the catalog"))?;
    connection
        .busy_timeout(sqlite::BUSY_TIMEOUT)
        .map_err(sqlite("set busy timeout"))?;
    Ok(connection)
}

impl CatalogSource for EmbeddedCatalogSource {
    fn catalog_changed(&mut self) -> Result<bool, StoreError> {
        let version: i64 = self.read(|connection| {
            connection
                .query_row("SELECT version FROM catalog_version", [], |row| row.get(0))
                .map_err(sqlite("read the catalog version"))
        })?;
        Ok(self.seen_version.replace(version) != Some(version))
    }

    fn load_videos(&mut self) -> Result<Vec<StoredVideo>, StoreError> {
        self.read(read_videos)
    }

    fn view_counts(&mut self, video_id: &str) -> Result<VideoCounts, StoreError> {
        // The server serves the embedded store's days from memory (the writer credits
        // them); this answers tools and tests.
        let total = self.read(|connection| read_view_count(connection, video_id))?;
        Ok(VideoCounts {
            total,
            days: Vec::new(),
        })
    }

    fn agree_salt(&mut self, day: i64, proposed: Salt) -> Result<Salt, StoreError> {
        self.read(|connection| {
            connection
                .execute(
                    "INSERT OR IGNORE INTO salts (day, salt) VALUES (?1, ?2)",
                    params![day, proposed.as_slice()],
                )
                .map_err(sqlite("store a salt"))?;
            let stored: Vec<u8> = connection
                .query_row("SELECT salt FROM salts WHERE day = ?1", [day], |row| {
                    row.get(0)
                })
                .map_err(sqlite("read a salt"))?;
            Salt::try_from(stored.as_slice()).map_err(|_| StoreError::Sqlite {
                context: "a stored salt is not 16 bytes",
                source: rusqlite::Error::InvalidQuery,
            })
        })
    }

    fn forget_salts_before(&mut self, day: i64) -> Result<(), StoreError> {
        self.read(|connection| {
            connection
                .execute("DELETE FROM salts WHERE day < ?1", [day])
                .map(|_| ())
                .map_err(sqlite("delete old salts"))
        })
    }
}

/// Drops the index of versions before 3 (see [`SCHEMA_VERSION`]). Its name is ours: an
/// index an analyst adds should be named otherwise.
fn drop_index_by_video(connection: &Connection) -> Result<(), StoreError> {
    connection
        .execute_batch("DROP INDEX IF EXISTS views_by_video")
        .map_err(sqlite("drop the index views_by_video"))
}

/// Rebuilds `view_days` from the `views` table, for a file from before per-day counts, so
/// existing views keep counting, per day and in uniques. Returns the days written.
fn count_stored_days(connection: &Connection) -> Result<usize, StoreError> {
    let mut days: HashMap<(String, i64), (u64, Sketch)> = HashMap::new();
    let mut statement = connection
        .prepare("SELECT video_id, client_ip, timestamp_ms FROM views")
        .map_err(sqlite("prepare migration"))?;
    let mut rows = statement
        .query([])
        .map_err(sqlite("read views to migrate"))?;
    while let Some(row) = rows.next().map_err(sqlite("read a view to migrate"))? {
        let video_id: String = row.get(0).map_err(sqlite("read a view to migrate"))?;
        let client: String = row.get(1).map_err(sqlite("read a view to migrate"))?;
        let timestamp_ms: i64 = row.get(2).map_err(sqlite("read a view to migrate"))?;
        let (views, sketch) = days.entry((video_id, utc_day(timestamp_ms))).or_default();
        *views += 1;
        match Viewer::parse(&client) {
            Some(viewer) => sketch.insert(viewer.key().bytes()),
            None => sketch.insert(client.as_bytes()),
        }
    }
    connection
        .execute("DELETE FROM view_days", [])
        .map_err(sqlite("clear view_days"))?;
    let mut insert = connection
        .prepare(UPSERT_VIEW_DAY)
        .map_err(sqlite("prepare migration"))?;
    for ((video_id, day), (views, sketch)) in &days {
        insert
            .execute(params![video_id, day, *views as i64, sketch.to_bytes()])
            .map_err(sqlite("migrate a day"))?;
    }
    Ok(days.len())
}

/// Every stored video with its persisted view count.
fn read_videos(connection: &Connection) -> Result<Vec<StoredVideo>, StoreError> {
    let mut statement = connection
        .prepare(
            "SELECT v.video_id, v.document, COALESCE(c.views, 0)
             FROM videos v LEFT JOIN view_counts c ON c.video_id = v.video_id",
        )
        .map_err(sqlite("prepare catalog read"))?;
    let rows = statement
        .query_map([], |row| {
            Ok(StoredVideo {
                video_id: row.get(0)?,
                document: row.get(1)?,
                views: Some(u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0)),
                days: Vec::new(),
            })
        })
        .map_err(sqlite("read catalog"))?;
    let mut videos: Vec<StoredVideo> = rows
        .collect::<Result<_, _>>()
        .map_err(sqlite("read catalog row"))?;
    let mut days: HashMap<String, Vec<DayCount>> = HashMap::new();
    let since = utc_day(super::epoch_millis()) - DAYS_KEPT + 1;
    let mut statement = connection
        .prepare("SELECT video_id, day, views, sketch FROM view_days WHERE day >= ?1 ORDER BY day")
        .map_err(sqlite("prepare view days read"))?;
    let mut rows = statement.query([since]).map_err(sqlite("read view days"))?;
    while let Some(row) = rows.next().map_err(sqlite("read a view day"))? {
        let video_id: String = row.get(0).map_err(sqlite("read a view day"))?;
        let sketch: Vec<u8> = row.get(3).map_err(sqlite("read a view day"))?;
        days.entry(video_id).or_default().push(DayCount {
            day: row.get(1).map_err(sqlite("read a view day"))?,
            views: u64::try_from(row.get::<_, i64>(2).map_err(sqlite("read a view day"))?)
                .unwrap_or(0),
            unique_viewers: Sketch::from_bytes(&sketch).map_or(0, |sketch| sketch.estimate()),
        });
    }
    for video in &mut videos {
        if let Some(video_days) = days.remove(&video.video_id) {
            video.days = video_days;
        }
    }
    Ok(videos)
}

fn read_view_count(connection: &Connection, video_id: &str) -> Result<u64, StoreError> {
    let views: Option<i64> = connection
        .query_row(
            "SELECT views FROM view_counts WHERE video_id = ?1",
            [video_id],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite("read view count"))?;
    Ok(views.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
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

/// Binds `views` as consecutive `(video_id, client_ip, timestamp_ms)` rows of `statement`.
fn bind_views(
    statement: &mut rusqlite::CachedStatement<'_>,
    views: &[ViewRecord<'_>],
    ip_text: &mut String,
) -> Result<(), StoreError> {
    for (row, view) in views.iter().enumerate() {
        ip_text.clear();
        view.viewer.write_text(ip_text);
        let video_id = view.video_id;
        // rusqlite copies bound text (SQLITE_TRANSIENT), so ip_text can be reused at once.
        let first = row * 3 + 1;
        statement
            .raw_bind_parameter(first, video_id)
            .and_then(|()| statement.raw_bind_parameter(first + 1, ip_text.as_str()))
            .and_then(|()| statement.raw_bind_parameter(first + 2, view.timestamp_ms))
            .map_err(sqlite("bind view"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::{self, SEED_VIDEO_JSON};
    use std::net::{IpAddr, Ipv6Addr};

    fn view(video_id: &str, client_ip: IpAddr, timestamp_ms: i64) -> ViewRecord<'_> {
        ViewRecord {
            video_id,
            viewer: Viewer::Address(client_ip),
            timestamp_ms,
        }
    }

    #[test]
    fn fresh_store_seeds_once_and_keeps_counts_across_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut store = EmbeddedStore::open(dir.path()).expect("open");
            assert!(store.seed_if_empty().expect("seed"));
            assert!(!store.seed_if_empty().expect("second seed is a no-op"));
            let videos = store.load_videos().expect("catalog");
            assert_eq!(videos.len(), 1);
            assert_eq!(videos[0].document, SEED_VIDEO_JSON);
            let views = [view("12345", IpAddr::V6(Ipv6Addr::LOCALHOST), 1); 3];
            let Persisted::Counted(days) = store.write_views(&views).expect("write") else {
                panic!("the embedded store counts here");
            };
            assert_eq!(days.len(), 1);
            assert_eq!((days[0].added, days[0].unique_viewers), (3, 1));
            store.write_views(&views[..1]).expect("write");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.view_count("12345").expect("count"), 4);
        assert_eq!(store.view_rows("12345").expect("rows"), 4);
        let videos = store.load_videos().expect("catalog");
        assert_eq!(videos[0].views, Some(4));
    }

    #[test]
    fn batches_spanning_multi_row_inserts_keep_every_row_and_value() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = EmbeddedStore::open(dir.path()).expect("open");
        store.seed_if_empty().expect("seed");
        // Two whole multi-row inserts and a remainder of 5 single-row ones.
        let total = 2 * VIEWS_PER_INSERT + 5;
        let views: Vec<ViewRecord<'_>> = (0..total)
            .map(|index| {
                view(
                    "12345",
                    IpAddr::from([10, 0, (index / 256) as u8, (index % 256) as u8]),
                    1_000 + index as i64,
                )
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
    fn views_either_side_of_utc_midnight_count_on_their_own_days() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = EmbeddedStore::open(dir.path()).expect("open");
        store.seed_if_empty().expect("seed");
        let midnight = 20_000 * 86_400_000; // 2024-10-04T00:00:00Z
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        let views = [
            view("12345", a, midnight - 1),
            view("12345", b, midnight - 1),
            view("12345", a, midnight - 2),
            view("12345", a, midnight),
        ];
        let Persisted::Counted(mut days) = store.write_views(&views).expect("write") else {
            panic!("the embedded store counts here");
        };
        days.sort_by_key(|update| update.day);
        let summary: Vec<(i64, u64, u64)> = days
            .iter()
            .map(|update| (update.day, update.added, update.unique_viewers))
            .collect();
        assert_eq!(summary, vec![(19_999, 3, 2), (20_000, 1, 1)]);
        // A later batch adds to the day and its uniques (b is new on day 20,000).
        let Persisted::Counted(days) = store
            .write_views(&[view("12345", b, midnight + 5)])
            .expect("write")
        else {
            panic!("counted");
        };
        assert_eq!((days[0].added, days[0].unique_viewers), (1, 2));
    }

    #[test]
    fn a_file_from_before_per_day_counts_is_migrated_with_its_views() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = super::super::epoch_millis();
        {
            let mut store = EmbeddedStore::open(dir.path()).expect("open");
            store.seed_if_empty().expect("seed");
            let views: Vec<ViewRecord<'_>> = (0..5u8)
                .map(|n| view("12345", IpAddr::from([198, 51, 100, n % 3]), now))
                .collect();
            store.write_views(&views).expect("write");
            // What an older version left: no per-day rows, schema version 0.
            store
                .connection
                .execute_batch("DELETE FROM view_days; PRAGMA user_version = 0;")
                .expect("make it old");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen, migrating");
        let videos = store.load_videos().expect("catalog");
        assert_eq!(videos[0].views, Some(5), "the total is kept");
        assert_eq!(
            videos[0].days,
            vec![DayCount {
                day: utc_day(now),
                views: 5,
                unique_viewers: 3
            }]
        );
    }

    #[test]
    fn a_file_with_the_old_index_by_video_loses_it_and_keeps_its_views() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = super::super::epoch_millis();
        let index_count = |store: &EmbeddedStore| -> i64 {
            store
                .connection
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'views'",
                    [],
                    |row| row.get(0),
                )
                .expect("read the schema")
        };
        {
            let mut store = EmbeddedStore::open(dir.path()).expect("open");
            store.seed_if_empty().expect("seed");
            assert_eq!(index_count(&store), 0, "a new file has no index on views");
            let views = [view("12345", IpAddr::from([198, 51, 100, 7]), now); 4];
            store.write_views(&views).expect("write");
            // What version 2 left: the index, and its schema version; and one raw row gone
            // (as retention deletes them), which a recount of `views` would notice.
            store
                .connection
                .execute_batch(
                    "CREATE INDEX views_by_video ON views (video_id, timestamp_ms);
                     PRAGMA user_version = 2;
                     DELETE FROM views WHERE id = (SELECT MIN(id) FROM views);",
                )
                .expect("make it version 2");
            assert_eq!(index_count(&store), 1);
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen, migrating");
        assert_eq!(index_count(&store), 0, "the index is dropped");
        // A rollback to an older binary creates it again and leaves the version at 3.
        store
            .connection
            .execute_batch("CREATE INDEX views_by_video ON views (video_id, timestamp_ms)")
            .expect("what an older binary does at open");
        drop(store);
        let store = EmbeddedStore::open(dir.path()).expect("reopen after a rollback");
        assert_eq!(index_count(&store), 0, "dropped again at version 3");
        let version: i64 = store
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(
            store.view_rows("12345").expect("rows"),
            3,
            "the rows are kept"
        );
        let videos = store.load_videos().expect("catalog");
        assert_eq!(videos[0].views, Some(4));
        assert_eq!(
            videos[0].days[0].views, 4,
            "the day's counts are kept, not recounted from the rows"
        );
    }

    #[test]
    fn retention_deletes_old_raw_rows_between_batches_and_leaves_every_count_as_it_was() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = EmbeddedStore::open(dir.path()).expect("open");
        store.seed_if_empty().expect("seed");
        let day_ms = 86_400_000;
        let now = super::super::epoch_millis();
        // More old rows than the first step looks at, from 300 clients, ten days ago.
        let old: Vec<ViewRecord<'_>> = (0..3_000u16)
            .map(|n| {
                let client = IpAddr::from([10, 0, (n % 300 / 256) as u8, (n % 300 % 256) as u8]);
                view("12345", client, now - 10 * day_ms + i64::from(n))
            })
            .collect();
        store.write_views(&old).expect("write old views");
        let recent = [view("12345", IpAddr::V6(Ipv6Addr::LOCALHOST), now - day_ms); 5];
        store.write_views(&recent).expect("write recent views");
        let before = store.load_videos().expect("counts before");

        let metrics = Arc::new(Metrics::new(&[]).expect("metrics"));
        store.retain_views(Duration::from_secs(2 * 86_400), Arc::clone(&metrics));
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.views_expired.get() < 3_000 && Instant::now() < deadline {
            store.maintain();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(metrics.views_expired.get(), 3_000);
        assert!(
            metrics.retention_step_duration.get_sample_count() >= 2,
            "3,000 rows take more than one step"
        );
        assert_eq!(
            store.view_rows("12345").expect("rows"),
            5,
            "the recent rows stay"
        );
        assert_eq!(store.load_videos().expect("counts after"), before);
        assert_eq!(before[0].views, Some(3_005));
        assert!(before[0].days.iter().any(|day| day.unique_viewers >= 290));
        // The writer goes on: a new batch adds to the same counts.
        store.write_views(&recent[..1]).expect("write after");
        assert_eq!(store.view_count("12345").expect("count"), 3_006);
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
        let videos = store.load_videos().expect("catalog");
        assert_eq!(videos.len(), 2);
        let a = videos
            .iter()
            .find(|video| video.video_id == "a")
            .expect("a");
        assert!(a.document.contains("second"));
    }

    #[test]
    fn the_watcher_sees_imports_by_other_connections_and_not_view_batches() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = EmbeddedStore::open(dir.path()).expect("open");
        store.seed_if_empty().expect("seed");
        let mut source = store.catalog_source().expect("reader");
        assert!(source.catalog_changed().expect("first check"));
        assert!(!source.catalog_changed().expect("nothing changed"));
        let views = [view("12345", IpAddr::V6(Ipv6Addr::LOCALHOST), 1); 2];
        store.write_views(&views).expect("write");
        assert!(
            !source
                .catalog_changed()
                .expect("views are not a catalog change"),
            "a view batch must not make the watcher re-read the catalog"
        );
        // Another process importing (its own connection) is seen.
        let mut importer = EmbeddedStore::open(dir.path()).expect("second connection");
        let videos = video::parse_catalog(br#"[{"videoId":"new","title":"n","sources":[]}]"#)
            .expect("catalog");
        importer.upsert_videos(&videos).expect("import");
        assert!(source.catalog_changed().expect("import seen"));
        let stored = source.load_videos().expect("videos");
        assert_eq!(stored.len(), 2);
        assert_eq!(source.view_count("12345").expect("count"), 2);
    }
}
