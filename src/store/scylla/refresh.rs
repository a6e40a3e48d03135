//! What the catalog watcher reads from ScyllaDB: the catalog, the view counts that every
//! server adds to, and the daily salts.
//!
//! Every `--catalog-refresh-ms` the watcher reads the one row of `catalog_version`, which
//! the server advances whenever it changes `videos`; the catalog itself is read (paged)
//! only when the version moved, or every [`FULL_CATALOG_READ_EVERY`] for edits by hand.
//!
//! A video's counts are read when a client asked for them and the last read is older than
//! `--views-cache-ms`, so no request waits for them. A read sums the writers' rows of
//! `view_counts` per day (see [`crate::store::ledger`]) and merges the day's sketches for
//! its unique viewers. Finished days are cached: the first read of a video takes its whole
//! partition (a few rows per day), later ones only yesterday and today, with the whole
//! re-read every [`FULL_READ_EVERY`] to pick up a late replay; a day's sketches are read
//! again only when its count moved. All statements are prepared once per session.
//!
//! The daily salts (`--client-ip hash`) are agreed here too, with a lightweight
//! transaction: the first server to propose a day's salt wins, and every other one reads
//! the winner back from the transaction's answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlDate, CqlTimeuuid, CqlValue, Row};

use super::catalog_store::ScyllaCatalogStore;
use super::schema::{
    agree_salt_cql, cql_date, day_of, delete_salts_cql, select_catalog_version_cql,
    select_counts_cql, select_sketches_cql,
};
use super::session::{execution, remote};
use crate::hll::Sketch;
use crate::store::{
    epoch_millis, utc_day, CatalogSource, DayCount, StoreError, StoredVideo, VideoCounts, DAYS_KEPT,
};
use crate::viewer::Salt;

/// How long a salt agreement waits for a session: it is retried every few seconds, and
/// must not hold the watcher (or the start) for a whole connect timeout.
const SALT_GRACE: Duration = Duration::from_secs(1);
/// How often the whole catalog is read even if its version did not change (an edit of
/// `videos` by hand, which does not advance `catalog_version`).
pub const FULL_CATALOG_READ_EVERY: Duration = Duration::from_secs(600);
/// How often a video's whole count partition is re-read (between, only recent days).
pub const FULL_READ_EVERY: Duration = Duration::from_secs(3600);
/// Sketch reads in flight at once for one video.
const SKETCH_READS: usize = 8;
/// Videos whose counts are read at once.
pub const COUNT_READS: usize = 16;

/// The count reads, prepared on the session.
pub(super) struct CountReads {
    counts: PreparedStatement,
    sketches: PreparedStatement,
}

/// What has been read of one video's counts.
#[derive(Debug, Default)]
pub(super) struct CachedCounts {
    /// Views per day (every writer's rows summed), every day with any.
    views: BTreeMap<i64, u64>,
    /// Unique viewers per day, for the days whose sketches were read.
    uniques: BTreeMap<i64, u64>,
    full_read_at: Option<Instant>,
}

impl CatalogSource for ScyllaCatalogStore {
    fn catalog_changed(&mut self) -> Result<bool, StoreError> {
        let session = self.session()?;
        let cluster = &self.cluster;
        let current = cluster.block_on(async {
            let select =
                cluster.read_statement(select_catalog_version_cql(&cluster.config().keyspace));
            let result = session
                .query_unpaged(select, ())
                .await
                .map_err(execution("read the catalog version"))?;
            let rows = result
                .into_rows_result()
                .map_err(remote("read the catalog version", false))?;
            let version = rows
                .maybe_first_row::<(Option<CqlTimeuuid>,)>()
                .map_err(remote("read the catalog version", false))?
                .and_then(|(version,)| version);
            Ok::<_, StoreError>(version.map(uuid::Uuid::from))
        })?;
        self.catalog_current = current;
        Ok(match self.catalog_seen {
            None => true,
            Some((seen, at)) => seen != current || at.elapsed() >= FULL_CATALOG_READ_EVERY,
        })
    }

    fn load_videos(&mut self) -> Result<Vec<StoredVideo>, StoreError> {
        let documents = ScyllaCatalogStore::load_videos(self)?;
        self.catalog_seen = Some((self.catalog_current, Instant::now()));
        Ok(documents
            .into_iter()
            .map(|(video_id, document)| StoredVideo {
                video_id,
                document,
                // Counts are read on demand.
                views: None,
                days: Vec::new(),
            })
            .collect())
    }

