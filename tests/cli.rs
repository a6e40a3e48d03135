//! The command line: `--help`, configuration errors, catalog import, environment
//! variables.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{assert_fails_saying, fixture, poll_until, run, video_server, write_file, Server};

/// `video-server import CATALOG --data-dir DATA`.
fn import(catalog: &Path, data: &Path) -> Output {
    run(
        &[
            "import",
            catalog.to_str().expect("utf-8"),
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        &[],
    )
}

#[test]
fn help_explains_every_option_and_its_environment_variable() {
    let output = run(&["--help"], &[]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let options = [
        ("--listen", "VIDEO_SERVER_LISTEN"),
        ("--data-dir", "VIDEO_SERVER_DATA_DIR"),
        ("--workers", "VIDEO_SERVER_WORKERS"),
        ("--no-pin", "VIDEO_SERVER_NO_PIN"),
        ("--cdns", "VIDEO_SERVER_CDNS"),
        ("--catalog", "VIDEO_SERVER_CATALOG"),
        ("--batch-size", "VIDEO_SERVER_BATCH_SIZE"),
        ("--flush-interval-ms", "VIDEO_SERVER_FLUSH_INTERVAL_MS"),
        ("--view-queue", "VIDEO_SERVER_VIEW_QUEUE"),
        ("--max-body-bytes", "VIDEO_SERVER_MAX_BODY_BYTES"),
        ("--max-head-bytes", "VIDEO_SERVER_MAX_HEAD_BYTES"),
        ("--idle-timeout-ms", "VIDEO_SERVER_IDLE_TIMEOUT_MS"),
        ("--request-timeout-ms", "VIDEO_SERVER_REQUEST_TIMEOUT_MS"),
        ("--shutdown-timeout-ms", "VIDEO_SERVER_SHUTDOWN_TIMEOUT_MS"),
        ("--trusted-proxies", "VIDEO_SERVER_TRUSTED_PROXIES"),
        ("--log-level", "VIDEO_SERVER_LOG"),
        ("--store", "VIDEO_SERVER_STORE"),
        ("--scylla-nodes", "SCYLLA_NODES"),
        ("--scylla-keyspace", "VIDEO_SERVER_SCYLLA_KEYSPACE"),
        ("--scylla-replication", "VIDEO_SERVER_SCYLLA_REPLICATION"),
        (
            "--scylla-write-consistency",
            "VIDEO_SERVER_SCYLLA_WRITE_CONSISTENCY",
        ),
        (
            "--scylla-read-consistency",
            "VIDEO_SERVER_SCYLLA_READ_CONSISTENCY",
        ),
        (
            "--scylla-request-timeout-ms",
            "VIDEO_SERVER_SCYLLA_REQUEST_TIMEOUT_MS",
        ),
        ("--scylla-user", "SCYLLA_USER"),
        ("--scylla-password", "SCYLLA_PASSWORD"),
        (
            "--scylla-view-ttl-days",
            "VIDEO_SERVER_SCYLLA_VIEW_TTL_DAYS",
        ),
        (
            "--scylla-max-in-flight",
            "VIDEO_SERVER_SCYLLA_MAX_IN_FLIGHT",
        ),
        (
            "--scylla-flushes-in-flight",
            "VIDEO_SERVER_SCYLLA_FLUSHES_IN_FLIGHT",
        ),
        ("--outbox-replay-rate", "VIDEO_SERVER_OUTBOX_REPLAY_RATE"),
        ("--outbox-max-bytes", "VIDEO_SERVER_OUTBOX_MAX_BYTES"),
        (
            "--scylla-create-schema",
            "VIDEO_SERVER_SCYLLA_CREATE_SCHEMA",
        ),
        ("--scylla-local-dc", "VIDEO_SERVER_SCYLLA_LOCAL_DC"),
        ("--scylla-tls-ca", "VIDEO_SERVER_SCYLLA_TLS_CA"),
        ("--scylla-tls-cert", "VIDEO_SERVER_SCYLLA_TLS_CERT"),
        ("--scylla-tls-key", "VIDEO_SERVER_SCYLLA_TLS_KEY"),
        ("--catalog-refresh-ms", "VIDEO_SERVER_CATALOG_REFRESH_MS"),
        ("--views-cache-ms", "VIDEO_SERVER_VIEWS_CACHE_MS"),
        ("--signing-policy", "VIDEO_SERVER_SIGNING_POLICY"),
        ("--api-keys", "VIDEO_SERVER_API_KEYS"),
        ("--cors-origins", "VIDEO_SERVER_CORS_ORIGINS"),
        ("--max-buffered-bytes", "VIDEO_SERVER_MAX_BUFFERED_BYTES"),
        ("--linger-ms", "VIDEO_SERVER_LINGER_MS"),
        ("--linger-bytes", "VIDEO_SERVER_LINGER_BYTES"),
        ("--max-connections", "VIDEO_SERVER_MAX_CONNECTIONS"),
        ("--rate-limit", "VIDEO_SERVER_RATE_LIMIT"),
        ("--view-dedup-seconds", "VIDEO_SERVER_VIEW_DEDUP_SECONDS"),
        ("--view-retention-days", "VIDEO_SERVER_VIEW_RETENTION_DAYS"),
    ];
    for (flag, env) in options {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        assert!(help.contains(env), "--help lacks {env}:\n{help}");
    }
    assert!(help.contains("[default: 0.0.0.0:3002]"), "{help}");
    assert!(
        help.contains("SCYLLA_URI"),
        "the SCYLLA_URI fallback is documented"
    );
}

#[test]
fn invalid_options_fail_fast_with_a_message() {
    let cases: [(&[&str], &str); 3] = [
        (&["--listen", "not-an-address"], "--listen"),
        (&["--batch-size", "0"], "--batch-size"),
        (&["--trusted-proxies", "10.0.0.0/8,nonsense"], "nonsense"),
    ];
    for (args, expected) in cases {
        let output = run(args, &[]);
        assert_fails_saying(&output, &format!("{args:?}"), expected);
    }
}

#[test]
fn start_up_errors_name_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = write_file(
        dir.path(),
        "catalog.json",
        r#"[{"videoId":"1","title":"t","sources":[{"src":"/a","size":"big","type":"v"}]}]"#,
    );
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let cases = [
        (
            vec!["--catalog", catalog.to_str().expect("utf-8")],
            "catalog[0].sources[0].size must be an integer",
        ),
        (
            vec!["--catalog", "/definitely/missing.json"],
            "cannot read catalog file",
        ),
        (
            vec!["--cdns", "/definitely/missing.json"],
            "cannot read CDN file",
        ),
        // Refused before anything is sent to the cluster (`.invalid` never resolves).
        (
            vec![
                "--store",
                "scylla",
                "--scylla-nodes",
                "scylla.invalid:9042",
                "--scylla-create-schema",
            ],
            "needs --scylla-replication",
        ),
        (
            vec![
                "--store",
                "scylla",
                "--scylla-nodes",
                "127.0.0.1:1",
                "--scylla-tls-ca",
                "/definitely/missing-ca.pem",
            ],
            "--scylla-tls-ca /definitely/missing-ca.pem: cannot read it",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["--listen", "127.0.0.1:0", "--data-dir", data];
        full.extend(args.iter().copied());
        let output = run(&full, &[]);
        assert_fails_saying(&output, &format!("{args:?}"), expected);
    }
}

#[test]
fn a_taken_port_is_an_error_not_a_shared_listener() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let address = server.addr.to_string();
    let output = run(
        &[
            "--listen",
            &address,
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_fails_saying(
        &output,
        &format!("a second server on {address}"),
        "cannot listen on",
    );
}

#[test]
fn catalog_import_serves_new_videos_and_keeps_the_seed() {
    let server = Server::start(&["--catalog", &fixture("catalog-sintel.json")]);
    let response = server.get("/video/sintel");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["title"], "Sintel");
    assert_eq!(server.get("/video/12345").status, 200);
}

#[test]
fn environment_variables_configure_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = video_server()
        .env("VIDEO_SERVER_LISTEN", "127.0.0.1:0")
        .env("VIDEO_SERVER_DATA_DIR", dir.path())
        .env("VIDEO_SERVER_MAX_BODY_BYTES", "4242")
        .env("VIDEO_SERVER_NO_PIN", "true")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|line| line.contains("listening"))
        .expect("listening line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("max_body_bytes=4242"), "{line}");
    assert!(line.contains("pinned=false"), "{line}");
    assert!(line.contains("addr=127.0.0.1:"), "{line}");
    assert!(dir.path().join("video-server.sqlite3").exists());
}

#[test]
fn import_subcommand_loads_videos_into_the_embedded_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let output = import(Path::new(&fixture("catalog-sintel.json")), &data);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let server = Server::start_in(&data, &[]);
    assert_eq!(server.get("/video/sintel").json()["title"], "Sintel");

    let catalog = write_file(dir.path(), "catalog.json", r#"[{"videoId":"x"}]"#);
    let output = import(&catalog, &data);
    assert_fails_saying(
        &output,
        "importing a video without a title",
        "catalog[0].title is required",
    );
}

#[test]
fn an_import_while_the_server_runs_is_served_without_a_restart_and_counts_survive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = Server::start_in(&data, &[]);
    for _ in 0..3 {
        assert_eq!(server.get("/video/12345").status, 200);
    }
    assert_eq!(server.wait_for_views("12345", 3), 3);
    assert_eq!(server.get("/video/tears").status, 404);

    let catalog = write_file(
        dir.path(),
        "catalog.json",
        r#"[{"videoId":"tears","title":"Tears of Steel","sources":[]},
            {"videoId":"12345","title":"Renamed","sources":[]}]"#,
    );
    let output = import(&catalog, &data);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The writer checks for changes about once a second.
    let appeared = poll_until(Duration::from_secs(10), || {
        (server.get("/video/tears").status == 200).then_some(())
    });
    assert!(appeared.is_some(), "the imported video never appeared");
    assert_eq!(server.get("/video/tears").json()["title"], "Tears of Steel");
    // That GET of /video/tears was a view too; the count of 12345 carried over the reload,
    // and views recorded after it still count.
    assert_eq!(server.get("/video/12345").json()["title"], "Renamed");
    assert_eq!(server.wait_for_views("12345", 4), 4);
    assert!(server
        .log()
        .contains("catalog changed in the store; reloaded"));
}

