//! Retention of the embedded store's raw view rows (`--view-retention-days`).
//!
//! The `views` table gains one row per view and, left alone, grows without end (the
//! README gives the bytes per view and the growth per day). Nothing the server answers is
//! read from it: totals come from `view_counts`, days and unique viewers from `view_days`,
//! both advanced in the same transaction as the inserts. So raw rows older than the
//! retention window can be deleted and every count stays exactly as it was.
//!
//! Data flow: the batch writer calls [`Retention::run_due`] from the store's `maintain`,
//! between batches, on its own connection. SQLite lets one connection write at a time, so
//! a deletion on a connection of its own would make the writer wait for the lock just as
//! long as a step takes; here the wait is the same, without a second writer opened on the
//! file that the writer rebuilds when it is deleted under it.
//!
//! One step ([`delete_step`]) looks only at the next `rows` row ids from the oldest row
//! (a range of the table's own key, never a scan of the table) and deletes those of them
//! older than the cutoff, in one transaction. Rows are inserted in the order views were
//! answered, so row id order is time order, but for a few milliseconds between workers; a
//! row kept in a step's range means the rows from there on are young, and the round ends
//! until [`CHECK_EVERY`] later. A view stamped out of order (a clock stepped back) is
//! deleted once the rows before it are.
//!
//! A step's commit does not wait for the disk: it runs with `synchronous = NORMAL`, and
//! the next batch's commit (`FULL`) syncs the log with the step's pages in it. A deletion
//! lost in a power cut is done again; the batches after it are as durable as ever.
//!
//! Pacing ([`Pacing`]): the rows per step are sized so that a step takes about
//! [`STEP_BUDGET`] (halved after a slower step, doubled after one under half of it, within
//! [`MIN_ROWS`]..=[`MAX_ROWS`]), which bounds how long a batch can wait behind a step; and
//! while old rows remain, the next step waits [`PAUSE_PER_STEP_TIME`] times the last
//! step's time, so that deleting takes at most a quarter of the writer's time and a
//! backlog (a first run on a year of views) is worked off without starving the inserts.
//!
//! Space: SQLite does not shrink the file when rows are deleted; their pages go to the
//! file's free list and the inserts that follow reuse them. With retention on, the file
//! stops growing at the size the window's views need, and stays there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::sqlite::sqlite;
use super::StoreError;
use crate::metrics::Metrics;

/// The time one step should take: how long a batch may wait behind it.
pub const STEP_BUDGET: Duration = Duration::from_millis(5);
/// Bounds of the rows one step looks at.
pub const MIN_ROWS: i64 = 250;
pub const MAX_ROWS: i64 = 64_000;
/// Rows of the first step, before any step was timed.
const FIRST_ROWS: i64 = 2_000;
/// While old rows remain, the pause after a step is this many times the step's time: at
/// most a quarter of the writer's time goes to deleting.
pub const PAUSE_PER_STEP_TIME: u32 = 3;
/// Once no row is old enough, how long before looking again.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// After a failed step (a full disk, say), how long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Rows deleted.
    pub deleted: u64,
    /// Whether no row older than the cutoff is left where the next step would look: the
    /// step kept a row of its range (the young rows begin there), or the table holds
    /// nothing past its range.
    pub caught_up: bool,
}

/// Deletes the rows of `views` stamped before `cutoff_ms` among the `rows` row ids from the
/// oldest row on: a range of the table's key, so the step costs the same however large the
/// table is.
pub fn delete_step(connection: &Connection, cutoff_ms: i64, rows: i64) -> Result<Step, StoreError> {
    let oldest = |connection: &Connection| {
        connection
            .query_row("SELECT MIN(id) FROM views", [], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .map_err(sqlite("find the oldest view row"))
    };
    let Some(first) = oldest(connection)? else {
        return Ok(Step {
            deleted: 0,
            caught_up: true,
        });
    };
    let end = first.saturating_add(rows.max(1));
    let deleted = connection
        .prepare_cached("DELETE FROM views WHERE id >= ?1 AND id < ?2 AND timestamp_ms < ?3")
        .and_then(|mut delete| delete.execute(params![first, end, cutoff_ms]))
        .map_err(sqlite("delete old view rows"))?;
    let caught_up = oldest(connection)?.is_none_or(|next| next < end);
    Ok(Step {
        deleted: deleted as u64,
        caught_up,
    })
}

/// Runs `work` with commits that leave syncing the log to the next `FULL` commit (the
/// writer's next batch), then puts the connection back to `FULL`.
fn without_waiting_for_the_disk<T>(
    connection: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite("relax synchronous for a deletion"))?;
    let result = work(connection);
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite("restore synchronous = FULL"))?;
    result
}

