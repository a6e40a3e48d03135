//! The ScyllaDB store against the real driver and a fake node (`scylla-proxy` in dry mode):
//! no ScyllaDB runs, the proxy forges every response. These tests check what the writer
//! sends (schema, prepared statements, bound values, consistency, count rows stamped with
//! their totals) and how it reacts to forged failures (retry, spill to the outbox, replay,
//! with no view lost or counted twice), and what the readers make of forged `ROWS`
//! answers (catalog pages, per-day counts of two writers, sketches, a missing sketch, the
//! salt a lightweight transaction kept).
//!
//! A dry node has no state and does not check CQL: the real-cluster suite
//! (`tests/scylla_cluster.rs`, run when `SCYLLA_URI` is set) covers that.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use scylla_proxy::{
    Condition, Node, Proxy, Reaction, RequestFrame, RequestOpcode, RequestReaction, RequestRule,
    ResponseFrame, ResponseOpcode, RunningProxy,
};
use tokio::sync::mpsc;

use common::poll_until;
use common::store::{drain_outbox, seed_views};
use video_server::hll::Sketch;
use video_server::metrics::Metrics;
use video_server::store::scylla::schema::{
    agree_salt_cql, insert_count_cql, insert_sketch_cql, insert_view_cql, select_counts_cql,
    select_sketches_cql,
};
use video_server::store::scylla::{
    schema_statements, Cluster, Replication, ScyllaCatalogStore, ScyllaConfig, ScyllaViewStore,
};
use video_server::store::{
    epoch_millis, utc_day, CatalogSource, Flush, Outbox, PendingView, RemoteViewStore,
    ResilientStore, RetryPolicy, ViewStore,
};

/// The client address of the views these tests write.
const CLIENT_IP: &str = "203.0.113.5";

// CQL type ids (protocol v4).
const BLOB: u16 = 0x0003;
const BOOLEAN: u16 = 0x0004;
const BIGINT: u16 = 0x0002;
const INT: u16 = 0x0009;
const TIMESTAMP: u16 = 0x000B;
const UUID: u16 = 0x000C;
const VARCHAR: u16 = 0x000D;
const TIMEUUID: u16 = 0x000F;
const DATE: u16 = 0x0011;

/// A statement the fake node prepares: how to recognise it, the id it answers with, and its
/// bind markers as the real table defines them (checked against the statements' text).
struct Forged {
    id: &'static [u8],
    marker: &'static [u8],
    table: &'static str,
    columns: &'static [(&'static str, u16)],
    partition_key: &'static [u16],
}

const INSERT_VIEW: Forged = Forged {
    id: b"prepared-insert-view",
    marker: b"INSERT INTO video_server.view_log",
    table: "view_log",
    columns: &[
        ("video_id", VARCHAR),
        ("minute", TIMESTAMP),
        ("writer", BIGINT),
        ("shard", INT),
        ("id", TIMEUUID),
        ("viewer", VARCHAR),
        ("viewed_at", TIMESTAMP),
    ],
    partition_key: &[0, 1, 2, 3],
};
const INSERT_COUNT: Forged = Forged {
    id: b"prepared-insert-count",
    marker: b"INSERT INTO video_server.view_counts",
    table: "view_counts",
    columns: &[
        ("video_id", VARCHAR),
        ("day", DATE),
        ("writer_id", UUID),
        ("views", BIGINT),
        ("[timestamp]", BIGINT),
    ],
    partition_key: &[0],
};
const INSERT_SKETCH: Forged = Forged {
    id: b"prepared-insert-sketch",
    marker: b"INSERT INTO video_server.view_sketches",
    table: "view_sketches",
    columns: &[
        ("video_id", VARCHAR),
        ("day", DATE),
        ("writer_id", UUID),
        ("sketch", BLOB),
        ("[timestamp]", BIGINT),
    ],
    partition_key: &[0, 1],
};
const SELECT_COUNTS: Forged = Forged {
    id: b"prepared-select-counts",
    marker: b"FROM video_server.view_counts",
    table: "view_counts",
    columns: &[("video_id", VARCHAR), ("day", DATE)],
    partition_key: &[0],
};
const SELECT_SKETCHES: Forged = Forged {
    id: b"prepared-select-sketches",
    marker: b"FROM video_server.view_sketches",
    table: "view_sketches",
    columns: &[("video_id", VARCHAR), ("day", DATE)],
    partition_key: &[0, 1],
};
const AGREE_SALT: Forged = Forged {
    id: b"prepared-agree-salt",
    marker: b"INTO video_server.salts",
    table: "salts",
    columns: &[("day", DATE), ("salt", BLOB)],
    partition_key: &[0],
};
const FORGED: [&Forged; 6] = [
    &INSERT_VIEW,
    &INSERT_COUNT,
    &INSERT_SKETCH,
    &SELECT_COUNTS,
    &SELECT_SKETCHES,
    &AGREE_SALT,
];

/// What the fake node answers to reads, set by each test.
#[derive(Default)]
struct Answers {
    /// `view_counts` rows: (day, views).
    counts: Vec<(i64, i64)>,
    /// `view_sketches` rows per day.
    sketches: BTreeMap<i64, Vec<Vec<u8>>>,
    /// The catalog, answered in two pages.
    catalog: Vec<(String, String)>,
    /// The salt a lightweight transaction finds already there (None: it applies).
    salt: Option<[u8; 16]>,
}

fn put_string(buf: &mut BytesMut, text: &str) {
    buf.put_u16(text.len() as u16);
    buf.put_slice(text.as_bytes());
}

/// A RESULT/PREPARED body: id, bind metadata (global table spec), no result metadata.
fn prepared_body(forged: &Forged) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0x0004);
    buf.put_u16(forged.id.len() as u16);
    buf.put_slice(forged.id);
    buf.put_i32(0x0001);
    buf.put_i32(forged.columns.len() as i32);
    buf.put_i32(forged.partition_key.len() as i32);
    for index in forged.partition_key {
        buf.put_u16(*index);
    }
    put_string(&mut buf, "video_server");
    put_string(&mut buf, forged.table);
    for (name, type_id) in forged.columns {
        put_string(&mut buf, name);
        buf.put_u16(*type_id);
    }
    buf.put_i32(0x0004);
    buf.put_i32(0);
    buf.freeze()
}

/// A RESULT/ROWS body with its metadata, and a paging state when more pages follow.
fn rows_body(
    table: &str,
    columns: &[(&str, u16)],
    rows: &[Vec<Option<Vec<u8>>>],
    paging_state: Option<&[u8]>,
) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0x0002);
    buf.put_i32(0x0001 | if paging_state.is_some() { 0x0002 } else { 0 });
    buf.put_i32(columns.len() as i32);
    if let Some(state) = paging_state {
        buf.put_i32(state.len() as i32);
        buf.put_slice(state);
    }
    put_string(&mut buf, "video_server");
    put_string(&mut buf, table);
    for (name, type_id) in columns {
        put_string(&mut buf, name);
        buf.put_u16(*type_id);
    }
    buf.put_i32(rows.len() as i32);
    for row in rows {
        for cell in row {
            match cell {
                Some(bytes) => {
                    buf.put_i32(bytes.len() as i32);
                    buf.put_slice(bytes);
                }
                None => buf.put_i32(-1),
            }
        }
    }
    buf.freeze()
}

fn cql_date(day: i64) -> Vec<u8> {
    ((1u32 << 31).wrapping_add_signed(day as i32))
        .to_be_bytes()
        .to_vec()
}

fn day_of(bytes: &[u8]) -> i64 {
    i64::from(u32::from_be_bytes(bytes.try_into().expect("a date"))) - (1i64 << 31)
}

fn bigint(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().expect("a bigint"))
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

fn execute_of(forged: &Forged) -> Condition {
    Condition::RequestOpcode(RequestOpcode::Execute).and(body_contains(forged.id))
}