    fn view_counts(&mut self, video_id: &str) -> Result<VideoCounts, StoreError> {
        self.view_counts_of(&[video_id]).pop().unwrap_or_else(|| {
            Err(StoreError::Unreachable {
                context: "read view counts",
                source: None,
            })
        })
    }

    fn view_counts_of(&mut self, video_ids: &[&str]) -> Vec<Result<VideoCounts, StoreError>> {
        match self.read_counts_of(video_ids) {
            Ok(results) => results,
            Err(error) => {
                // No session or no prepared reads: every video gets the same answer.
                let message = error.to_string();
                let mut results = vec![Err(error)];
                results.extend((1..video_ids.len()).map(|_| {
                    Err(StoreError::Remote {
                        context: "read view counts",
                        source: message.clone().into(),
                        retriable: true,
                    })
                }));
                results
            }
        }
    }

    fn agree_salt(&mut self, day: i64, proposed: Salt) -> Result<Salt, StoreError> {
        let session = self.cluster.session(SALT_GRACE)?;
        let cluster = &self.cluster;
        cluster.block_on(async {
            let keyspace = &cluster.config().keyspace;
            let agree = cluster
                .prepare_write(&session, agree_salt_cql(keyspace))
                .await?;
            let result = session
                .execute_unpaged(&agree, (cql_date(day), proposed.as_slice()))
                .await
                .map_err(execution("agree a salt"))?;
            let rows = result
                .into_rows_result()
                .map_err(remote("agree a salt", false))?;
            // Applied: the answer is `[applied]` alone. Not applied: `[applied]` and the
            // row that was there first, whose salt wins.
            let salt_column = rows.column_specs().get_by_name("salt").map(|(at, _)| at);
            let row: Row = rows.first_row().map_err(remote("agree a salt", false))?;
            let applied = matches!(row.columns.first(), Some(Some(CqlValue::Boolean(true))));
            if applied {
                return Ok(proposed);
            }
            let stored = salt_column
                .and_then(|at| row.columns.get(at))
                .and_then(|value| value.as_ref())
                .and_then(CqlValue::as_blob)
                .and_then(|blob| Salt::try_from(blob.as_slice()).ok());
            stored.ok_or_else(|| StoreError::Remote {
                context: "agree a salt",
                source: "the cluster kept a salt that is not 16 bytes".into(),
                retriable: false,
            })
        })
    }

    fn forget_salts_before(&mut self, day: i64) -> Result<(), StoreError> {
        let session = self.cluster.session(SALT_GRACE)?;
        let cluster = &self.cluster;
        cluster.block_on(async {
            let delete = cluster
                .prepare_write(&session, delete_salts_cql(&cluster.config().keyspace))
                .await?;
            // The rows expire by themselves (a TTL); this deletes them on time.
            let days = vec![cql_date(day - 1), cql_date(day - 2)];
            session
                .execute_unpaged(&delete, (days,))
                .await
                .map(|_| ())
                .map_err(execution("delete old salts"))
        })
    }
}

impl ScyllaCatalogStore {
    /// Reads the counts of `video_ids`, [`COUNT_READS`] videos at a time; an error here
    /// (no session, reads not prepared) concerns them all.
    fn read_counts_of(
        &mut self,
        video_ids: &[&str],
    ) -> Result<Vec<Result<VideoCounts, StoreError>>, StoreError> {
        let session = self.session()?;
        let cluster = self.cluster.clone();
        if self.count_reads.is_none() {
            let keyspace = &cluster.config().keyspace;
            let reads = cluster.block_on(async {
                Ok::<_, StoreError>(CountReads {
                    counts: cluster
                        .prepare_read(&session, select_counts_cql(keyspace))
                        .await?,
                    sketches: cluster
                        .prepare_read(&session, select_sketches_cql(keyspace))
                        .await?,
                })
            })?;
            self.count_reads = Some(reads);
        }
        let Some(reads) = self.count_reads.as_ref() else {
            return Err(StoreError::Unreachable {
                context: "prepare count reads",
                source: None,
            });
        };
        // Each video's cache goes with its read, and comes back after.
        let mut taken: Vec<(&str, CachedCounts)> = video_ids
            .iter()
            .map(|id| (*id, self.counts.remove(*id).unwrap_or_default()))
            .collect();
        let results: Vec<Result<(), StoreError>> = cluster.block_on(
            stream::iter(taken.iter_mut())
                .map(|(video_id, cached)| refresh_counts(&session, reads, video_id, cached))
                .buffered(COUNT_READS)
                .collect(),
        );
        Ok(taken
            .into_iter()
            .zip(results)
            .map(|((video_id, cached), result)| {
                let answer = result.map(|()| cached.answer());
                self.counts.insert(video_id.to_owned(), cached);
                answer
            })
            .collect())
    }
}

