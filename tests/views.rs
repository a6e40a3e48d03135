//! Views: recorded per hit, persisted by the batch writer, counted, kept across a graceful
//! shutdown and restart, attributed to the right client address, and stored as
//! `--client-ip` says (hashed by default).

mod common;

use std::path::Path;

use common::Server;

/// Reads (client_ip, count) pairs for a video straight from the embedded store's file.
fn stored_client_ips(data_dir: &Path, video_id: &str) -> Vec<(String, i64)> {
    let connection =
        rusqlite::Connection::open(data_dir.join("video-server.sqlite3")).expect("open the store");
    let mut statement = connection
        .prepare(
            "SELECT client_ip, COUNT(*) FROM views WHERE video_id = ?1
             GROUP BY client_ip ORDER BY client_ip",
        )
        .expect("prepare");
    statement
        .query_map([video_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn every_hit_is_persisted_and_counted() {
    let server = Server::start(&[]);
    assert_eq!(server.views("12345"), 0);
    let mut client = server.connect();
    for _ in 0..250 {
        client.send_request("GET", "/video/12345", &[], None);
        assert_eq!(client.read_response().status, 200);
    }
    // Misses, HEADs and token requests record nothing.
    assert_eq!(server.get("/video/nope").status, 404);
    client.send_request("HEAD", "/video/12345", &[], None);
    assert_eq!(client.read_head_response().status, 200);
    assert_eq!(server.post_token(common::CONTRACT_BODY).status, 200);

    assert_eq!(server.wait_for_views("12345", 250), 250);
    assert_eq!(server.metric("views_accepted_total"), 250.0);
    assert_eq!(server.metric("views_persisted_total"), 250.0);
    assert_eq!(server.metric("views_dropped_total"), 0.0);
    assert_eq!(server.metric("views_pending"), 0.0);
    assert!(server.metric("view_batch_size_count") >= 1.0);
    // Hashed by default: one client, one value, nothing of its address.
    let stored = stored_client_ips(&server.data_dir, "12345");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].1, 250);
    assert_hashed(&stored[0].0, "127.0.0.1");
    assert_eq!(server.get("/video/nope/views").status, 404);
}

/// A stored client that is a hash (32 hex digits) holding nothing of `address`.
fn assert_hashed(stored: &str, address: &str) {
    assert_eq!(stored.len(), 32, "{stored}");
    assert!(stored.bytes().all(|b| b.is_ascii_hexdigit()), "{stored}");
    assert!(!stored.contains(address), "{stored} holds {address}");
}

/// The days (since the epoch) of the salts kept in the embedded store.
fn stored_salt_days(data_dir: &Path) -> Vec<i64> {
    let connection =
        rusqlite::Connection::open(data_dir.join("video-server.sqlite3")).expect("open the store");
    let mut statement = connection
        .prepare("SELECT day FROM salts ORDER BY day")
        .expect("prepare");
    statement
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn today() -> i64 {
    video_server::store::utc_day(video_server::store::epoch_millis())
}

#[test]
fn hashed_clients_keep_the_days_salt_across_restarts_and_old_salts_are_deleted() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(data.path(), &[]);
    let forwarded = [("X-Forwarded-For", "203.0.113.9")];
    assert_eq!(server.get_with("/video/12345", &forwarded).status, 200);
    assert_eq!(server.wait_for_views("12345", 1), 1);
    let today = today();
    assert_eq!(stored_salt_days(data.path()), vec![today, today + 1]);
    assert!(server.terminate().success());

    // Salts left from two and three days ago (a server stopped for days) go at start.
    let connection =
        rusqlite::Connection::open(data.path().join("video-server.sqlite3")).expect("open");
    for day in [today - 3, today - 2] {
        connection
            .execute(
                "INSERT INTO salts (day, salt) VALUES (?1, zeroblob(16))",
                [day],
            )
            .expect("insert an old salt");
    }
    drop(connection);
    let server = Server::start_in(data.path(), &[]);
    assert_eq!(stored_salt_days(data.path()), vec![today, today + 1]);
    assert_eq!(server.get("/video/12345").status, 200);
    assert_eq!(server.wait_for_views("12345", 2), 2);
    // The same client (127.0.0.1) under the same day's salt: one stored value, and
    // one unique viewer for the day.
    let stored = stored_client_ips(data.path(), "12345");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_hashed(&stored[0].0, "127.0.0.1");
    let counts = server.get("/video/12345/views");
    assert!(
        counts.text().contains("\"uniqueViewersToday\":1"),
        "{}",
        counts.text()
    );
}

#[test]
fn truncate_keeps_the_network_and_full_the_address() {
    let forwarded = [("X-Forwarded-For", "203.0.113.9")];
    for (mode, expected) in [("truncate", "203.0.113.0"), ("full", "203.0.113.9")] {
        let server = Server::start(&["--client-ip", mode, "--trusted-proxies", "127.0.0.0/8"]);
        assert_eq!(server.get_with("/video/12345", &forwarded).status, 200);
        assert_eq!(server.wait_for_views("12345", 1), 1);
        assert_eq!(
            stored_client_ips(&server.data_dir, "12345"),
            vec![(expected.to_owned(), 1)],
            "--client-ip {mode}"
        );
    }
}

#[test]
fn sigterm_flushes_every_accepted_view_and_restart_keeps_counts() {
    let data = tempfile::tempdir().expect("temp dir");
    // A batch that never fills and never ages: only the shutdown flush can persist views.
    let hold = ["--batch-size", "1000000", "--flush-interval-ms", "60000"];
    let mut server = Server::start_in(data.path(), &hold);
    let mut client = server.connect();
    for _ in 0..137 {
        client.send_request("GET", "/video/12345", &[], None);
        assert_eq!(client.read_response().status, 200);
    }
    assert_eq!(
        server.views("12345"),
        0,
        "views were flushed before shutdown"
    );
    assert_eq!(server.metric("views_pending"), 137.0);
    drop(client);

    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
    assert!(server.log().contains("persisted=137"), "{}", server.log());

    let server = Server::start_in(data.path(), &hold);
    assert_eq!(server.views("12345"), 137);
    assert_eq!(stored_client_ips(data.path(), "12345").len(), 1);
}

#[test]
fn sigterm_with_open_keep_alive_connections_exits_promptly() {
    let mut server = Server::start(&["--shutdown-timeout-ms", "10000"]);
    let mut idle = server.connect();
    idle.send_request("GET", "/healthz", &[], None);
    assert_eq!(idle.read_response().status, 200);
    let started = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "an idle keep-alive connection held shutdown for {:?}",
        started.elapsed()
    );
    assert!(idle.closed_within(std::time::Duration::from_secs(2)));
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let untrusted = Server::start(&["--client-ip", "full"]);
    let trusted = Server::start(&["--client-ip", "full", "--trusted-proxies", "127.0.0.0/8"]);
    for server in [&untrusted, &trusted] {
        let response = server.get_with(
            "/video/12345",
            &[("X-Forwarded-For", "203.0.113.9, 127.0.0.5")],
        );
        assert_eq!(response.status, 200);
        assert_eq!(server.wait_for_views("12345", 1), 1);
    }
    assert_eq!(
        stored_client_ips(&untrusted.data_dir, "12345"),
        vec![("127.0.0.1".to_owned(), 1)]
    );
    // The right-most untrusted address is the client (127.0.0.5 is one of our proxies).
    assert_eq!(
        stored_client_ips(&trusted.data_dir, "12345"),
        vec![("203.0.113.9".to_owned(), 1)]
    );
}

