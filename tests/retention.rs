//! `--view-retention-days`: the embedded store deletes raw view rows past the window while
//! the server runs, keeps the recent ones, answers every count as before, and goes on
//! recording views meanwhile.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{poll_value, Server};
use video_server::store::{epoch_millis, utc_day, EmbeddedStore, ViewRecord, ViewStore};
use video_server::viewer::Viewer;

const DAY_MS: i64 = 86_400_000;

fn open_database(data_dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data_dir.join("video-server.sqlite3")).expect("open the store")
}

/// Raw view rows stamped before `before_ms`, and in all.
fn raw_rows(data_dir: &Path, before_ms: i64) -> (i64, i64) {
    open_database(data_dir)
        .query_row(
            "SELECT COUNT(*) FILTER (WHERE timestamp_ms < ?1), COUNT(*) FROM views",
            [before_ms],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("count raw rows")
}

fn date(day: i64) -> String {
    let mut out = Vec::new();
    video_server::calendar::write_date(&mut out, day);
    String::from_utf8(out).expect("a date is ASCII")
}

/// Waits until `views_expired_total` reaches `expected`; the last value read.
fn wait_for_expired(server: &Server, expected: f64) -> f64 {
    poll_value(
        Duration::from_secs(20),
        || server.metric("views_expired_total"),
        |&expired| expired >= expected,
    )
}

#[test]
fn old_raw_views_are_deleted_recent_ones_kept_and_every_count_answers_as_before() {
    let data = tempfile::tempdir().expect("temp dir");
    let now = epoch_millis();
    let today = utc_day(now);
    // Ten and nine days ago, 3,000 views each (from 40 clients): more than one step's
    // worth. Yesterday, 7: inside a three-day window.
    let clients: Vec<Viewer> = (0..40u8)
        .map(|n| Viewer::Address(IpAddr::from([198, 51, 100, n])))
        .collect();
    let at = |timestamp_ms: i64, n: usize| ViewRecord {
        video_id: "12345",
        viewer: clients[n % clients.len()],
        timestamp_ms,
    };
    {
        let mut store = EmbeddedStore::open(data.path()).expect("open the store");
        store.seed_if_empty().expect("seed");
        for days_ago in [10, 9] {
            let old: Vec<ViewRecord<'_>> = (0..3_000)
                .map(|n| at(now - days_ago * DAY_MS + n as i64, n))
                .collect();
            store.write_views(&old).expect("write old views");
        }
        let recent: Vec<ViewRecord<'_>> = (0..7).map(|n| at(now - DAY_MS, n)).collect();
        store.write_views(&recent).expect("write recent views");
    }
    let counts_path = format!(
        "/video/12345/views?from={}&to={}",
        date(today - 11),
        date(today)
    );
    let top_path = format!("/videos/top?date={}", date(today - 10));

    // What the server answers before any row is deleted.
    let mut server = Server::start_in(data.path(), &[]);
    let counts_before = server.get(&counts_path).json();
    let top_before = server.get(&top_path).json();
    assert_eq!(counts_before["views"], 6_007, "{counts_before}");
    assert!(server.terminate().success());

    let mut server = Server::start_in(data.path(), &["--view-retention-days", "3"]);
    let mut client = server.connect();
    for _ in 0..20 {
        client.send_request("GET", "/video/12345", &[], None);
        assert_eq!(client.read_response().status, 200);
    }
    assert_eq!(server.wait_for_views("12345", 6_027), 6_027);
    assert_eq!(wait_for_expired(&server, 6_000.0), 6_000.0);

    let window_start = epoch_millis() - 3 * DAY_MS;
    assert_eq!(
        raw_rows(data.path(), window_start),
        (0, 27),
        "no row older than the window is left, and the 7 + 20 recent ones are kept"
    );
    // Every count as before, but for today's 20 new views.
    let mut counts_after = server.get(&counts_path).json();
    assert_eq!(counts_after["views"], 6_027);
    assert_eq!(
        counts_after["today"],
        counts_before["today"].as_u64().unwrap_or(0) + 20
    );
    for field in ["views", "today", "uniqueViewersToday"] {
        counts_after[field] = counts_before[field].clone();
    }
    let today_entry = counts_after["days"]
        .as_array_mut()
        .and_then(|days| days.last_mut())
        .expect("today's entry");
    today_entry["views"] = counts_before["days"][11]["views"].clone();
    today_entry["uniqueViewers"] = counts_before["days"][11]["uniqueViewers"].clone();
    assert_eq!(
        counts_after, counts_before,
        "the old days keep their views and uniques"
    );
    assert_eq!(counts_before["days"][1]["views"], 3_000, "{counts_before}");
    assert_eq!(server.get(&top_path).json(), top_before);

    // After a restart too: counts come from the count tables, never from raw rows.
    assert!(server.terminate().success());
    let server = Server::start_in(data.path(), &["--view-retention-days", "3"]);
    assert_eq!(server.views("12345"), 6_027);
    assert_eq!(server.get(&top_path).json(), top_before);
}

#[test]
fn the_writer_keeps_recording_views_while_old_rows_are_deleted() {
    // A two-second window, and views sent for six: rows age out while views keep coming.
    let server = Server::start(&["--view-retention-seconds", "2"]);
    let started_ms = epoch_millis();
    let sending = Instant::now();
    let mut client = server.connect();
    let mut sent = 0u64;
    while sending.elapsed() < Duration::from_secs(6) {
        client.send_request("GET", "/video/12345", &[], None);
        assert_eq!(client.read_response().status, 200);
        sent += 1;
    }
    let expired_while_sending = server.metric("views_expired_total");
    assert!(
        expired_while_sending > 0.0,
        "rows past the window were deleted while views came in"
    );
    assert_eq!(
        server.wait_for_views("12345", sent),
        sent,
        "every view counted"
    );
    assert_eq!(server.metric("views_dropped_total"), 0.0);
    assert_eq!(server.metric("views_persisted_total"), sent as f64);

    // Deleting goes on meanwhile: read both between two steps, when they agree.
    let accounted = poll_value(
        Duration::from_secs(10),
        || raw_rows(&server.data_dir, 0).1 as f64 + server.metric("views_expired_total"),
        |&accounted| accounted == sent as f64,
    );
    assert_eq!(
        accounted, sent as f64,
        "each row is kept or counted as expired"
    );
    let oldest: Option<i64> = open_database(&server.data_dir)
        .query_row("SELECT MIN(timestamp_ms) FROM views", [], |row| row.get(0))
        .expect("oldest row");
    assert!(
        oldest.is_none_or(|oldest| oldest > started_ms + 1_000),
        "the first second's rows are gone: oldest {oldest:?}, started {started_ms}"
    );
    assert!(
        server.metric("view_retention_step_seconds_count") >= 2.0,
        "deleting ran in steps"
    );
}

#[test]
fn help_says_how_retention_relates_to_the_scylla_ttl_and_hides_the_test_knob() {
    let output = common::run(&["--help"], &[]);
    let help = String::from_utf8_lossy(&output.stdout);
    let start = help
        .find("--view-retention-days <")
        .unwrap_or_else(|| panic!("no --view-retention-days in --help:\n{help}"));
    let entry = &help[start..];
    let entry = &entry[..entry.find("[default: 0]").expect("off by default")];
    assert!(entry.contains("--scylla-view-ttl-days"), "{entry}");
    assert!(
        entry.contains("VIDEO_SERVER_VIEW_RETENTION_DAYS"),
        "{entry}"
    );
    assert!(!help.contains("--view-retention-seconds"), "{help}");
}
