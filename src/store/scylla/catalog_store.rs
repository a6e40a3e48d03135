//! The catalog in ScyllaDB: every video document, read whole and written by id.
//!
//! Used at start (load, seed a fresh cluster, add the `--catalog` videos), by
//! `video-server import`, and by the catalog watcher through its
//! [`CatalogSource`](crate::store::CatalogSource) side (see [`super::refresh`]). It blocks
//! the calling thread, never an HTTP worker, for as long as the connect timeout allows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use scylla::client::session::Session;

use super::refresh::{CachedCounts, CountReads};
use super::schema::{bump_catalog_version_cql, select_videos_cql, upsert_video_cql};
use super::session::{execution, remote, Cluster};
use crate::store::StoreError;
use crate::video::VideoPayload;

/// Reads and writes the catalog, and reads view counts.
pub struct ScyllaCatalogStore {
    pub(super) cluster: Cluster,
    /// The count reads, once prepared.
    pub(super) count_reads: Option<CountReads>,
    /// What has been read of each video's counts (finished days are not read again).
    pub(super) counts: HashMap<String, CachedCounts>,
    /// The catalog version the last catalog read saw, and when it was read.
    pub(super) catalog_seen: Option<(Option<uuid::Uuid>, std::time::Instant)>,
    /// The version `catalog_changed` read last (taken as seen once the read succeeds).
    pub(super) catalog_current: Option<uuid::Uuid>,
}

impl ScyllaCatalogStore {
    pub fn new(cluster: Cluster) -> Self {
        ScyllaCatalogStore {
            cluster,
            count_reads: None,
            counts: HashMap::new(),
            catalog_seen: None,
            catalog_current: None,
        }
    }

    /// The session, waiting for a connection as long as the connect timeout allows (twice
    /// it: the driver's own timeout, then our guard against a node that never answers).
    pub(super) fn session(&self) -> Result<Arc<Session>, StoreError> {
        let connect_timeout = self.cluster.config().connect_timeout;
        self.cluster
            .session(connect_timeout * 2 + Duration::from_secs(1))
    }

    /// Every video document, as `(video_id, document)`.
    pub fn load_videos(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let session = self.session()?;
        let cluster = &self.cluster;
        cluster.block_on(async {
            let select = cluster.read_statement(select_videos_cql(&cluster.config().keyspace));
            let pager = session
                .query_iter(select, ())
                .await
                .map_err(remote("read catalog", true))?;
            let mut rows = pager
                .rows_stream::<(String, String)>()
                .map_err(remote("read catalog", false))?;
            let mut videos = Vec::new();
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(remote("read catalog", true))?
            {
                videos.push(row);
            }
            Ok(videos)
        })
    }

    /// Inserts or replaces videos by id.
    pub fn upsert_videos(&mut self, videos: &[VideoPayload<'_>]) -> Result<usize, StoreError> {
        let session = self.session()?;
        let cluster = &self.cluster;
        cluster.block_on(async {
            let insert = cluster
                .prepare_write(&session, upsert_video_cql(&cluster.config().keyspace))
                .await?;
            let mut document = Vec::with_capacity(512);
            for video in videos {
                document.clear();
                video.write_json(&mut document, None);
                // write_json emits only UTF-8 (it copies validated strings).
                let text = String::from_utf8_lossy(&document);
                session
                    .execute_unpaged(&insert, (video.video_id.as_ref(), text.as_ref()))
                    .await
                    .map_err(execution("insert video"))?;
            }
            // After the documents: a watcher that sees the new version reads them all.
            let bump = cluster
                .prepare_write(
                    &session,
                    bump_catalog_version_cql(&cluster.config().keyspace),
                )
                .await?;
            session
                .execute_unpaged(&bump, ())
                .await
                .map_err(execution("mark the catalog changed"))?;
            Ok(videos.len())
        })
    }
}
