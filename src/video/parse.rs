//! Parsing: how bytes from outside become a [`VideoPayload`], or a [`PayloadError`] that
//! says which rule they broke.
//!
//! One parser serves every place a video enters the server: the body of
//! `POST /video/token` ([`parse_token_request`]), a `--catalog` import file
//! ([`parse_catalog`]), and the documents the store keeps ([`parse_stored_video`]). Each
//! entry point picks the outermost visitor and hands it to `run_parser!`; from there the
//! data flows down a chain of hand-written `serde` visitors over `serde_json`'s
//! deserializer (request or array → `VideoSeed` → `SourcesSeed` → `SourceSeed` →
//! the string and integer seeds), each checking its own rules as the values stream past,
//! so that:
//!
//! - strings borrow from the request buffer whenever they carry no escapes (`Cow::Borrowed`);
//! - the first problem stops parsing at once, and its message names the field by path
//!   (`video.sources[0].size must be an integer`): the visitors record the message in an
//!   `ErrorSlot` and hand serde an opaque error, because serde's own messages speak of
//!   "invalid type: string, expected i64 at line 1 column 9", not of our fields;
//! - nothing is ever skipped or parsed into a generic value, so hostile nesting
//!   (`[[[[…` ten thousand deep) is refused at its first bracket and never recurses: the
//!   coroutine stacks that run this code are small;
//! - videos and sources obey the same key rules (no unknown key, none twice, order kept
//!   for rendering) because both go through `record_key`.
//!
//! What comes out is the document of [`super::document`], which renders it back.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::document::{
    KeyOrder, PayloadError, SourceField, SourcePayload, VideoField, VideoPayload,
};

/// Where a document sits, for error paths: `video` in a token request, `catalog[3]` in an
/// import file.
#[derive(Debug, Clone, Copy)]
enum DocumentRoot {
    TokenRequest,
    CatalogEntry(usize),
    Stored,
}

impl fmt::Display for DocumentRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocumentRoot::TokenRequest | DocumentRoot::Stored => f.write_str("video"),
            DocumentRoot::CatalogEntry(index) => write!(f, "catalog[{index}]"),
        }
    }
}

/// A field path built only when an error needs it.
#[derive(Debug, Clone, Copy)]
enum FieldPath<'k> {
    Body,
    Video(DocumentRoot),
    VideoField(DocumentRoot, &'k str),
    Source(DocumentRoot, usize),
    SourceField(DocumentRoot, usize, &'k str),
}

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPath::Body => f.write_str("request body"),
            FieldPath::Video(root) => write!(f, "{root}"),
            FieldPath::VideoField(root, field) => write!(f, "{root}.{field}"),
            FieldPath::Source(root, index) => write!(f, "{root}.sources[{index}]"),
            FieldPath::SourceField(root, index, field) => {
                write!(f, "{root}.sources[{index}].{field}")
            }
        }
    }
}

/// Holds the first rule broken while parsing; serde only carries an opaque error outward.
#[derive(Default)]
struct ErrorSlot(RefCell<Option<PayloadError>>);

impl ErrorSlot {
    /// Records the problem unless a deeper one was recorded first.
    fn record(&self, path: FieldPath<'_>, problem: impl fmt::Display) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(PayloadError::Invalid {
                path: path.to_string(),
                problem: problem.to_string(),
            });
        }
    }

    /// Records the problem and returns the opaque error that unwinds the parse.
    fn fail<E: de::Error>(&self, path: FieldPath<'_>, problem: impl fmt::Display) -> E {
        self.record(path, problem);
        E::custom("invalid video document")
    }

    /// For a value serde itself refused: records what the field should have been, and
    /// passes serde's error on unchanged, so that a syntax error (truncated input) is still
    /// reported as one.
    fn refused<'s, 'k, E>(
        &'s self,
        path: FieldPath<'k>,
        problem: &'static str,
    ) -> impl FnOnce(E) -> E + use<'s, 'k, E> {
        move |error| {
            self.record(path, problem);
            error
        }
    }

    /// Turns a failed parse into the error the client sees: a syntax error if the bytes
    /// are not JSON, otherwise the recorded rule.
    fn into_error(self, error: serde_json::Error) -> PayloadError {
        use serde_json::error::Category;
        match (error.classify(), self.0.into_inner()) {
            (Category::Data, Some(recorded)) => recorded,
            (Category::Io | Category::Syntax | Category::Eof, _) | (Category::Data, None) => {
                PayloadError::Syntax(error.to_string())
            }
        }
    }
}