#[test]
fn views_under_concurrent_load_are_all_counted() {
    let server = Server::start(&["--batch-size", "64"]);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let mut client = server.connect();
                for _ in 0..200 {
                    client.send_request("GET", "/video/12345", &[], None);
                    assert_eq!(client.read_response().status, 200);
                }
            });
        }
    });
    assert_eq!(server.wait_for_views("12345", 1600), 1600);
    assert_eq!(server.metric("views_dropped_total"), 0.0);
}

/// `YYYY-MM-DD` of the UTC day `offset` days from today.
fn utc_date(offset: i64) -> String {
    let today = video_server::store::utc_day(video_server::store::epoch_millis());
    let mut out = Vec::new();
    video_server::calendar::write_date(&mut out, today + offset);
    String::from_utf8(out).expect("ascii")
}

#[test]
fn counts_per_day_and_unique_viewers_are_served_and_survive_a_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(data.path(), &["--trusted-proxies", "127.0.0.0/8"]);
    // Five plays by two clients (behind our trusted proxy).
    for client in [
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.1",
        "203.0.113.1",
        "203.0.113.2",
    ] {
        let play = server.get_with("/video/12345", &[("X-Forwarded-For", client)]);
        assert_eq!(play.status, 200);
    }
    assert_eq!(server.wait_for_views("12345", 5), 5);
    let counts = server.get("/video/12345/views").json();
    assert_eq!(counts["views"], 5);
    assert_eq!(counts["today"], 5);
    assert_eq!(counts["uniqueViewersToday"], 2);
    assert!(
        counts.get("days").is_none(),
        "days only when asked: {counts}"
    );

    let (yesterday, today) = (utc_date(-1), utc_date(0));
    let asked = server
        .get(&format!("/video/12345/views?from={yesterday}&to={today}"))
        .json();
    assert_eq!(
        asked["days"],
        serde_json::json!([
            {"date": yesterday, "views": 0, "uniqueViewers": 0},
            {"date": today, "views": 5, "uniqueViewers": 2},
        ])
    );
    assert!(server.terminate().success());

    let restarted = Server::start_in(data.path(), &[]);
    let counts = restarted.get("/video/12345/views").json();
    assert_eq!(
        (
            counts["today"].as_u64(),
            counts["uniqueViewersToday"].as_u64()
        ),
        (Some(5), Some(2))
    );
}

