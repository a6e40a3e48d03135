//! The ScyllaDB writer against the real driver and a fake node (`scylla-proxy` in dry mode):
//! no ScyllaDB runs, the proxy forges every response. These tests check what the writer
//! sends (schema, prepared statements, bound values, consistency) and how it reacts to
//! forged failures: retry, spill to the outbox, replay, with no view lost or duplicated.
//!
//! A dry node has no state and does not check CQL: the real-cluster suite
//! (`tests/scylla_cluster.rs`, run when `SCYLLA_URI` is set) covers that.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use scylla_proxy::{
    Condition, Node, Proxy, Reaction, RequestFrame, RequestOpcode, RequestReaction, RequestRule,
    ResponseFrame, ResponseOpcode, RunningProxy,
};
use tokio::sync::mpsc;

use common::poll_until;
use common::store::{drain_outbox, seed_views};
use video_server::metrics::Metrics;
use video_server::store::scylla::schema::{insert_rollup_cql, insert_view_cql};
use video_server::store::scylla::{
    schema_statements, Cluster, Replication, ScyllaConfig, ScyllaViewStore,
};
use video_server::store::{Outbox, RemoteViewStore, ResilientStore, RetryPolicy, ViewStore};

/// The client address of the views these tests write (bound as `[203, 0, 113, 5]`).
const CLIENT_IP: &str = "203.0.113.5";

const VIEW_ID: &[u8] = b"prepared-insert-view";
const ROLLUP_ID: &[u8] = b"prepared-insert-rollup";

// CQL type ids (protocol v4).
const VARCHAR: u16 = 0x000D;
const DATE: u16 = 0x0011;
const INT: u16 = 0x0009;
const TIMEUUID: u16 = 0x000F;
const INET: u16 = 0x0010;
const TIMESTAMP: u16 = 0x000B;
const BIGINT: u16 = 0x0002;

/// The columns the writer binds, in order, as the real tables define them. Checked against
/// the statements' text below, so the forged metadata cannot drift from the schema.
const VIEW_COLUMNS: [(&str, u16); 6] = [
    ("video_id", VARCHAR),
    ("day", DATE),
    ("bucket", INT),
    ("id", TIMEUUID),
    ("client_ip", INET),
    ("viewed_at", TIMESTAMP),
];
const ROLLUP_COLUMNS: [(&str, u16); 3] = [
    ("video_id", VARCHAR),
    ("flush_id", TIMEUUID),
    ("views", BIGINT),
];

fn put_string(buf: &mut BytesMut, text: &str) {
    buf.put_u16(text.len() as u16);
    buf.put_slice(text.as_bytes());
}

/// A RESULT/PREPARED body: id, bind metadata (global table spec), no result metadata.
fn prepared_body(id: &[u8], table: &str, columns: &[(&str, u16)], partition_key: &[u16]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0x0004);
    buf.put_u16(id.len() as u16);
    buf.put_slice(id);
    buf.put_i32(0x0001);
    buf.put_i32(columns.len() as i32);
    buf.put_i32(partition_key.len() as i32);
    for index in partition_key {
        buf.put_u16(*index);
    }
    put_string(&mut buf, "video_server");
    put_string(&mut buf, table);
    for (name, type_id) in columns {
        put_string(&mut buf, name);
        buf.put_u16(*type_id);
    }
    buf.put_i32(0x0004);
    buf.put_i32(0);
    buf.freeze()
}

fn result(frame: &RequestFrame, body: Bytes) -> ResponseFrame {
    ResponseFrame::new(frame.params.for_response(), ResponseOpcode::Result, body)
}

fn void(frame: &RequestFrame) -> ResponseFrame {
    result(frame, Bytes::from_static(&[0, 0, 0, 1]))
}

fn forge(f: impl Fn(RequestFrame) -> ResponseFrame + Send + Sync + 'static) -> RequestReaction {
    RequestReaction::forge_response(Arc::new(f))
}

fn body_contains(text: &[u8]) -> Condition {
    Condition::BodyContainsCaseSensitive(text.into())
}

