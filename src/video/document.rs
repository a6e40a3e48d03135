//! The video document: what a video is once it has been accepted, and how it is written
//! back out as JSON.
//!
//! A [`VideoPayload`] is built only by [`super::parse`], so by the time one exists every
//! rule has been checked and nothing here validates again. It borrows from the buffer it
//! was parsed from (`Cow::Borrowed` for every string sent without escapes), so a token
//! request is answered without copying the document; [`VideoPayload::into_owned`] detaches
//! it when it must outlive that buffer (a catalog import, a document read from the store).
//!
//! Data leaves through [`VideoPayload::write_json`], which appends the document to a
//! response (or store) buffer with its keys in the order they were sent, each source's
//! `src` optionally replaced by its signed CDN URL. To replay that order each object
//! carries a `KeyOrder`: the parser fills it as keys arrive, rendering walks it.

use std::borrow::Cow;

use crate::json;
use crate::token::RequestSigner;

/// Why a video document was refused. The message is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The bytes are not JSON at all (truncated, bad escape, trailing garbage…).
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    /// The JSON is well formed but breaks a rule; `path` names the field.
    #[error("{path} {problem}")]
    Invalid { path: String, problem: String },
}

/// The fields of a video, in the order a document may list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VideoField {
    Id,
    VideoId,
    Title,
    Sources,
}

/// The fields of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SourceField {
    Src,
    Size,
    Type,
}

/// The keys of one JSON object in the order they were sent, each at most once.
///
/// `N` is the number of fields the object has, so a fixed array always has room: a key
/// that is neither new nor known is refused before it gets here. The parser uses this both
/// as its "seen" set (rejecting duplicates) and as the record rendering replays, which is
/// why videos and sources share one type rather than each keeping its own array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyOrder<F, const N: usize> {
    keys: [F; N],
    len: u8,
}

impl<F: Copy + PartialEq, const N: usize> KeyOrder<F, N> {
    /// An empty order. `filler` only occupies the unused slots; it is never read back.
    pub(super) fn new(filler: F) -> Self {
        KeyOrder {
            keys: [filler; N],
            len: 0,
        }
    }

    /// Appends `field`, or returns `false` (recording nothing) if it was already sent.
    pub(super) fn record(&mut self, field: F) -> bool {
        let len = usize::from(self.len);
        if self.keys[..len].contains(&field) {
            return false;
        }
        // In bounds: `field` is one of N values and none of the `len` before it.
        self.keys[len] = field;
        self.len += 1;
        true
    }

    /// The keys as sent.
    pub(super) fn as_slice(&self) -> &[F] {
        &self.keys[..usize::from(self.len)]
    }
}

/// One playable rendition of a video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePayload<'a> {
    pub src: Cow<'a, str>,
    pub size: i64,
    pub media_type: Cow<'a, str>,
    /// Keys as sent, so the response lists them in the same order.
    pub(super) order: KeyOrder<SourceField, 3>,
}

/// A validated video document.
///
/// Its borrowed strings are verbatim JSON string contents (only the parser builds it), which
/// [`VideoPayload::write_json`] copies back without escaping; see [`json::write_decoded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoPayload<'a> {
    /// `_id`: the old service's MongoDB id, 24 hex digits, optional.
    pub id: Option<Cow<'a, str>>,
    pub video_id: Cow<'a, str>,
    pub title: Cow<'a, str>,
    pub sources: Vec<SourcePayload<'a>>,
    /// Keys as sent (`_id` may be absent, so up to four).
    pub(super) order: KeyOrder<VideoField, 4>,
}

impl<'a> VideoPayload<'a> {
    /// Detaches the document from the buffer it was parsed from.
    pub fn into_owned(self) -> VideoPayload<'static> {
        VideoPayload {
            id: self.id.map(|id| Cow::Owned(id.into_owned())),
            video_id: Cow::Owned(self.video_id.into_owned()),
            title: Cow::Owned(self.title.into_owned()),
            sources: self
                .sources
                .into_iter()
                .map(|source| SourcePayload {
                    src: Cow::Owned(source.src.into_owned()),
                    size: source.size,
                    media_type: Cow::Owned(source.media_type.into_owned()),
                    order: source.order,
                })
                .collect(),
            order: self.order,
        }
    }

    /// Appends the document as JSON, keys in the order they were received. With a CDN,
    /// every `src` becomes its signed URL on that CDN.
    pub fn write_json(&self, out: &mut Vec<u8>, signer: Option<&RequestSigner<'_>>) {
        out.push(b'{');
        for (position, field) in self.order.as_slice().iter().enumerate() {
            if position > 0 {
                out.push(b',');
            }
            match field {
                VideoField::Id => {
                    out.extend_from_slice(b"\"_id\":");
                    // `order` lists Id only when one was sent.
                    write_decoded_string(out, self.id.as_ref().unwrap_or(&Cow::Borrowed("")));
                }
                VideoField::VideoId => {
                    out.extend_from_slice(b"\"videoId\":");
                    write_decoded_string(out, &self.video_id);
                }
                VideoField::Title => {
                    out.extend_from_slice(b"\"title\":");
                    write_decoded_string(out, &self.title);
                }
                VideoField::Sources => {
                    out.extend_from_slice(b"\"sources\":[");
                    for (index, source) in self.sources.iter().enumerate() {
                        if index > 0 {
                            out.push(b',');
                        }
                        source.write_json(out, signer);
                    }
                    out.push(b']');
                }
            }
        }
        out.push(b'}');
    }
}

