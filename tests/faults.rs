//! Faults an operator or the machine causes, and how the server meets them: a full disk at
//! shutdown, the database file deleted or replaced under the running server, a damaged
//! database at start. Nothing may be lost silently: either it is kept, or the loss is
//! counted, logged and reported.

mod common;

use std::time::{Duration, Instant};

use common::{fixture, run, Server};

#[test]
fn sigterm_with_a_full_disk_exits_within_the_timeout_and_says_what_was_lost() {
    let mut server = Server::start_with_file_size_limit(
        &["--shutdown-timeout-ms", "3000", "--batch-size", "100"],
        300_000,
    );
    // Plays until the database can no longer grow, and some more.
    let mut client = server.connect();
    let pipelined = "GET /video/12345 HTTP/1.1\r\nHost: t\r\n\r\n".repeat(100);
    let mut answered = 0u64;
    for _ in 0..200 {
        client.send_raw(pipelined.as_bytes());
        for _ in 0..100 {
            assert_eq!(client.read_response().status, 200);
            answered += 1;
        }
        if server.log().contains("store write failed; retrying") && answered >= 10_000 {
            break;
        }
    }
    assert!(
        server.wait_for_log("store write failed; retrying", 1),
        "the disk never filled:\n{}",
        server.log()
    );
    let started = Instant::now();
    let status = server.terminate();
    let took = started.elapsed();
    // The stop is bounded by its one timeout, not by a retry budget per queued batch.
    assert!(took < Duration::from_millis(4_500), "stop took {took:?}");
    assert_eq!(
        status.code(),
        Some(1),
        "views were lost: the exit status says so"
    );
    let log = server.log();
    assert!(
        log.contains("views could not be written before the shutdown deadline and are lost"),
        "{log}"
    );
    let lost: u64 = log
        .lines()
        .find(|line| line.contains("are lost"))
        .and_then(|line| line.split("lost=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no lost= count in:\n{log}"));
    assert!(lost > 0 && lost <= answered, "{lost} lost of {answered}");
    eprintln!("full disk: {answered} plays answered, stop took {took:?}, {lost} views lost");
}

/// Plays video 12345 `count` times.
fn play(server: &Server, count: usize) {
    for _ in 0..count {
        assert_eq!(server.get("/video/12345").status, 200);
    }
}

#[test]
fn a_database_deleted_under_the_server_is_rebuilt_and_nothing_is_lost() {
    let data = tempfile::tempdir().expect("temp dir");
    let store = data.path().join("store");
    let mut server = Server::start_in(&store, &["--catalog", &fixture("catalog-sintel.json")]);
    play(&server, 5);
    assert_eq!(server.wait_for_views("12345", 5), 5);
    assert_eq!(server.get("/healthz").status, 200);

    // `rm data/video-server.sqlite3*`: SQLite alone would go on writing to the unlinked
    // file, and a restart would find an empty, re-seeded store.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(store.join(format!("video-server.sqlite3{suffix}")));
    }
    assert!(
        server.wait_for_log("rebuilt the embedded database file", 1),
        "{}",
        server.log()
    );
    assert!(store.join("video-server.sqlite3").exists());
    let health = server.get("/healthz");
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["status"], "degraded");
    assert!(health.text().contains("was deleted"), "{}", health.text());
    assert_eq!(server.metric("store_file_replaced_total"), 1.0);

    play(&server, 7);
    assert_eq!(server.wait_for_views("12345", 12), 12);
    assert!(server.terminate().success());

    // Every view survived, from before the deletion and after it, and the catalog was not
    // re-seeded: the imported video is still there.
    let restarted = Server::start_in(&store, &[]);
    assert_eq!(restarted.views("12345"), 12);
    assert_eq!(restarted.get("/video/sintel").status, 200);
    assert_eq!(restarted.get("/healthz").status, 200);
}

#[test]
fn a_database_replaced_under_the_server_is_kept_aside_not_overwritten() {
    let mut server = Server::start(&[]);
    play(&server, 3);
    assert_eq!(server.wait_for_views("12345", 3), 3);
    let path = server.data_dir.join("video-server.sqlite3");
    let replacement = server.data_dir.join("replacement");
    std::fs::write(&replacement, b"someone else's file").expect("write replacement");
    std::fs::rename(&replacement, &path).expect("replace the database");
    assert!(
        server.wait_for_log("rebuilt the embedded database file", 1),
        "{}",
        server.log()
    );
    let aside: Vec<_> = std::fs::read_dir(&server.data_dir)
        .expect("list data dir")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().contains(".replaced-"))
        .collect();
    assert_eq!(aside.len(), 1, "the replacing file is kept");
    assert_eq!(
        std::fs::read(aside[0].path()).expect("read it"),
        b"someone else's file"
    );
    assert!(server
        .get("/healthz")
        .text()
        .contains("replaced by another file"));
    play(&server, 2);
    assert_eq!(server.wait_for_views("12345", 5), 5);
    assert!(server.terminate().success());
    assert_eq!(Server::start_in(&server.data_dir, &[]).views("12345"), 5);
}

#[test]
fn a_damaged_database_stops_the_start_and_is_left_untouched() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(data.path(), &[]);
    play(&server, 50);
    assert_eq!(server.wait_for_views("12345", 50), 50);
    assert!(server.terminate().success());
    // Scribble over the middle of the file, past the header.
    let path = data.path().join("video-server.sqlite3");
    let mut bytes = std::fs::read(&path).expect("read database");
    assert!(bytes.len() > 8_192, "{} bytes", bytes.len());
    for byte in &mut bytes[4_200..8_000] {
        *byte = 0xA5;
    }
    std::fs::write(&path, &bytes).expect("damage database");

    let output = run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.path().to_str().expect("UTF-8"),
        ],
        &[("RUST_BACKTRACE", "0")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed its integrity check") || stderr.contains("malformed"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read again"),
        bytes,
        "left as it was"
    );
}