/// Handshake, schema, prepares and executes all answered successfully; every frame is
/// reported on `feedback`.
fn healthy_rules(
    feedback: &mpsc::UnboundedSender<(RequestFrame, Option<u16>)>,
) -> Vec<RequestRule> {
    let fb = |reaction: RequestReaction| reaction.with_feedback_when_performed(feedback.clone());
    vec![
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Options),
            forge(|frame| {
                ResponseFrame::forged_supported(frame.params, &HashMap::new()).expect("supported")
            }),
        ),
        RequestRule(
            Condition::or(
                Condition::RequestOpcode(RequestOpcode::Startup),
                Condition::RequestOpcode(RequestOpcode::Register),
            ),
            forge(|frame| ResponseFrame::forged_ready(frame.params)),
        ),
        // The driver's own topology queries: refused (the session still builds).
        RequestRule(
            body_contains(b"system."),
            RequestReaction::forge().server_error(),
        ),
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Query),
            fb(forge(|frame| void(&frame))),
        ),
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Prepare).and(body_contains(b"view_rollups")),
            fb(forge(|frame| {
                result(
                    &frame,
                    prepared_body(ROLLUP_ID, "view_rollups", &ROLLUP_COLUMNS, &[0]),
                )
            })),
        ),
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Prepare).and(body_contains(b".views (")),
            fb(forge(|frame| {
                result(
                    &frame,
                    prepared_body(VIEW_ID, "views", &VIEW_COLUMNS, &[0, 1, 2]),
                )
            })),
        ),
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Execute),
            fb(forge(|frame| void(&frame))),
        ),
        // Anything else would be silently dropped and hang the driver: refuse it loudly.
        RequestRule(Condition::True, RequestReaction::forge().protocol_error()),
    ]
}

/// The healthy rules with `failure` answering the first `times` view EXECUTEs (or every one).
fn failing_rules(
    feedback: &mpsc::UnboundedSender<(RequestFrame, Option<u16>)>,
    failure: RequestReaction,
    times: Option<usize>,
) -> Vec<RequestRule> {
    let mut condition =
        Condition::RequestOpcode(RequestOpcode::Execute).and(body_contains(VIEW_ID));
    if let Some(times) = times {
        condition = condition.and(Condition::TrueForLimitedTimes(times));
    }
    let mut rules = healthy_rules(feedback);
    rules.insert(
        2,
        RequestRule(
            condition,
            failure.with_feedback_when_performed(feedback.clone()),
        ),
    );
    rules
}

struct FakeNode {
    runtime: tokio::runtime::Runtime,
    proxy: Option<RunningProxy>,
    address: SocketAddr,
    feedback_tx: mpsc::UnboundedSender<(RequestFrame, Option<u16>)>,
    feedback: mpsc::UnboundedReceiver<(RequestFrame, Option<u16>)>,
}

impl FakeNode {
    fn start() -> FakeNode {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let address = SocketAddr::new(scylla_proxy::get_exclusive_local_address(), 9042);
        let (feedback_tx, feedback) = mpsc::unbounded_channel();
        let rules = healthy_rules(&feedback_tx);
        let proxy = runtime
            .block_on(
                Proxy::builder()
                    .with_node(
                        Node::builder()
                            .proxy_address(address)
                            .request_rules(rules)
                            .build_dry_mode(),
                    )
                    .build()
                    .run(),
            )
            .expect("proxy runs");
        FakeNode {
            runtime,
            proxy: Some(proxy),
            address,
            feedback_tx,
            feedback,
        }
    }

    fn set_rules(&mut self, rules: Vec<RequestRule>) {
        if let Some(proxy) = &mut self.proxy {
            proxy.running_nodes[0].change_request_rules(Some(rules));
        }
    }

    /// Answers view EXECUTEs with `failure` (the first `times` of them, or every one).
    fn fail_view_writes(&mut self, failure: RequestReaction, times: Option<usize>) {
        let rules = failing_rules(&self.feedback_tx, failure, times);
        self.set_rules(rules);
    }

    /// Answers everything successfully again.
    fn heal(&mut self) {
        let rules = healthy_rules(&self.feedback_tx);
        self.set_rules(rules);
    }

    fn frames(&mut self) -> Vec<RequestFrame> {
        let mut frames = Vec::new();
        while let Ok((frame, _)) = self.feedback.try_recv() {
            frames.push(frame);
        }
        frames
    }

    fn config(&self) -> ScyllaConfig {
        ScyllaConfig {
            nodes: vec![self.address.to_string()],
            keyspace: "video_server".into(),
            replication: Replication::Simple { factor: 1 },
            write_consistency: scylla::statement::Consistency::LocalQuorum,
            read_consistency: scylla::statement::Consistency::LocalQuorum,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            credentials: None,
            view_ttl: None,
            max_in_flight: 256,
            create_schema: true,
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            let _ = self.runtime.block_on(proxy.finish());
        }
    }
}

/// An EXECUTE frame, decoded: statement id, consistency and raw bound values.
#[derive(Debug)]
struct Execute {
    id: Vec<u8>,
    consistency: u16,
    values: Vec<Vec<u8>>,
}

