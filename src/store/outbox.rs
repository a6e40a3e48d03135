//! The durable local outbox: views that could not reach the remote store yet.
//!
//! While the cluster is unreachable or failing, the [`ResilientStore`](super::ResilientStore)
//! appends each flush here (SQLite under `--data-dir`, committed before the writer moves
//! on) and replays it once the cluster is back. Flushes are stored and replayed whole,
//! with the ids they were given when first attempted, so a flush that partly reached the
//! cluster before failing is rewritten with the same keys: replay never duplicates a view
//! or a count.
//!
//! A flush's count rows ([`CountRow`]: a writer's running totals) are kept apart, one row
//! per (video, day, writer) holding the largest total seen: only the newest total of a
//! tally matters, so the outbox never holds a sketch per flush. They are replayed on their
//! own, and forgotten once the cluster has a total at least as large.
//!
//! Each flush also has a row in `outbox_flushes`, in arrival order: finding the oldest
//! waiting flush is a lookup on that table's key, not a scan of the views. A flush the
//! cluster refuses for good (a permanent error, or failing again and again while other
//! flushes go through) is moved to quarantine there, with its error, so that it cannot
//! hold back the flushes behind it; `video-server outbox list|retry|drop` acts on it.
//!
//! One process has two connections to the file: the batch writer's, which appends flushes
//! the cluster did not take, and the replay worker's ([`Outbox::another_connection`]),
//! which reads the oldest, removes what it replayed and quarantines. Both keep one
//! [`OutboxTally`] in memory, changed under one lock together with the file, so that
//! checking for work costs nothing and neither connection's numbers go stale; WAL and the
//! busy timeout let the two (and an operator's `video-server outbox`) take turns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::ledger::CountRow;
use super::sqlite::{open_durable, sqlite};
use super::StoreError;
use crate::viewer::Viewer;

/// One view ready for the remote store, with its stable ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingView {
    /// Time-based id of the view (its clustering key), derived from its timestamp.
    pub id: Uuid,
    pub video_id: String,
    pub viewer: Viewer,
    pub timestamp_ms: i64,
}

/// A batch of views written together, and the count rows that hold their totals (empty
/// in a flush read back from the outbox: its counts are replayed apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flush {
    pub id: Uuid,
    pub views: Vec<PendingView>,
    pub counts: Vec<CountRow>,
}

/// The outbox database file inside `--data-dir`.
pub const OUTBOX_FILE: &str = "outbox.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    flush_id TEXT NOT NULL,
    view_id TEXT NOT NULL,
    video_id TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_flush ON outbox (flush_id);
CREATE TABLE IF NOT EXISTS outbox_flushes (
    seq INTEGER PRIMARY KEY,
    flush_id TEXT NOT NULL UNIQUE,
    views INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    quarantined_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_flushes_waiting ON outbox_flushes (seq)
    WHERE quarantined_at IS NULL;
CREATE TABLE IF NOT EXISTS outbox_counts (
    video_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    writer_id TEXT NOT NULL,
    views INTEGER NOT NULL,
    sketch BLOB NOT NULL,
    PRIMARY KEY (video_id, day, writer_id)
) WITHOUT ROWID;
";

/// Keeps the larger of two totals of one tally (and its sketch).
const KEEP_COUNT: &str = "INSERT INTO outbox_counts (video_id, day, writer_id, views, sketch)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (video_id, day, writer_id) DO UPDATE
     SET views = excluded.views, sketch = excluded.sketch
     WHERE excluded.views > outbox_counts.views";

/// A flush the cluster refused for good, kept aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedFlush {
    pub id: Uuid,
    pub views: u64,
    pub attempts: u64,
    pub error: String,
    /// When it was quarantined, in milliseconds since the Unix epoch.
    pub quarantined_at_ms: i64,
}