#[test]
fn bad_day_ranges_are_refused_naming_the_parameter() {
    let server = Server::start(&[]);
    let today = utc_date(0);
    let year_ago = utc_date(-366);
    for (query, named) in [
        (format!("from={today}"), "\"to\""),
        (format!("to={today}"), "\"from\""),
        (format!("from=2024-02-30&to={today}"), "\"from\""),
        (format!("from={today}&to=tomorrow"), "\"to\""),
        (format!("from={today}&to={year_ago}"), "\"from\""),
        (format!("from={year_ago}&to={today}"), "367 days"),
    ] {
        let response = server.get(&format!("/video/12345/views?{query}"));
        assert_eq!(response.status, 400, "{query}");
        assert!(
            response.error().contains(named),
            "{query}: {}",
            response.error()
        );
    }
    let whole_year = server.get(&format!(
        "/video/12345/views?from={}&to={today}",
        utc_date(-365)
    ));
    assert_eq!(whole_year.status, 200);
    assert_eq!(
        whole_year.json()["days"].as_array().map(Vec::len),
        Some(366)
    );
}

#[test]
fn the_top_videos_of_a_day_are_ranked_by_views() {
    let data = tempfile::tempdir().expect("temp dir");
    let catalog = data.path().join("catalog.json");
    std::fs::write(
        &catalog,
        r#"[{"videoId":"a","title":"A","sources":[]},{"videoId":"b","title":"B","sources":[]},{"videoId":"c","title":"C","sources":[]}]"#,
    )
    .expect("write catalog");
    let server = Server::start_in(
        data.path(),
        &[
            "--catalog",
            catalog.to_str().expect("utf-8 path"),
            "--trusted-proxies",
            "127.0.0.0/8",
        ],
    );
    for (video, plays) in [("a", 2), ("b", 5), ("12345", 2)] {
        for play in 0..plays {
            let client = format!("198.51.100.{play}");
            let response =
                server.get_with(&format!("/video/{video}"), &[("X-Forwarded-For", &client)]);
            assert_eq!(response.status, 200);
        }
    }
    assert_eq!(server.wait_for_views("b", 5), 5);
    assert_eq!(server.wait_for_views("a", 2), 2);
    assert_eq!(server.wait_for_views("12345", 2), 2);
    let top = server.get("/videos/top").json();
    assert_eq!(top["date"], utc_date(0));
    assert_eq!(
        top["videos"],
        serde_json::json!([
            {"videoId": "b", "views": 5, "uniqueViewers": 5},
            {"videoId": "12345", "views": 2, "uniqueViewers": 2},
            {"videoId": "a", "views": 2, "uniqueViewers": 2},
        ]),
        "most views first, ties by id, unwatched videos left out"
    );
    let one = server.get("/videos/top?limit=1").json();
    assert_eq!(one["videos"].as_array().map(Vec::len), Some(1));
    let yesterday = server
        .get(&format!("/videos/top?date={}", utc_date(-1)))
        .json();
    assert_eq!(yesterday["videos"], serde_json::json!([]));
    for (query, named) in [
        ("limit=0", "\"limit\""),
        ("limit=101", "\"limit\""),
        ("date=2024-13-01", "\"date\""),
    ] {
        let refused = server.get(&format!("/videos/top?{query}"));
        assert_eq!(refused.status, 400, "{query}");
        assert!(
            refused.error().contains(named),
            "{query}: {}",
            refused.error()
        );
    }
}
