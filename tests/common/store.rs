//! For the tests that drive the view stores directly, without a server (`scylla_dry`,
//! `scylla_cluster`): views of the seed video, and waiting for an outbox to drain; and,
//! for the real-cluster suites, `scripts/cql-up.sh` to stop and start nodes.

use std::time::Duration;

use video_server::store::{epoch_millis, ResilientStore, ViewRecord};
use video_server::viewer::Viewer;

use super::poll_until;

/// `count` views of the seed video (12345) by `client_ip`, stamped now.
pub fn seed_views(count: usize, client_ip: &str) -> Vec<ViewRecord<'static>> {
    let view = ViewRecord {
        video_id: "12345",
        viewer: Viewer::Address(client_ip.parse().expect("ip")),
        timestamp_ms: epoch_millis(),
    };
    vec![view; count]
}

/// Waits until the store's replay worker has emptied the outbox (views and count rows) or
/// `timeout` passes; the caller asserts the depth it expects.
pub fn drain_outbox(store: &ResilientStore, timeout: Duration) {
    poll_until(timeout, || {
        (store.outbox_depth() == 0 && store.outbox_pending_counts() == 0).then_some(())
    });
}

/// Runs `scripts/cql-up.sh` with `args` (`stop 3`, `restart 1`…), failing the test if it
/// fails.
pub fn cql_up(args: &[&str]) {
    let status = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cql-up.sh"))
        .args(args)
        .status()
        .expect("run scripts/cql-up.sh");
    assert!(status.success(), "scripts/cql-up.sh {args:?} failed");
}
