//! TLS to the cluster, against a real TLS endpoint: Apache Cassandra started by
//! `CQL_TLS=1 scripts/cql-up.sh up 1` speaks TLS only on its CQL port and requires a client
//! certificate signed by the throwaway CA it made in `$CQL_TLS_DIR`.
//!
//! - with the CA and the client certificate, the server (the binary, with the flags)
//!   writes views and serves their count from the cluster;
//! - without `--scylla-tls-ca` (a plain connection to the TLS port) the connection is
//!   refused, and the server keeps serving with every view in its outbox;
//! - with another CA the server refuses the node's certificate, and without a client
//!   certificate the node refuses the server: no session either way.
//!
//! ```sh
//! eval "$(CQL_TLS=1 scripts/cql-up.sh up 1)"     # prints SCYLLA_URI and CQL_TLS_DIR
//! cargo test --test scylla_tls -- --ignored
//! scripts/cql-up.sh down
//! ```
//!
//! Without `CQL_TLS_DIR` every test says SKIPPED, loudly (and fails under CI, which starts
//! the TLS node). Each test writes to a keyspace of its own; `down` removes the cluster.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{poll_value, Server};
use video_server::store::scylla::{Cluster, Replication, ScyllaConfig, TlsFiles};
use video_server::store::StoreError;

const NEEDS_TLS: &str = "needs a TLS node: eval \"$(CQL_TLS=1 scripts/cql-up.sh up 1)\"; cargo test --test scylla_tls -- --ignored";

/// The certificates `scripts/cql-up.sh` made, or `None` (after a loud notice) without a
/// TLS node.
fn tls_dir() -> Option<PathBuf> {
    match std::env::var_os("CQL_TLS_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!("\n*** SKIPPED: this test {NEEDS_TLS} ***\n");
            assert!(
                std::env::var_os("CI").is_none(),
                "CI starts a TLS node for this suite and must set CQL_TLS_DIR"
            );
            None
        }
    }
}

fn node() -> String {
    std::env::var("SCYLLA_URI")
        .ok()
        .and_then(|uri| uri.split(',').next().map(str::to_owned))
        .unwrap_or_else(|| "127.0.0.1:9042".into())
}

fn keyspace() -> String {
    format!("video_server_tls_{:08x}", fastrand::u32(..))
}

fn path(dir: &std::path::Path, name: &str) -> String {
    dir.join(name).to_str().expect("utf-8 path").to_owned()
}

/// The outcome of one connection attempt with these TLS settings.
fn connect(tls: Option<TlsFiles>) -> Result<(), StoreError> {
    let config = ScyllaConfig {
        nodes: vec![node()],
        keyspace: keyspace(),
        replication: Replication::Simple { factor: 1 },
        write_consistency: scylla::statement::Consistency::One,
        read_consistency: scylla::statement::Consistency::One,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        credentials: None,
        view_ttl: None,
        max_in_flight: 16,
        create_schema: true,
        local_dc: None,
        tls: tls.map(|files| files.client_config().expect("TLS files")),
    };
    let cluster = Cluster::new(config).expect("driver runtime");
    // One attempt, waited for whole: it fails at the handshake, long before the timeout.
    cluster.session(Duration::from_secs(15)).map(|_| ())
}

#[test]
#[ignore = "needs a TLS node: eval \"$(CQL_TLS=1 scripts/cql-up.sh up 1)\"; cargo test --test scylla_tls -- --ignored"]
fn with_the_ca_and_a_client_certificate_views_are_written_and_counted() {
    let Some(dir) = tls_dir() else { return };
    let keyspace = keyspace();
    let (ca, cert, key) = (
        path(&dir, "ca.pem"),
        path(&dir, "client.pem"),
        path(&dir, "client-key.pem"),
    );
    let node = node();
    let server = Server::start(&[
        "--store",
        "scylla",
        "--scylla-nodes",
        &node,
        "--scylla-keyspace",
        &keyspace,
        "--scylla-write-consistency",
        "one",
        "--scylla-read-consistency",
        "one",
        "--scylla-tls-ca",
        &ca,
        "--scylla-tls-cert",
        &cert,
        "--scylla-tls-key",
        &key,
        "--views-cache-ms",
        "50",
    ]);
    let mut client = server.connect();
    for _ in 0..12 {
        client.send_request("GET", "/video/12345", &[], None);
        assert_eq!(client.read_response().status, 200);
    }
    let views = poll_value(
        Duration::from_secs(30),
        || server.views("12345"),
        |&views| views >= 12,
    );
    assert_eq!(views, 12, "{}", server.log());
    assert_eq!(server.metric("outbox_depth"), 0.0, "{}", server.log());
    assert_eq!(
        server.metric("views_spilled_total"),
        0.0,
        "{}",
        server.log()
    );
}

#[test]
#[ignore = "needs a TLS node: eval \"$(CQL_TLS=1 scripts/cql-up.sh up 1)\"; cargo test --test scylla_tls -- --ignored"]
fn without_the_ca_the_connection_is_refused_and_views_wait_in_the_outbox() {
    let Some(_dir) = tls_dir() else { return };
    let refused = connect(None).expect_err("a plain connection to a TLS-only port");
    assert!(
        matches!(refused, StoreError::Unreachable { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("--scylla-tls-ca"),
        "a reset plain connection suggests TLS: {refused}"
    );

    let keyspace = keyspace();
    let node = node();
    let server = Server::start(&[
        "--store",
        "scylla",
        "--scylla-nodes",
        &node,
        "--scylla-keyspace",
        &keyspace,
    ]);
    assert_eq!(server.get("/healthz").status, 200);
    let mut client = server.connect();
    for _ in 0..8 {
        client.send_request("GET", "/video/12345", &[], None);
        assert_eq!(client.read_response().status, 200);
    }
    let depth = poll_value(
        Duration::from_secs(15),
        || server.metric("outbox_depth"),
        |&depth| depth == 8.0,
    );
    assert_eq!(depth, 8.0, "{}", server.log());
    assert!(server.metric("store_errors_total") >= 1.0);
    assert_eq!(server.get("/video/12345").status, 200, "still serving");
}

#[test]
#[ignore = "needs a TLS node: eval \"$(CQL_TLS=1 scripts/cql-up.sh up 1)\"; cargo test --test scylla_tls -- --ignored"]
fn another_ca_or_no_client_certificate_is_refused_at_the_handshake() {
    let Some(dir) = tls_dir() else { return };
    let client = Some((dir.join("client.pem"), dir.join("client-key.pem")));
    // The node's certificate is not signed by this CA: the server refuses it.
    let untrusted = connect(Some(TlsFiles {
        ca: dir.join("other-ca.pem"),
        client: client.clone(),
    }))
    .expect_err("a node certificate signed by another CA");
    assert!(
        untrusted.to_string().contains("certificate"),
        "the error should name the certificate: {untrusted}"
    );
    // The node requires a client certificate: it refuses a server without one.
    let anonymous = connect(Some(TlsFiles {
        ca: dir.join("ca.pem"),
        client: None,
    }))
    .expect_err("no client certificate");
    assert!(
        matches!(anonymous, StoreError::Unreachable { .. }),
        "{anonymous}"
    );
    // The same files with the client certificate connect: the refusals above are the
    // certificates', not the node's.
    connect(Some(TlsFiles {
        ca: dir.join("ca.pem"),
        client,
    }))
    .expect("the right CA and a client certificate");
}
