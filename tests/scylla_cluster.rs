//! The ScyllaDB store against a real engine: the CQL is valid, the schema (as the server
//! creates it and as `scripts/schema.cql` writes it) is accepted, counts add up and survive
//! restarts, replays do not duplicate, two writers' totals add up per day with their unique
//! viewers merged, the catalog round-trips across pages, a day's salt is agreed by a
//! lightweight transaction, a view TTL becomes the table's default, and the write-time
//! rule the count model relies on holds. Writing as production does (every node a replica,
//! three at most, and LOCAL_QUORUM), a poison flush is quarantined while the flushes behind
//! it replay, a flush partly written is written again and counted once, and statements the
//! nodes forgot are prepared again by the driver, not retried or spilled.
//!
//! CI runs it against Apache Cassandra (the engine whose CQL ScyllaDB implements), started
//! from Maven Central by `scripts/cql-up.sh`:
//!
//! ```sh
//! eval "$(scripts/cql-up.sh up 1)"        # or: up 3, replication 3
//! CQL_UP=1 cargo test --test scylla_cluster -- --ignored
//! scripts/cql-up.sh down
//! ```
//!
//! Against another cluster, set `SCYLLA_URI=host:9042` alone (the node-restart test then
//! skips, loudly). The tests are `#[ignore]`d so that a plain `cargo test` without a cluster
//! passes and says so. Each test uses a keyspace of its own (`video_server_test_<random>`);
//! `scripts/cql-up.sh down` removes the whole cluster with them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::store::{cql_up, drain_outbox, seed_views};
use video_server::metrics::Metrics;
use video_server::store::scylla::{
    Cluster, Replication, ScyllaCatalogStore, ScyllaConfig, ScyllaViewStore,
};
use video_server::store::{
    epoch_millis, utc_day, CatalogSource, Outbox, ResilientStore, RetryPolicy, ViewStore,
};
use video_server::video::{parse_catalog, SEED_VIDEO_JSON};

/// Tests share the cluster; the one that restarts a node has it to itself.
static NODE: parking_lot::RwLock<()> = parking_lot::RwLock::new(());

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
        local_dc: None,
        tls: None,
    }
}

fn keyspace() -> String {
    format!("video_server_test_{:08x}", fastrand::u32(..))
}

/// The client address of the views these tests write.
const CLIENT_IP: &str = "192.0.2.44";

/// A cluster that refuses every connection at once (port 1 on loopback): a writer keeps
/// everything in its outbox.
fn unreachable(keyspace: &str) -> ScyllaConfig {
    ScyllaConfig {
        nodes: vec!["127.0.0.1:1".into()],
        connect_timeout: Duration::from_millis(500),
        ..config(keyspace)
    }
}

/// A resilient store over the cluster, after waiting up to `connect_wait` for a session.
fn resilient(
    config: ScyllaConfig,
    dir: &std::path::Path,
    connect_wait: Duration,
) -> ResilientStore {
    resilient_with_metrics(config, dir, connect_wait).0
}

fn resilient_with_metrics(
    config: ScyllaConfig,
    dir: &std::path::Path,
    connect_wait: Duration,
) -> (ResilientStore, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
    let remote = ScyllaViewStore::new(Cluster::new(config).expect("driver runtime"));
    // Unreachable configurations are expected to fail here; the store copes either way.
    let _ = remote.wait_until_connected(connect_wait);
    let store = ResilientStore::new(
        remote,
        Outbox::open(dir).expect("outbox"),
        Arc::clone(&metrics),
        RetryPolicy::default(),
    )
    .expect("store");
    (store, metrics)
}

/// As production writes: every node a replica (three at most: `scripts/cql-up.sh up 3`
/// gives replication 3) and LOCAL_QUORUM, reads too.
fn replicated(keyspace: &str) -> ScyllaConfig {
    let (_runtime, session) = raw_session();
    let nodes = session
        .get_cluster_state()
        .get_nodes_info()
        .len()
        .clamp(1, 3);
    ScyllaConfig {
        replication: Replication::Simple {
            factor: nodes as u32,
        },
        write_consistency: scylla::statement::Consistency::LocalQuorum,
        read_consistency: scylla::statement::Consistency::LocalQuorum,
        ..config(keyspace)
    }
}