fn decode_execute(frame: &RequestFrame) -> Execute {
    let body = &frame.body[..];
    let id_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let id = body[2..2 + id_len].to_vec();
    let mut at = 2 + id_len;
    let consistency = u16::from_be_bytes([body[at], body[at + 1]]);
    at += 2;
    let flags = body[at];
    at += 1;
    let mut values = Vec::new();
    if flags & 0x01 != 0 {
        let count = u16::from_be_bytes([body[at], body[at + 1]]);
        at += 2;
        for _ in 0..count {
            let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            at += 4;
            let len = usize::try_from(len).expect("non-null value");
            values.push(body[at..at + len].to_vec());
            at += len;
        }
    }
    Execute {
        id,
        consistency,
        values,
    }
}

fn long_string(frame: &RequestFrame) -> String {
    let body = &frame.body[..];
    let len = i32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
    String::from_utf8_lossy(&body[4..4 + len]).into_owned()
}

fn executes(frames: &[RequestFrame], id: &[u8]) -> Vec<Execute> {
    frames
        .iter()
        .filter(|frame| frame.opcode == RequestOpcode::Execute)
        .map(decode_execute)
        .filter(|execute| execute.id == id)
        .collect()
}

fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_pause: Duration::from_millis(5),
        max_pause: Duration::from_millis(10),
        first_replay_backoff: Duration::from_millis(10),
        max_replay_backoff: Duration::from_millis(50),
        replay_flushes: 8,
    }
}

fn resilient(
    node: &FakeNode,
    dir: &std::path::Path,
) -> (ResilientStore<ScyllaViewStore>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
    let remote = ScyllaViewStore::new(Cluster::new(node.config()).expect("driver runtime"));
    remote
        .wait_until_connected(Duration::from_secs(10))
        .expect("connect to the fake node");
    let outbox = Outbox::open(dir).expect("outbox");
    (
        ResilientStore::new(remote, outbox, Arc::clone(&metrics), quick_policy()),
        metrics,
    )
}

#[test]
fn statements_text_matches_the_forged_column_metadata() {
    let view_cql = insert_view_cql("video_server", None);
    let names: Vec<&str> = VIEW_COLUMNS.iter().map(|(name, _)| *name).collect();
    assert!(
        view_cql.contains(&format!("({})", names.join(", "))),
        "{view_cql}"
    );
    let rollup_cql = insert_rollup_cql("video_server");
    let names: Vec<&str> = ROLLUP_COLUMNS.iter().map(|(name, _)| *name).collect();
    assert!(
        rollup_cql.contains(&format!("({})", names.join(", "))),
        "{rollup_cql}"
    );
    let schema = schema_statements("video_server", &Replication::Simple { factor: 1 }).join("\n");
    for (name, _) in VIEW_COLUMNS.iter().chain(ROLLUP_COLUMNS.iter()) {
        assert!(
            schema.contains(&format!("    {name} ")),
            "schema lacks {name}"
        );
    }
}

#[test]
fn a_flush_sends_schema_prepares_and_bound_rows() {
    let mut node = FakeNode::start();
    let mut store = ScyllaViewStore::new(Cluster::new(node.config()).expect("driver runtime"));
    store
        .wait_until_connected(Duration::from_secs(10))
        .expect("connect to the fake node");
    let batch = seed_views(5, CLIENT_IP);
    let flush = video_server::store::Flush {
        id: uuid::Uuid::now_v1(&[1, 2, 3, 4, 5, 6]),
        views: batch
            .iter()
            .enumerate()
            .map(|(i, view)| video_server::store::PendingView {
                id: uuid::Uuid::now_v1(&[9, 9, 9, 9, 9, i as u8]),
                video_id: "12345".into(),
                client_ip: view.client_ip,
                timestamp_ms: view.timestamp_ms,
            })
            .collect(),
    };
    store.write_flush(&flush).expect("write");
    let frames = node.frames();

    let queries: Vec<String> = frames
        .iter()
        .filter(|frame| frame.opcode == RequestOpcode::Query)
        .map(long_string)
        .collect();
    assert_eq!(
        queries,
        schema_statements("video_server", &Replication::Simple { factor: 1 })
    );

    let prepares: HashSet<String> = frames
        .iter()
        .filter(|frame| frame.opcode == RequestOpcode::Prepare)
        .map(long_string)
        .collect();
    assert!(
        prepares.contains(&insert_view_cql("video_server", None)),
        "{prepares:?}"
    );
    assert!(
        prepares.contains(&insert_rollup_cql("video_server")),
        "{prepares:?}"
    );

    let rows = executes(&frames, VIEW_ID);
    assert_eq!(rows.len(), 5);
    let ids: HashSet<Vec<u8>> = rows.iter().map(|row| row.values[3].clone()).collect();
    let expected: HashSet<Vec<u8>> = flush
        .views
        .iter()
        .map(|v| v.id.as_bytes().to_vec())
        .collect();
    assert_eq!(ids, expected, "every view row carries its own timeuuid");
    for row in &rows {
        assert_eq!(row.consistency, 0x0006, "LOCAL_QUORUM");
        assert_eq!(row.values[0], b"12345");
        assert_eq!(row.values[4], [203, 0, 113, 5], "inet");
        let millis = i64::from_be_bytes(row.values[5][..].try_into().expect("8 bytes"));
        assert!(flush.views.iter().any(|v| v.timestamp_ms == millis));
    }
    let rollups = executes(&frames, ROLLUP_ID);
    assert_eq!(rollups.len(), 1);
    assert_eq!(rollups[0].values[0], b"12345");
    assert_eq!(rollups[0].values[1], flush.id.as_bytes());
    assert_eq!(
        i64::from_be_bytes(rollups[0].values[2][..].try_into().expect("bigint")),
        5
    );

    // A second flush reuses the session and the prepared statements.
    store.write_flush(&flush).expect("write again");
    let frames = node.frames();
    assert!(
        frames.iter().all(|f| f.opcode == RequestOpcode::Execute),
        "re-prepared or re-created schema"
    );
}

