//! `--store scylla` with the cluster unreachable: the server starts, serves every endpoint,
//! and keeps every view in the local outbox, across a restart.

mod common;

use std::time::Duration;

use common::{poll_value, Server, CONTRACT_BODY};

/// Port 1 on loopback refuses connections at once: an unreachable cluster.
const UNREACHABLE: [&str; 4] = ["--store", "scylla", "--scylla-nodes", "127.0.0.1:1"];

fn outbox_rows(data_dir: &std::path::Path) -> i64 {
    let connection = rusqlite::Connection::open(data_dir.join("outbox.sqlite3")).expect("outbox");
    connection
        .query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))
        .expect("count")
}

/// Polls a metric until it is `expected` or 15 s pass; the last value read.
fn wait_for_metric(server: &Server, name: &str, expected: f64) -> f64 {
    poll_value(
        Duration::from_secs(15),
        || server.metric(name),
        |&value| value == expected,
    )
}

#[test]
fn an_unreachable_cluster_keeps_every_view_in_the_outbox() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(data.path(), &UNREACHABLE);
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.post_token(CONTRACT_BODY).status, 200);
    let mut client = server.connect();
    for _ in 0..40 {
        client.send_request("GET", "/video/12345", &[], None);
        assert_eq!(client.read_response().status, 200);
    }
    assert_eq!(wait_for_metric(&server, "outbox_depth", 40.0), 40.0);
    assert_eq!(server.metric("views_spilled_total"), 40.0);
    assert_eq!(server.metric("views_dropped_total"), 0.0);
    assert_eq!(server.metric("views_replayed_total"), 0.0);
    assert!(server.metric("store_errors_total") >= 1.0);
    drop(client);
    assert!(server.terminate().success(), "{}", server.log());
    assert_eq!(outbox_rows(data.path()), 40);

    // The next start finds the outbox and keeps it until the cluster answers.
    let mut server = Server::start_in(data.path(), &UNREACHABLE);
    assert_eq!(server.metric("outbox_depth"), 40.0);
    assert!(
        server.log().contains("outbox holds views"),
        "{}",
        server.log()
    );
    server.get("/video/12345");
    assert_eq!(wait_for_metric(&server, "outbox_depth", 41.0), 41.0);
    assert!(server.terminate().success());
    assert_eq!(outbox_rows(data.path()), 41);
}
