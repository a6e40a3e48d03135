//! For the tests that drive the view stores directly, without a server (`scylla_dry`,
//! `scylla_cluster`): views of the seed video, and an outbox replayed until it drains.

use std::sync::Arc;
use std::time::Duration;

use video_server::store::{RemoteViewStore, ResilientStore, ViewStore};
use video_server::video::{parse_stored_video, CatalogEntry, SEED_VIDEO_JSON};
use video_server::views::ViewEvent;

use super::poll_until;

/// `count` views of the seed video (12345) by `client_ip`, stamped now.
pub fn seed_views(count: usize, client_ip: &str) -> Vec<ViewEvent> {
    let video = parse_stored_video(SEED_VIDEO_JSON.as_bytes()).expect("seed");
    let entry = Arc::new(CatalogEntry::new(&video, 0));
    let client_ip = client_ip.parse().expect("ip");
    (0..count)
        .map(|_| ViewEvent::now(Arc::clone(&entry), client_ip))
        .collect()
}

/// Calls `maintain` (which replays the outbox) until the outbox is empty or `timeout`
/// passes; the caller asserts the depth it expects.
pub fn drain_outbox<R: RemoteViewStore>(store: &mut ResilientStore<R>, timeout: Duration) {
    poll_until(timeout, || {
        if store.outbox_depth() == 0 {
            return Some(());
        }
        store.maintain();
        None
    });
}