impl SourcePayload<'_> {
    fn write_json(&self, out: &mut Vec<u8>, signer: Option<&RequestSigner<'_>>) {
        out.push(b'{');
        // All three keys are required, so this lists each of them once.
        for (position, field) in self.order.as_slice().iter().enumerate() {
            if position > 0 {
                out.push(b',');
            }
            match field {
                SourceField::Src => {
                    out.extend_from_slice(b"\"src\":\"");
                    match signer {
                        Some(signer) => signer.write_signed_url(out, &self.src, &self.media_type),
                        None => json::write_decoded(out, &self.src),
                    }
                    out.push(b'"');
                }
                SourceField::Size => {
                    out.extend_from_slice(b"\"size\":");
                    json::write_i64(out, self.size);
                }
                SourceField::Type => {
                    out.extend_from_slice(b"\"type\":");
                    write_decoded_string(out, &self.media_type);
                }
            }
        }
        out.push(b'}');
    }
}

/// A decoded string as a complete JSON string (see [`json::write_decoded`]).
#[allow(clippy::ptr_arg)] // borrowed or owned is the information used
fn write_decoded_string(out: &mut Vec<u8>, text: &Cow<'_, str>) {
    out.push(b'"');
    json::write_decoded(out, text);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{default_cdns, Cdn, RequestSigner};
    use crate::video::parse::tests::CONTRACT_BODY;
    use crate::video::parse::{parse_stored_video, parse_token_request};

    #[test]
    fn key_order_keeps_first_sightings_and_refuses_repeats() {
        let mut order = KeyOrder::<SourceField, 3>::new(SourceField::Src);
        assert!(order.as_slice().is_empty());
        assert!(order.record(SourceField::Type));
        assert!(order.record(SourceField::Src));
        assert!(!order.record(SourceField::Type));
        assert_eq!(order.as_slice(), [SourceField::Type, SourceField::Src]);
        assert!(order.record(SourceField::Size));
        assert_eq!(
            order.as_slice(),
            [SourceField::Type, SourceField::Src, SourceField::Size]
        );
    }

    fn rendered(video: &VideoPayload<'_>, cdn: Option<&Cdn>) -> serde_json::Value {
        let mut out = Vec::new();
        let signer = cdn.map(|cdn| RequestSigner::new(cdn, 1_700_000_000, None));
        video.write_json(&mut out, signer.as_ref());
        serde_json::from_slice(&out).expect("rendering is valid JSON")
    }

    #[test]
    fn escaped_strings_render_back_escaped_and_plain_ones_verbatim() {
        let body = r#"{"video":{"videoId":"a\"b","title":"caf\u00e9 \\ \n tab\t",
            "sources":[{"src":"/x\/y z.mp4","size":1,"type":"video/mp4"}]}}"#;
        let video = parse_token_request(body.as_bytes()).expect("valid");
        let json = rendered(&video, None);
        assert_eq!(json["videoId"], "a\"b");
        assert_eq!(json["title"], "café \\ \n tab\t");
        assert_eq!(json["sources"][0]["src"], "/x/y z.mp4");
        assert_eq!(json["sources"][0]["type"], "video/mp4");
        let signed = rendered(&video, Some(&default_cdns()[0]));
        let url = signed["sources"][0]["src"].as_str().expect("string");
        assert!(url.contains("/x/y z.mp4?token="), "{url}");
    }

    #[test]
    fn signed_rendering_rewrites_only_src() {
        let video = parse_token_request(CONTRACT_BODY.as_bytes()).expect("valid");
        let cdn = &default_cdns()[0];
        let value = rendered(&video, Some(cdn));
        assert_eq!(value["_id"], "6213a7299fa2604f1b188ee0");
        assert_eq!(value["title"], "Big Buck Bunny");
        assert_eq!(
            value["sources"][0]["src"],
            "https://d2usdis6r1u782.cloudfront.net/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4?token=c6346e68c6808c506faa8851ca0f6aef"
        );
        assert_eq!(value["sources"][1]["size"], 720);
        assert_eq!(value["sources"][1]["type"], "video/mp4");
    }

    #[test]
    fn unsigned_rendering_round_trips_and_keeps_key_order() {
        let body = r#"{"video":{"sources":[{"type":"t","size":1,"src":"/a\"b"}],"title":"T","videoId":"v"}}"#;
        let video = parse_token_request(body.as_bytes()).expect("valid");
        let mut out = Vec::new();
        video.write_json(&mut out, None);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            r#"{"sources":[{"type":"t","size":1,"src":"/a\"b"}],"title":"T","videoId":"v"}"#
        );
    }

    #[test]
    fn stored_documents_round_trip() {
        let video = parse_token_request(CONTRACT_BODY.as_bytes()).expect("valid");
        let mut stored = Vec::new();
        video.write_json(&mut stored, None);
        let reparsed = parse_stored_video(&stored).expect("stored form parses");
        assert_eq!(reparsed, video);
    }
}
