//! The keyspace and tables the ScyllaDB store writes, and the statements it prepares.
//!
//! One source for the schema: the server runs [`schema_statements`] at connect when
//! `--scylla-create-schema` is on, and `scripts/schema.cql` (for operators who create it by
//! hand) is [`schema_script`] of the same statements, checked equal by a test.
//!
//! Who creates it ([`schema_creation`]): a developer's server, whose nodes are all on this
//! machine, creates it by default, with one replica unless `--scylla-replication` says
//! otherwise. Anywhere else the schema is created once (the script, or one server started
//! with `--scylla-create-schema`), never by every server at start: schema changes racing
//! from many clients are what a cluster handles worst, and a production keyspace's
//! replication is a decision, so it must be given, never defaulted to one replica.
//!
//! - `view_log`: the raw views, written and never read on a request path, partitioned by
//!   (video, minute, writer, shard) so that no partition outgrows [`VIEW_SHARDS`]' bound;
//!   time-window compaction, and a table-level TTL when `--scylla-view-ttl-days` is set.
//! - `view_counts`: each writer's running total per video and day (see
//!   [`crate::store::ledger`]), written with the total as its timestamp; a video's days are
//!   one partition, a few rows a day.
//! - `view_sketches`: each writer's unique-viewer sketch per video and day, likewise.
//! - `salts`: the daily salts of `--client-ip hash`, agreed by a lightweight transaction.
//! - `catalog_version`: one row, a new `timeuuid` whenever the server changes `videos`
//!   (`--catalog`, `video-server import`), so that the watchers re-read the catalog only
//!   then (and, for hand edits, every [`FULL_CATALOG_READ_EVERY`](super::refresh::FULL_CATALOG_READ_EVERY)).
//!
//! Tables of an older version (`views`, `view_rollups`) are left alone and no longer read.

use std::net::SocketAddr;
use std::time::Duration;

use scylla::value::CqlDate;

use super::ScyllaSetupError;

/// A UTC day (days since the Unix epoch) as a CQL `date`, which counts days with 2³¹ as
/// the epoch.
pub fn cql_date(day: i64) -> CqlDate {
    CqlDate((1u32 << 31).wrapping_add_signed(day as i32))
}

/// The UTC day of a CQL `date`.
pub fn day_of(date: CqlDate) -> i64 {
    i64::from(date.0) - (1i64 << 31)
}

/// Keyspace replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    Simple {
        factor: u32,
    },
    /// Per datacenter replication factors.
    NetworkTopology(Vec<(String, u32)>),
}

impl Replication {
    /// Parses `simple:3` or `network:dc1=3,dc2=2`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: expected simple:N or network:dc=N,..."))?;
        let factor = |value: &str| {
            value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{value:?} is not a replication factor"))
        };
        match kind.trim() {
            "simple" => Ok(Replication::Simple {
                factor: factor(rest)?,
            }),
            "network" => rest
                .split(',')
                .map(|pair| {
                    let (dc, n) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("{pair:?}: expected datacenter=N"))?;
                    let dc = dc.trim();
                    if dc.is_empty()
                        || !dc
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
                    {
                        return Err(format!("{dc:?} is not a datacenter name"));
                    }
                    Ok((dc.to_owned(), factor(n)?))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Replication::NetworkTopology),
            other => Err(format!("{other:?}: replication is simple or network")),
        }
    }

    fn cql(&self) -> String {
        match self {
            Replication::Simple { factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Replication::NetworkTopology(dcs) => {
                let pairs: Vec<String> = dcs.iter().map(|(dc, n)| format!("'{dc}': {n}")).collect();
                format!(
                    "{{'class': 'NetworkTopologyStrategy', {}}}",
                    pairs.join(", ")
                )
            }
        }
    }
}

/// Whether every node is on this machine (a loopback address, or `localhost`): a
/// developer's cluster. A host name other than `localhost` counts as remote.
pub fn all_loopback(nodes: &[String]) -> bool {
    nodes.iter().all(|node| {
        let node = node.trim();
        match node.parse::<SocketAddr>() {
            Ok(address) => address.ip().is_loopback(),
            Err(_) => node
                .rsplit_once(':')
                .map_or(node, |(host, _port)| host)
                .eq_ignore_ascii_case("localhost"),
        }
    })
}