#[test]
fn outbox_subcommands_list_retry_and_drop_quarantined_flushes() {
    use video_server::store::{Flush, Outbox, PendingView};
    use video_server::viewer::Viewer;
    let data = tempfile::tempdir().expect("temp dir");
    let flush = |views: usize| Flush {
        id: uuid::Uuid::new_v4(),
        views: (0..views)
            .map(|_| PendingView {
                id: uuid::Uuid::new_v4(),
                video_id: "12345".into(),
                viewer: Viewer::Hashed([7; 16]),
                timestamp_ms: 1_795_000_000_000,
            })
            .collect(),
        counts: Vec::new(),
    };
    let (poisoned, other) = (flush(3), flush(2));
    {
        let mut outbox = Outbox::open(data.path()).expect("outbox");
        outbox.push(&poisoned).expect("push");
        outbox.push(&other).expect("push");
        outbox
            .quarantine(poisoned.id, "Invalid query: unconfigured table view_log")
            .expect("quarantine");
    }
    let dir = data.path().to_str().expect("utf-8");
    let outbox = |action: &[&str]| {
        let mut args = vec!["outbox"];
        args.extend_from_slice(action);
        args.extend_from_slice(&["--data-dir", dir]);
        run(&args, &[])
    };
    let listed = outbox(&["list"]);
    assert!(listed.status.success(), "{listed:?}");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.starts_with("1 quarantined flush(es), 3 views; 2 views waiting"),
        "{text}"
    );
    assert!(text.contains(&poisoned.id.to_string()), "{text}");
    assert!(text.contains("unconfigured table view_log"), "{text}");

    let unknown = uuid::Uuid::new_v4().to_string();
    assert_fails_saying(
        &outbox(&["retry", &unknown]),
        "retrying an unknown flush",
        "no quarantined flush",
    );
    let retried = outbox(&["retry", &poisoned.id.to_string()]);
    assert!(retried.status.success(), "{retried:?}");
    let text = String::from_utf8_lossy(&outbox(&["list"]).stdout).into_owned();
    assert!(
        text.starts_with("0 quarantined flush(es), 0 views; 5 views waiting"),
        "{text}"
    );

    Outbox::open(data.path())
        .expect("outbox")
        .quarantine(other.id, "refused")
        .expect("quarantine");
    let dropped = outbox(&["drop", &other.id.to_string()]);
    assert!(dropped.status.success(), "{dropped:?}");
    assert!(String::from_utf8_lossy(&dropped.stdout).contains("2 views lost"));
    let text = String::from_utf8_lossy(&outbox(&["list"]).stdout).into_owned();
    assert!(
        text.starts_with("0 quarantined flush(es), 0 views; 3 views waiting"),
        "{text}"
    );
}
