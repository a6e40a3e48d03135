//! How a store shared by several servers counts every view exactly once: each writer keeps
//! running totals of its own and writes them whole, never increments.
//!
//! ```text
//!  batch ─▶ CountLedger::account ─▶ CountRow per (video, day): (writer, views so far, sketch so far)
//!                                         │ written with the flush (or kept in the outbox)
//!                                         ▼
//!            view_counts ((video), day, writer) views   USING TIMESTAMP views
//!            view_sketches ((video, day), writer) sketch USING TIMESTAMP views
//! ```
//!
//! Each process run is a writer with an id of its own. For each video and UTC day it has
//! seen, the ledger holds how many views it accepted and a HyperLogLog sketch of their
//! clients. A batch is accounted once, when it is formed; the rows it produces carry the
//! absolute totals after it. Rows are written with the total as the cell timestamp, so the
//! cluster keeps the largest total it was ever sent, whatever the order: a retried, replayed
//! or reordered write settles on the right value and a count never goes backwards. A day's
//! count is the sum of its writers' rows; its unique viewers, their sketches merged.
//!
//! Only the days still being written are kept (the newest and the one before it). A view
//! of an older day (a clock that jumped) starts a tally under a fresh writer id, so it adds
//! a row instead of losing against the row the forgotten tally wrote.

use std::collections::HashMap;

use uuid::Uuid;

use super::outbox::PendingView;
use super::{group_by_video_day, utc_day, ViewRecord};
use crate::hll::Sketch;

/// One writer's totals for one video and day, as a store writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRow {
    pub video_id: String,
    /// Days since the Unix epoch.
    pub day: i64,
    pub writer_id: Uuid,
    /// Views this writer accepted for the video that day, in all so far: also the cell
    /// timestamp, so the largest total wins.
    pub views: u64,
    /// Their clients, as a serialised [`Sketch`].
    pub sketch: Vec<u8>,
}

/// A writer's running tally of one (video, day).
#[derive(Debug)]
struct Tally {
    writer_id: Uuid,
    views: u64,
    sketch: Sketch,
}

/// The running totals of this writer (process run).
#[derive(Debug)]
pub struct CountLedger {
    writer_id: Uuid,
    tallies: HashMap<(Box<str>, i64), Tally>,
    /// The newest day accounted so far.
    newest_day: Option<i64>,
}

impl Default for CountLedger {
    fn default() -> Self {
        CountLedger::new(Uuid::new_v4())
    }
}

impl CountLedger {
    pub fn new(writer_id: Uuid) -> Self {
        CountLedger {
            writer_id,
            tallies: HashMap::new(),
            newest_day: None,
        }
    }

    pub fn writer_id(&self) -> Uuid {
        self.writer_id
    }

    /// Adds a batch to the totals, and returns the rows that now hold them, one per
    /// (video, day) the batch touched. Call it once per batch.
    pub fn account(&mut self, views: &[ViewRecord<'_>]) -> Vec<CountRow> {
        let groups = group_by_video_day(views);
        let mut rows = Vec::with_capacity(groups.len());
        for ((video_id, day), viewers) in &groups {
            let forgotten = self.newest_day.is_some_and(|newest| *day < newest - 1);
            let writer_id = self.writer_id;
            let tally = self
                .tallies
                .entry((Box::from(*video_id), *day))
                .or_insert_with(|| Tally {
                    writer_id: if forgotten { Uuid::new_v4() } else { writer_id },
                    views: 0,
                    sketch: Sketch::new(),
                });
            tally.views += viewers.len() as u64;
            for viewer in viewers {
                tally.sketch.insert(viewer.key().bytes());
            }
            rows.push(CountRow {
                video_id: (*video_id).to_owned(),
                day: *day,
                writer_id: tally.writer_id,
                views: tally.views,
                sketch: tally.sketch.to_bytes(),
            });
        }
        if let Some(batch_newest) = groups.iter().map(|((_, day), _)| *day).max() {
            let newest = self
                .newest_day
                .map_or(batch_newest, |n| n.max(batch_newest));
            self.newest_day = Some(newest);
            self.tallies.retain(|(_, day), _| *day >= newest - 1);
        }
        rows
    }

    /// Takes views that were accounted but then lost (dropped: the outbox was full) back
    /// out of the totals, so that the next rows do not count them. Their clients stay in
    /// the sketches (a sketch cannot forget); a total never sent cannot have won anywhere.
    pub fn forget(&mut self, views: &[PendingView]) {
        for view in views {
            let key = (
                Box::<str>::from(view.video_id.as_str()),
                utc_day(view.timestamp_ms),
            );
            if let Some(tally) = self.tallies.get_mut(&key) {
                tally.views = tally.views.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::Viewer;

    const DAY_MS: i64 = 86_400_000;

    fn view(video_id: &str, client: u8, timestamp_ms: i64) -> ViewRecord<'_> {
        ViewRecord {
            video_id,
            viewer: Viewer::Address([192, 0, 2, client].into()),
            timestamp_ms,
        }
    }

    #[test]
    fn rows_carry_running_totals_per_video_and_day() {
        let mut ledger = CountLedger::new(Uuid::from_u128(7));
        let day = 20_000;
        let noon = day * DAY_MS + DAY_MS / 2;
        let rows = ledger.account(&[view("a", 1, noon), view("a", 2, noon), view("b", 1, noon)]);
        let totals: Vec<(&str, u64)> = rows
            .iter()
            .map(|r| (r.video_id.as_str(), r.views))
            .collect();
        assert_eq!(totals, vec![("a", 2), ("b", 1)]);
        assert!(rows
            .iter()
            .all(|r| r.writer_id == Uuid::from_u128(7) && r.day == day));
        // Across midnight: the old day's total goes on, the new day starts.
        let rows = ledger.account(&[view("a", 1, noon + 1), view("a", 3, noon + DAY_MS)]);
        let totals: Vec<(i64, u64)> = rows.iter().map(|r| (r.day, r.views)).collect();
        assert_eq!(totals, vec![(day, 3), (day + 1, 1)]);
        let sketch = Sketch::from_bytes(&rows[0].sketch).expect("sketch");
        assert_eq!(sketch.estimate(), 2, "clients 1 and 2 that day");
    }

    #[test]
    fn a_view_of_a_forgotten_day_counts_under_a_fresh_writer_id() {
        let mut ledger = CountLedger::new(Uuid::from_u128(7));
        let day = 20_000;
        ledger.account(&[view("a", 1, day * DAY_MS)]);
        ledger.account(&[view("a", 1, (day + 3) * DAY_MS)]);
        let rows = ledger.account(&[view("a", 2, day * DAY_MS + 5)]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].views, 1, "a fresh tally");
        assert_ne!(
            rows[0].writer_id,
            Uuid::from_u128(7),
            "and a row of its own"
        );
    }
}