/// Parses the body of `POST /video/token`: `{"video": {...}}` and nothing else.
pub fn parse_token_request(body: &[u8]) -> Result<VideoPayload<'_>, PayloadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Invalid {
            path: "request body".into(),
            problem: "is empty; expected a JSON object with the single key \"video\"".into(),
        });
    }
    run_parser!(body, |slot, deserializer| {
        deserializer.deserialize_any(TokenRequestVisitor { slot })
    })
}

/// Parses one stored video document (as the store keeps it).
pub fn parse_stored_video(document: &[u8]) -> Result<VideoPayload<'_>, PayloadError> {
    run_parser!(document, |slot, deserializer| {
        VideoSeed {
            slot,
            root: DocumentRoot::Stored,
        }
        .deserialize(deserializer)
    })
}

/// Parses a catalog import file: a JSON array of video documents.
pub fn parse_catalog(bytes: &[u8]) -> Result<Vec<VideoPayload<'static>>, PayloadError> {
    let videos = run_parser!(bytes, |slot, deserializer| {
        deserializer.deserialize_any(CatalogVisitor { slot })
    })?;
    Ok(videos.into_iter().map(VideoPayload::into_owned).collect())
}

/// Runs `$parse`, an expression over an `&ErrorSlot` and a `&mut serde_json::Deserializer`
/// (named by the two identifiers), on the bytes `$bytes`, and checks nothing follows.
///
/// Valid UTF-8 (every real request) is checked once, whole, and then read as a `str`:
/// serde_json's string reader then skips its own UTF-8 check of each string, which cost
/// about a tenth of a token request. Anything else is read as bytes, so that serde_json
/// names the line and column of the bad byte as before. A macro rather than a function
/// because the two readers are different types and `$parse` is generic over them.
macro_rules! run_parser {
    ($bytes:expr, |$slot:ident, $deserializer:ident| $parse:expr) => {{
        let bytes: &[u8] = $bytes;
        let slot = ErrorSlot::default();
        let parsed = match std::str::from_utf8(bytes) {
            Ok(text) => {
                let mut reader = serde_json::Deserializer::from_str(text);
                let $slot = &slot;
                let $deserializer = &mut reader;
                ($parse).and_then(|value| {
                    reader.end()?;
                    Ok(value)
                })
            }
            Err(_) => {
                let mut reader = serde_json::Deserializer::from_slice(bytes);
                let $slot = &slot;
                let $deserializer = &mut reader;
                ($parse).and_then(|value| {
                    reader.end()?;
                    Ok(value)
                })
            }
        };
        parsed.map_err(|error| slot.into_error(error))
    }};
}
use run_parser;

/// Whitespace as JavaScript's `String.prototype.trim` knows it, which the old Node service
/// trimmed with (Rust's own `trim` differs on U+0085 and U+FEFF).
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

// ---- keys ----------------------------------------------------------------------------

/// The fields of one kind of object, named by their JSON keys.
trait Field: Copy + PartialEq {
    /// The field `key` names, or `None` if the object may not have that key.
    fn from_key(key: &str) -> Option<Self>;
}

impl Field for VideoField {
    fn from_key(key: &str) -> Option<Self> {
        match key {
            "_id" => Some(VideoField::Id),
            "videoId" => Some(VideoField::VideoId),
            "title" => Some(VideoField::Title),
            "sources" => Some(VideoField::Sources),
            _ => None,
        }
    }
}

impl Field for SourceField {
    fn from_key(key: &str) -> Option<Self> {
        match key {
            "src" => Some(SourceField::Src),
            "size" => Some(SourceField::Size),
            "type" => Some(SourceField::Type),
            _ => None,
        }
    }
}

/// Names the field `key` stands for and records it in `seen`, refusing a key the object
/// may not have and a key sent twice. Videos and sources both come through here, so their
/// key rules and messages cannot drift apart; `path` is `key`'s path, for the message.
fn record_key<F: Field, const N: usize, E: de::Error>(
    seen: &mut KeyOrder<F, N>,
    key: &str,
    slot: &ErrorSlot,
    path: FieldPath<'_>,
) -> Result<F, E> {
    let Some(field) = F::from_key(key) else {
        return Err(slot.fail(path, "is not allowed"));
    };
    if !seen.record(field) {
        return Err(slot.fail(path, "appears twice"));
    }
    Ok(field)
}

// ---- visitors ------------------------------------------------------------------------