/// The answers to reads, from `answers` as the test last set them; count reads are
/// reported on `feedback`.
fn read_rules(
    answers: &Arc<Mutex<Answers>>,
    feedback: &mpsc::UnboundedSender<(RequestFrame, Option<u16>)>,
) -> Vec<RequestRule> {
    let counts = Arc::clone(answers);
    let sketches = Arc::clone(answers);
    let salt = Arc::clone(answers);
    let page_one = Arc::clone(answers);
    let page_two = Arc::clone(answers);
    let catalog_columns: &[(&str, u16)] = &[("video_id", VARCHAR), ("document", VARCHAR)];
    let catalog_page = |videos: &[(String, String)]| -> Vec<Vec<Option<Vec<u8>>>> {
        videos
            .iter()
            .map(|(id, document)| {
                vec![
                    Some(id.as_bytes().to_vec()),
                    Some(document.as_bytes().to_vec()),
                ]
            })
            .collect()
    };
    vec![
        RequestRule(
            execute_of(&SELECT_COUNTS),
            forge(move |frame| {
                let from = day_of(&decode_execute(&frame).values[1]);
                let rows: Vec<Vec<Option<Vec<u8>>>> = counts
                    .lock()
                    .counts
                    .iter()
                    .filter(|(day, _)| *day >= from)
                    .map(|(day, views)| {
                        vec![Some(cql_date(*day)), Some(views.to_be_bytes().to_vec())]
                    })
                    .collect();
                result(
                    &frame,
                    rows_body(
                        "view_counts",
                        &[("day", DATE), ("views", BIGINT)],
                        &rows,
                        None,
                    ),
                )
            })
            .with_feedback_when_performed(feedback.clone()),
        ),
        RequestRule(
            execute_of(&SELECT_SKETCHES),
            forge(move |frame| {
                let day = day_of(&decode_execute(&frame).values[1]);
                let rows: Vec<Vec<Option<Vec<u8>>>> = sketches
                    .lock()
                    .sketches
                    .get(&day)
                    .map(|found| {
                        found
                            .iter()
                            .map(|bytes| vec![Some(bytes.clone())])
                            .collect()
                    })
                    .unwrap_or_default();
                result(
                    &frame,
                    rows_body("view_sketches", &[("sketch", BLOB)], &rows, None),
                )
            }),
        ),
        RequestRule(
            execute_of(&AGREE_SALT),
            forge(move |frame| {
                let values = decode_execute(&frame).values;
                let body = match salt.lock().salt {
                    None => rows_body(
                        "salts",
                        &[("[applied]", BOOLEAN)],
                        &[vec![Some(vec![1])]],
                        None,
                    ),
                    Some(kept) => rows_body(
                        "salts",
                        &[("[applied]", BOOLEAN), ("day", DATE), ("salt", BLOB)],
                        &[vec![
                            Some(vec![0]),
                            Some(values[0].clone()),
                            Some(kept.to_vec()),
                        ]],
                        None,
                    ),
                };
                result(&frame, body)
            }),
        ),
        // The catalog in two pages: the second is asked for with the first's paging state.
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Query).and(body_contains(b"PAGE-TWO")),
            forge(move |frame| {
                let catalog = &page_two.lock().catalog;
                let rows = catalog_page(&catalog[catalog.len() / 2..]);
                result(&frame, rows_body("videos", catalog_columns, &rows, None))
            }),
        ),
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Query)
                .and(body_contains(b"FROM video_server.videos")),
            forge(move |frame| {
                let catalog = &page_one.lock().catalog;
                let rows = catalog_page(&catalog[..catalog.len() / 2]);
                result(
                    &frame,
                    rows_body("videos", catalog_columns, &rows, Some(b"PAGE-TWO")),
                )
            }),
        ),
    ]
}

const INET: u16 = 0x0010;
const LIST: u16 = 0x0020;

/// The driver's topology queries, prepared like any statement.
const SYSTEM_PEERS: Forged = Forged {
    id: b"forged-system-peers",
    marker: b"FROM system.peers",
    table: "peers",
    columns: &[],
    partition_key: &[],
};
const SYSTEM_LOCAL: Forged = Forged {
    id: b"forged-system-local",
    marker: b"FROM system.local",
    table: "local",
    columns: &[],
    partition_key: &[],
};

/// `system.local` (this node) or `system.peers` (the others) of a forged cluster, as the
/// driver reads them: host id, address, datacenter, rack, tokens (and the cluster's name).
fn node_rows(topology: &Topology, local: bool) -> Bytes {
    let mut columns: Vec<(&str, &[u16])> = vec![
        ("host_id", &[UUID]),
        ("rpc_address", &[INET]),
        ("data_center", &[VARCHAR]),
        ("rack", &[VARCHAR]),
        ("tokens", &[LIST, VARCHAR]),
    ];
    if local {
        columns.push(("cluster_name", &[VARCHAR]));
    }
    let nodes: Vec<usize> = (0..topology.nodes.len())
        .filter(|at| (*at == topology.me) == local)
        .collect();
    let mut buf = BytesMut::new();
    buf.put_i32(0x0002);
    buf.put_i32(0x0001);
    buf.put_i32(columns.len() as i32);
    put_string(&mut buf, "system");
    put_string(&mut buf, if local { "local" } else { "peers" });
    for (name, types) in &columns {
        put_string(&mut buf, name);
        types.iter().for_each(|type_id| buf.put_u16(*type_id));
    }
    buf.put_i32(nodes.len() as i32);
    let cell = |buf: &mut BytesMut, bytes: &[u8]| {
        buf.put_i32(bytes.len() as i32);
        buf.put_slice(bytes);
    };
    for at in nodes {
        let (ip, host_id, token) = topology.nodes[at];
        cell(&mut buf, host_id.as_bytes());
        match ip {
            std::net::IpAddr::V4(ip) => cell(&mut buf, &ip.octets()),
            std::net::IpAddr::V6(ip) => cell(&mut buf, &ip.octets()),
        }
        cell(&mut buf, b"dc1");
        cell(&mut buf, b"rack1");
        let token = token.to_string();
        let mut list = BytesMut::new();
        list.put_i32(1);
        cell(&mut list, token.as_bytes());
        cell(&mut buf, &list);
        if local {
            cell(&mut buf, b"forged");
        }
    }
    buf.freeze()
}

/// Answers the driver's topology queries for a node of a forged cluster.
fn topology_rules(topology: &Topology) -> Vec<RequestRule> {
    let (local, peers) = (node_rows(topology, true), node_rows(topology, false));
    vec![
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Prepare)
                .and(body_contains(SYSTEM_PEERS.marker)),
            forge(|frame| result(&frame, prepared_body(&SYSTEM_PEERS))),
        ),
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Prepare)
                .and(body_contains(SYSTEM_LOCAL.marker)),
            forge(|frame| result(&frame, prepared_body(&SYSTEM_LOCAL))),
        ),
        RequestRule(
            execute_of(&SYSTEM_PEERS),
            forge(move |frame| result(&frame, peers.clone())),
        ),
        RequestRule(
            execute_of(&SYSTEM_LOCAL),
            forge(move |frame| result(&frame, local.clone())),
        ),
    ]
}