/// What the outbox holds, as the connections of this process last changed or read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxTally {
    /// Views waiting (not quarantined).
    pub depth: u64,
    /// Views in quarantine.
    pub quarantined: u64,
    /// Count rows stored.
    pub pending_counts: u64,
}

/// Flushes waiting for the remote store.
pub struct Outbox {
    connection: Connection,
    data_dir: PathBuf,
    /// Shared by this process's connections to the file; locked across each change of
    /// the file and of the tally, so that a recount on one connection and a removal on
    /// another cannot cross.
    tally: Arc<Mutex<OutboxTally>>,
}

/// Reads what the file holds.
fn count(connection: &Connection) -> Result<OutboxTally, StoreError> {
    let (depth, quarantined, pending_counts): (i64, i64, i64) = connection
        .query_row(
            "SELECT
               (SELECT COALESCE(SUM(views), 0) FROM outbox_flushes WHERE quarantined_at IS NULL),
               (SELECT COALESCE(SUM(views), 0) FROM outbox_flushes WHERE quarantined_at IS NOT NULL),
               (SELECT COUNT(*) FROM outbox_counts)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .map_err(sqlite("outbox depth"))?;
    Ok(OutboxTally {
        depth: u64::try_from(depth).unwrap_or(0),
        quarantined: u64::try_from(quarantined).unwrap_or(0),
        pending_counts: u64::try_from(pending_counts).unwrap_or(0),
    })
}

impl Outbox {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let connection = open_durable(data_dir, OUTBOX_FILE, SCHEMA)?;
        // An outbox from before `outbox_flushes`: index its flushes once, oldest first.
        connection
            .execute(
                "INSERT OR IGNORE INTO outbox_flushes (flush_id, views)
                 SELECT flush_id, COUNT(*) FROM outbox
                 WHERE NOT EXISTS (SELECT 1 FROM outbox_flushes)
                 GROUP BY flush_id ORDER BY MIN(seq)",
                [],
            )
            .map_err(sqlite("index the outbox's flushes"))?;
        let tally = count(&connection)?;
        Ok(Outbox {
            connection,
            data_dir: data_dir.to_owned(),
            tally: Arc::new(Mutex::new(tally)),
        })
    }

    /// A second connection to the same file, sharing this one's tally (for another
    /// thread: a connection is used by one thread at a time).
    pub fn another_connection(&self) -> Result<Outbox, StoreError> {
        Ok(Outbox {
            connection: open_durable(&self.data_dir, OUTBOX_FILE, SCHEMA)?,
            data_dir: self.data_dir.clone(),
            tally: Arc::clone(&self.tally),
        })
    }

    /// Re-reads the views waiting, in quarantine, and the count rows (another process,
    /// `video-server outbox retry`, may have changed them).
    pub fn recount(&mut self) -> Result<(), StoreError> {
        let mut tally = self.tally.lock();
        *tally = count(&self.connection)?;
        Ok(())
    }

    /// What the outbox holds now.
    pub fn tally(&self) -> OutboxTally {
        *self.tally.lock()
    }

    /// Views waiting (not counting quarantined ones).
    pub fn depth(&self) -> u64 {
        self.tally().depth
    }

    /// Views in quarantine.
    pub fn quarantined(&self) -> u64 {
        self.tally().quarantined
    }

    /// The outbox file's size in bytes (its pages in use).
    pub fn bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 = self
            .connection
            .query_row(
                "SELECT (page_count - freelist_count) * page_size
                 FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
                [],
                |row| row.get(0),
            )
            .map_err(sqlite("outbox size"))?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// Notes a failed replay of a flush; returns how many it has had.
    pub fn record_failure(&mut self, flush_id: Uuid, error: &str) -> Result<u64, StoreError> {
        let attempts: i64 = self
            .connection
            .query_row(
                "UPDATE outbox_flushes SET attempts = attempts + 1, last_error = ?2
                 WHERE flush_id = ?1 RETURNING attempts",
                params![flush_id.to_string(), error],
                |row| row.get(0),
            )
            .map_err(sqlite("note a failed replay"))?;
        Ok(u64::try_from(attempts).unwrap_or(0))
    }

    /// Moves a flush to quarantine with its error: replay skips it from now on. Returns
    /// the views it holds.
    pub fn quarantine(&mut self, flush_id: Uuid, error: &str) -> Result<u64, StoreError> {
        let mut tally = self.tally.lock();
        let views: Option<i64> = self
            .connection
            .query_row(
                "UPDATE outbox_flushes SET last_error = ?2, quarantined_at = ?3
                 WHERE flush_id = ?1 RETURNING views",
                params![flush_id.to_string(), error, super::epoch_millis()],
                |row| row.get(0),
            )
            .optional()
            .map_err(sqlite("quarantine a flush"))?;
        *tally = count(&self.connection)?;
        Ok(views
            .and_then(|views| u64::try_from(views).ok())
            .unwrap_or(0))
    }

    /// The flushes in quarantine, oldest first.
    pub fn quarantined_flushes(&self) -> Result<Vec<QuarantinedFlush>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT flush_id, views, attempts, COALESCE(last_error, ''), quarantined_at
                 FROM outbox_flushes WHERE quarantined_at IS NOT NULL ORDER BY seq",
            )
            .map_err(sqlite("prepare quarantine read"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .map_err(sqlite("quarantine read"))?;
        let mut flushes = Vec::new();
        for row in rows {
            let (id, views, attempts, error, quarantined_at_ms) =
                row.map_err(sqlite("quarantine row"))?;
            flushes.push(QuarantinedFlush {
                id: Uuid::parse_str(&id)
                    .map_err(|_| StoreError::CorruptOutbox { field: "flush id" })?,
                views: u64::try_from(views).unwrap_or(0),
                attempts: u64::try_from(attempts).unwrap_or(0),
                error,
                quarantined_at_ms,
            });
        }
        Ok(flushes)
    }

    /// Puts a quarantined flush back in line (at its old place), with its attempts reset.
    /// Returns whether there was such a flush.
    pub fn release(&mut self, flush_id: Uuid) -> Result<bool, StoreError> {
        let mut tally = self.tally.lock();
        let changed = self
            .connection
            .execute(
                "UPDATE outbox_flushes SET attempts = 0, quarantined_at = NULL
                 WHERE flush_id = ?1 AND quarantined_at IS NOT NULL",
                [flush_id.to_string()],
            )
            .map_err(sqlite("release a flush"))?;
        *tally = count(&self.connection)?;
        Ok(changed > 0)
    }

    /// Count rows waiting.
    pub fn pending_counts(&self) -> u64 {
        self.tally().pending_counts
    }

    /// Every count row waiting (one per tally, so a handful per video and day).
    pub fn counts(&self) -> Result<Vec<CountRow>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT video_id, day, writer_id, views, sketch FROM outbox_counts")
            .map_err(sqlite("prepare outbox count read"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Vec<u8>>(4)?,
                ))
            })
            .map_err(sqlite("outbox count read"))?;
        let mut counts = Vec::new();
        for row in rows {
            let (video_id, day, writer_id, views, sketch) =
                row.map_err(sqlite("outbox count row"))?;
            counts.push(CountRow {
                video_id,
                day,
                writer_id: Uuid::parse_str(&writer_id)
                    .map_err(|_| StoreError::CorruptOutbox { field: "writer id" })?,
                views: u64::try_from(views)
                    .map_err(|_| StoreError::CorruptOutbox { field: "views" })?,
                sketch,
            });
        }
        Ok(counts)
    }

    /// Forgets count rows the cluster now has (a total as large or larger may have been
    /// kept since they were read: it stays).
    pub fn counts_written(&mut self, written: &[CountRow]) -> Result<(), StoreError> {
        let mut tally = self.tally.lock();
        let transaction = self
            .connection
            .transaction()
            .map_err(sqlite("begin outbox count delete"))?;
        let mut removed = 0;
        {
            let mut delete = transaction
                .prepare_cached(
                    "DELETE FROM outbox_counts
                     WHERE video_id = ?1 AND day = ?2 AND writer_id = ?3 AND views <= ?4",
                )
                .map_err(sqlite("prepare outbox count delete"))?;
            for row in written {
                removed += delete
                    .execute(params![
                        row.video_id,
                        row.day,
                        row.writer_id.to_string(),
                        i64::try_from(row.views).unwrap_or(i64::MAX)
                    ])
                    .map_err(sqlite("outbox count delete"))?;
            }
        }
        transaction
            .commit()
            .map_err(sqlite("commit outbox count delete"))?;
        tally.pending_counts = tally.pending_counts.saturating_sub(removed as u64);
        Ok(())
    }

    /// Durably appends a flush (one transaction) at the end of the line.
    pub fn push(&mut self, flush: &Flush) -> Result<(), StoreError> {
        let mut tally = self.tally.lock();
        let transaction = self
            .connection
            .transaction()
            .map_err(sqlite("begin outbox append"))?;
        {
            let mut insert = transaction
                .prepare_cached(
                    "INSERT INTO outbox (flush_id, view_id, video_id, client_ip, timestamp_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sqlite("prepare outbox append"))?;
            let flush_id = flush.id.to_string();
            for view in &flush.views {
                insert
                    .execute(params![
                        flush_id,
                        view.id.to_string(),
                        view.video_id,
                        view.viewer.to_text(),
                        view.timestamp_ms
                    ])
                    .map_err(sqlite("outbox append"))?;
            }
            if !flush.views.is_empty() {
                transaction
                    .execute(
                        "INSERT OR IGNORE INTO outbox_flushes (flush_id, views) VALUES (?1, ?2)",
                        params![flush_id, flush.views.len() as i64],
                    )
                    .map_err(sqlite("outbox append"))?;
            }
            let mut keep = transaction
                .prepare_cached(KEEP_COUNT)
                .map_err(sqlite("prepare outbox count append"))?;
            for row in &flush.counts {
                keep.execute(params![
                    row.video_id,
                    row.day,
                    row.writer_id.to_string(),
                    i64::try_from(row.views).unwrap_or(i64::MAX),
                    row.sketch
                ])
                .map_err(sqlite("outbox count append"))?;
            }
        }
        transaction
            .commit()
            .map_err(sqlite("commit outbox append"))?;
        *tally = count(&self.connection)?;
        Ok(())
    }

    /// The oldest flushes, whole, at most `max_flushes` of them.
    pub fn oldest(&self, max_flushes: usize) -> Result<Vec<Flush>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT flush_id, view_id, video_id, client_ip, timestamp_ms FROM outbox
                 WHERE flush_id IN (
                     SELECT flush_id FROM outbox_flushes WHERE quarantined_at IS NULL
                     ORDER BY seq LIMIT ?1)
                 ORDER BY seq",
            )
            .map_err(sqlite("prepare outbox read"))?;
        let limit = i64::try_from(max_flushes).unwrap_or(i64::MAX);
        let rows = statement
            .query_map([limit], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .map_err(sqlite("outbox read"))?;
        let mut flushes: Vec<Flush> = Vec::new();
        for row in rows {
            let (flush_id, view_id, video_id, client_ip, timestamp_ms) =
                row.map_err(sqlite("outbox row"))?;
            let corrupt = |field: &'static str| StoreError::CorruptOutbox { field };
            let flush_id = Uuid::parse_str(&flush_id).map_err(|_| corrupt("flush id"))?;
            let view = PendingView {
                id: Uuid::parse_str(&view_id).map_err(|_| corrupt("view id"))?,
                video_id,
                viewer: Viewer::parse(&client_ip).ok_or_else(|| corrupt("client"))?,
                timestamp_ms,
            };
            match flushes.iter_mut().find(|flush| flush.id == flush_id) {
                Some(flush) => flush.views.push(view),
                None => flushes.push(Flush {
                    id: flush_id,
                    views: vec![view],
                    counts: Vec::new(),
                }),
            }
        }
        Ok(flushes)
    }

    /// Forgets a flush once the remote store has it.
    pub fn remove(&mut self, flush_id: Uuid) -> Result<(), StoreError> {
        let mut tally = self.tally.lock();
        let removed = delete(&mut self.connection, flush_id)?;
        tally.depth = tally.depth.saturating_sub(removed);
        Ok(())
    }

    /// Deletes a quarantined flush for good (`video-server outbox drop`); returns the views
    /// it held (0 if there was no such flush in quarantine).
    pub fn drop_quarantined(&mut self, flush_id: Uuid) -> Result<u64, StoreError> {
        let mut tally = self.tally.lock();
        let quarantined: Option<i64> = self
            .connection
            .query_row(
                "SELECT views FROM outbox_flushes
                 WHERE flush_id = ?1 AND quarantined_at IS NOT NULL",
                [flush_id.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(sqlite("find a quarantined flush"))?;
        if quarantined.is_none() {
            return Ok(0);
        }
        let dropped = delete(&mut self.connection, flush_id)?;
        *tally = count(&self.connection)?;
        Ok(dropped)
    }
}

/// Deletes a flush's views and its entry in one transaction; returns the views deleted.
fn delete(connection: &mut Connection, flush_id: Uuid) -> Result<u64, StoreError> {
    let id = flush_id.to_string();
    let transaction = connection
        .transaction()
        .map_err(sqlite("begin outbox delete"))?;
    let removed = transaction
        .execute("DELETE FROM outbox WHERE flush_id = ?1", [&id])
        .map_err(sqlite("outbox delete"))?;
    transaction
        .execute("DELETE FROM outbox_flushes WHERE flush_id = ?1", [&id])
        .map_err(sqlite("outbox delete"))?;
    transaction
        .commit()
        .map_err(sqlite("commit outbox delete"))?;
    Ok(removed as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flush(views: usize) -> Flush {
        Flush {
            id: Uuid::new_v4(),
            views: (0..views)
                .map(|i| PendingView {
                    id: Uuid::new_v4(),
                    video_id: format!("v{}", i % 2),
                    viewer: Viewer::Hashed([i as u8; 16]),
                    timestamp_ms: i as i64,
                })
                .collect(),
            counts: Vec::new(),
        }
    }

    fn count(views: u64) -> CountRow {
        CountRow {
            video_id: "v0".into(),
            day: 20_000,
            writer_id: Uuid::from_u128(1),
            views,
            sketch: vec![views as u8],
        }
    }

    #[test]
    fn only_the_largest_total_of_a_tally_is_kept_until_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut outbox = Outbox::open(dir.path()).expect("open");
        for views in [3, 7, 5] {
            let mut f = flush(1);
            f.counts.push(count(views));
            outbox.push(&f).expect("push");
        }
        assert_eq!(outbox.pending_counts(), 1);
        assert_eq!(outbox.counts().expect("read"), vec![count(7)]);
        // Written at 5 (an older read): the 7 stays.
        outbox.counts_written(&[count(5)]).expect("forget");
        assert_eq!(outbox.pending_counts(), 1);
        outbox.counts_written(&[count(7)]).expect("forget");
        assert_eq!(outbox.pending_counts(), 0);
        let reopened = Outbox::open(dir.path()).expect("reopen");
        assert_eq!(reopened.pending_counts(), 0);
        assert_eq!(reopened.depth(), 3);
    }

    #[test]
    fn an_outbox_from_before_the_flush_index_is_indexed_in_order_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (first, second) = (flush(2), flush(3));
        {
            let connection = Connection::open(dir.path().join(OUTBOX_FILE)).expect("an old outbox");
            connection
                .execute_batch(
                    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, flush_id TEXT NOT NULL,
                     view_id TEXT NOT NULL, video_id TEXT NOT NULL, client_ip TEXT NOT NULL,
                     timestamp_ms INTEGER NOT NULL)",
                )
                .expect("old schema");
            for f in [&first, &second] {
                for view in &f.views {
                    connection
                        .execute(
                            "INSERT INTO outbox (flush_id, view_id, video_id, client_ip, timestamp_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![
                                f.id.to_string(),
                                view.id.to_string(),
                                view.video_id,
                                view.viewer.to_text(),
                                view.timestamp_ms
                            ],
                        )
                        .expect("old row");
                }
            }
        }
        let outbox = Outbox::open(dir.path()).expect("open");
        assert_eq!(outbox.depth(), 5);
        assert_eq!(outbox.oldest(5).expect("read"), vec![first, second]);
    }

    #[test]
    fn a_quarantined_flush_is_skipped_listed_released_and_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut outbox = Outbox::open(dir.path()).expect("open");
        let (first, second) = (flush(2), flush(3));
        outbox.push(&first).expect("push");
        outbox.push(&second).expect("push");
        assert_eq!(outbox.record_failure(first.id, "timeout").expect("note"), 1);
        assert_eq!(
            outbox.quarantine(first.id, "refused").expect("quarantine"),
            2
        );
        assert_eq!((outbox.depth(), outbox.quarantined()), (3, 2));
        assert_eq!(outbox.oldest(5).expect("read"), vec![second.clone()]);
        let listed = outbox.quarantined_flushes().expect("list");
        assert_eq!(
            (listed[0].id, listed[0].views, listed[0].attempts),
            (first.id, 2, 1)
        );
        assert_eq!(listed[0].error, "refused");
        assert!(outbox.release(first.id).expect("release"));
        assert_eq!(
            outbox.oldest(5).expect("read"),
            vec![first.clone(), second.clone()]
        );
        outbox.quarantine(second.id, "refused").expect("quarantine");
        assert_eq!(
            outbox.drop_quarantined(first.id).expect("not quarantined"),
            0
        );
        assert_eq!(outbox.drop_quarantined(second.id).expect("drop"), 3);
        assert_eq!((outbox.depth(), outbox.quarantined()), (2, 0));
        assert!(outbox.bytes().expect("size") > 0);
    }

    #[test]
    fn two_connections_keep_one_tally() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = Outbox::open(dir.path()).expect("open");
        let mut replayer = writer.another_connection().expect("second connection");
        let (first, second) = (flush(3), flush(4));
        writer.push(&first).expect("push");
        writer.push(&second).expect("push");
        assert_eq!(replayer.depth(), 7);
        replayer.remove(first.id).expect("remove");
        replayer
            .quarantine(second.id, "refused")
            .expect("quarantine");
        assert_eq!(
            writer.tally(),
            OutboxTally {
                depth: 0,
                quarantined: 4,
                pending_counts: 0
            }
        );
        writer.recount().expect("recount");
        assert_eq!(writer.quarantined(), 4, "as the file says");
    }

    #[test]
    fn flushes_survive_reopen_and_come_back_whole_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (first, second, third) = (flush(3), flush(2), flush(4));
        {
            let mut outbox = Outbox::open(dir.path()).expect("open");
            for f in [&first, &second, &third] {
                outbox.push(f).expect("push");
            }
            assert_eq!(outbox.depth(), 9);
        }
        let mut outbox = Outbox::open(dir.path()).expect("reopen");
        assert_eq!(outbox.depth(), 9);
        let oldest = outbox.oldest(2).expect("read");
        assert_eq!(oldest, vec![first.clone(), second.clone()]);
        outbox.remove(first.id).expect("remove");
        assert_eq!(outbox.depth(), 6);
        assert_eq!(outbox.oldest(5).expect("read"), vec![second, third]);
    }
}