/// A string, borrowed from the input when it has no escapes.
struct CowStrVisitor;

impl<'de> Visitor<'de> for CowStrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }
    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text))
    }
}

/// An object key.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(CowStrVisitor)
    }
}

/// A string field; `problem` is what to say when the value is not a string.
struct StrSeed<'s, 'k> {
    slot: &'s ErrorSlot,
    path: FieldPath<'k>,
    problem: &'static str,
}

impl<'de> DeserializeSeed<'de> for StrSeed<'_, '_> {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer
            .deserialize_str(CowStrVisitor)
            .map_err(self.slot.refused(self.path, self.problem))
    }
}

/// An integer field. JSON has one number type, so `1080.0` counts as the integer 1080, as
/// it did for the old service; `1080.5`, `"1080"` and out-of-range values do not.
struct IntegerSeed<'s, 'k> {
    slot: &'s ErrorSlot,
    path: FieldPath<'k>,
}

/// The largest integer a double (and so a JavaScript client) represents exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

impl<'de> DeserializeSeed<'de> for IntegerSeed<'_, '_> {
    type Value = i64;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<i64, D::Error> {
        let (slot, path) = (self.slot, self.path);
        deserializer
            .deserialize_any(IntegerVisitor)
            .map_err(slot.refused(path, "must be an integer"))
    }
}

struct IntegerVisitor;

impl<'de> Visitor<'de> for IntegerVisitor {
    type Value = i64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
        Ok(value)
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
        i64::try_from(value).map_err(|_| E::custom("out of range"))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<i64, E> {
        if value.fract() == 0.0 && value.abs() <= MAX_SAFE_INTEGER {
            // Exact: the value is integral and within ±2^53.
            Ok(value as i64)
        } else {
            Err(E::custom("not an integer"))
        }
    }
}

/// `{"video": {...}}`.
struct TokenRequestVisitor<'s> {
    slot: &'s ErrorSlot,
}

impl<'de> Visitor<'de> for TokenRequestVisitor<'_> {
    type Value = VideoPayload<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with the single key \"video\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let slot = self.slot;
        let mut video = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key != "video" {
                return Err(slot.fail(
                    FieldPath::Body,
                    format_args!("has unexpected key {key:?}; the only key allowed is \"video\""),
                ));
            }
            if video.is_some() {
                return Err(slot.fail(FieldPath::Body, "has the key \"video\" twice"));
            }
            let root = DocumentRoot::TokenRequest;
            video = Some(map.next_value_seed(VideoSeed { slot, root })?);
        }
        video.ok_or_else(|| slot.fail(FieldPath::Video(DocumentRoot::TokenRequest), "is required"))
    }

    // Anything but an object lands here through serde's defaults; say what was expected.
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.not_an_object())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
}

impl TokenRequestVisitor<'_> {
    fn not_an_object<E: de::Error>(&self) -> E {
        self.slot.fail(
            FieldPath::Body,
            "must be a JSON object with the single key \"video\"",
        )
    }
}

/// A JSON array of videos (catalog import).
struct CatalogVisitor<'s> {
    slot: &'s ErrorSlot,
}

impl<'de> Visitor<'de> for CatalogVisitor<'_> {
    type Value = Vec<VideoPayload<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of videos")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut videos = Vec::new();
        loop {
            let root = DocumentRoot::CatalogEntry(videos.len());
            match seq.next_element_seed(VideoSeed {
                slot: self.slot,
                root,
            })? {
                Some(video) => videos.push(video),
                None => return Ok(videos),
            }
        }
    }
}

/// One video object.
struct VideoSeed<'s> {
    slot: &'s ErrorSlot,
    root: DocumentRoot,
}

impl<'de> DeserializeSeed<'de> for VideoSeed<'_> {
    type Value = VideoPayload<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let (slot, root) = (self.slot, self.root);
        deserializer
            .deserialize_map(VideoVisitor { slot, root })
            .map_err(slot.refused(FieldPath::Video(root), "must be an object"))
    }
}

struct VideoVisitor<'s> {
    slot: &'s ErrorSlot,
    root: DocumentRoot,
}

