//! The keyspace and tables the ScyllaDB store writes, and the statements it prepares.
//!
//! One source for the schema: the server runs [`schema_statements`] at connect when
//! `--scylla-create-schema` is on, and `scripts/schema.cql` (for operators who create it by
//! hand) is [`schema_script`] of the same statements, checked equal by a test. Views are
//! rows of `views`, partitioned by (video, day, bucket) so that a hot video's day spreads
//! over [`VIEW_BUCKETS`] partitions; counts are per-flush rows of `view_rollups`, keyed by the
//! flush id, so that a replayed flush overwrites its rollup rather than adding to it.

use std::time::Duration;

/// View rows of one video and day are spread over this many partitions.
pub const VIEW_BUCKETS: i32 = 8;

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

/// The schema, as statements: what `scripts/schema.cql` holds for the defaults.
pub fn schema_statements(keyspace: &str, replication: &Replication) -> Vec<String> {
    vec![
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
            replication.cql()
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.videos (\n    video_id text PRIMARY KEY,\n    document text\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.views (\n    video_id text,\n    day date,\n    bucket int,\n    id timeuuid,\n    client_ip inet,\n    viewed_at timestamp,\n    PRIMARY KEY ((video_id, day, bucket), id)\n) WITH CLUSTERING ORDER BY (id DESC)\n  AND compaction = {{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.view_rollups (\n    video_id text,\n    flush_id timeuuid,\n    views bigint,\n    PRIMARY KEY (video_id, flush_id)\n)"
        ),
    ]
}

/// The schema as a CQL script (`scripts/schema.cql`).
pub fn schema_script(keyspace: &str, replication: &Replication) -> String {
    let mut script = String::from(
        "-- video-server's ScyllaDB schema. The server creates it itself at start\n\
         -- (IF NOT EXISTS); this file is for operators who create it by hand:\n\
         --   cqlsh -f scripts/schema.cql\n\
         -- Regenerate with: cargo test --lib schema_script_is_current -- --ignored\n\n",
    );
    for statement in schema_statements(keyspace, replication) {
        script.push_str(&statement);
        script.push_str(";\n\n");
    }
    script
}

/// The statements the writer prepares.
pub fn insert_view_cql(keyspace: &str, ttl: Option<Duration>) -> String {
    let ttl = ttl.map_or(String::new(), |ttl| {
        format!(" USING TTL {}", ttl.as_secs().max(1))
    });
    format!(
        "INSERT INTO {keyspace}.views (video_id, day, bucket, id, client_ip, viewed_at) VALUES (?, ?, ?, ?, ?, ?){ttl}"
    )
}

pub fn insert_rollup_cql(keyspace: &str) -> String {
    format!("INSERT INTO {keyspace}.view_rollups (video_id, flush_id, views) VALUES (?, ?, ?)")
}

/// The statements the catalog store runs.
pub fn select_videos_cql(keyspace: &str) -> String {
    format!("SELECT video_id, document FROM {keyspace}.videos")
}

pub fn upsert_video_cql(keyspace: &str) -> String {
    format!("INSERT INTO {keyspace}.videos (video_id, document) VALUES (?, ?)")
}

/// A video's count: the sum of its rollups.
pub fn view_count_cql(keyspace: &str) -> String {
    format!("SELECT SUM(views) FROM {keyspace}.view_rollups WHERE video_id = ?")
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
