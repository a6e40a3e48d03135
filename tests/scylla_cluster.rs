//! The ScyllaDB store against a real cluster: the CQL is valid, counts add up, replays do
//! not duplicate, the catalog round-trips.
//!
//! No ScyllaDB can be installed on the project's machines, so these tests are ignored by
//! default and say so in `cargo test`'s summary. Against a cluster (see
//! `scripts/scylla-up.sh`):
//!
//! ```sh
//! SCYLLA_URI=127.0.0.1:9042 cargo test --test scylla_cluster -- --ignored
//! ```
//!
//! Each test uses a keyspace of its own (`video_server_test_<random>`), left behind for
//! inspection; a throwaway node (`scripts/scylla-up.sh down`) takes them with it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::store::{drain_outbox, seed_views};
use video_server::metrics::Metrics;
use video_server::store::scylla::{
    Cluster, Replication, ScyllaCatalogStore, ScyllaConfig, ScyllaViewStore,
};
use video_server::store::{CatalogSource, Outbox, ResilientStore, RetryPolicy, ViewStore};
use video_server::video::{parse_catalog, SEED_VIDEO_JSON};

const NEEDS_CLUSTER: &str =
    "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored";

fn config(keyspace: &str) -> ScyllaConfig {
    let uri = std::env::var("SCYLLA_URI")
        .ok()
        .filter(|uri| !uri.trim().is_empty())
        .unwrap_or_else(|| panic!("SCYLLA_URI is not set; this suite {NEEDS_CLUSTER}"));
    ScyllaConfig {
        nodes: uri.split(',').map(str::to_owned).collect(),
        keyspace: keyspace.to_owned(),
        replication: Replication::Simple { factor: 1 },
        write_consistency: scylla::statement::Consistency::One,
        read_consistency: scylla::statement::Consistency::One,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        credentials: None,
        view_ttl: None,
        max_in_flight: 64,
        create_schema: true,
    }
}

fn keyspace() -> String {
    format!("video_server_test_{:08x}", fastrand::u32(..))
}

/// The client address of the views these tests write.
const CLIENT_IP: &str = "192.0.2.44";

/// A resilient store over the cluster, after waiting up to `connect_wait` for a session.
fn resilient(
    config: ScyllaConfig,
    dir: &std::path::Path,
    connect_wait: Duration,
) -> ResilientStore<ScyllaViewStore> {
    let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
    let remote = ScyllaViewStore::new(Cluster::new(config).expect("driver runtime"));
    // Unreachable configurations are expected to fail here; the store copes either way.
    let _ = remote.wait_until_connected(connect_wait);
    ResilientStore::new(
        remote,
        Outbox::open(dir).expect("outbox"),
        metrics,
        RetryPolicy::default(),
    )
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn views_are_written_and_counted() {
    let keyspace = keyspace();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = resilient(config(&keyspace), dir.path(), Duration::from_secs(20));
    store
        .write_views(&seed_views(120, CLIENT_IP))
        .expect("write");
    store
        .write_views(&seed_views(30, CLIENT_IP))
        .expect("write");
    assert_eq!(store.outbox_depth(), 0, "the cluster refused the writes");
    let mut catalog =
        ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    assert_eq!(catalog.view_count("12345").expect("count"), 150);
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn spilled_views_are_replayed_exactly_once() {
    let keyspace = keyspace();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut unreachable = config(&keyspace);
    unreachable.nodes = vec!["127.0.0.1:1".into()];
    unreachable.connect_timeout = Duration::from_millis(500);
    {
        let mut store = resilient(unreachable, dir.path(), Duration::ZERO);
        store
            .write_views(&seed_views(40, CLIENT_IP))
            .expect("spilled");
        assert_eq!(store.outbox_depth(), 40);
    }
    let mut store = resilient(config(&keyspace), dir.path(), Duration::from_secs(20));
    drain_outbox(&mut store, Duration::from_secs(60));
    assert_eq!(store.outbox_depth(), 0);
    let mut catalog =
        ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    assert_eq!(catalog.view_count("12345").expect("count"), 40);
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn catalog_round_trips() {
    let keyspace = keyspace();
    let mut catalog =
        ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    let videos = parse_catalog(
        format!(r#"[{SEED_VIDEO_JSON},{{"videoId":"sintel","title":"Sintel","sources":[]}}]"#)
            .as_bytes(),
    )
    .expect("catalog");
    assert_eq!(catalog.upsert_videos(&videos).expect("upsert"), 2);
    let mut documents = catalog.load_videos().expect("load");
    documents.sort();
    assert_eq!(documents.len(), 2);
    assert_eq!(
        documents[0],
        ("12345".to_owned(), SEED_VIDEO_JSON.to_owned())
    );
    assert_eq!(catalog.view_count("sintel").expect("count"), 0);
}