/// Whether the server creates the schema, and with which replication: `create` is
/// `--scylla-create-schema` (`None`: not given), `replication` is `--scylla-replication`.
///
/// Not given, the schema is created only when every node is a loopback address. Creating
/// it needs `replication`, except on loopback nodes, where one replica is the default.
pub fn schema_creation(
    nodes: &[String],
    create: Option<bool>,
    replication: Option<Replication>,
) -> Result<Option<Replication>, ScyllaSetupError> {
    let development = all_loopback(nodes);
    if !create.unwrap_or(development) {
        if replication.is_some() {
            tracing::warn!(
                "--scylla-replication is ignored: this server does not create the schema \
                 (add --scylla-create-schema to create it)"
            );
        }
        return Ok(None);
    }
    match replication {
        Some(replication) => Ok(Some(replication)),
        None if development => {
            tracing::info!(
                "creating the schema with one replica (simple:1), the default for nodes on \
                 this machine; elsewhere --scylla-replication is required"
            );
            Ok(Some(Replication::Simple { factor: 1 }))
        }
        None => Err(ScyllaSetupError::ReplicationRequired {
            nodes: nodes.join(","),
        }),
    }
}

/// The tables the store reads and writes, as [`schema_statements`] creates them: what a
/// server that does not create the schema checks for at connect.
pub const TABLES: [&str; 6] = [
    "videos",
    "view_log",
    "view_counts",
    "view_sketches",
    "salts",
    "catalog_version",
];

/// Partitions of one video's raw views per minute and writer: at 100,000 views a second of
/// one video on one server, a partition holds 6,000,000 / 64 = 93,750 rows, under
/// ScyllaDB's 100,000-row warning.
pub const VIEW_SHARDS: i32 = 64;