#[test]
fn forged_failures_are_retried_spilled_and_replayed_without_duplicates() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient(&node, dir.path());

    // 1. One write timeout: the retry succeeds, nothing is spilled.
    node.fail_view_writes(RequestReaction::forge().write_timeout(), Some(1));
    store.write_views(&seed_views(4, CLIENT_IP)).expect("write");
    assert_eq!(metrics.store_retries.get(), 1);
    assert_eq!(store.outbox_depth(), 0);
    node.frames();

    // 2. Overloaded on every view write: the batch is spilled after its retries.
    node.fail_view_writes(RequestReaction::forge().overloaded(), None);
    store
        .write_views(&seed_views(6, CLIENT_IP))
        .expect("spilled");
    assert_eq!(store.outbox_depth(), 6);
    assert_eq!(metrics.views_spilled.get(), 6);
    // While in backoff the next batch goes straight to the outbox.
    store
        .write_views(&seed_views(3, CLIENT_IP))
        .expect("spilled");
    assert_eq!(store.outbox_depth(), 9);

    // 3. Unavailable replicas: still spilled, never lost.
    node.fail_view_writes(RequestReaction::forge().unavailable(), None);
    // Replays go on for 300 ms (stopping early only if a view leaves the outbox).
    poll_until(Duration::from_millis(300), || {
        store.maintain();
        (store.outbox_depth() != 9).then_some(())
    });
    assert_eq!(
        store.outbox_depth(),
        9,
        "replay into a failing cluster must not drop views"
    );
    let failed_rows: HashSet<Vec<u8>> = executes(&node.frames(), VIEW_ID)
        .into_iter()
        .map(|row| row.values[3].clone())
        .collect();

    // 4. The cluster recovers: the outbox drains, each view written under its original id.
    node.heal();
    drain_outbox(&mut store, Duration::from_secs(10));
    assert_eq!(store.outbox_depth(), 0);
    assert_eq!(metrics.views_replayed.get(), 9);
    let frames = node.frames();
    let replayed = executes(&frames, VIEW_ID);
    let replayed_ids: HashSet<Vec<u8>> = replayed.iter().map(|row| row.values[3].clone()).collect();
    assert_eq!(
        replayed.len(),
        9,
        "each spilled view written exactly once on replay"
    );
    assert_eq!(replayed_ids.len(), 9);
    assert!(
        failed_rows.is_subset(&replayed_ids),
        "replay must reuse the ids of the failed attempts"
    );
    let rollup_total: i64 = executes(&frames, ROLLUP_ID)
        .iter()
        .map(|row| i64::from_be_bytes(row.values[2][..].try_into().expect("bigint")))
        .sum();
    assert_eq!(rollup_total, 9, "rollups count each replayed view once");
}

#[test]
fn a_permanent_error_keeps_the_batch_in_the_outbox() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient(&node, dir.path());
    node.fail_view_writes(RequestReaction::forge().syntax_error(), None);
    store.write_views(&seed_views(2, CLIENT_IP)).expect("kept");
    assert_eq!(store.outbox_depth(), 2);
    assert_eq!(
        metrics.store_retries.get(),
        0,
        "a syntax error is not retried"
    );
}

#[test]
fn a_node_that_goes_away_is_survived() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient(&node, dir.path());
    store.write_views(&seed_views(2, CLIENT_IP)).expect("write");
    assert_eq!(store.outbox_depth(), 0);
    // Node down: connections refused.
    if let Some(proxy) = node.proxy.take() {
        // finish() reports the driver connections it cut; that is the point here.
        let _ = node.runtime.block_on(proxy.finish());
    }
    store
        .write_views(&seed_views(3, CLIENT_IP))
        .expect("spilled");
    assert_eq!(store.outbox_depth(), 3);
    assert!(metrics.store_errors.get() >= 1);
}
