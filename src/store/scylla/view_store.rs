//! The ScyllaDB view store: writes flushes for the
//! [`ResilientStore`](crate::store::ResilientStore) around it, which holds several clones
//! (one per flush worker, one for the replay worker), all on one [`Cluster`].
//!
//! Statements are prepared once per session (by whichever clone writes first after the
//! session connects; the others use them), marked
//! idempotent, with the configured consistency and timeout; token-aware and shard-aware
//! routing stay on (the driver's defaults). A flush is written as bounded concurrent
//! executes (at most `max_in_flight` at a time): its view rows (keyed by their ids, so a
//! retry overwrites), then its count and sketch rows, each stamped with its total (see
//! [`crate::store::ledger`]), so a retried or late one never lowers a count. Counters could
//! not be retried safely; these can.
//!
//! The writer never waits for a connection: with no session after `CONNECT_GRACE`, a
//! write fails as `Unreachable` and the resilient store keeps the flush in its outbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, TryStreamExt};
use scylla::client::session::Session;
use scylla::errors::ExecutionError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid};

use super::schema::{cql_date, insert_count_cql, insert_sketch_cql, insert_view_cql, VIEW_SHARDS};
use super::session::{execution, Cluster};
use crate::store::ledger::CountRow;
use crate::store::outbox::{Flush, PendingView};
use crate::store::resilient::RemoteViewStore;
use crate::store::StoreError;

/// How long a write waits for a connection attempt already under way: enough for a healthy
/// cluster to answer, short enough that an unreachable one never stalls the batch writer.
const CONNECT_GRACE: Duration = Duration::from_millis(200);

/// The writes, prepared on the session.
struct Prepared {
    insert_view: PreparedStatement,
    insert_count: PreparedStatement,
    insert_sketch: PreparedStatement,
    /// An unlogged batch with the write settings and no statement yet: rows of one
    /// partition are appended to a copy and sent together.
    view_batch: Batch,
}

/// Rows of one `view_log` partition sent in one unlogged batch, at most (a batch of one
/// partition is applied as one mutation; 32 rows of about 100 bytes stay under the
/// engine's 5 KiB batch-size warning).
pub const ROWS_PER_BATCH: usize = 32;

/// The bind values of one view row.
pub type ViewRow<'a> = (
    &'a str,
    CqlTimestamp,
    i64,
    i32,
    CqlTimeuuid,
    String,
    CqlTimestamp,
);

/// Writes flushes of views to the cluster. A clone shares the cluster and the prepared
/// statements.
#[derive(Clone)]
pub struct ScyllaViewStore {
    cluster: Cluster,
    /// Prepared once for all the clones; locked only to read it or prepare it.
    prepared: Arc<parking_lot::Mutex<Option<Arc<Prepared>>>>,
}

impl ScyllaViewStore {
    pub fn new(cluster: Cluster) -> Self {
        ScyllaViewStore {
            cluster,
            prepared: Arc::default(),
        }
    }

    /// The prepared statements, preparing them if no clone has yet.
    fn prepared(&self, session: &Session) -> Result<Arc<Prepared>, StoreError> {
        let mut prepared = self.prepared.lock();
        if let Some(ready) = prepared.as_ref() {
            return Ok(Arc::clone(ready));
        }
        let ready = Arc::new(
            self.cluster
                .block_on(Self::prepare(&self.cluster, session))?,
        );
        *prepared = Some(Arc::clone(&ready));
        Ok(ready)
    }

    /// Waits up to `timeout` for a session (for tools and tests; the writer never waits).
    pub fn wait_until_connected(&self, timeout: Duration) -> Result<(), StoreError> {
        self.cluster.wait_until_connected(timeout)
    }

    async fn prepare(cluster: &Cluster, session: &Session) -> Result<Prepared, StoreError> {
        let config = cluster.config();
        let keyspace = &config.keyspace;
        let insert_view = cluster
            .prepare_write(session, insert_view_cql(keyspace))
            .await?;
        let mut view_batch = Batch::new(BatchType::Unlogged);
        view_batch.set_consistency(config.write_consistency);
        view_batch.set_is_idempotent(true);
        view_batch.set_request_timeout(Some(config.request_timeout));
        view_batch.set_retry_policy(insert_view.get_retry_policy().cloned());
        Ok(Prepared {
            view_batch,
            insert_view,
            insert_count: cluster
                .prepare_write(session, insert_count_cql(keyspace))
                .await?,
            insert_sketch: cluster
                .prepare_write(session, insert_sketch_cql(keyspace))
                .await?,
        })
    }

    async fn write(
        session: &Session,
        prepared: &Prepared,
        flush: &Flush,
        max_in_flight: usize,
    ) -> Result<(), ExecutionError> {
        stream::iter(partition_chunks(&flush.views).into_iter().map(Ok))
            .try_for_each_concurrent(max_in_flight, |rows: Vec<ViewRow<'_>>| async move {
                if let [row] = rows.as_slice() {
                    return session
                        .execute_unpaged(&prepared.insert_view, row)
                        .await
                        .map(|_| ());
                }
                let mut batch = prepared.view_batch.clone();
                for _ in 0..rows.len() {
                    batch.append_statement(prepared.insert_view.clone());
                }
                session.batch(&batch, rows).await.map(|_| ())
            })
            .await?;
        stream::iter(flush.counts.iter().map(Ok))
            .try_for_each_concurrent(max_in_flight, |count: &CountRow| async move {
                let (video_id, day, writer_id) = (
                    count.video_id.as_str(),
                    cql_date(count.day),
                    count.writer_id,
                );
                let total = i64::try_from(count.views).unwrap_or(i64::MAX);
                session
                    .execute_unpaged(
                        &prepared.insert_count,
                        (video_id, day, writer_id, total, total),
                    )
                    .await?;
                session
                    .execute_unpaged(
                        &prepared.insert_sketch,
                        (video_id, day, writer_id, count.sketch.as_slice(), total),
                    )
                    .await
                    .map(|_| ())
            })
            .await
    }
}

