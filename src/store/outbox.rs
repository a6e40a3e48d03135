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

use std::path::Path;

use rusqlite::{params, Connection};
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

/// Flushes waiting for the remote store.
pub struct Outbox {
    connection: Connection,
    /// Views stored, kept in memory so checking for work costs nothing.
    depth: u64,
    /// Count rows stored, likewise.
    pending_counts: u64,
}

impl Outbox {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let connection = open_durable(data_dir, OUTBOX_FILE, SCHEMA)?;
        let depth: i64 = connection
            .query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))
            .map_err(sqlite("outbox depth"))?;
        let pending_counts: i64 = connection
            .query_row("SELECT COUNT(*) FROM outbox_counts", [], |row| row.get(0))
            .map_err(sqlite("outbox count rows"))?;
        Ok(Outbox {
            connection,
            depth: u64::try_from(depth).unwrap_or(0),
            pending_counts: u64::try_from(pending_counts).unwrap_or(0),
        })
    }

    /// Views waiting.
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Count rows waiting.
    pub fn pending_counts(&self) -> u64 {
        self.pending_counts
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
        self.pending_counts = self.pending_counts.saturating_sub(removed as u64);
        Ok(())
    }

    /// Durably appends a flush (one transaction).
    pub fn push(&mut self, flush: &Flush) -> Result<(), StoreError> {
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
        self.depth += flush.views.len() as u64;
        self.pending_counts = self
            .connection
            .query_row("SELECT COUNT(*) FROM outbox_counts", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|rows| u64::try_from(rows).unwrap_or(0))
            .map_err(sqlite("outbox count rows"))?;
        Ok(())
    }

    /// The oldest flushes, whole, at most `max_flushes` of them.
    pub fn oldest(&self, max_flushes: usize) -> Result<Vec<Flush>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT flush_id, view_id, video_id, client_ip, timestamp_ms FROM outbox
                 WHERE flush_id IN (
                     SELECT flush_id FROM outbox GROUP BY flush_id ORDER BY MIN(seq) LIMIT ?1)
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
        let removed = self
            .connection
            .execute(
                "DELETE FROM outbox WHERE flush_id = ?1",
                [flush_id.to_string()],
            )
            .map_err(sqlite("outbox delete"))?;
        self.depth = self.depth.saturating_sub(removed as u64);
        Ok(())
    }
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
