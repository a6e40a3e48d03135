//! Videos: the document format and the in-memory catalog.
//!
//! [`payload`] parses and validates a video document wherever one enters the server (a
//! token request, a catalog import, the store) and renders it back to JSON. [`catalog`]
//! holds the videos `GET /video/:videoId` serves, each pre-rendered once so a hit is a hash
//! lookup and a copy, with its persisted view count beside it. [`watcher`] keeps the catalog
//! (and counts kept in a shared store) current from the store, off the request path.

pub mod catalog;
pub mod payload;
pub mod watcher;

pub use catalog::{Catalog, CatalogEntry, SharedCatalog, SEED_VIDEO_JSON};
pub use payload::{
    parse_catalog, parse_stored_video, parse_token_request, PayloadError, VideoPayload,
};
pub use watcher::{CatalogWatcher, WatchSettings};
