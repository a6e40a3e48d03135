//! The ScyllaDB view store: writes one [`Flush`] at a time for the
//! [`ResilientStore`](crate::store::ResilientStore) around it.
//!
//! Statements are prepared once (on the first write after the session connects), marked
//! idempotent, with the configured consistency and timeout; token-aware and shard-aware
//! routing stay on (the driver's defaults). A flush is written as bounded concurrent
//! executes (at most `max_in_flight` at a time), view rows first, then one count rollup per
//! video keyed by the flush id, so a count never runs ahead of its rows and a retried flush
//! overwrites rather than adds (counters could not be retried safely).
//!
//! The writer never waits for a connection: with no session after `CONNECT_GRACE`, a
//! write fails as `Unreachable` and the resilient store keeps the flush in its outbox.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{self, TryStreamExt};
use scylla::client::session::Session;
use scylla::errors::ExecutionError;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlDate, CqlTimestamp, CqlTimeuuid};

use super::schema::{insert_rollup_cql, insert_view_cql, VIEW_BUCKETS};
use super::session::{execution, Cluster};
use crate::store::outbox::{Flush, PendingView};
use crate::store::resilient::RemoteViewStore;
use crate::store::StoreError;

/// How long a write waits for a connection attempt already under way: enough for a healthy
/// cluster to answer, short enough that an unreachable one never stalls the batch writer.
const CONNECT_GRACE: Duration = Duration::from_millis(200);

/// The writes, prepared on the session.
struct Prepared {
    insert_view: PreparedStatement,
    insert_rollup: PreparedStatement,
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
        let config = cluster.config();
        Ok(Prepared {
            insert_view: cluster
                .prepare_write(session, insert_view_cql(&config.keyspace, config.view_ttl))
                .await?,
            insert_rollup: cluster
                .prepare_write(session, insert_rollup_cql(&config.keyspace))
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
        let mut per_video: HashMap<&str, i64> = HashMap::new();
        for view in &flush.views {
            *per_video.entry(view.video_id.as_str()).or_default() += 1;
        }
        let flush_id = CqlTimeuuid::from(flush.id);
        stream::iter(per_video.into_iter().map(Ok))
            .try_for_each_concurrent(max_in_flight, |(video_id, views)| async move {
                session
                    .execute_unpaged(&prepared.insert_rollup, (video_id, flush_id, views))
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

/// The bind values of one view row.
fn view_row(
    view: &PendingView,
) -> (
    &str,
    CqlDate,
    i32,
    CqlTimeuuid,
    std::net::IpAddr,
    CqlTimestamp,
) {
    const DAY_MS: i64 = 86_400_000;
    let days = view.timestamp_ms.div_euclid(DAY_MS);
    // CQL dates count days with 2^31 as the Unix epoch.
    let day = CqlDate((1u32 << 31).wrapping_add_signed(days as i32));
    let bytes = view.id.as_bytes();
    // The clock sequence advances with every id: an even spread over the buckets.
    let sequence = u16::from_be_bytes([bytes[8] & 0x3f, bytes[9]]);
    let bucket = i32::from(sequence) % VIEW_BUCKETS;
    (
        view.video_id.as_str(),
        day,
        bucket,
        CqlTimeuuid::from(view.id),
        view.client_ip,
        CqlTimestamp(view.timestamp_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_rows_land_on_the_right_day_and_spread_over_buckets() {
        let ids = (0..64).map(|i| {
            let context = uuid::timestamp::context::ContextV1::new(i);
            uuid::Uuid::new_v1(
                uuid::Timestamp::from_unix(&context, 1_795_000_000, 0),
                &[1; 6],
            )
        });
        let mut buckets = std::collections::HashSet::new();
        for id in ids {
            let view = PendingView {
                id,
                video_id: "12345".into(),
                client_ip: "192.0.2.1".parse().expect("ip"),
                timestamp_ms: 86_400_000 * 3 + 5,
            };
            let (_, day, bucket, _, _, _) = view_row(&view);
            assert_eq!(day.0, (1u32 << 31) + 3);
            assert!((0..VIEW_BUCKETS).contains(&bucket));
            buckets.insert(bucket);
        }
        assert_eq!(buckets.len(), VIEW_BUCKETS as usize);
    }
}