/// When the next step runs and how many rows it looks at, from how the last one went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub rows: i64,
}

impl Pacing {
    pub fn new() -> Self {
        Pacing { rows: FIRST_ROWS }
    }

    /// Sizes the next step from the last one's time, and says how long to wait before it.
    pub fn after(&mut self, step: Step, took: Duration) -> Duration {
        if took > STEP_BUDGET {
            self.rows = (self.rows / 2).max(MIN_ROWS);
        } else if took < STEP_BUDGET / 2 && !step.caught_up {
            // Only a step that had a whole range to delete says anything about a larger one.
            self.rows = (self.rows * 2).min(MAX_ROWS);
        }
        if step.caught_up {
            CHECK_EVERY
        } else {
            took * PAUSE_PER_STEP_TIME
        }
    }
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing::new()
    }
}

/// Deletes raw view rows older than a window, a step at a time, when called between
/// batches.
pub struct Retention {
    keep_ms: i64,
    pacing: Pacing,
    due: Instant,
    metrics: Arc<Metrics>,
}

impl Retention {
    /// Keeps raw view rows for `keep`; reports steps and deleted rows in `metrics`.
    pub fn new(keep: Duration, metrics: Arc<Metrics>) -> Self {
        Retention {
            keep_ms: i64::try_from(keep.as_millis()).unwrap_or(i64::MAX),
            pacing: Pacing::new(),
            due: Instant::now(),
            metrics,
        }
    }

