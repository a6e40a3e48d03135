//! The durable local outbox: views that could not reach the remote store yet.
//!
//! While the cluster is unreachable or failing, the [`ResilientStore`](super::ResilientStore)
//! appends each flush here (SQLite under `--data-dir`, committed before the writer moves
//! on) and replays it once the cluster is back. Flushes are stored and replayed whole,
//! with the ids they were given when first attempted, so a flush that partly reached the
//! cluster before failing is rewritten with the same keys: replay never duplicates a view
//! or a count.

use std::net::IpAddr;
use std::path::Path;

use rusqlite::{params, Connection};
use uuid::Uuid;

use super::sqlite::{open_durable, sqlite};
use super::StoreError;

/// One view ready for the remote store, with its stable ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingView {
    /// Time-based id of the view (its clustering key), derived from its timestamp.
    pub id: Uuid,
    pub video_id: String,
    pub client_ip: IpAddr,
    pub timestamp_ms: i64,
}

/// A batch of views written together, under one id that keys its count rollups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flush {
    pub id: Uuid,
    pub views: Vec<PendingView>,
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
";

/// Flushes waiting for the remote store.
pub struct Outbox {
    connection: Connection,
    /// Views stored, kept in memory so checking for work costs nothing.
    depth: u64,
}

impl Outbox {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let connection = open_durable(data_dir, OUTBOX_FILE, SCHEMA)?;
        let depth: i64 = connection
            .query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))
            .map_err(sqlite("outbox depth"))?;
        Ok(Outbox {
            connection,
            depth: u64::try_from(depth).unwrap_or(0),
        })
    }

    /// Views waiting.
    pub fn depth(&self) -> u64 {
        self.depth
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
                        view.client_ip.to_string(),
                        view.timestamp_ms
                    ])
                    .map_err(sqlite("outbox append"))?;
            }
        }
        transaction
            .commit()
            .map_err(sqlite("commit outbox append"))?;
        self.depth += flush.views.len() as u64;
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
                client_ip: client_ip.parse().map_err(|_| corrupt("client ip"))?,
                timestamp_ms,
            };
            match flushes.iter_mut().find(|flush| flush.id == flush_id) {
                Some(flush) => flush.views.push(view),
                None => flushes.push(Flush {
                    id: flush_id,
                    views: vec![view],
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
                    client_ip: "192.0.2.1".parse().expect("ip"),
                    timestamp_ms: i as i64,
                })
                .collect(),
        }
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
