//! Videos: the document format and the in-memory catalog.
//!
//! A video document enters the server as bytes (a token request, a catalog import, the
//! store), goes through [`parse`], which validates it and names the first broken rule by
//! field path, and comes out as a [`document::VideoPayload`] that borrows from those bytes.
//! [`document`] is what that value is and how it renders back to JSON, keys in the order
//! they were sent and each `src` optionally signed for a CDN. [`catalog`] holds the videos
//! `GET /video/:videoId` serves, each pre-rendered once so a hit is a hash lookup and a
//! copy, with its persisted view count beside it. [`watcher`] keeps the catalog (and counts
//! kept in a shared store) current from the store, off the request path.

pub mod catalog;
pub mod document;
pub mod parse;
pub mod watcher;

pub use catalog::{Catalog, CatalogEntry, SharedCatalog, SEED_VIDEO_JSON};
pub use document::{PayloadError, SourcePayload, VideoPayload};
pub use parse::{parse_catalog, parse_stored_video, parse_token_request};
pub use watcher::{CatalogWatcher, WatchSettings};
