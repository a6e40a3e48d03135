//! The ScyllaDB view store: writes one [`Flush`] at a time for the
//! [`ResilientStore`](crate::store::ResilientStore) around it.
//!
//! Statements are prepared once (on the first write after the session connects), marked
//! idempotent, with the configured consistency and timeout; token-aware and shard-aware
//! routing stay on (the driver's defaults). A flush is written as bounded concurrent
//! executes (at most `max_in_flight` at a time): its view rows (keyed by their ids, so a
//! retry overwrites), then its count and sketch rows, each stamped with its total (see
//! [`crate::store::ledger`]), so a retried or late one never lowers a count. Counters could
//! not be retried safely; these can.
//!
//! The writer never waits for a connection: with no session after `CONNECT_GRACE`, a
//! write fails as `Unreachable` and the resilient store keeps the flush in its outbox.

use std::time::Duration;

use futures::stream::{self, TryStreamExt};
use scylla::client::session::Session;
use scylla::errors::ExecutionError;
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
}

/// Writes flushes of views to the cluster.
pub struct ScyllaViewStore {
    cluster: Cluster,
    prepared: Option<Prepared>,
}

impl ScyllaViewStore {
    pub fn new(cluster: Cluster) -> Self {
        ScyllaViewStore {
            cluster,
            prepared: None,
        }
    }

    /// Waits up to `timeout` for a session (for tools and tests; the writer never waits).
    pub fn wait_until_connected(&self, timeout: Duration) -> Result<(), StoreError> {
        self.cluster.wait_until_connected(timeout)
    }

    async fn prepare(cluster: &Cluster, session: &Session) -> Result<Prepared, StoreError> {
        let keyspace = &cluster.config().keyspace;
        Ok(Prepared {
            insert_view: cluster
                .prepare_write(session, insert_view_cql(keyspace))
                .await?,
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
        stream::iter(flush.views.iter().map(Ok))
            .try_for_each_concurrent(max_in_flight, |view: &PendingView| async move {
                session
                    .execute_unpaged(&prepared.insert_view, view_row(view))
                    .await
                    .map(|_| ())
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
        let cluster = &self.cluster;
        let prepared = match &mut self.prepared {
            Some(prepared) => prepared,
            empty => empty.insert(cluster.block_on(Self::prepare(cluster, &session))?),
        };
        cluster
            .block_on(Self::write(&session, prepared, flush, max_in_flight))
            .map_err(execution("write views"))
    }
}

/// The bind values of one view row: its partition (video, minute, writer, shard) comes
/// from the view's own fields and id, so every retry and replay writes the same row.
pub fn view_row(
    view: &PendingView,
) -> (
    &str,
    CqlTimestamp,
    i64,
    i32,
    CqlTimeuuid,
    String,
    CqlTimestamp,
) {
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