/// Handshake, schema, prepares and executes all answered successfully, reads from
/// `answers`; every frame is reported on `feedback`.
fn healthy_rules(
    feedback: &mpsc::UnboundedSender<(RequestFrame, Option<u16>)>,
    answers: &Arc<Mutex<Answers>>,
) -> Vec<RequestRule> {
    let fb = |reaction: RequestReaction| reaction.with_feedback_when_performed(feedback.clone());
    let mut rules = vec![
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
    ];
    rules.extend(read_rules(answers, feedback));
    rules.push(RequestRule(
        Condition::RequestOpcode(RequestOpcode::Query),
        fb(forge(|frame| void(&frame))),
    ));
    for forged in FORGED {
        rules.push(RequestRule(
            Condition::RequestOpcode(RequestOpcode::Prepare).and(body_contains(forged.marker)),
            fb(forge(move |frame| result(&frame, prepared_body(forged)))),
        ));
    }
    rules.push(RequestRule(
        Condition::or(
            Condition::RequestOpcode(RequestOpcode::Execute),
            Condition::RequestOpcode(RequestOpcode::Batch),
        ),
        fb(forge(|frame| void(&frame))),
    ));
    // Anything else would be silently dropped and hang the driver: refuse it loudly.
    rules.push(RequestRule(
        Condition::True,
        RequestReaction::forge().protocol_error(),
    ));
    rules
}

/// Where a fake node stands in a forged cluster: the nodes its `system.local` and
/// `system.peers` name (its own row first), so that the driver sees every one of them.
#[derive(Clone)]
struct Topology {
    /// Per node: address, host id, token.
    nodes: Vec<(std::net::IpAddr, uuid::Uuid, i64)>,
    me: usize,
}

struct FakeNode {
    runtime: tokio::runtime::Runtime,
    proxy: Option<RunningProxy>,
    /// Accepts the driver's connections at `address` (with TCP_NODELAY) and joins each to
    /// the proxy: the proxy's own sockets write a frame's header and body apart without
    /// it, so Nagle and delayed ACKs cost ~44 ms per forged response.
    relay: Option<tokio::task::JoinHandle<()>>,
    address: SocketAddr,
    feedback_tx: mpsc::UnboundedSender<(RequestFrame, Option<u16>)>,
    feedback: mpsc::UnboundedReceiver<(RequestFrame, Option<u16>)>,
    answers: Arc<Mutex<Answers>>,
    topology: Option<Topology>,
}

impl FakeNode {
    fn start() -> FakeNode {
        let address = SocketAddr::new(scylla_proxy::get_exclusive_local_address(), 9042);
        FakeNode::start_at(address, None)
    }

    /// A node at `address` (port 9042, where the driver looks for a cluster's nodes),
    /// answering for `topology` if it is one of a cluster's.
    fn start_at(address: SocketAddr, topology: Option<Topology>) -> FakeNode {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let (feedback_tx, feedback) = mpsc::unbounded_channel();
        let mut node = FakeNode {
            runtime,
            proxy: None,
            relay: None,
            address,
            feedback_tx,
            feedback,
            answers: Arc::new(Mutex::new(Answers::default())),
            topology,
        };
        let proxy_address = SocketAddr::new(address.ip(), 9043);
        let proxy = node
            .runtime
            .block_on(
                Proxy::builder()
                    .with_node(
                        Node::builder()
                            .proxy_address(proxy_address)
                            .request_rules(node.rules())
                            .build_dry_mode(),
                    )
                    .build()
                    .run(),
            )
            .expect("proxy runs");
        let transport = proxy.transport_factory();
        let listener = node
            .runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .expect("relay listens");
        node.relay = Some(node.runtime.spawn(async move {
            // Aborting the relay drops this set, and so every connection it relays.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut stream, peer)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let _ = stream.set_nodelay(true);
                let Ok(mut to_proxy) =
                    transport.connect(proxy_address, Some(peer.ip()), Some(peer.port()))
                else {
                    continue;
                };
                connections.spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut to_proxy).await;
                });
            }
        }));
        node.proxy = Some(proxy);
        node
    }

    /// The rules of a healthy node (and of its place in a cluster).
    fn rules(&self) -> Vec<RequestRule> {
        let mut rules = healthy_rules(&self.feedback_tx, &self.answers);
        if let Some(topology) = &self.topology {
            for (at, rule) in topology_rules(topology).into_iter().enumerate() {
                rules.insert(2 + at, rule);
            }
        }
        rules
    }

    /// Cuts every connection and refuses new ones, as a node that went down. (The proxy
    /// behind the relay is left idle: finishing it while connections close races inside
    /// scylla-proxy; dropping its runtime ends it.)
    fn go_down(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.abort();
            let _ = self.runtime.block_on(relay);
        }
    }

    fn set_rules(&mut self, rules: Vec<RequestRule>) {
        if let Some(proxy) = &mut self.proxy {
            proxy.running_nodes[0].change_request_rules(Some(rules));
        }
    }

    /// Answers the EXECUTEs of `statement` with `failure` (the first `times` of them, or
    /// every one); everything else as usual.
    fn fail(&mut self, statement: &Forged, failure: RequestReaction, times: Option<usize>) {
        let mut condition = execute_of(statement);
        if let Some(times) = times {
            condition = condition.and(Condition::TrueForLimitedTimes(times));
        }
        self.answer_first(
            condition,
            failure.with_feedback_when_performed(self.feedback_tx.clone()),
        );
    }

    /// Answers requests that meet `condition` with `reaction`, everything else as usual.
    fn answer_first(&mut self, condition: Condition, reaction: RequestReaction) {
        let mut rules = self.rules();
        rules.insert(2, RequestRule(condition, reaction));
        self.set_rules(rules);
    }

    /// Answers everything successfully but the view EXECUTEs of `video_id`, refused for
    /// good (an invalid request).
    fn refuse_video(&mut self, video_id: &str) {
        self.answer_first(
            execute_of(&INSERT_VIEW).and(body_contains(video_id.as_bytes())),
            RequestReaction::forge().invalid(),
        );
    }

    /// Answers everything successfully again.
    fn heal(&mut self) {
        let rules = self.rules();
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
            local_dc: None,
            tls: None,
        }
    }

    fn cluster(&self) -> Cluster {
        let cluster = Cluster::new(self.config()).expect("driver runtime");
        cluster
            .wait_until_connected(Duration::from_secs(10))
            .expect("connect to the fake node");
        cluster
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.go_down();
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
    // Protocol v4 query flags are one byte.
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

/// A BATCH frame, decoded: its type, per statement the prepared id and raw values, and
/// its consistency.
struct BatchFrame {
    kind: u8,
    statements: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    consistency: u16,
}

fn decode_batch(frame: &RequestFrame) -> BatchFrame {
    let body = &frame.body[..];
    let kind = body[0];
    let count = u16::from_be_bytes([body[1], body[2]]);
    let mut at = 3;
    let mut statements = Vec::new();
    for _ in 0..count {
        assert_eq!(body[at], 1, "a prepared statement");
        at += 1;
        let id_len = usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
        at += 2;
        let id = body[at..at + id_len].to_vec();
        at += id_len;
        let values_count = u16::from_be_bytes([body[at], body[at + 1]]);
        at += 2;
        let mut values = Vec::new();
        for _ in 0..values_count {
            let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            at += 4;
            let len = usize::try_from(len).expect("non-null value");
            values.push(body[at..at + len].to_vec());
            at += len;
        }
        statements.push((id, values));
    }
    let consistency = u16::from_be_bytes([body[at], body[at + 1]]);
    BatchFrame {
        kind,
        statements,
        consistency,
    }
}

fn long_string(frame: &RequestFrame) -> String {
    let body = &frame.body[..];
    let len = i32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
    String::from_utf8_lossy(&body[4..4 + len]).into_owned()
}

fn executes(frames: &[RequestFrame], statement: &Forged) -> Vec<Execute> {
    frames
        .iter()
        .filter(|frame| frame.opcode == RequestOpcode::Execute)
        .map(decode_execute)
        .filter(|execute| execute.id == statement.id)
        .collect()
}

/// A count row's key: (video, day, writer).
type Tally = (Vec<u8>, i64, Vec<u8>);

/// The count rows as the cluster would keep them: per (video, day, writer), the largest
/// total sent (the cell timestamp is the total, and the larger timestamp wins).
fn kept_counts(frames: &[RequestFrame]) -> BTreeMap<Tally, i64> {
    let mut kept: BTreeMap<Tally, i64> = BTreeMap::new();
    for row in executes(frames, &INSERT_COUNT) {
        let views = bigint(&row.values[3]);
        assert_eq!(bigint(&row.values[4]), views, "stamped with its own total");
        let slot = kept
            .entry((
                row.values[0].clone(),
                day_of(&row.values[1]),
                row.values[2].clone(),
            ))
            .or_default();
        *slot = (*slot).max(views);
    }
    kept
}

/// Likewise the sketches: per (video, day, writer), the one stamped with the largest total.
fn kept_sketches(frames: &[RequestFrame]) -> BTreeMap<Tally, (i64, Vec<u8>)> {
    let mut kept: BTreeMap<Tally, (i64, Vec<u8>)> = BTreeMap::new();
    for row in executes(frames, &INSERT_SKETCH) {
        let stamp = bigint(&row.values[4]);
        let slot = kept
            .entry((
                row.values[0].clone(),
                day_of(&row.values[1]),
                row.values[2].clone(),
            ))
            .or_insert((i64::MIN, Vec::new()));
        if stamp > slot.0 {
            *slot = (stamp, row.values[3].clone());
        }
    }
    kept
}

/// Quick retries; a backoff (50–200 ms) long enough that what a test looks at right after
/// a failure is not yet replayed by the replay worker.
fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_pause: Duration::from_millis(5),
        max_pause: Duration::from_millis(10),
        first_replay_backoff: Duration::from_millis(50),
        max_replay_backoff: Duration::from_millis(200),
        replay_flushes: 8,
        ..RetryPolicy::default()
    }
}

