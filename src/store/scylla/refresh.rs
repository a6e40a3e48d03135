//! What the catalog watcher reads from ScyllaDB: the catalog, and the view counts that
//! every server of the cluster adds to.
//!
//! The cluster cannot tell cheaply whether the `videos` table changed, so the catalog is
//! re-read whole every `--catalog-refresh-ms` (the watcher's pace). A count is the sum of a
//! video's rollups, re-read when a client asked for it and the last read is older than
//! `--views-cache-ms`: a count is never much staler than that, and no request waits for it.

use scylla::client::session::Session;

use super::catalog_store::ScyllaCatalogStore;
use super::schema::view_count_cql;
use super::session::{execution, remote};
use crate::store::{CatalogSource, StoreError, StoredVideo};

impl CatalogSource for ScyllaCatalogStore {
    fn catalog_changed(&mut self) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn load_videos(&mut self) -> Result<Vec<StoredVideo>, StoreError> {
        let documents = ScyllaCatalogStore::load_videos(self)?;
        Ok(documents
            .into_iter()
            .map(|(video_id, document)| StoredVideo {
                video_id,
                document,
                // Counts come from the rollups, read on demand.
                views: None,
                days: Vec::new(),
            })
            .collect())
    }

    fn view_count(&mut self, video_id: &str) -> Result<u64, StoreError> {
        let session = self.session()?;
        let cluster = &self.cluster;
        cluster.block_on(read_view_count(cluster, &session, video_id))
    }
}

async fn read_view_count(
    cluster: &super::Cluster,
    session: &Session,
    video_id: &str,
) -> Result<u64, StoreError> {
    let select = cluster.read_statement(view_count_cql(&cluster.config().keyspace));
    let result = session
        .query_unpaged(select, (video_id,))
        .await
        .map_err(execution("read view count"))?;
    let rows = result
        .into_rows_result()
        .map_err(remote("read view count", false))?;
    let (sum,) = rows
        .maybe_first_row::<(Option<i64>,)>()
        .map_err(remote("read view count", false))?
        .unwrap_or((None,));
    Ok(sum.and_then(|sum| u64::try_from(sum).ok()).unwrap_or(0))
}