impl<'de> Visitor<'de> for VideoVisitor<'_> {
    type Value = VideoPayload<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a video object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (slot, root) = (self.slot, self.root);
        let mut id = None;
        let mut video_id = None;
        let mut title = None;
        let mut sources = None;
        let mut order = KeyOrder::new(VideoField::Id);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = FieldPath::VideoField(root, &key);
            let field = record_key(&mut order, &key, slot, path)?;
            match field {
                VideoField::Id => {
                    let problem = "must be a string of 24 hex digits";
                    let value = map.next_value_seed(StrSeed {
                        slot,
                        path,
                        problem,
                    })?;
                    if value.len() != 24 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(slot.fail(path, problem));
                    }
                    id = Some(value);
                }
                VideoField::VideoId | VideoField::Title => {
                    let value = map.next_value_seed(StrSeed {
                        slot,
                        path,
                        problem: "must be a string",
                    })?;
                    if value.trim_matches(is_js_whitespace).is_empty() {
                        return Err(slot.fail(path, "must not be empty"));
                    }
                    if field == VideoField::VideoId {
                        video_id = Some(value);
                    } else {
                        title = Some(value);
                    }
                }
                VideoField::Sources => {
                    sources = Some(map.next_value_seed(SourcesSeed { slot, root })?);
                }
            }
        }
        let missing = |name| slot.fail(FieldPath::VideoField(root, name), "is required");
        Ok(VideoPayload {
            id,
            video_id: video_id.ok_or_else(|| missing("videoId"))?,
            title: title.ok_or_else(|| missing("title"))?,
            sources: sources.ok_or_else(|| missing("sources"))?,
            order,
        })
    }
}

/// `sources`: an array of source objects, possibly empty.
struct SourcesSeed<'s> {
    slot: &'s ErrorSlot,
    root: DocumentRoot,
}

impl<'de> DeserializeSeed<'de> for SourcesSeed<'_> {
    type Value = Vec<SourcePayload<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let (slot, root) = (self.slot, self.root);
        deserializer
            .deserialize_seq(self)
            .map_err(slot.refused(FieldPath::VideoField(root, "sources"), "must be an array"))
    }
}

impl<'de> Visitor<'de> for SourcesSeed<'_> {
    type Value = Vec<SourcePayload<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of sources")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut sources = Vec::with_capacity(seq.size_hint().unwrap_or(2));
        loop {
            let seed = SourceSeed {
                slot: self.slot,
                root: self.root,
                index: sources.len(),
            };
            match seq.next_element_seed(seed)? {
                Some(source) => sources.push(source),
                None => return Ok(sources),
            }
        }
    }
}

/// One `{src, size, type}` object.
struct SourceSeed<'s> {
    slot: &'s ErrorSlot,
    root: DocumentRoot,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for SourceSeed<'_> {
    type Value = SourcePayload<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let (slot, path) = (self.slot, FieldPath::Source(self.root, self.index));
        deserializer
            .deserialize_map(self)
            .map_err(slot.refused(path, "must be an object with src, size and type"))
    }
}