impl RemoteViewStore for ScyllaViewStore {
    fn write_flush(&mut self, flush: &Flush) -> Result<(), StoreError> {
        let session = self.cluster.session(CONNECT_GRACE)?;
        let max_in_flight = self.cluster.config().max_in_flight.max(1);
        let prepared = self.prepared(&session)?;
        self.cluster
            .block_on(Self::write(&session, &prepared, flush, max_in_flight))
            .map_err(execution("write views"))
    }
}

/// The view rows of a flush, grouped by partition, in chunks of at most
/// [`ROWS_PER_BATCH`]: a chunk of one row is sent alone, a longer one as an unlogged batch.
fn partition_chunks(views: &[PendingView]) -> Vec<Vec<ViewRow<'_>>> {
    let mut partitions: HashMap<(&str, i64, i64, i32), Vec<ViewRow<'_>>> = HashMap::new();
    for view in views {
        let row = view_row(view);
        partitions
            .entry((row.0, row.1 .0, row.2, row.3))
            .or_default()
            .push(row);
    }
    let mut chunks = Vec::with_capacity(partitions.len());
    for (_, mut rows) in partitions {
        while rows.len() > ROWS_PER_BATCH {
            let rest = rows.split_off(ROWS_PER_BATCH);
            chunks.push(rows);
            rows = rest;
        }
        chunks.push(rows);
    }
    chunks
}

/// The bind values of one view row: its partition (video, minute, writer, shard) comes
/// from the view's own fields and id, so every retry and replay writes the same row.
pub fn view_row(view: &PendingView) -> ViewRow<'_> {
    const MINUTE_MS: i64 = 60_000;
    let minute = view.timestamp_ms - view.timestamp_ms.rem_euclid(MINUTE_MS);
    let bytes = view.id.as_bytes();
    // The node field of the time-based id names the process that formed it.
    let mut node = [0u8; 8];
    node[2..].copy_from_slice(&bytes[10..16]);
    let writer = i64::from_be_bytes(node);
    // The clock sequence advances with every id: an even spread over the shards.
    let sequence = u16::from_be_bytes([bytes[8] & 0x3f, bytes[9]]);
    let shard = i32::from(sequence) % VIEW_SHARDS;
    (
        view.video_id.as_str(),
        CqlTimestamp(minute),
        writer,
        shard,
        CqlTimeuuid::from(view.id),
        view.viewer.to_text(),
        CqlTimestamp(view.timestamp_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_is_sent_as_one_chunk_per_partition_of_at_most_rows_per_batch() {
        let view = |shard: u16, video: &str| PendingView {
            id: uuid::Uuid::new_v1(
                uuid::Timestamp::from_unix(
                    uuid::timestamp::context::ContextV1::new(shard),
                    1_795_000_000,
                    0,
                ),
                &[0, 0, 0, 0, 1, 2],
            ),
            video_id: video.into(),
            viewer: crate::viewer::Viewer::Hashed([1; 16]),
            timestamp_ms: 1_795_000_000_000,
        };
        // 70 views of one partition, 1 of another shard, 1 of another video.
        let mut views: Vec<PendingView> = (0..70).map(|_| view(5, "a")).collect();
        views.push(view(6, "a"));
        views.push(view(5, "b"));
        let mut sizes: Vec<usize> = partition_chunks(&views).iter().map(Vec::len).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![1, 1, 6, ROWS_PER_BATCH, ROWS_PER_BATCH]);
        for chunk in partition_chunks(&views) {
            let first = (chunk[0].0, chunk[0].1 .0, chunk[0].2, chunk[0].3);
            assert!(chunk
                .iter()
                .all(|row| (row.0, row.1 .0, row.2, row.3) == first));
        }
    }

    #[test]
    fn view_rows_land_on_their_minute_and_writer_and_spread_over_shards() {
        let ids = (0..64).map(|i| {
            let context = uuid::timestamp::context::ContextV1::new(i);
            uuid::Uuid::new_v1(
                uuid::Timestamp::from_unix(&context, 1_795_000_000, 0),
                &[0, 0, 0, 0, 1, 2],
            )
        });
        let mut shards = std::collections::HashSet::new();
        for id in ids {
            let view = PendingView {
                id,
                video_id: "12345".into(),
                viewer: crate::viewer::Viewer::Hashed([1; 16]),
                timestamp_ms: 86_400_000 * 3 + 61_005,
            };
            let (_, minute, writer, shard, _, viewer, _) = view_row(&view);
            assert_eq!(minute.0, 86_400_000 * 3 + 60_000);
            assert_eq!(writer, 0x0102);
            assert_eq!(viewer, "01".repeat(16));
            assert!((0..VIEW_SHARDS).contains(&shard));
            shards.insert(shard);
        }
        assert_eq!(shards.len(), VIEW_SHARDS as usize);
    }
}