impl CachedCounts {
    /// The total and the last [`DAYS_KEPT`] days, as the watcher hands them on.
    fn answer(&self) -> VideoCounts {
        let today = utc_day(epoch_millis());
        VideoCounts {
            total: self.views.values().sum(),
            days: self
                .views
                .range(today - DAYS_KEPT + 1..)
                .map(|(day, views)| DayCount {
                    day: *day,
                    views: *views,
                    unique_viewers: self.uniques.get(day).copied().unwrap_or(0),
                })
                .collect(),
        }
    }
}

/// Re-reads a video's counts into `cached`: the whole partition when due, else yesterday
/// and today; then the sketches of the days whose count moved.
async fn refresh_counts(
    session: &Session,
    reads: &CountReads,
    video_id: &str,
    cached: &mut CachedCounts,
) -> Result<(), StoreError> {
    let today = utc_day(epoch_millis());
    let full = cached
        .full_read_at
        .is_none_or(|at| at.elapsed() >= FULL_READ_EVERY);
    // CqlDate(0) is the first date CQL has.
    let from = if full {
        CqlDate(0)
    } else {
        cql_date(today - 1)
    };
    let pager = session
        .execute_iter(reads.counts.clone(), (video_id, from))
        .await
        .map_err(remote("read view counts", true))?;
    let mut rows = pager
        .rows_stream::<(CqlDate, Option<i64>)>()
        .map_err(remote("read view counts", false))?;
    let mut fresh: BTreeMap<i64, u64> = BTreeMap::new();
    while let Some((date, views)) = rows
        .try_next()
        .await
        .map_err(remote("read view counts", true))?
    {
        let views = views
            .and_then(|views| u64::try_from(views).ok())
            .unwrap_or(0);
        *fresh.entry(day_of(date)).or_default() += views;
    }
    let first = if full { i64::MIN } else { today - 1 };
    let moved: Vec<i64> = fresh
        .iter()
        .filter(|(day, views)| **day > today - DAYS_KEPT && cached.views.get(day) != Some(views))
        .map(|(day, _)| *day)
        .collect();
    let uniques: Vec<(i64, u64)> = stream::iter(moved)
        .map(|day| async move {
            Ok::<_, StoreError>((day, read_uniques(session, reads, video_id, day).await?))
        })
        .buffer_unordered(SKETCH_READS)
        .try_collect()
        .await?;
    cached.views.retain(|day, _| *day < first);
    cached.views.extend(fresh);
    cached.uniques.extend(uniques);
    cached.uniques.retain(|day, _| *day > today - DAYS_KEPT);
    if full {
        cached.full_read_at = Some(Instant::now());
    }
    Ok(())
}

/// A day's unique viewers: its writers' sketches merged (0 if none was written yet; a
/// sketch that cannot be read is skipped, with a warning).
async fn read_uniques(
    session: &Session,
    reads: &CountReads,
    video_id: &str,
    day: i64,
) -> Result<u64, StoreError> {
    let result = session
        .execute_unpaged(&reads.sketches, (video_id, cql_date(day)))
        .await
        .map_err(execution("read sketches"))?;
    let rows = result
        .into_rows_result()
        .map_err(remote("read sketches", false))?;
    let mut merged = Sketch::new();
    for row in rows
        .rows::<(Option<Vec<u8>>,)>()
        .map_err(remote("read sketches", false))?
    {
        let (bytes,) = row.map_err(remote("read sketches", false))?;
        match Sketch::from_bytes(bytes.as_deref().unwrap_or_default()) {
            Ok(sketch) => merged.merge(&sketch),
            Err(error) => {
                tracing::warn!(%video_id, day, %error, "skipping a sketch that cannot be read")
            }
        }
    }
    Ok(merged.estimate())
}