/// Longer than any backoff of [`quick_policy`].
const PAST_BACKOFF: Duration = Duration::from_millis(250);

fn resilient(node: &FakeNode, dir: &std::path::Path) -> (ResilientStore, Arc<Metrics>) {
    resilient_on(node.cluster(), dir, quick_policy())
}

fn resilient_on(
    cluster: Cluster,
    dir: &std::path::Path,
    policy: RetryPolicy,
) -> (ResilientStore, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(&["video"]).expect("metrics"));
    let remote = ScyllaViewStore::new(cluster);
    let outbox = Outbox::open(dir).expect("outbox");
    (
        ResilientStore::new(remote, outbox, Arc::clone(&metrics), policy).expect("store"),
        metrics,
    )
}

/// Waits until the replay worker has written both the views and the counts.
fn drain_all(store: &ResilientStore) {
    drain_outbox(store, Duration::from_secs(10));
    assert_eq!(store.outbox_depth(), 0);
    assert_eq!(store.outbox_pending_counts(), 0);
}

#[test]
fn statements_text_matches_the_forged_column_metadata() {
    let schema =
        schema_statements("video_server", &Replication::Simple { factor: 1 }, None).join("\n");
    let statements = [
        (&INSERT_VIEW, insert_view_cql("video_server")),
        (&INSERT_COUNT, insert_count_cql("video_server")),
        (&INSERT_SKETCH, insert_sketch_cql("video_server")),
        (&AGREE_SALT, agree_salt_cql("video_server")),
    ];
    for (forged, cql) in statements {
        assert!(
            cql.contains(std::str::from_utf8(forged.marker).expect("utf-8")),
            "{cql}"
        );
        let names: Vec<&str> = forged
            .columns
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !name.starts_with('['))
            .collect();
        assert!(cql.contains(&format!("({})", names.join(", "))), "{cql}");
        for name in names {
            assert!(
                schema.contains(&format!("    {name} ")),
                "schema lacks {name}"
            );
        }
    }
    for (forged, cql) in [
        (&SELECT_COUNTS, select_counts_cql("video_server")),
        (&SELECT_SKETCHES, select_sketches_cql("video_server")),
    ] {
        assert!(
            cql.contains(std::str::from_utf8(forged.marker).expect("utf-8")),
            "{cql}"
        );
        for (name, _) in forged.columns {
            assert!(cql.contains(&format!("{name} ")), "{cql} binds {name}");
        }
    }
}

#[test]
fn a_flush_sends_schema_prepares_view_rows_and_stamped_totals() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, _) = resilient(&node, dir.path());
    store.write_views(&seed_views(5, CLIENT_IP)).expect("write");
    let frames = node.frames();

    let queries: Vec<String> = frames
        .iter()
        .filter(|frame| frame.opcode == RequestOpcode::Query)
        .map(long_string)
        .collect();
    assert_eq!(
        queries,
        schema_statements("video_server", &Replication::Simple { factor: 1 }, None)
    );
    let prepares: HashSet<String> = frames
        .iter()
        .filter(|frame| frame.opcode == RequestOpcode::Prepare)
        .map(long_string)
        .collect();
    for cql in [
        insert_view_cql("video_server"),
        insert_count_cql("video_server"),
        insert_sketch_cql("video_server"),
    ] {
        assert!(prepares.contains(&cql), "{cql} not in {prepares:?}");
    }

    let rows = executes(&frames, &INSERT_VIEW);
    assert_eq!(rows.len(), 5);
    let ids: HashSet<Vec<u8>> = rows.iter().map(|row| row.values[4].clone()).collect();
    assert_eq!(ids.len(), 5, "every view row carries its own timeuuid");
    for row in &rows {
        assert_eq!(row.consistency, 0x0006, "LOCAL_QUORUM");
        assert_eq!(row.values[0], b"12345");
        assert_eq!(
            row.values[5],
            CLIENT_IP.as_bytes(),
            "the viewer as the writer got it"
        );
        let minute = bigint(&row.values[1]);
        let viewed_at = bigint(&row.values[6]);
        assert_eq!(minute, viewed_at - viewed_at % 60_000);
    }
    let counts = executes(&frames, &INSERT_COUNT);
    assert_eq!(counts.len(), 1, "one row per video and day");
    assert_eq!(counts[0].values[0], b"12345");
    assert_eq!(day_of(&counts[0].values[1]), utc_day(epoch_millis()));
    assert_eq!(counts[0].values[2], store.writer_id().as_bytes());
    assert_eq!(
        (bigint(&counts[0].values[3]), bigint(&counts[0].values[4])),
        (5, 5)
    );
    let sketches = executes(&frames, &INSERT_SKETCH);
    assert_eq!(sketches.len(), 1);
    let sketch = Sketch::from_bytes(&sketches[0].values[3]).expect("a sketch");
    assert_eq!(sketch.estimate(), 1, "one client");
    assert_eq!(bigint(&sketches[0].values[4]), 5);

    // The next flush reuses the session and the prepared statements, and carries the
    // running total.
    store
        .write_views(&seed_views(2, CLIENT_IP))
        .expect("write again");
    let frames = node.frames();
    assert!(
        frames.iter().all(|f| f.opcode == RequestOpcode::Execute),
        "re-prepared or re-created schema"
    );
    assert_eq!(
        kept_counts(&frames).into_values().collect::<Vec<_>>(),
        vec![7]
    );
}