/// A resilient store writing as production does ([`replicated`]), and its metrics.
fn replicated_store(keyspace: &str, dir: &std::path::Path) -> (ResilientStore, Arc<Metrics>) {
    resilient_with_metrics(replicated(keyspace), dir, Duration::from_secs(20))
}

/// Reads counts as production does ([`replicated`]).
fn replicated_catalog(keyspace: &str) -> ScyllaCatalogStore {
    ScyllaCatalogStore::new(Cluster::new(replicated(keyspace)).expect("driver runtime"))
}

/// Rows in a keyspace's `view_log` (a whole-table count: test keyspaces are small).
fn view_log_rows(keyspace: &str) -> i64 {
    let (runtime, session) = raw_session();
    let mut count =
        scylla::statement::Statement::new(format!("SELECT COUNT(*) FROM {keyspace}.view_log"));
    count.set_consistency(scylla::statement::Consistency::All);
    let result = runtime
        .block_on(session.query_unpaged(count, ()))
        .expect("count view_log");
    result
        .into_rows_result()
        .expect("rows")
        .single_row::<(i64,)>()
        .expect("one row")
        .0
}

/// Runs one statement on a plain session.
fn run_cql(cql: &str) {
    let (runtime, session) = raw_session();
    runtime
        .block_on(session.query_unpaged(cql, ()))
        .unwrap_or_else(|error| panic!("{cql}: {error}"));
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn views_are_written_and_counted() {
    let _node = NODE.read();
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
    let _node = NODE.read();
    let keyspace = keyspace();
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut store = resilient(unreachable(&keyspace), dir.path(), Duration::ZERO);
        store
            .write_views(&seed_views(40, CLIENT_IP))
            .expect("spilled");
        assert_eq!(store.outbox_depth(), 40);
    }
    let store = resilient(config(&keyspace), dir.path(), Duration::from_secs(20));
    drain_outbox(&store, Duration::from_secs(60));
    assert_eq!(store.outbox_depth(), 0);
    let mut catalog =
        ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    assert_eq!(catalog.view_count("12345").expect("count"), 40);
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn catalog_round_trips() {
    let _node = NODE.read();
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

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn the_catalog_is_read_again_only_when_its_version_moved() {
    let _node = NODE.read();
    let keyspace = keyspace();
    let mut watcher =
        ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    let mut importer =
        ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    let videos = parse_catalog(format!("[{}]", SEED_VIDEO_JSON.replace("12345", "one")).as_bytes())
        .expect("catalog");
    importer.upsert_videos(&videos).expect("upsert");
    assert!(watcher.catalog_changed().expect("version"), "first look");
    assert_eq!(
        CatalogSource::load_videos(&mut watcher)
            .expect("load")
            .len(),
        1
    );
    assert!(
        !watcher.catalog_changed().expect("version"),
        "nothing moved"
    );
    let more = parse_catalog(r#"[{"videoId":"two","title":"Two","sources":[]}]"#.as_bytes())
        .expect("catalog");
    importer.upsert_videos(&more).expect("upsert");
    assert!(
        watcher.catalog_changed().expect("version"),
        "an import moves it"
    );
    assert_eq!(
        CatalogSource::load_videos(&mut watcher)
            .expect("load")
            .len(),
        2
    );
    assert!(!watcher.catalog_changed().expect("version"));
}

/// The nodes of `SCYLLA_URI`.
fn nodes() -> Vec<String> {
    config("unused").nodes
}

/// A plain driver session, for statements the store itself never sends, and the runtime
/// it runs on.
fn raw_session() -> (tokio::runtime::Runtime, scylla::client::session::Session) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let session = runtime
        .block_on(
            scylla::client::session_builder::SessionBuilder::new()
                .known_nodes(nodes())
                .build(),
        )
        .expect("connect to the cluster");
    (runtime, session)
}

/// The statements of a CQL script: comments dropped, split at `;`.
fn statements(script: &str) -> Vec<String> {
    let text: String = script
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .map(|line| format!("{line}\n"))
        .collect();
    text.split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn the_shipped_schema_script_is_accepted_by_the_engine() {
    let _node = NODE.read();
    let keyspace = keyspace();
    let script =
        include_str!("../scripts/schema.cql").replace("video_server.", &format!("{keyspace}."));
    let script = script.replace(
        "KEYSPACE IF NOT EXISTS video_server ",
        &format!("KEYSPACE IF NOT EXISTS {keyspace} "),
    );
    let statements = statements(&script);
    assert_eq!(statements.len(), 7, "{statements:#?}");
    let (runtime, session) = raw_session();
    for statement in &statements {
        assert!(statement.contains(&keyspace), "{statement}");
        runtime
            .block_on(session.query_unpaged(statement.as_str(), ()))
            .unwrap_or_else(|error| panic!("the engine refused {statement:?}: {error}"));
    }
    // The store writes and counts through the tables the script made (no create_schema).
    let dir = tempfile::tempdir().expect("temp dir");
    let mut by_hand = config(&keyspace);
    by_hand.create_schema = false;
    let mut store = resilient(by_hand.clone(), dir.path(), Duration::from_secs(20));
    store.write_views(&seed_views(7, CLIENT_IP)).expect("write");
    assert_eq!(store.outbox_depth(), 0, "the cluster refused the writes");
    let mut catalog = ScyllaCatalogStore::new(Cluster::new(by_hand).expect("driver runtime"));
    assert_eq!(catalog.view_count("12345").expect("count"), 7);
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn a_lower_write_timestamp_never_overwrites_a_higher_one() {
    let _node = NODE.read();
    // The count model of "views per day" writes absolute totals with USING TIMESTAMP equal
    // to the total, relying on this: the highest timestamp wins, whatever the order.
    let keyspace = keyspace();
    let (runtime, session) = raw_session();
    let run = |cql: String| {
        runtime
            .block_on(session.query_unpaged(cql.as_str(), ()))
            .unwrap_or_else(|error| panic!("{cql}: {error}"))
    };
    run(format!(
        "CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
    ));
    run(format!(
        "CREATE TABLE {keyspace}.totals (k text PRIMARY KEY, views bigint)"
    ));
    run(format!(
        "INSERT INTO {keyspace}.totals (k, views) VALUES ('a', 120) USING TIMESTAMP 120"
    ));
    // A replay of an older total, arriving late.
    run(format!(
        "INSERT INTO {keyspace}.totals (k, views) VALUES ('a', 80) USING TIMESTAMP 80"
    ));
    let read = || -> i64 {
        let rows = run(format!("SELECT views FROM {keyspace}.totals WHERE k = 'a'"))
            .into_rows_result()
            .expect("rows");
        rows.single_row::<(i64,)>().expect("one row").0
    };
    assert_eq!(read(), 120, "the older total overwrote the newer");
    run(format!(
        "INSERT INTO {keyspace}.totals (k, views) VALUES ('a', 121) USING TIMESTAMP 121"
    ));
    assert_eq!(read(), 121);
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn a_catalog_larger_than_a_page_is_read_whole() {
    let _node = NODE.read();
    // The driver pages at 5,000 rows: more than that must come back, all of it.
    const VIDEOS: usize = 5_300;
    let keyspace = keyspace();
    let json: Vec<String> = (0..VIDEOS)
        .map(|index| format!(r#"{{"videoId":"v{index:05}","title":"Video {index}","sources":[]}}"#))
        .collect();
    let videos = parse_catalog(format!("[{}]", json.join(",")).as_bytes()).expect("catalog");
    let mut catalog =
        ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    assert_eq!(catalog.upsert_videos(&videos).expect("upsert"), VIDEOS);
    let documents = catalog.load_videos().expect("load");
    assert_eq!(documents.len(), VIDEOS);
    let ids: std::collections::HashSet<&str> =
        documents.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), VIDEOS, "a row came back twice");
    assert!(ids.contains("v00000") && ids.contains("v05299"));
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn counts_survive_a_restart_of_the_server() {
    let _node = NODE.read();
    let keyspace = keyspace();
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut store = resilient(config(&keyspace), dir.path(), Duration::from_secs(20));
        store
            .write_views(&seed_views(33, CLIENT_IP))
            .expect("write");
        assert_eq!(store.outbox_depth(), 0);
    }
    // A new process: a new session, a new runtime, nothing shared with the writer.
    let mut catalog =
        ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    assert_eq!(catalog.view_count("12345").expect("count"), 33);
    let mut store = resilient(config(&keyspace), dir.path(), Duration::from_secs(20));
    store.write_views(&seed_views(2, CLIENT_IP)).expect("write");
    assert_eq!(catalog.view_count("12345").expect("count"), 35);
}

#[test]
#[ignore = "needs a cluster started by scripts/cql-up.sh: CQL_UP=1 SCYLLA_URI=127.0.0.1:9042 cargo test --test scylla_cluster -- --ignored"]
fn counts_survive_a_restart_of_the_node() {
    let _node = NODE.write();
    if std::env::var_os("CQL_UP").is_none() {
        eprintln!(
            "\n*** SKIPPED: restarting a node needs a cluster started by scripts/cql-up.sh (set CQL_UP=1) ***\n"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this suite against scripts/cql-up.sh and must set CQL_UP=1"
        );
        return;
    }
    let keyspace = keyspace();
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut store = resilient(config(&keyspace), dir.path(), Duration::from_secs(20));
        store
            .write_views(&seed_views(21, CLIENT_IP))
            .expect("write");
        assert_eq!(store.outbox_depth(), 0);
    }
    cql_up(&["restart", "1"]);
    let catalog_cluster = Cluster::new(config(&keyspace)).expect("driver runtime");
    catalog_cluster
        .wait_until_connected(Duration::from_secs(60))
        .expect("reconnect after the restart");
    let mut catalog = ScyllaCatalogStore::new(catalog_cluster);
    assert_eq!(catalog.view_count("12345").expect("count"), 21);
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn two_writers_add_up_per_day_and_their_unique_viewers_merge() {
    let _node = NODE.read();
    let keyspace = keyspace();
    let (first_dir, second_dir) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let mut first = resilient(config(&keyspace), first_dir.path(), Duration::from_secs(20));
    let mut second = resilient(
        config(&keyspace),
        second_dir.path(),
        Duration::from_secs(20),
    );
    for _ in 0..3 {
        first
            .write_views(&seed_views(10, CLIENT_IP))
            .expect("write");
        second
            .write_views(&seed_views(7, "198.51.100.8"))
            .expect("write");
    }
    second
        .write_views(&seed_views(1, CLIENT_IP))
        .expect("write");
    assert_eq!(first.outbox_depth() + second.outbox_depth(), 0);
    let mut catalog =
        ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    let counts = catalog.view_counts("12345").expect("counts");
    assert_eq!(counts.total, 52);
    let today = utc_day(epoch_millis());
    let day = counts.days.last().expect("today");
    assert_eq!((day.day, day.views, day.unique_viewers), (today, 52, 2));
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn a_days_salt_is_agreed_once_and_deleted() {
    let _node = NODE.read();
    let keyspace = keyspace();
    let mut one = ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    let mut other =
        ScyllaCatalogStore::new(Cluster::new(config(&keyspace)).expect("driver runtime"));
    // Creates the schema (the first session to connect).
    assert_eq!(one.view_count("12345").expect("count"), 0);
    let day = utc_day(epoch_millis());
    let agreed = one.agree_salt(day, [1; 16]).expect("agree");
    assert_eq!(agreed, [1; 16], "the first proposal wins");
    assert_eq!(other.agree_salt(day, [2; 16]).expect("agree"), [1; 16]);
    // Two days later the salt is deleted: a new proposal for that day would win.
    other.forget_salts_before(day + 2).expect("forget");
    assert_eq!(one.agree_salt(day, [3; 16]).expect("agree"), [3; 16]);
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn a_view_ttl_is_the_tables_default() {
    let _node = NODE.read();
    let keyspace = keyspace();
    let mut with_ttl = config(&keyspace);
    with_ttl.view_ttl = Some(Duration::from_secs(3 * 86_400));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = resilient(with_ttl, dir.path(), Duration::from_secs(20));
    store.write_views(&seed_views(1, CLIENT_IP)).expect("write");
    assert_eq!(store.outbox_depth(), 0);
    let (runtime, session) = raw_session();
    let result = runtime
        .block_on(session.query_unpaged(
            "SELECT default_time_to_live FROM system_schema.tables \
             WHERE keyspace_name = ? AND table_name = 'view_log'",
            (keyspace.as_str(),),
        ))
        .expect("read the schema");
    let (ttl,) = result
        .into_rows_result()
        .expect("rows")
        .single_row::<(i32,)>()
        .expect("one table");
    assert_eq!(ttl, 3 * 86_400);
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn a_local_datacenter_takes_the_requests_and_an_unknown_one_is_named() {
    let _node = NODE.read();
    let keyspace = keyspace();
    // Cassandra's and ScyllaDB's default datacenter name.
    let mut local = config(&keyspace);
    local.local_dc = Some("datacenter1".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = resilient(local.clone(), dir.path(), Duration::from_secs(20));
    store.write_views(&seed_views(9, CLIENT_IP)).expect("write");
    assert_eq!(
        store.outbox_depth(),
        0,
        "the local datacenter refused the writes"
    );
    let mut catalog = ScyllaCatalogStore::new(Cluster::new(local).expect("driver runtime"));
    assert_eq!(catalog.view_count("12345").expect("count"), 9);

    // A datacenter the cluster does not have: every request would find no node.
    let mut elsewhere = config(&keyspace);
    elsewhere.local_dc = Some("elsewhere".into());
    let cluster = Cluster::new(elsewhere).expect("driver runtime");
    let refused = cluster
        .session(Duration::from_secs(20))
        .map(|_| ())
        .expect_err("no such datacenter")
        .to_string();
    assert!(
        refused.contains(r#"--scylla-local-dc "elsewhere""#) && refused.contains("datacenter1"),
        "{refused}"
    );
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn a_server_that_does_not_create_the_schema_says_what_to_run_and_keeps_the_views() {
    let _node = NODE.read();
    let keyspace = keyspace();
    let mut by_hand = config(&keyspace);
    by_hand.create_schema = false;
    // Nothing created the keyspace: reads and writes say what to run.
    let mut catalog =
        ScyllaCatalogStore::new(Cluster::new(by_hand.clone()).expect("driver runtime"));
    let missing = catalog.load_videos().expect_err("no keyspace").to_string();
    assert!(
        missing.contains("scripts/schema.cql") && missing.contains("--scylla-create-schema"),
        "{missing}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = resilient(by_hand, dir.path(), Duration::from_secs(20));
    store.write_views(&seed_views(5, CLIENT_IP)).expect("kept");
    assert_eq!(store.outbox_depth(), 5);

    // The binary logs it at start, naming the flag and the script.
    let node = nodes()[0].clone();
    let mut server = common::Server::start(&[
        "--store",
        "scylla",
        "--scylla-nodes",
        &node,
        "--scylla-keyspace",
        &keyspace,
        "--scylla-create-schema=false",
    ]);
    assert!(
        server.wait_for_log("scripts/schema.cql", 1),
        "{}",
        server.log()
    );
    assert!(server.terminate().success(), "{}", server.log());

    // One server creates it (as an operator would, once): the kept views go in.
    let creator = Cluster::new(config(&keyspace)).expect("driver runtime");
    creator
        .wait_until_connected(Duration::from_secs(20))
        .expect("create the schema");
    drain_outbox(&store, Duration::from_secs(60));
    assert_eq!(store.outbox_depth(), 0);
    let mut catalog = ScyllaCatalogStore::new(creator);
    assert_eq!(catalog.view_count("12345").expect("count"), 5);
}

#[test]
#[ignore = "needs a cluster started by scripts/cql-up.sh: CQL_UP=1 SCYLLA_URI=127.0.0.1:9042 cargo test --test scylla_cluster -- --ignored"]
fn counts_served_while_the_node_is_down_say_how_old_they_are() {
    let _node = NODE.write();
    if std::env::var_os("CQL_UP").is_none() {
        eprintln!(
            "\n*** SKIPPED: stopping a node needs a cluster started by scripts/cql-up.sh (set CQL_UP=1) ***\n"
        );
        assert!(std::env::var_os("CI").is_none(), "CI must set CQL_UP=1");
        return;
    }
    let keyspace = keyspace();
    let node = nodes().join(",");
    // Every node a replica, read at ALL: with node 1 down the counts cannot be read, on
    // one node or three.
    let replication = match replicated(&keyspace).replication {
        Replication::Simple { factor } => format!("simple:{factor}"),
        other => panic!("{other:?}"),
    };
    let server = common::Server::start(&[
        "--store",
        "scylla",
        "--scylla-nodes",
        &node,
        "--scylla-keyspace",
        &keyspace,
        "--scylla-replication",
        &replication,
        "--scylla-write-consistency",
        "all",
        "--scylla-read-consistency",
        "all",
        "--views-cache-ms",
        "50",
    ]);
    for _ in 0..5 {
        assert_eq!(server.get("/video/12345").status, 200);
    }
    let counted = common::poll_until(Duration::from_secs(30), || {
        let answer = server.get("/video/12345/views").json();
        (answer["views"] == 5 && answer["asOf"].is_string()).then_some(answer)
    })
    .unwrap_or_else(|| panic!("never counted 5 views: {}", server.log()));
    let as_of = counted["asOf"].as_str().expect("asOf").to_owned();
    assert!(as_of.ends_with('Z') && as_of.len() == 20, "{as_of}");

    // A clean stop: a killed node loses the writes of its last commit log sync period
    // (10 s here), which would change the count under the test.
    cql_up(&["halt", "1"]);
    let node_back = StartAgain(1);
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        let answer = server.get("/video/12345/views").json();
        assert_eq!(answer["views"], 5, "still served: {answer}");
        assert_eq!(
            answer["asOf"],
            as_of.as_str(),
            "and said to be as old as it is"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(node_back);
    let fresher = common::poll_until(Duration::from_secs(60), || {
        let answer = server.get("/video/12345/views").json();
        (answer["asOf"]
            .as_str()
            .is_some_and(|at| at > as_of.as_str()))
        .then_some(answer)
    })
    .unwrap_or_else(|| {
        panic!(
            "counts not read again after the node came back: {}",
            server.log()
        )
    });
    assert_eq!(fresher["views"], 5, "{fresher}");
}

/// Starts a node stopped by a test again when dropped, so that a failed assertion does not
/// leave the cluster short of it for the tests that follow.
struct StartAgain(u8);

impl Drop for StartAgain {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // No second panic while unwinding: say it, the next test will notice.
            let started = std::process::Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cql-up.sh"))
                .args(["start", &self.0.to_string()])
                .status();
            if !started.as_ref().is_ok_and(|status| status.success()) {
                eprintln!(
                    "*** node {} could not be started again: {started:?}",
                    self.0
                );
            }
        } else {
            cql_up(&["start", &self.0.to_string()]);
        }
    }
}

/// A video id whose `view_log` partition key (id, minute, writer, shard) is longer than the
/// engine's 65,535-byte limit while its `view_counts` and `view_sketches` keys are not: its
/// view rows are refused for good (an invalid request), its count rows are taken.
const POISON_ID_BYTES: usize = 65_510;

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn a_poison_flush_is_quarantined_while_later_flushes_replay() {
    let _node = NODE.read();
    let keyspace = keyspace();
    let dir = tempfile::tempdir().expect("temp dir");
    let poison_id = "p".repeat(POISON_ID_BYTES);
    let poison: Vec<_> = seed_views(2, CLIENT_IP)
        .into_iter()
        .map(|mut view| {
            view.video_id = &poison_id;
            view
        })
        .collect();
    // Kept while the cluster was unreachable: 5 good views, the poison, 4 good views.
    {
        let mut store = resilient(unreachable(&keyspace), dir.path(), Duration::ZERO);
        store
            .write_views(&seed_views(5, CLIENT_IP))
            .expect("spilled");
        store.write_views(&poison).expect("spilled");
        store
            .write_views(&seed_views(4, CLIENT_IP))
            .expect("spilled");
        assert_eq!(store.outbox_depth(), 11);
    }
    let (store, metrics) = replicated_store(&keyspace, dir.path());
    drain_outbox(&store, Duration::from_secs(60));
    assert_eq!(
        store.outbox_depth(),
        0,
        "the flushes behind the poison replayed"
    );
    assert_eq!(metrics.outbox_quarantined.get(), 2, "the poison, set aside");
    assert_eq!(metrics.views_replayed.get(), 9);
    let mut catalog = replicated_catalog(&keyspace);
    assert_eq!(catalog.view_count("12345").expect("count"), 9);
    assert_eq!(view_log_rows(&keyspace), 9);
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn a_flush_partly_written_is_written_again_and_counted_once() {
    let _node = NODE.read();
    let keyspace = keyspace();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = replicated_store(&keyspace, dir.path());
    store
        .write_views(&seed_views(10, CLIENT_IP))
        .expect("write");
    // The sketches' table goes away: the next flush writes its view rows and its count
    // row, and fails at its sketch row (refused for good), so it is kept in the outbox.
    run_cql(&format!("DROP TABLE {keyspace}.view_sketches"));
    store.write_views(&seed_views(7, CLIENT_IP)).expect("kept");
    assert_eq!(metrics.views_spilled.get(), 7);
    assert_eq!(view_log_rows(&keyspace), 17, "the view rows were written");
    // The table is back (a server creating the schema): the flush is written again under
    // the same ids, and its count rows settle on the same totals.
    Cluster::new(replicated(&keyspace))
        .expect("driver runtime")
        .wait_until_connected(Duration::from_secs(20))
        .expect("create the schema again");
    drain_outbox(&store, Duration::from_secs(90));
    assert_eq!(store.outbox_depth() + store.outbox_pending_counts(), 0);
    assert_eq!(view_log_rows(&keyspace), 17, "no view row twice");
    let mut catalog = replicated_catalog(&keyspace);
    let counts = catalog.view_counts("12345").expect("counts");
    assert_eq!(counts.total, 17);
    let today = counts.days.last().expect("today");
    assert_eq!((today.views, today.unique_viewers), (17, 1));
}

#[test]
#[ignore = "needs a ScyllaDB cluster: SCYLLA_URI=host:9042 cargo test --test scylla_cluster -- --ignored"]
fn a_statement_the_nodes_forgot_is_prepared_again_not_retried_or_spilled() {
    let _node = NODE.read();
    let keyspace = keyspace();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = replicated_store(&keyspace, dir.path());
    store.write_views(&seed_views(5, CLIENT_IP)).expect("write");
    // Altering the table makes every node drop the statements prepared on it: the next
    // EXECUTE of them is answered UNPREPARED.
    run_cql(&format!("ALTER TABLE {keyspace}.view_log ADD note text"));
    store.write_views(&seed_views(7, CLIENT_IP)).expect("write");
    assert_eq!(metrics.views_spilled.get(), 0, "nothing went to the outbox");
    assert_eq!(metrics.store_retries.get(), 0, "not one of our retries");
    let mut catalog = replicated_catalog(&keyspace);
    assert_eq!(catalog.view_count("12345").expect("count"), 12);
    assert_eq!(view_log_rows(&keyspace), 12);
}
