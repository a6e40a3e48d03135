//! What the two SQLite files under `--data-dir` share: the embedded database
//! ([`EmbeddedStore`](super::EmbeddedStore)) and ScyllaDB's outbox
//! ([`Outbox`](super::Outbox)).
//!
//! Both are opened the same way ([`open_durable`]: WAL, `synchronous = FULL`, a busy
//! timeout, the schema applied), map errors the same way ([`sqlite`], with what was being
//! done), and agree on which failures may clear up if tried again ([`is_retriable`]).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use super::StoreError;

/// How long a connection waits for a lock another process (an operator's `sqlite3`
/// shell, a `video-server import`) briefly holds.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Maps a SQLite error to a [`StoreError`] that says what was being done.
pub fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { context, source }
}

/// Maps an I/O error under the data directory to a [`StoreError`] naming the path.
pub fn data_dir(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::DataDir {
        action,
        path,
        source,
    }
}

/// Opens (creating if needed) `<data_dir>/<file>` with the settings every local database
/// of ours uses (WAL, `synchronous = FULL`, a busy timeout) and applies `schema`.
pub fn open_durable(data_dir: &Path, file: &str, schema: &str) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(self::data_dir("create", data_dir))?;
    let connection = Connection::open(data_dir.join(file)).map_err(sqlite("open database"))?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite("enable WAL"))?;
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite("set synchronous"))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(sqlite("set busy timeout"))?;
    connection
        .execute_batch(schema)
        .map_err(sqlite("create schema"))?;
    Ok(connection)
}

/// Busy and locked databases, a full disk and I/O errors can clear up; a constraint
/// violation or a corrupt file cannot.
pub fn is_retriable(error: &rusqlite::Error) -> bool {
    match error.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory,
        ) => true,
        Some(_) | None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_errors_are_told_apart() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(is_retriable(&busy));
        assert!(!is_retriable(&constraint));
    }
}