#[test]
fn forged_failures_are_retried_spilled_and_replayed_without_duplicates() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient(&node, dir.path());

    // 1. One write timeout: the retry succeeds, nothing is spilled.
    node.fail(
        &INSERT_VIEW,
        RequestReaction::forge().write_timeout(),
        Some(1),
    );
    store.write_views(&seed_views(4, CLIENT_IP)).expect("write");
    assert_eq!(metrics.store_retries.get(), 1);
    assert_eq!(store.outbox_depth(), 0);
    let mut frames = node.frames();

    // 2. Overloaded on every view write: the batch is spilled after its retries.
    node.fail(&INSERT_VIEW, RequestReaction::forge().overloaded(), None);
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
    assert_eq!(
        store.outbox_pending_counts(),
        1,
        "one tally, its newest total"
    );

    // 3. Unavailable replicas: still spilled, never lost.
    node.fail(&INSERT_VIEW, RequestReaction::forge().unavailable(), None);
    poll_until(Duration::from_millis(300), || {
        store.maintain();
        (store.outbox_depth() != 9).then_some(())
    });
    assert_eq!(
        store.outbox_depth(),
        9,
        "replay into a failing cluster must not drop views"
    );
    // The proxy reports a forged answer after sending it: let the last reports of this
    // phase arrive before splitting the frames into phases.
    std::thread::sleep(Duration::from_millis(200));
    let failed = node.frames();
    let failed_rows: HashSet<Vec<u8>> = executes(&failed, &INSERT_VIEW)
        .into_iter()
        .map(|row| row.values[4].clone())
        .collect();
    frames.extend(failed);

    // 4. The cluster recovers: the outbox drains, each view under its original id.
    node.heal();
    drain_all(&store);
    assert_eq!(metrics.views_replayed.get(), 9);
    let replay = node.frames();
    let replayed = executes(&replay, &INSERT_VIEW);
    let replayed_ids: HashSet<Vec<u8>> = replayed.iter().map(|row| row.values[4].clone()).collect();
    // A replay attempt under way when the node healed may have sent some rows twice: the
    // same ids, so the same rows.
    assert!(replayed.len() >= 9, "{} rows replayed", replayed.len());
    assert_eq!(
        replayed_ids.len(),
        9,
        "each spilled view replayed under one id"
    );
    assert!(
        failed_rows.is_subset(&replayed_ids),
        "replay must reuse the ids of the failed attempts"
    );
    frames.extend(replay);
    let kept = kept_counts(&frames);
    assert_eq!(
        kept.values().sum::<i64>(),
        13,
        "4 + 6 + 3, each view once: {kept:?}"
    );
}

#[test]
fn a_failure_partway_through_a_flush_then_replay_counts_every_view_once() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, _) = resilient(&node, dir.path());
    let mut frames = Vec::new();
    // The view rows go through and the count write fails (every attempt): the flush is
    // kept, and its count with it.
    node.fail(
        &INSERT_COUNT,
        RequestReaction::forge().write_timeout(),
        None,
    );
    store.write_views(&seed_views(5, CLIENT_IP)).expect("kept");
    assert_eq!(store.outbox_depth(), 5);
    assert_eq!(store.outbox_pending_counts(), 1);
    frames.extend(node.frames());
    // A timed-out write may or may not have been applied: every attempt counts as sent
    // (kept_counts keeps the largest), which is the worst case for a double count.
    assert_eq!(
        executes(&frames, &INSERT_COUNT).len(),
        3,
        "the count write was tried three times"
    );
    // Then the sketch write alone fails once on replay, and one view row of the next
    // flush fails while its others go through (a flush partly written, then retried).
    node.fail(
        &INSERT_SKETCH,
        RequestReaction::forge().overloaded(),
        Some(1),
    );
    drain_all(&store);
    node.fail(
        &INSERT_VIEW,
        RequestReaction::forge().write_timeout(),
        Some(1),
    );
    store
        .write_views(&seed_views(4, CLIENT_IP))
        .expect("retried");
    node.heal();
    drain_all(&store);
    frames.extend(node.frames());
    let kept = kept_counts(&frames);
    assert_eq!(kept.values().sum::<i64>(), 9, "{kept:?}");
    let view_ids: HashSet<Vec<u8>> = executes(&frames, &INSERT_VIEW)
        .into_iter()
        .map(|row| row.values[4].clone())
        .collect();
    assert_eq!(
        view_ids.len(),
        9,
        "every view row written, under one id each"
    );
    let sketches = kept_sketches(&frames);
    assert_eq!(sketches.values().map(|(stamp, _)| *stamp).sum::<i64>(), 9);
}

#[test]
fn two_writers_on_one_store_count_apart_and_a_reader_sums_them() {
    let mut node = FakeNode::start();
    let (first_dir, second_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (mut first, _) = resilient(&node, first_dir.path());
    let (mut second, _) = resilient(&node, second_dir.path());
    assert_ne!(first.writer_id(), second.writer_id());
    // Interleaved batches; the second writer's first batch is replayed from its outbox
    // after a later one went straight through (an older total arrives last).
    first.write_views(&seed_views(3, CLIENT_IP)).expect("write");
    node.fail(&INSERT_VIEW, RequestReaction::forge().overloaded(), None);
    second
        .write_views(&seed_views(4, "198.51.100.1"))
        .expect("spilled");
    node.heal();
    std::thread::sleep(PAST_BACKOFF);
    second
        .write_views(&seed_views(2, CLIENT_IP))
        .expect("write");
    first.write_views(&seed_views(5, CLIENT_IP)).expect("write");
    drain_all(&second);
    let frames = node.frames();
    let kept = kept_counts(&frames);
    let per_writer: HashMap<Vec<u8>, i64> = kept
        .iter()
        .map(|((_, _, writer), views)| (writer.clone(), *views))
        .collect();
    assert_eq!(per_writer[&first.writer_id().as_bytes().to_vec()], 8);
    assert_eq!(per_writer[&second.writer_id().as_bytes().to_vec()], 6);

    // A server reading the store sums the writers' rows and merges their sketches.
    let today = utc_day(epoch_millis());
    {
        let mut answers = node.answers.lock();
        answers.counts = kept
            .iter()
            .map(|((_, day, _), views)| (*day, *views))
            .collect();
        answers.sketches.insert(
            today,
            kept_sketches(&frames)
                .into_values()
                .map(|(_, sketch)| sketch)
                .collect(),
        );
    }
    let mut reader = ScyllaCatalogStore::new(node.cluster());
    let counts = reader.view_counts("12345").expect("read counts");
    assert_eq!(counts.total, 14);
    assert_eq!(counts.days.len(), 1);
    assert_eq!(counts.days[0].day, today);
    assert_eq!(counts.days[0].views, 14);
    assert_eq!(
        counts.days[0].unique_viewers, 2,
        "two clients, merged across writers"
    );
}

#[test]
fn reads_of_an_empty_day_a_missing_sketch_and_a_paged_catalog() {
    let mut node = FakeNode::start();
    let mut reader = ScyllaCatalogStore::new(node.cluster());
    let today = utc_day(epoch_millis());

    // Nothing counted: zero, no days, no error.
    let counts = reader.view_counts("12345").expect("read");
    assert_eq!((counts.total, counts.days.len()), (0, 0));

    // Counts with no sketch written yet (a sketch write still failing): views, 0 uniques.
    node.answers.lock().counts = vec![(today - 3, 7), (today, 2), (today, 3)];
    let mut reader = ScyllaCatalogStore::new(node.cluster());
    let counts = reader.view_counts("12345").expect("read");
    assert_eq!(counts.total, 12);
    let days: Vec<(i64, u64, u64)> = counts
        .days
        .iter()
        .map(|day| (day.day - today, day.views, day.unique_viewers))
        .collect();
    assert_eq!(days, vec![(-3, 7, 0), (0, 5, 0)]);
    // Read again soon after: only yesterday and today are asked for, the rest is cached.
    node.frames();
    let again = reader.view_counts("12345").expect("read");
    assert_eq!(again.total, 12);
    let asked: Vec<i64> = executes(&node.frames(), &SELECT_COUNTS)
        .iter()
        .map(|read| day_of(&read.values[1]) - today)
        .collect();
    assert_eq!(asked, vec![-1], "from yesterday on");

    // The catalog comes in two pages; all of it is read.
    node.answers.lock().catalog = (0..5)
        .map(|i| {
            (
                format!("v{i}"),
                format!(r#"{{"videoId":"v{i}","title":"t","sources":[]}}"#),
            )
        })
        .collect();
    let videos = ScyllaCatalogStore::load_videos(&mut reader).expect("catalog");
    let ids: Vec<&str> = videos.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec!["v0", "v1", "v2", "v3", "v4"]);
}

#[test]
fn a_salt_is_the_one_the_lightweight_transaction_kept() {
    let node = FakeNode::start();
    let mut reader = ScyllaCatalogStore::new(node.cluster());
    let today = utc_day(epoch_millis());
    assert_eq!(reader.agree_salt(today, [1; 16]).expect("applied"), [1; 16]);
    node.answers.lock().salt = Some([9; 16]);
    assert_eq!(
        reader.agree_salt(today, [2; 16]).expect("not applied"),
        [9; 16],
        "another server's salt wins"
    );
}

#[test]
fn a_poison_flush_is_quarantined_while_later_flushes_replay() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient(&node, dir.path());
    node.fail(&INSERT_VIEW, RequestReaction::forge().overloaded(), None);
    store
        .write_views(&seed_views(3, CLIENT_IP))
        .expect("spilled");
    let poison: Vec<_> = seed_views(2, CLIENT_IP)
        .into_iter()
        .map(|mut view| {
            view.video_id = "poison-video";
            view
        })
        .collect();
    std::thread::sleep(Duration::from_millis(60));
    store.write_views(&poison).expect("spilled");
    std::thread::sleep(Duration::from_millis(60));
    store
        .write_views(&seed_views(4, CLIENT_IP))
        .expect("spilled");
    assert_eq!(store.outbox_depth(), 9);

    node.refuse_video("poison-video");
    drain_all(&store);
    assert_eq!(
        metrics.views_replayed.get(),
        7,
        "the flushes behind the poison replayed"
    );
    assert_eq!(metrics.outbox_quarantined.get(), 2);
    let frames = node.frames();
    let kept = kept_counts(&frames);
    // The totals count every accepted view (the poison's are safe in quarantine).
    assert_eq!(kept.values().sum::<i64>(), 9, "{kept:?}");
}