impl<'de> Visitor<'de> for SourceSeed<'_> {
    type Value = SourcePayload<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a source object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (slot, root, index) = (self.slot, self.root, self.index);
        let mut src = None;
        let mut size = None;
        let mut media_type = None;
        let mut order = KeyOrder::new(SourceField::Src);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = FieldPath::SourceField(root, index, &key);
            let field = record_key(&mut order, &key, slot, path)?;
            match field {
                SourceField::Size => size = Some(map.next_value_seed(IntegerSeed { slot, path })?),
                SourceField::Src | SourceField::Type => {
                    let problem = "must be a string";
                    let value = map.next_value_seed(StrSeed {
                        slot,
                        path,
                        problem,
                    })?;
                    if value.is_empty() {
                        return Err(slot.fail(path, "must not be empty"));
                    }
                    if field == SourceField::Src {
                        src = Some(value);
                    } else {
                        media_type = Some(value);
                    }
                }
            }
        }
        let missing = |name| slot.fail(FieldPath::SourceField(root, index, name), "is required");
        Ok(SourcePayload {
            src: src.ok_or_else(|| missing("src"))?,
            size: size.ok_or_else(|| missing("size"))?,
            media_type: media_type.ok_or_else(|| missing("type"))?,
            order,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The token request the contract's examples send, shared with the rendering tests.
    pub(in crate::video) const CONTRACT_BODY: &str = r#"{"video":{"_id":"6213a7299fa2604f1b188ee0","videoId":"12345","title":"Big Buck Bunny",
 "sources":[{"src":"/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4","size":1080,"type":"video/mp4"},
            {"src":"/Big_Buck_Bunny_720p_surround_FrostWire.com.mp4","size":720,"type":"video/mp4"}]}}"#;

    fn error_of(body: &str) -> String {
        parse_token_request(body.as_bytes())
            .expect_err(body)
            .to_string()
    }

    #[test]
    fn contract_body_parses_and_borrows_unescaped_strings() {
        let video = parse_token_request(CONTRACT_BODY.as_bytes()).expect("valid");
        assert_eq!(video.video_id, "12345");
        assert_eq!(video.sources.len(), 2);
        assert_eq!(video.sources[1].size, 720);
        assert!(matches!(video.title, Cow::Borrowed(_)));
        assert!(matches!(video.sources[0].src, Cow::Borrowed(_)));
    }

    #[test]
    fn utf8_is_checked_once_and_a_bad_byte_is_still_located() {
        // Valid UTF-8 takes the str reader: multi-byte titles come through, borrowed.
        let video = parse_token_request(
            "{\"video\":{\"videoId\":\"1\",\"title\":\"Žluťoučký kůň 🎬\",\"sources\":[]}}"
                .as_bytes(),
        )
        .expect("valid");
        assert_eq!(video.title, "Žluťoučký kůň 🎬");
        assert!(matches!(video.title, Cow::Borrowed(_)));
        // A byte that is not UTF-8 takes the byte reader, which says where it is.
        let mut body = br#"{"video":{"videoId":"1","title":"ab","sources":[]}}"#.to_vec();
        let at = body
            .windows(2)
            .position(|pair| pair == b"ab")
            .expect("the title");
        body[at] = 0xff;
        match parse_token_request(&body) {
            Err(PayloadError::Syntax(message)) => {
                let column = format!("column {}", at + 1);
                assert!(message.contains(&column), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn empty_sources_are_allowed_and_id_is_optional() {
        let video = parse_token_request(br#"{"video":{"videoId":"1","title":"t","sources":[]}}"#)
            .expect("valid");
        assert!(video.id.is_none());
        assert!(video.sources.is_empty());
    }

    #[test]
    fn blank_means_what_javascript_trims() {
        let body = |title: &str| {
            format!(r#"{{"video":{{"videoId":"v","title":"{title}","sources":[]}}}}"#)
        };
        for blank in [" ", "\\t\\n", "\\u00a0\\u2003", "\\ufeff", "\\u3000 "] {
            assert_eq!(
                error_of(&body(blank)),
                "video.title must not be empty",
                "{blank}"
            );
        }
        // U+0085 is whitespace to Rust but not to JavaScript: a title, as it was for Node.
        assert!(parse_token_request(body("\\u0085").as_bytes()).is_ok());
    }

    #[test]
    fn integral_floats_count_as_integers() {
        let video = parse_token_request(
            br#"{"video":{"videoId":"1","title":"t","sources":[{"src":"/a","size":1080.0,"type":"v"}]}}"#,
        )
        .expect("valid");
        assert_eq!(video.sources[0].size, 1080);
    }

    #[test]
    fn every_rule_names_its_field() {
        let source = |inner: &str| {
            format!(
                r#"{{"video":{{"videoId":"1","title":"t","sources":[{{"src":"/a","size":1,"type":"v"}},{inner}]}}}}"#
            )
        };
        let video = |inner: &str| format!(r#"{{"video":{{{inner}}}}}"#);
        let base = r#""videoId":"1","title":"t","sources":[]"#;
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "request body is empty"),
            ("[]".into(), "request body must be a JSON object"),
            ("\"video\"".into(), "request body must be a JSON object"),
            ("{}".into(), "video is required"),
            (r#"{"video":1}"#.into(), "video must be an object"),
            (r#"{"video":null}"#.into(), "video must be an object"),
            (
                format!(r#"{{"video":{{{base}}},"extra":1}}"#),
                "unexpected key \"extra\"",
            ),
            (
                format!(r#"{{"video":{{{base}}},"video":{{{base}}}}}"#),
                "\"video\" twice",
            ),
            (
                video(r#""title":"t","sources":[]"#),
                "video.videoId is required",
            ),
            (
                video(r#""videoId":"1","sources":[]"#),
                "video.title is required",
            ),
            (
                video(r#""videoId":"1","title":"t""#),
                "video.sources is required",
            ),
            (
                video(r#""videoId":"  ","title":"t","sources":[]"#),
                "video.videoId must not be empty",
            ),
            (
                video(r#""videoId":"1","title":"","sources":[]"#),
                "video.title must not be empty",
            ),
            (
                video(r#""videoId":12345,"title":"t","sources":[]"#),
                "video.videoId must be a string",
            ),
            (
                video(r#""videoId":"1","title":null,"sources":[]"#),
                "video.title must be a string",
            ),
            (
                video(&format!(r#""_id":"xyz",{base}"#)),
                "video._id must be a string of 24 hex digits",
            ),
            (
                video(&format!(r#""_id":"6213a7299fa2604f1b188eeZ",{base}"#)),
                "video._id must be a string of 24 hex digits",
            ),
            (
                video(&format!(r#""_id":7,{base}"#)),
                "video._id must be a string of 24 hex digits",
            ),
            (
                video(&format!(r#"{base},"views":3"#)),
                "video.views is not allowed",
            ),
            (
                video(r#""videoId":"1","videoId":"2","title":"t","sources":[]"#),
                "video.videoId appears twice",
            ),
            (
                video(r#""videoId":"1","title":"t","sources":{}"#),
                "video.sources must be an array",
            ),
            (source("7"), "video.sources[1] must be an object"),
            (
                source(r#"{"size":1,"type":"v"}"#),
                "video.sources[1].src is required",
            ),
            (
                source(r#"{"src":"/a","type":"v"}"#),
                "video.sources[1].size is required",
            ),
            (
                source(r#"{"src":"/a","size":1}"#),
                "video.sources[1].type is required",
            ),
            (
                source(r#"{"src":"","size":1,"type":"v"}"#),
                "video.sources[1].src must not be empty",
            ),
            (
                source(r#"{"src":"/a","size":1,"type":""}"#),
                "video.sources[1].type must not be empty",
            ),
            (
                source(r#"{"src":1,"size":1,"type":"v"}"#),
                "video.sources[1].src must be a string",
            ),
            (
                source(r#"{"src":"/a","size":"1080","type":"v"}"#),
                "video.sources[1].size must be an integer",
            ),
            (
                source(r#"{"src":"/a","size":10.5,"type":"v"}"#),
                "video.sources[1].size must be an integer",
            ),
            (
                source(r#"{"src":"/a","size":1e300,"type":"v"}"#),
                "video.sources[1].size must be an integer",
            ),
            (
                source(r#"{"src":"/a","size":18446744073709551615,"type":"v"}"#),
                "video.sources[1].size must be an integer",
            ),
            (
                source(r#"{"src":"/a","size":1,"type":"v","codec":"h264"}"#),
                "video.sources[1].codec is not allowed",
            ),
            (
                source(r#"{"src":"/a","src":"/b","size":1,"type":"v"}"#),
                "video.sources[1].src appears twice",
            ),
            (r#"{"video":"#.into(), "not valid JSON"),
            (
                format!(r#"{{"video":{{{base}}}}} trailing"#),
                "not valid JSON",
            ),
            (r#"{"video":{"videoId":"\x"}}"#.into(), "not valid JSON"),
        ];
        for (body, expected) in cases {
            let message = error_of(&body);
            assert!(
                message.contains(expected),
                "{body}\n  got: {message}\n  want: {expected}"
            );
        }
    }

    #[test]
    fn hostile_nesting_is_refused_without_recursing() {
        let deep = |open: &str, close: &str| open.repeat(10_000) + &close.repeat(10_000);
        let cases = [
            deep("[", "]"),
            deep("{\"video\":", "}"),
            format!(r#"{{"video":{}}}"#, deep("[", "]")),
            format!(r#"{{"video":{{"videoId":{}}}}}"#, deep("[", "]")),
            format!(r#"{{"video":{{"sources":{}}}}}"#, deep("[", "]")),
            format!(
                r#"{{"video":{{"sources":[{{"size":{}}}]}}}}"#,
                deep("{\"a\":", "}")
            ),
        ];
        // A thread with a 64 KiB stack: the size of a connection coroutine's stack.
        let handle = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || cases.iter().map(|body| error_of(body)).collect::<Vec<_>>())
            .expect("spawn parser thread");
        let messages = handle
            .join()
            .expect("parsing deep nesting must not overflow");
        for message in messages {
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn catalog_file_parses_arrays_and_names_entries() {
        let videos = parse_catalog(
            br#"[{"videoId":"1","title":"a","sources":[]},{"videoId":"2","title":"b","sources":[]}]"#,
        )
        .expect("valid catalog");
        assert_eq!(videos.len(), 2);
        let error = parse_catalog(br#"[{"videoId":"1","title":"a","sources":[]},{"videoId":"2"}]"#)
            .expect_err("missing title");
        assert_eq!(error.to_string(), "catalog[1].title is required");
    }
}