    /// Runs one step if one is due, deleting rows stamped more than the window before
    /// `now_ms` (milliseconds since the Unix epoch). Returns quickly when none is.
    pub fn run_due(&mut self, connection: &Connection, now_ms: i64) {
        if Instant::now() < self.due {
            return;
        }
        let started = Instant::now();
        let cutoff_ms = now_ms.saturating_sub(self.keep_ms);
        match without_waiting_for_the_disk(connection, |connection| {
            delete_step(connection, cutoff_ms, self.pacing.rows)
        }) {
            Ok(step) => {
                let took = started.elapsed();
                self.metrics.views_expired.inc_by(step.deleted);
                self.metrics
                    .retention_step_duration
                    .observe(took.as_secs_f64());
                self.due = Instant::now() + self.pacing.after(step, took);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot delete old raw view rows; trying again later");
                self.due = Instant::now() + RETRY_AFTER;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `views` table (as the embedded store's) holding one row per timestamp, ids 1, 2, …
    fn table(timestamps: &[i64]) -> Connection {
        let connection = Connection::open_in_memory().expect("memory database");
        connection
            .execute_batch(
                "CREATE TABLE views (id INTEGER PRIMARY KEY, video_id TEXT NOT NULL,
                     client_ip TEXT NOT NULL, timestamp_ms INTEGER NOT NULL);",
            )
            .expect("schema");
        for timestamp in timestamps {
            connection
                .execute(
                    "INSERT INTO views (video_id, client_ip, timestamp_ms) VALUES ('v', 'c', ?1)",
                    [timestamp],
                )
                .expect("insert");
        }
        connection
    }

    fn remaining(connection: &Connection) -> Vec<(i64, i64)> {
        connection
            .prepare("SELECT id, timestamp_ms FROM views ORDER BY id")
            .expect("prepare")
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn a_step_deletes_only_old_rows_of_its_range_and_goes_on_while_more_are_old() {
        // Ids 1..=10 stamped 0..=9; rows stamped before 7 are old.
        let connection = table(&(0..10).collect::<Vec<_>>());
        let step = delete_step(&connection, 7, 4).expect("step");
        assert_eq!(
            step,
            Step {
                deleted: 4,
                caught_up: false
            }
        );
        assert_eq!(remaining(&connection).first(), Some(&(5, 4)));
        // The next range (ids 5..=8) holds old rows 5..=7 and the young row 8.
        let step = delete_step(&connection, 7, 4).expect("step");
        assert_eq!(
            step,
            Step {
                deleted: 3,
                caught_up: true
            }
        );
        assert_eq!(remaining(&connection), vec![(8, 7), (9, 8), (10, 9)]);
        // Nothing more is old: a step deletes nothing and says so.
        let step = delete_step(&connection, 7, 4).expect("step");
        assert_eq!(
            step,
            Step {
                deleted: 0,
                caught_up: true
            }
        );
    }

    #[test]
    fn a_step_that_empties_the_table_or_finds_it_empty_is_caught_up() {
        let connection = table(&[1, 2, 3]);
        let step = delete_step(&connection, 100, 10).expect("step");
        assert_eq!(
            step,
            Step {
                deleted: 3,
                caught_up: true
            }
        );
        assert!(remaining(&connection).is_empty());
        let step = delete_step(&connection, 100, 10).expect("step on an empty table");
        assert_eq!(step.deleted, 0);
        assert!(step.caught_up);
    }

    #[test]
    fn a_young_row_out_of_order_holds_back_the_rows_after_it_until_it_ages() {
        // Row 2 was stamped late (a clock stepped back before row 3).
        let connection = table(&[1, 50, 2, 3]);
        let step = delete_step(&connection, 10, 2).expect("step");
        assert_eq!(
            step,
            Step {
                deleted: 1,
                caught_up: true
            }
        );
        assert_eq!(remaining(&connection), vec![(2, 50), (3, 2), (4, 3)]);
        // Once the window has passed it too, the rest goes.
        let step = delete_step(&connection, 60, 10).expect("step");
        assert_eq!(step.deleted, 3);
    }

    #[test]
    fn a_step_looks_at_no_more_than_its_range_even_across_gaps() {
        // Ids 1..=6 with 3 and 4 deleted: the range of 4 ids from the oldest (1..=4)
        // holds rows 1 and 2 only, and rows 5 and 6 wait for the next step.
        let connection = table(&[1, 2, 3, 4, 5, 6]);
        connection
            .execute("DELETE FROM views WHERE id IN (3, 4)", [])
            .expect("make a gap");
        let step = delete_step(&connection, 100, 4).expect("step");
        assert_eq!(step.deleted, 2);
        assert!(!step.caught_up, "rows 5 and 6 are past the range");
        assert_eq!(remaining(&connection), vec![(5, 5), (6, 6)]);
    }

    #[test]
    fn a_step_leaves_the_connection_syncing_every_commit_and_reports_what_it_deleted() {
        let connection = table(&[1, 2, 3, 4_000_000]);
        connection
            .pragma_update(None, "synchronous", "FULL")
            .expect("as the store opens it");
        let metrics = Arc::new(Metrics::new(&[]).expect("metrics"));
        let mut retention = Retention::new(Duration::from_secs(1), Arc::clone(&metrics));
        retention.run_due(&connection, 3_000_000);
        assert_eq!(metrics.views_expired.get(), 3);
        assert_eq!(metrics.retention_step_duration.get_sample_count(), 1);
        let synchronous: i64 = connection
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .expect("read synchronous");
        assert_eq!(synchronous, 2, "FULL again after the step");
        // Caught up: the next step is not due before CHECK_EVERY.
        retention.run_due(&connection, 9_000_000);
        assert_eq!(metrics.retention_step_duration.get_sample_count(), 1);
        assert_eq!(remaining(&connection), vec![(4, 4_000_000)]);
    }

    #[test]
    fn pacing_keeps_a_step_near_its_budget_and_deleting_under_a_quarter_of_the_time() {
        let behind = Step {
            deleted: 1,
            caught_up: false,
        };
        let mut pacing = Pacing::new();
        let fast = STEP_BUDGET / 4;
        assert_eq!(pacing.after(behind, fast), fast * PAUSE_PER_STEP_TIME);
        assert_eq!(pacing.rows, FIRST_ROWS * 2);
        for _ in 0..20 {
            pacing.after(behind, fast);
        }
        assert_eq!(pacing.rows, MAX_ROWS, "growth stops at the bound");
        let slow = STEP_BUDGET * 3;
        assert_eq!(pacing.after(behind, slow), slow * PAUSE_PER_STEP_TIME);
        assert_eq!(pacing.rows, MAX_ROWS / 2);
        for _ in 0..20 {
            pacing.after(behind, slow);
        }
        assert_eq!(pacing.rows, MIN_ROWS, "shrinking stops at the bound");
        // Within budget: the size stays.
        pacing.after(behind, STEP_BUDGET * 3 / 4);
        assert_eq!(pacing.rows, MIN_ROWS);
    }

    #[test]
    fn once_caught_up_the_next_look_is_a_while_later_and_the_size_stays() {
        let mut pacing = Pacing::new();
        let done = Step {
            deleted: 5,
            caught_up: true,
        };
        assert_eq!(pacing.after(done, Duration::from_micros(10)), CHECK_EVERY);
        assert_eq!(
            pacing.rows, FIRST_ROWS,
            "a partial range says nothing of a larger one"
        );
    }
}