#[test]
fn unprepared_is_answered_by_repreparing_not_by_a_retry_or_the_outbox() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient(&node, dir.path());
    store.write_views(&seed_views(2, CLIENT_IP)).expect("write");
    node.frames();
    // The node forgot the statement (a restart, a schema change): the next execute of it
    // is answered UNPREPARED once.
    node.fail(&INSERT_VIEW, RequestReaction::forge().unprepared(), Some(1));
    store.write_views(&seed_views(5, CLIENT_IP)).expect("write");
    let frames = node.frames();
    let reprepared = frames
        .iter()
        .filter(|frame| frame.opcode == RequestOpcode::Prepare)
        .map(long_string)
        .filter(|cql| *cql == insert_view_cql("video_server"))
        .count();
    assert_eq!(reprepared, 1, "the driver prepared the statement again");
    let rows = executes(&frames, &INSERT_VIEW);
    let ids: HashSet<Vec<u8>> = rows.iter().map(|row| row.values[4].clone()).collect();
    assert_eq!(
        (rows.len(), ids.len()),
        (6, 5),
        "one view sent again, after repreparing"
    );
    assert_eq!(metrics.store_retries.get(), 0, "not one of our retries");
    assert_eq!(store.outbox_depth(), 0);
    assert_eq!(
        kept_counts(&frames).into_values().collect::<Vec<_>>(),
        vec![7]
    );
}

#[test]
fn writes_are_retried_in_one_place_ours_not_also_the_drivers() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient(&node, dir.path());
    // A write timeout of a batch-log write: the driver's default policy retries it on the
    // same node, so with it each of our attempts would send the view twice.
    let batch_log_timeout = scylla_cql::frame::response::error::DbError::WriteTimeout {
        consistency: scylla::statement::Consistency::LocalQuorum,
        received: 1,
        required: 2,
        write_type: scylla_cql::frame::response::error::WriteType::BatchLog,
    };
    node.fail(
        &INSERT_VIEW,
        RequestReaction::forge_with_error(batch_log_timeout),
        None,
    );
    store
        .write_views(&seed_views(1, CLIENT_IP))
        .expect("spilled");
    let sent = executes(&node.frames(), &INSERT_VIEW).len();
    assert_eq!(
        sent,
        quick_policy().attempts as usize,
        "one EXECUTE per attempt of ours"
    );
    assert_eq!(
        metrics.store_retries.get(),
        u64::from(quick_policy().attempts) - 1
    );
    assert_eq!(store.outbox_depth(), 1);
}

#[test]
fn rows_of_one_partition_go_in_one_unlogged_batch() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, _) = resilient(&node, dir.path());
    // 640 views in one flush: 64 shards of about 10 rows each (a minute boundary may split
    // some).
    store
        .write_views(&seed_views(640, CLIENT_IP))
        .expect("write");
    let frames = node.frames();
    let batches: Vec<BatchFrame> = frames
        .iter()
        .filter(|frame| frame.opcode == RequestOpcode::Batch)
        .map(decode_batch)
        .collect();
    let singles = executes(&frames, &INSERT_VIEW);
    let mut ids: HashSet<Vec<u8>> = singles.iter().map(|row| row.values[4].clone()).collect();
    for batch in &batches {
        assert_eq!(batch.kind, 1, "unlogged");
        let partition = |values: &Vec<Vec<u8>>| values[..4].to_vec();
        let first = partition(&batch.statements[0].1);
        for (id, values) in &batch.statements {
            assert_eq!(id, INSERT_VIEW.id);
            assert_eq!(partition(values), first, "one partition per batch");
            ids.insert(values[4].clone());
        }
    }
    let rows_sent = singles.len()
        + batches
            .iter()
            .map(|batch| batch.statements.len())
            .sum::<usize>();
    assert_eq!((rows_sent, ids.len()), (640, 640), "every view sent once");
    let requests = batches.len() + singles.len();
    assert!(
        (64..=130).contains(&requests),
        "{requests} requests for 640 rows in 64 shards"
    );
}

#[test]
fn a_permanent_error_keeps_the_batch_in_the_outbox() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient(&node, dir.path());
    node.fail(&INSERT_VIEW, RequestReaction::forge().syntax_error(), None);
    store.write_views(&seed_views(2, CLIENT_IP)).expect("kept");
    assert_eq!(metrics.views_spilled.get(), 2, "kept in the outbox");
    assert_eq!(
        metrics.store_retries.get(),
        0,
        "a syntax error is not retried"
    );
    // The replay worker finds it refused for good too: quarantined, not replayed forever.
    let quarantined = poll_until(Duration::from_secs(5), || {
        (metrics.outbox_quarantined.get() == 2).then_some(())
    });
    assert!(quarantined.is_some(), "never quarantined");
    assert_eq!(store.outbox_depth(), 0);
}

#[test]
fn a_node_that_goes_away_is_survived() {
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient(&node, dir.path());
    store.write_views(&seed_views(2, CLIENT_IP)).expect("write");
    assert_eq!(store.outbox_depth(), 0);
    // Node down: connections refused.
    node.go_down();
    store
        .write_views(&seed_views(3, CLIENT_IP))
        .expect("spilled");
    assert_eq!(store.outbox_depth(), 3);
    assert!(metrics.store_errors.get() >= 1);
}