/// The schema, as statements: what `scripts/schema.cql` holds for the defaults. With
/// `view_ttl`, raw views expire (a table default, so that time-window compaction drops
/// whole expired files), and an existing table is altered to match.
pub fn schema_statements(
    keyspace: &str,
    replication: &Replication,
    view_ttl: Option<Duration>,
) -> Vec<String> {
    let ttl_seconds = view_ttl.map_or(0, |ttl| ttl.as_secs().max(1));
    let mut statements = vec![
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
            replication.cql()
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.videos (\n    video_id text PRIMARY KEY,\n    document text\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.view_log (\n    video_id text,\n    minute timestamp,\n    writer bigint,\n    shard int,\n    id timeuuid,\n    viewer text,\n    viewed_at timestamp,\n    PRIMARY KEY ((video_id, minute, writer, shard), id)\n) WITH compaction = {{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}}\n  AND default_time_to_live = {ttl_seconds}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.view_counts (\n    video_id text,\n    day date,\n    writer_id uuid,\n    views bigint,\n    PRIMARY KEY (video_id, day, writer_id)\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.view_sketches (\n    video_id text,\n    day date,\n    writer_id uuid,\n    sketch blob,\n    PRIMARY KEY ((video_id, day), writer_id)\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.salts (\n    day date PRIMARY KEY,\n    salt blob\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.catalog_version (\n    id int PRIMARY KEY,\n    version timeuuid\n)"
        ),
    ];
    if view_ttl.is_some() {
        statements.push(format!(
            "ALTER TABLE {keyspace}.view_log WITH default_time_to_live = {ttl_seconds}"
        ));
    }
    statements
}

/// Seconds a day's salt lives after it is agreed (a day ahead): three days, so it is gone
/// two days after its own day ends even if the watcher that would delete it is not running.
pub const SALT_TTL_SECONDS: u32 = 3 * 86_400;

/// The schema as a CQL script (`scripts/schema.cql`).
pub fn schema_script(keyspace: &str, replication: &Replication) -> String {
    let mut script = String::from(
        "-- video-server's ScyllaDB schema, for operators who create it once by hand (the\n\
         -- production way: servers then run without --scylla-create-schema):\n\
         --   cqlsh -f scripts/schema.cql\n\
         -- The keyspace below has ONE replica, which suits a developer's single node only:\n\
         -- edit its replication first, e.g. {'class': 'NetworkTopologyStrategy', 'dc1': 3}.\n\
         -- For raw views that expire (--scylla-view-ttl-days), set view_log's\n\
         -- default_time_to_live in seconds.\n\
         -- Regenerate with: cargo test --lib schema_script_is_current -- --ignored\n\n",
    );
    for statement in schema_statements(keyspace, replication, None) {
        script.push_str(&statement);
        script.push_str(";\n\n");
    }
    script
}

/// A raw view: one row of `view_log`.
pub fn insert_view_cql(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.view_log (video_id, minute, writer, shard, id, viewer, viewed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
}

/// A writer's total for a video and day, which wins over any smaller one.
pub fn insert_count_cql(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.view_counts (video_id, day, writer_id, views) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
    )
}

/// A writer's sketch for a video and day, stamped with the same total.
pub fn insert_sketch_cql(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.view_sketches (video_id, day, writer_id, sketch) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
    )
}

/// Agrees a day's salt: a lightweight transaction, so that servers proposing at once all
/// end with the one that won.
pub fn agree_salt_cql(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.salts (day, salt) VALUES (?, ?) IF NOT EXISTS USING TTL {SALT_TTL_SECONDS}"
    )
}

/// Deletes the salts of the given days.
pub fn delete_salts_cql(keyspace: &str) -> String {
    format!("DELETE FROM {keyspace}.salts WHERE day IN ?")
}

/// The statements the catalog store runs.
pub fn select_videos_cql(keyspace: &str) -> String {
    format!("SELECT video_id, document FROM {keyspace}.videos")
}

pub fn upsert_video_cql(keyspace: &str) -> String {
    format!("INSERT INTO {keyspace}.videos (video_id, document) VALUES (?, ?)")
}

/// Marks the catalog changed: a new version, which every server's watcher sees.
pub fn bump_catalog_version_cql(keyspace: &str) -> String {
    format!("INSERT INTO {keyspace}.catalog_version (id, version) VALUES (1, now())")
}

/// The catalog's version (one row).
pub fn select_catalog_version_cql(keyspace: &str) -> String {
    format!("SELECT version FROM {keyspace}.catalog_version WHERE id = 1")
}

/// A video's per-day totals, every writer's row, from a day on.
pub fn select_counts_cql(keyspace: &str) -> String {
    format!("SELECT day, views FROM {keyspace}.view_counts WHERE video_id = ? AND day >= ?")
}

/// A video's day's sketches, one per writer.
pub fn select_sketches_cql(keyspace: &str) -> String {
    format!("SELECT sketch FROM {keyspace}.view_sketches WHERE video_id = ? AND day = ?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_parses_both_strategies() {
        assert_eq!(
            Replication::parse("simple:3"),
            Ok(Replication::Simple { factor: 3 })
        );
        assert_eq!(
            Replication::parse("network:dc1=3,dc2=2"),
            Ok(Replication::NetworkTopology(vec![
                ("dc1".into(), 3),
                ("dc2".into(), 2)
            ]))
        );
        for bad in [
            "simple:0",
            "simple",
            "network:dc1",
            "ring:3",
            "network:d'c=1",
        ] {
            assert!(Replication::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schema_is_created_by_development_servers_and_with_explicit_replication_only() {
        let local = ["127.0.0.1:9042".to_owned(), "localhost:9042".to_owned()];
        let remote = ["127.0.0.1:9042".to_owned(), "10.0.0.5:9042".to_owned()];
        let three = Replication::Simple { factor: 3 };
        // Development: created by default, with one replica unless told otherwise.
        assert!(all_loopback(&local) && all_loopback(&["[::1]:9042".to_owned()]));
        assert_eq!(
            schema_creation(&local, None, None).expect("dev"),
            Some(Replication::Simple { factor: 1 })
        );
        assert_eq!(
            schema_creation(&local, None, Some(three.clone())).expect("dev"),
            Some(three.clone())
        );
        assert_eq!(
            schema_creation(&local, Some(false), None).expect("off"),
            None
        );
        // Production: not created unless asked, and then only with replication given.
        assert!(!all_loopback(&remote));
        assert!(!all_loopback(&["scylla.internal:9042".to_owned()]));
        assert_eq!(schema_creation(&remote, None, None).expect("off"), None);
        assert_eq!(
            schema_creation(&remote, None, Some(three.clone())).expect("ignored"),
            None
        );
        let refused = schema_creation(&remote, Some(true), None)
            .expect_err("no silent one-replica keyspace")
            .to_string();
        assert!(
            refused.contains("--scylla-replication") && refused.contains("scripts/schema.cql"),
            "{refused}"
        );
        assert_eq!(
            schema_creation(&remote, Some(true), Some(three.clone())).expect("explicit"),
            Some(three)
        );
    }

    #[test]
    fn the_checked_tables_are_the_created_tables() {
        let statements = schema_statements("ks", &Replication::Simple { factor: 1 }, None);
        let created: Vec<&str> = statements
            .iter()
            .filter_map(|statement| statement.strip_prefix("CREATE TABLE IF NOT EXISTS ks."))
            .map(|rest| rest.split(' ').next().unwrap_or_default())
            .collect();
        assert_eq!(created, TABLES);
    }

    #[test]
    fn shipped_schema_script_matches_the_server_schema() {
        let shipped = include_str!("../../../scripts/schema.cql");
        let generated = schema_script("video_server", &Replication::Simple { factor: 1 });
        assert_eq!(
            shipped, generated,
            "scripts/schema.cql is stale: run the ignored test schema_script_is_current"
        );
    }

    /// Rewrites scripts/schema.cql from the code: `cargo test --lib schema_script_is_current -- --ignored`.
    #[test]
    #[ignore = "writes scripts/schema.cql"]
    fn schema_script_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/schema.cql");
        let generated = schema_script("video_server", &Replication::Simple { factor: 1 });
        std::fs::write(path, generated).expect("write schema.cql");
    }
}
