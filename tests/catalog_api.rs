//! `GET /videos`: the catalog, a page at a time, for players and other clients to list what
//! exists; the real binary on a free port.

mod common;

use common::{Server, SEED_VIDEO};

#[test]
fn the_catalog_is_listed_page_by_page_in_id_order() {
    let data = tempfile::tempdir().expect("temp dir");
    let catalog = data.path().join("catalog.json");
    let videos: Vec<String> = (0..5)
        .map(|n| format!(r#"{{"videoId":"v{n}","title":"Video {n}","sources":[{{"src":"/v{n}.mp4","size":720,"type":"video/mp4"}}]}}"#))
        .collect();
    std::fs::write(&catalog, format!("[{}]", videos.join(","))).expect("write catalog");
    let server = Server::start_in(
        data.path(),
        &["--catalog", catalog.to_str().expect("utf-8 path")],
    );

    // 6 videos (the seed, 12345, sorts first): pages of 4 and 2, then nothing.
    let first = server.get("/videos?limit=4");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    let first = first.json();
    let seed: serde_json::Value = serde_json::from_str(SEED_VIDEO).expect("seed JSON");
    assert_eq!(
        first["videos"][0], seed,
        "each entry is the video's document"
    );
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["videos"]
            .as_array()
            .expect("videos")
            .iter()
            .map(|video| video["videoId"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids(&first), ["12345", "v0", "v1", "v2"]);
    assert_eq!(first["next"], "v2");
    let second = server.get("/videos?limit=4&after=v2").json();
    assert_eq!(ids(&second), ["v3", "v4"]);
    assert_eq!(second["next"], serde_json::Value::Null);
    assert_eq!(second["videos"][1]["sources"][0]["src"], "/v4.mp4");
    // The default page holds them all; past the end is empty.
    assert_eq!(ids(&server.get("/videos").json()).len(), 6);
    assert_eq!(ids(&server.get("/videos?after=zzz").json()).len(), 0);

    for bad in ["limit=0", "limit=101", "limit=ten"] {
        let refused = server.get(&format!("/videos?{bad}"));
        assert_eq!(refused.status, 400, "{bad}");
        assert!(
            refused.error().contains("\"limit\""),
            "{bad}: {}",
            refused.error()
        );
    }
}