#[test]
fn a_missing_table_says_what_to_run_and_the_views_wait_for_it() {
    let mut node = FakeNode::start();
    // The cluster has no view_log table: its PREPARE is refused as a real node refuses it.
    let mut rules = healthy_rules(&node.feedback_tx, &node.answers);
    rules.insert(
        2,
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Prepare).and(body_contains(INSERT_VIEW.marker)),
            RequestReaction::forge_with_error_and_message(
                scylla_cql::frame::response::error::DbError::Invalid,
                Some("unconfigured table view_log".into()),
            ),
        ),
    );
    node.set_rules(rules);
    let flush = Flush {
        id: uuid::Uuid::now_v1(&[1, 2, 3, 4, 5, 6]),
        views: vec![PendingView {
            id: uuid::Uuid::now_v1(&[1, 2, 3, 4, 5, 6]),
            video_id: "12345".into(),
            viewer: video_server::viewer::Viewer::Address(CLIENT_IP.parse().expect("ip")),
            timestamp_ms: epoch_millis(),
        }],
        counts: Vec::new(),
    };
    let mut remote = ScyllaViewStore::new(node.cluster());
    let error = remote.write_flush(&flush).expect_err("no table");
    assert!(
        !error.is_retriable(),
        "retrying at once cannot help: {error}"
    );
    let message = error.to_string();
    for needed in [
        "unconfigured table view_log",
        "scripts/schema.cql",
        "--scylla-create-schema",
    ] {
        assert!(
            message.contains(needed),
            "{needed:?} missing from: {message}"
        );
    }

    // Through the resilient store: kept in the outbox, not retried; written once the
    // table exists.
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient(&node, dir.path());
    store.write_views(&seed_views(2, CLIENT_IP)).expect("kept");
    assert_eq!(store.outbox_depth(), 2);
    assert_eq!(metrics.store_retries.get(), 0);
    node.heal();
    drain_outbox(&store, Duration::from_secs(10));
    assert_eq!(store.outbox_depth(), 0);
    remote.write_flush(&flush).expect("the table exists now");
}

#[test]
fn a_local_datacenter_is_the_sessions_load_balancing() {
    let node = FakeNode::start();
    let policy_of = |cluster: &Cluster| {
        let session = cluster.session(Duration::from_secs(10)).expect("session");
        let profile = session.get_default_execution_profile_handle().to_profile();
        format!("{:?}", profile.get_load_balancing_policy())
    };
    // The driver's default: any node, no datacenter preferred.
    let default = policy_of(&node.cluster());
    assert!(default.contains("preferences: None"), "{default}");

    let mut config = node.config();
    config.local_dc = Some("dc-east".into());
    // A dry node tells no topology, so no node is known to be in dc-east and a statement
    // would find none to go to: the schema is not created here (the real-cluster suite
    // writes through a local datacenter).
    config.create_schema = false;
    let cluster = Cluster::new(config).expect("driver runtime");
    let local = policy_of(&cluster);
    assert!(
        local.contains(r#"preferences: Some(Datacenter("dc-east"))"#),
        "{local}"
    );
    assert!(local.contains("is_token_aware: true"), "{local}");
    assert!(local.contains("permit_dc_failover: false"), "{local}");
}

/// Every view row sent, alone (EXECUTE) or in a batch: its bound values and the
/// consistency it was sent at.
fn view_rows(frames: &[RequestFrame]) -> Vec<(Vec<Vec<u8>>, u16)> {
    let mut rows: Vec<(Vec<Vec<u8>>, u16)> = executes(frames, &INSERT_VIEW)
        .into_iter()
        .map(|row| (row.values, row.consistency))
        .collect();
    for batch in frames
        .iter()
        .filter(|frame| frame.opcode == RequestOpcode::Batch)
        .map(decode_batch)
    {
        rows.extend(
            batch
                .statements
                .into_iter()
                .filter(|(id, _)| id == INSERT_VIEW.id)
                .map(|(_, values)| (values, batch.consistency)),
        );
    }
    rows
}

/// Writes of this crate's statements (not the driver's topology queries).
fn our_writes() -> Condition {
    Condition::or(
        Condition::RequestOpcode(RequestOpcode::Execute),
        Condition::RequestOpcode(RequestOpcode::Batch),
    )
    .and(Condition::not(body_contains(b"forged-system")))
}

/// A void result after `delay`: a node that answers, slowly.
fn slow_void(delay: Duration) -> RequestReaction {
    RequestReaction::forge_response_with_delay(delay, Arc::new(|frame| void(&frame)))
}

/// `count` views of `video_id` by `client_ip`, stamped now.
fn views_of(video_id: &'static str, count: usize) -> Vec<video_server::store::ViewRecord<'static>> {
    let mut views = seed_views(count, CLIENT_IP);
    views.iter_mut().for_each(|view| view.video_id = video_id);
    views
}

#[test]
fn live_batches_reach_the_node_while_a_long_outbox_replays_slowly() {
    const BACKLOG_FLUSHES: usize = 30;
    const SLOW: Duration = Duration::from_millis(100);
    let mut node = FakeNode::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = RetryPolicy {
        replay_views_per_second: None,
        ..quick_policy()
    };
    let (mut store, metrics) = resilient_on(node.cluster(), dir.path(), policy);
    // A backlog: 30 flushes of another video kept while the node was overloaded.
    node.answer_first(
        Condition::or(
            Condition::RequestOpcode(RequestOpcode::Execute),
            Condition::RequestOpcode(RequestOpcode::Batch),
        ),
        RequestReaction::forge().overloaded(),
    );
    for _ in 0..BACKLOG_FLUSHES {
        store
            .write_views(&views_of("backlog", 20))
            .expect("spilled");
    }
    assert_eq!(store.outbox_depth(), 20 * BACKLOG_FLUSHES as u64);
    // The node answers again: every write of the backlog takes 100 ms, live ones none.
    node.answer_first(
        our_writes().and(body_contains(b"backlog")),
        slow_void(SLOW).with_feedback_when_performed(node.feedback_tx.clone()),
    );
    let replaying = poll_until(Duration::from_secs(5), || {
        (metrics.views_replayed.get() > 0).then_some(())
    });
    assert!(replaying.is_some(), "replay never started");

    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        assert_eq!(
            store.write_views(&seed_views(5, CLIENT_IP)).expect("live"),
            video_server::store::Persisted::CountedRemotely
        );
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest of 20 live batches while the outbox replayed: {slowest:?}");
    assert!(
        slowest < SLOW / 2,
        "a live batch took {slowest:?}: it waited behind a replayed flush"
    );
    let left = store.outbox_depth();
    assert!(
        left > 0,
        "live batches went first, the outbox still replays"
    );
    assert_eq!(
        metrics.views_spilled.get(),
        20 * BACKLOG_FLUSHES as u64,
        "no live view went to the outbox"
    );

    // Stopping is prompt (one 100 ms write at most) and loses nothing: what was not
    // replayed is still in the outbox, and the next process replays it.
    let stopping = std::time::Instant::now();
    drop(store);
    let took = stopping.elapsed();
    assert!(took < SLOW * 4, "stopping took {took:?}");
    let kept = Outbox::open(dir.path()).expect("outbox").depth();
    assert!(kept > 0);
    assert_eq!(
        kept + metrics.views_replayed.get(),
        20 * BACKLOG_FLUSHES as u64
    );
    node.heal();
    let (store, _) = resilient_on(node.cluster(), dir.path(), quick_policy());
    drain_all(&store);

    let frames = node.frames();
    let ids: HashSet<Vec<u8>> = view_rows(&frames)
        .into_iter()
        .map(|(values, _)| values[4].clone())
        .collect();
    assert_eq!(
        ids.len(),
        20 * BACKLOG_FLUSHES + 100,
        "every view, under one id"
    );
    let kept = kept_counts(&frames);
    assert_eq!(
        kept.values().sum::<i64>(),
        (20 * BACKLOG_FLUSHES + 100) as i64,
        "{kept:?}"
    );
}

/// A forged three-node cluster as the driver sees it: each node at an address of its own
/// with its own token, `system.peers` naming the other two. `up[i]` says whether node `i`
/// runs (a node that does not refuses connections, as a node that is down).
struct ForgedCluster {
    nodes: Vec<Option<FakeNode>>,
}

impl ForgedCluster {
    fn start(up: [bool; 3]) -> ForgedCluster {
        let addresses: Vec<SocketAddr> = (0..3)
            .map(|_| SocketAddr::new(scylla_proxy::get_exclusive_local_address(), 9042))
            .collect();
        let topology: Vec<(std::net::IpAddr, uuid::Uuid, i64)> = addresses
            .iter()
            .zip([i64::MIN / 3 * 2, 0, i64::MAX / 3 * 2])
            .map(|(address, token)| (address.ip(), uuid::Uuid::new_v4(), token))
            .collect();
        let nodes = addresses
            .iter()
            .enumerate()
            .map(|(me, address)| {
                up[me].then(|| {
                    let place = Topology {
                        nodes: topology.clone(),
                        me,
                    };
                    FakeNode::start_at(*address, Some(place))
                })
            })
            .collect();
        ForgedCluster { nodes }
    }

    fn node(&mut self, at: usize) -> &mut FakeNode {
        self.nodes[at].as_mut().expect("a running node")
    }

    /// A session through node 0 (the contact point), once the driver knows all three
    /// nodes and is connected to those that run; replication 3 and LOCAL_QUORUM, as in
    /// production.
    fn cluster(&mut self) -> Cluster {
        let mut config = self.node(0).config();
        config.replication = Replication::Simple { factor: 3 };
        let cluster = Cluster::new(config).expect("driver runtime");
        let session = cluster
            .session(Duration::from_secs(10))
            .expect("connect through node 0");
        let running: Vec<bool> = self.nodes.iter().map(Option::is_some).collect();
        let addresses: Vec<Option<std::net::IpAddr>> = self
            .nodes
            .iter()
            .map(|node| node.as_ref().map(|node| node.address.ip()))
            .collect();
        let seen = poll_until(Duration::from_secs(10), || {
            let nodes = session.get_cluster_state().get_nodes_info().to_vec();
            let connected = nodes.iter().filter(|node| node.is_connected()).count();
            (nodes.len() == 3 && connected == running.iter().filter(|up| **up).count())
                .then_some(nodes)
        })
        .expect("the driver learnt the three nodes and connected to those that run");
        for node in seen {
            let ip = node.address.ip();
            let at = addresses.iter().position(|address| *address == Some(ip));
            assert_eq!(node.is_connected(), at.is_some(), "{ip}");
        }
        cluster
    }

    /// Every frame each running node received so far.
    fn frames(&mut self) -> Vec<Vec<RequestFrame>> {
        self.nodes
            .iter_mut()
            .map(|node| node.as_mut().map(FakeNode::frames).unwrap_or_default())
            .collect()
    }
}

#[test]
fn three_nodes_one_down_one_slow_write_every_view_once_without_spilling() {
    const SLOW: Duration = Duration::from_millis(150);
    let mut forged = ForgedCluster::start([true, false, true]);
    let feedback = forged.node(2).feedback_tx.clone();
    forged.node(2).answer_first(
        our_writes(),
        slow_void(SLOW).with_feedback_when_performed(feedback),
    );
    let cluster = forged.cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = RetryPolicy {
        flushes_in_flight: 8,
        ..quick_policy()
    };
    let (mut store, metrics) = resilient_on(cluster, dir.path(), policy);
    store
        .write_views(&seed_views(1, CLIENT_IP))
        .expect("first write prepares");

    // One flush at a time: a flush is three round trips one after the other (its view
    // rows, then its count row, then its sketch row), each waiting for the slow node at
    // most once, never for the down one (the driver plans around it) nor for a retry.
    let sequential = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        let started = std::time::Instant::now();
        store
            .write_views(&seed_views(40, CLIENT_IP))
            .expect("write");
        slowest = slowest.max(started.elapsed());
    }
    let one_flush = sequential.elapsed() / 6;
    // Three slow answers and a busy machine's scheduling; waiting on the down node or a
    // retry would add seconds (the connect and request timeouts) or another slow answer
    // and our pause.
    assert!(
        slowest < SLOW * 3 + Duration::from_millis(350),
        "a flush took {slowest:?} with one node {SLOW:?} slow"
    );
    // Eight flushes in flight together take about one flush's time, not eight.
    let started = std::time::Instant::now();
    let mut tickets: HashSet<u64> = (0..8)
        .map(|_| {
            match store
                .submit_views(&seed_views(40, CLIENT_IP))
                .expect("taken")
            {
                video_server::store::Persisted::InFlight(ticket) => ticket,
                other => panic!("not in flight: {other:?}"),
            }
        })
        .collect();
    while !tickets.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "never settled");
        for done in store.settled(Duration::from_millis(10)) {
            assert_eq!(
                done.outcome.expect("settled"),
                video_server::store::Persisted::CountedRemotely
            );
            tickets.remove(&done.ticket);
        }
    }
    let together = started.elapsed();
    eprintln!("one node down, one {SLOW:?} slow: slowest flush {slowest:?}, one flush {one_flush:?} on average, 8 in flight {together:?}");
    assert!(
        together < one_flush * 4,
        "8 flushes in flight took {together:?}, one alone {one_flush:?}"
    );

    assert_eq!(metrics.views_spilled.get(), 0, "no flush spilled");
    assert_eq!(metrics.store_errors.get(), 0);
    let frames = forged.frames();
    let total = 1 + 6 * 40 + 8 * 40;
    let mut ids = HashSet::new();
    let mut sent = 0;
    for (at, frames) in [(0, &frames[0]), (2, &frames[2])] {
        let rows = view_rows(frames);
        assert!(!rows.is_empty(), "node {at} took no view rows");
        for (values, consistency) in rows {
            assert_eq!(consistency, 0x0006, "LOCAL_QUORUM");
            ids.insert(values[4].clone());
            sent += 1;
        }
    }
    assert_eq!((sent, ids.len()), (total, total), "every view sent once");
    let kept = kept_counts(&frames.concat());
    assert_eq!(kept.values().sum::<i64>(), total as i64, "{kept:?}");
}

#[test]
fn three_nodes_without_a_quorum_spill_then_replay_with_counts_exact() {
    let mut forged = ForgedCluster::start([true, true, true]);
    let cluster = forged.cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, metrics) = resilient_on(cluster, dir.path(), quick_policy());
    store
        .write_views(&seed_views(20, CLIENT_IP))
        .expect("write");
    // One node down: two replicas of three still make LOCAL_QUORUM.
    forged.node(1).go_down();
    store
        .write_views(&seed_views(20, CLIENT_IP))
        .expect("write");
    assert_eq!(metrics.views_spilled.get(), 0, "a quorum was there");
    // A second node down: the last one, coordinating, finds one replica of three alive
    // and answers UNAVAILABLE, as a real coordinator does for LOCAL_QUORUM.
    forged.node(2).go_down();
    let feedback = forged.node(0).feedback_tx.clone();
    forged.node(0).answer_first(
        our_writes(),
        RequestReaction::forge()
            .unavailable()
            .with_feedback_when_performed(feedback),
    );
    for _ in 0..3 {
        store
            .write_views(&seed_views(10, CLIENT_IP))
            .expect("spilled");
    }
    assert_eq!(metrics.views_spilled.get(), 30);
    assert!(store.outbox_depth() + metrics.views_replayed.get() == 30);
    // A replica is back: the outbox replays, and every view is counted once.
    forged.node(0).heal();
    drain_all(&store);
    assert_eq!(metrics.views_replayed.get(), 30);
    let frames = forged.frames().concat();
    let ids: HashSet<Vec<u8>> = view_rows(&frames)
        .into_iter()
        .map(|(values, _)| values[4].clone())
        .collect();
    assert_eq!(ids.len(), 70, "every view, under one id");
    let kept = kept_counts(&frames);
    assert_eq!(kept.values().sum::<i64>(), 70, "{kept:?}");
}
