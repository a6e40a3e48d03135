//! The endpoints: routing a request to its handler, and the handlers themselves.
//!
//! | route | methods | handler | `Cache-Control` |
//! | --- | --- | --- | --- |
//! | `/video/token` | POST | check the API key (401) and the video (400, and 403 under `--signing-policy catalog`), then sign every source for the next CDN | `no-store` |
//! | `/video/:videoId` | GET, HEAD | the catalog video, or 404; a GET records a view, a 304 included | `private, no-cache` + `ETag` |
//! | `/video/:videoId/views` | GET, HEAD | views of that video persisted so far: in all, today, unique viewers today, per day on request | `no-cache` + `ETag` |
//! | `/videos` | GET, HEAD | the catalog, a page at a time in `videoId` order (`?limit=&after=`) | `no-cache` |
//! | `/videos/top` | GET, HEAD | the videos with the most views on a day (embedded store) | `no-cache` |
//! | `/healthz` | GET, HEAD | `{"status":"ok"}` | `no-store` |
//! | `/metrics` | GET, HEAD | Prometheus text format | `no-store` |
//! | `/plaintext` | GET, HEAD | `Hello, World!`: the ceiling benchmarks compare against | `no-store` |
//! | `/openapi.json` | GET, HEAD | this API in OpenAPI 3 (`docs/openapi.json`) | `no-cache` + `ETag` |
//! | `/`, `/assets/:name` | GET, HEAD | the player page and its files ([`crate::page`]), with a `Content-Security-Policy` | `no-cache` + `ETag` |
//!
//! Caching is chosen for what a route does. A play (`GET /video/:videoId`) must reach us to
//! be counted: shared caches (a CDN in front of us) may not store it at all (`private`),
//! and a browser that does must ask us again before each use (`no-cache`); the `ETag` lets
//! that revalidation be a `304 Not Modified` without a body, and it still counts. A count
//! may be stored by any cache but is revalidated before each use, so it is never stale.
//! Tokens, health, metrics and every error are `no-store`: a cached signed URL or a cached
//! 503 would be wrong for the next client. Every path answers `OPTIONS` (a CORS preflight) with 204, and any other method
//! with 405 and `Allow`. `GET /video/token` is a catalog lookup for the id `token`, as it was for the
//! old service's clients. Every handler writes straight into the connection's response
//! buffer; nothing here blocks (a view is handed to the bus with a non-blocking send).

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::calendar;
use crate::cors::CorsOrigins;
use crate::health::Health;
use crate::http::{conditional, HttpError, Request, Response, Service};
use crate::json;
use crate::limiter::{RateLimit, RateLimiter, ViewDedup};
use crate::metrics::Metrics;
use crate::page;
use crate::store::{epoch_millis, utc_day, DAYS_KEPT};
use crate::token::access::Refusal;
use crate::token::{unix_now, RequestSigner, SharedSigning, SigningPolicy};
use crate::video::{self, SharedCatalog, VideoPayload};
use crate::viewer::ClientPrivacy;
use crate::views::{ViewBus, ViewEvent};

/// What a request was routed to, with the path's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'p> {
    Token,
    Video(&'p str),
    VideoViews(&'p str),
    TopVideos,
    Videos,
    Health,
    Metrics,
    Plaintext,
    OpenApi,
    Page,
    PageAsset(&'p str),
    NotFound,
}

/// Every route by name, plus the requests the HTTP layer refused before routing: the one
/// source of the `route` label of the request metrics and of its index in their table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Token,
    Video,
    VideoViews,
    Health,
    Metrics,
    Plaintext,
    OpenApi,
    NotFound,
    Rejected,
    TopVideos,
    Videos,
    Page,
    PageAsset,
}

impl RouteKind {
    /// Every kind, in metrics index order.
    pub const ALL: [RouteKind; 13] = [
        RouteKind::Token,
        RouteKind::Video,
        RouteKind::VideoViews,
        RouteKind::Health,
        RouteKind::Metrics,
        RouteKind::Plaintext,
        RouteKind::OpenApi,
        RouteKind::NotFound,
        RouteKind::Rejected,
        RouteKind::TopVideos,
        RouteKind::Videos,
        RouteKind::Page,
        RouteKind::PageAsset,
    ];

    /// The `route` label of its metrics.
    pub const fn name(self) -> &'static str {
        match self {
            RouteKind::Token => "token",
            RouteKind::Video => "video",
            RouteKind::VideoViews => "video_views",
            RouteKind::Health => "healthz",
            RouteKind::Metrics => "metrics",
            RouteKind::Plaintext => "plaintext",
            RouteKind::OpenApi => "openapi",
            RouteKind::NotFound => "not_found",
            RouteKind::Rejected => "rejected",
            RouteKind::TopVideos => "videos_top",
            RouteKind::Videos => "videos",
            RouteKind::Page => "page",
            RouteKind::PageAsset => "page_asset",
        }
    }

    /// Its row in the metrics table: its position in [`RouteKind::ALL`].
    #[inline]
    pub const fn metric_index(self) -> usize {
        self as usize
    }
}

/// The metric labels, indexed by [`RouteKind::metric_index`]; built from the enum, so the
/// two cannot drift apart (a misordered [`RouteKind::ALL`] fails the build).
pub const ROUTE_NAMES: [&str; RouteKind::ALL.len()] = {
    let mut names = [""; RouteKind::ALL.len()];
    let mut index = 0;
    while index < names.len() {
        assert!(RouteKind::ALL[index].metric_index() == index);
        names[index] = RouteKind::ALL[index].name();
        index += 1;
    }
    names
};

impl Route<'_> {
    fn kind(&self) -> RouteKind {
        match self {
            Route::Token => RouteKind::Token,
            Route::Video(_) => RouteKind::Video,
            Route::VideoViews(_) => RouteKind::VideoViews,
            Route::TopVideos => RouteKind::TopVideos,
            Route::Videos => RouteKind::Videos,
            Route::Health => RouteKind::Health,
            Route::Metrics => RouteKind::Metrics,
            Route::Plaintext => RouteKind::Plaintext,
            Route::OpenApi => RouteKind::OpenApi,
            Route::Page => RouteKind::Page,
            Route::PageAsset(_) => RouteKind::PageAsset,
            Route::NotFound => RouteKind::NotFound,
        }
    }

    /// The methods the route answers, for `Allow` and preflights.
    fn allowed_methods(&self) -> &'static str {
        match self {
            Route::Token => "GET, HEAD, POST, OPTIONS",
            Route::Video(_) | Route::VideoViews(_) | Route::TopVideos | Route::Videos => {
                "GET, HEAD, OPTIONS"
            }
            Route::Health
            | Route::Metrics
            | Route::Plaintext
            | Route::OpenApi
            | Route::Page
            | Route::PageAsset(_)
            | Route::NotFound => "GET, HEAD, OPTIONS",
        }
    }
}

/// The days `?from=YYYY-MM-DD&to=YYYY-MM-DD` asks for (UTC, both ends included, at most
/// [`DAYS_KEPT`]), if it asks; a message naming the parameter if it is wrong.
fn days_asked(request: &Request<'_>) -> Result<Option<(i64, i64)>, String> {
    let (from, to) = (query_param(request, "from"), query_param(request, "to"));
    let parse = |name: &str, value: &str| {
        calendar::parse_date(value).map_err(|error| format!("query parameter {name:?}: {error}"))
    };
    match (from, to) {
        (None, None) => Ok(None),
        (Some(_), None) => Err("query parameter \"to\" is required with \"from\"".into()),
        (None, Some(_)) => Err("query parameter \"from\" is required with \"to\"".into()),
        (Some(from), Some(to)) => {
            let (first, last) = (parse("from", from)?, parse("to", to)?);
            if first > last {
                return Err(format!(
                    "query parameter \"from\" ({from}) is after \"to\" ({to})"
                ));
            }
            if last - first + 1 > DAYS_KEPT {
                return Err(format!(
                    "query parameters \"from\" and \"to\" span {} days; at most {DAYS_KEPT}",
                    last - first + 1
                ));
            }
            Ok(Some((first, last)))
        }
    }
}

/// Ends a day's JSON object: `,"views":N,"uniqueViewers":U}`.
fn write_day_counts(body: &mut Vec<u8>, views: u64, unique_viewers: u64) {
    body.extend_from_slice(b",\"views\":");
    json::write_u64(body, views);
    body.extend_from_slice(b",\"uniqueViewers\":");
    json::write_u64(body, unique_viewers);
    body.push(b'}');
}

/// A listing's `limit` parameter: `default` when absent; a message naming it unless it is
/// 1 to 100.
fn page_limit(request: &Request<'_>, default: usize) -> Result<usize, &'static str> {
    match query_param(request, "limit").map(str::parse::<usize>) {
        None => Ok(default),
        Some(Ok(limit @ 1..=100)) => Ok(limit),
        Some(_) => Err("query parameter \"limit\" must be a whole number from 1 to 100"),
    }
}

/// The raw value of query parameter `name` (the last one, if repeated).
fn query_param<'r>(request: &Request<'r>, name: &str) -> Option<&'r str> {
    let query = request
        .target
        .split_once('?')
        .map_or("", |(_, query)| query);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .next_back()
}

/// Maps a path (no query string) to its route. A trailing slash is ignored, as the old
/// Express service ignored it.
fn route(path: &str) -> Route<'_> {
    let path = match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    };
    match path {
        "/" => return Route::Page,
        "/video/token" => return Route::Token,
        "/healthz" => return Route::Health,
        "/metrics" => return Route::Metrics,
        "/plaintext" => return Route::Plaintext,
        "/openapi.json" => return Route::OpenApi,
        "/videos/top" => return Route::TopVideos,
        "/videos" => return Route::Videos,
        _ => {}
    }
    if let Some(name) = path.strip_prefix("/assets/") {
        return Route::PageAsset(name);
    }
    let Some(rest) = path.strip_prefix("/video/") else {
        return Route::NotFound;
    };
    // A byte search: `str::split_once(char)` costs several times more on an id this short.
    match rest.bytes().position(|byte| byte == b'/') {
        None if !rest.is_empty() => Route::Video(rest),
        Some(slash) if slash > 0 && &rest[slash..] == "/views" => Route::VideoViews(&rest[..slash]),
        _ => Route::NotFound,
    }
}

/// How the API is configured (from the command line).
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    /// Which sources may be signed.
    pub signing_policy: SigningPolicy,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Which origins browsers may read our responses from.
    pub cors: CorsOrigins,
    /// Requests per client and route, when limited (`--rate-limit`).
    pub rate_limit: Option<RateLimit>,
    /// Plays of one video by one client within this window count once
    /// (`--view-dedup-seconds`); `None`: every play counts.
    pub view_dedup: Option<std::time::Duration>,
    /// What a stored view keeps of its client's address (`--client-ip`).
    pub privacy: ClientPrivacy,
    /// Whether every video's per-day counts are in memory, so that `GET /videos/top` can
    /// rank them: the embedded store's are (the writer credits them); a shared store's are
    /// when the watcher re-reads them all (`--top-refresh-ms`).
    pub top_videos: bool,
}

/// The video service: everything a request handler needs, shared by all connections.
pub struct VideoApi {
    catalog: SharedCatalog,
    /// CDNs and API keys, replaced whole on `SIGHUP`.
    signing: SharedSigning,
    /// Which sources may be signed.
    policy: SigningPolicy,
    views: ViewBus,
    metrics: Arc<Metrics>,
    /// Problems `/healthz` reports.
    health: Arc<Health>,
    /// Peers whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<IpNet>,
    /// Which origins browsers may read our responses from.
    cors: CorsOrigins,
    /// Per-client request rates, when limited.
    rate_limiter: Option<RateLimiter>,
    /// Repeated plays counted once, when configured.
    view_dedup: Option<ViewDedup>,
    privacy: ClientPrivacy,
    /// Whether `GET /videos/top` can answer (see [`ApiSettings::top_videos`]).
    top_videos: bool,
    /// CORS headers, sent on every response.
    common_headers: Vec<u8>,
}

impl VideoApi {
    pub fn new(
        catalog: SharedCatalog,
        signing: SharedSigning,
        views: ViewBus,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        settings: ApiSettings,
    ) -> Self {
        let common_headers = settings
            .cors
            .common_headers(signing.load().api_keys.is_some());
        VideoApi {
            catalog,
            signing,
            policy: settings.signing_policy,
            views,
            metrics,
            health,
            trusted_proxies: settings.trusted_proxies,
            cors: settings.cors,
            rate_limiter: settings.rate_limit.map(RateLimiter::new),
            view_dedup: settings.view_dedup.map(ViewDedup::new),
            privacy: settings.privacy,
            top_videos: settings.top_videos,
            common_headers,
        }
    }

    fn dispatch(&self, route: Route<'_>, request: &Request<'_>, response: &mut Response) {
        let method = request.method;
        if method == "OPTIONS" {
            return preflight(route, response);
        }
        // HEAD is answered as GET (the HTTP layer sends the head without the body).
        let get_or_head = method == "GET" || method == "HEAD";
        match route {
            Route::Token if method == "POST" => self.sign_video(request, response),
            // GET /video/token looks up the video whose id is "token", as Express did.
            Route::Token if get_or_head => self.serve_video("token", request, response),
            Route::Video(id) if get_or_head => self.serve_video(id, request, response),
            Route::VideoViews(id) if get_or_head => self.serve_view_count(id, request, response),
            Route::TopVideos if get_or_head => self.serve_top_videos(request, response),
            Route::Videos if get_or_head => self.serve_catalog_page(request, response),
            Route::Health if get_or_head => self.serve_health(response),
            Route::Metrics if get_or_head => {
                response
                    .set_content_type(Metrics::content_type())
                    .set_cache_control(NEVER_STORE);
                self.metrics.render(&mut response.body);
            }
            Route::OpenApi if get_or_head => {
                if !revalidate(request, &OPENAPI_ETAG, REVALIDATE, response) {
                    response.set_content_type("application/json");
                    response.body.extend_from_slice(OPENAPI.as_bytes());
                }
            }
            Route::Page if get_or_head => self.serve_page(request, response),
            Route::PageAsset(name) if get_or_head => match page::asset(name) {
                Some(asset) => serve_page_file(asset, request, response),
                None => {
                    response.set_json_error(404, &format!("no asset {name:?}"));
                }
            },
            Route::Plaintext if get_or_head => {
                response
                    .set_content_type("text/plain")
                    .set_cache_control(NEVER_STORE);
                response.body.extend_from_slice(b"Hello, World!");
            }
            Route::NotFound => {
                let message = format!("no route for {} {}", method, request.path());
                response.set_json_error(404, &message);
            }
            _ => {
                let message = format!("method {method} is not allowed on {}", request.path());
                response.set_json_error(405, &message);
                response.add_header("Allow", route.allowed_methods().as_bytes());
            }
        }
    }

    /// `POST /video/token`.
    fn sign_video(&self, request: &Request<'_>, response: &mut Response) {
        // Held to the end of the request: a reload does not change keys under it.
        let signing = self.signing.load();
        if let Some(api_keys) = &signing.api_keys {
            if let Err(refusal) = api_keys.check(request.header("authorization")) {
                return refuse_unauthorized(refusal, response);
            }
        }
        if let Some(content_type) = request.header("content-type") {
            if !is_json_media_type(content_type) {
                response.set_json_error(
                    415,
                    "Content-Type must be application/json for POST /video/token",
                );
                return;
            }
        }
        let video = match video::parse_token_request(request.body) {
            Ok(video) => video,
            Err(error) => {
                response.set_json_error(400, &error.to_string());
                return;
            }
        };
        if self.policy == SigningPolicy::Catalog {
            if let Err(message) = self.check_catalog(&video) {
                response.set_json_error(403, &message);
                return;
            }
        }
        let cdn = signing.cdns.next();
        let client_ip = cdn.binds_ip().then(|| self.client_ip(request));
        let signer = RequestSigner::new(cdn, unix_now(), client_ip);
        response
            .set_content_type("application/json")
            .set_cache_control(NEVER_STORE);
        video.write_json(&mut response.body, Some(&signer));
    }

    /// `GET /`: the player page, with a policy that names the CDNs signed URLs point at
    /// now (a `SIGHUP` may change them), so built for each request; it is not a hot path.
    fn serve_page(&self, request: &Request<'_>, response: &mut Response) {
        let signing = self.signing.load();
        let addresses = signing.cdns.cdns().iter().map(|cdn| cdn.address());
        let policy = page::content_security_policy(addresses);
        response.add_header("Content-Security-Policy", policy.as_bytes());
        serve_page_file(page::index(), request, response);
    }

    /// `GET /healthz`: ok, or 503 with the problems noticed recently.
    fn serve_health(&self, response: &mut Response) {
        response
            .set_content_type("application/json")
            .set_cache_control(NEVER_STORE);
        let problems = self.health.problems();
        if problems.is_empty() {
            response.body.extend_from_slice(br#"{"status":"ok"}"#);
            return;
        }
        response.set_status(503);
        let body = &mut response.body;
        body.extend_from_slice(br#"{"status":"degraded","problems":["#);
        for (index, problem) in problems.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            json::write_string(body, problem);
        }
        body.extend_from_slice(b"]}");
    }

    /// `--signing-policy catalog`: the video and each of its sources must be in the catalog.
    fn check_catalog(&self, video: &VideoPayload<'_>) -> Result<(), String> {
        let catalog = self.catalog.load();
        let Some(entry) = catalog.get(&video.video_id) else {
            return Err(format!(
                "video {:?} is not in the catalog; only catalog videos are signed",
                video.video_id
            ));
        };
        match video
            .sources
            .iter()
            .position(|source| !entry.has_source(&source.src))
        {
            None => Ok(()),
            Some(index) => Err(format!(
                "video.sources[{index}].src {:?} is not a source of video {:?} in the catalog",
                video.sources[index].src, video.video_id
            )),
        }
    }

    /// `GET /video/:videoId`: the catalog video; a GET (not a HEAD) records a view.
    fn serve_video(&self, raw_id: &str, request: &Request<'_>, response: &mut Response) {
        let id = decode_segment(raw_id);
        let catalog = self.catalog.load();
        let Some(entry) = catalog.get(&id) else {
            response.set_json_error(404, &format!("video {id:?} not found"));
            return;
        };
        if !revalidate(request, entry.etag(), PLAY, response) {
            response.set_content_type("application/json");
            response.body.extend_from_slice(entry.body());
        }
        // A revalidation is a play too: a cache in front of us asks before each one.
        if request.method == "GET" {
            let client_ip = self.client_ip(request);
            let counts = self
                .view_dedup
                .as_ref()
                .is_none_or(|dedup| dedup.counts(client_ip, entry.video_id()));
            if counts {
                self.views
                    .record(ViewEvent::now(Arc::clone(entry), client_ip, &self.privacy));
            } else {
                self.metrics.views_deduplicated.inc();
            }
        }
    }

    /// `GET /video/:videoId/views`: read from memory, kept current by the batch writer
    /// (embedded store) or by the catalog watcher, which this request nudges (ScyllaDB).
    fn serve_view_count(&self, raw_id: &str, request: &Request<'_>, response: &mut Response) {
        let id = decode_segment(raw_id);
        let catalog = self.catalog.load();
        let Some(entry) = catalog.get(&id) else {
            response.set_json_error(404, &format!("video {id:?} not found"));
            return;
        };
        let range = match days_asked(request) {
            Ok(range) => range,
            Err(message) => {
                response.set_json_error(400, &message);
                return;
            }
        };
        entry.want_count();
        let views = entry.persisted_views();
        let today = utc_day(epoch_millis());
        // Counts read from a shared store say when they were read (`asOf`).
        let read_at = entry.counts_read_at();
        // The count, the day and the read time are the whole of what changes (every view
        // adds to the count; midnight resets "today"): they make the tag (`"v12d20789"`,
        // `"v12d20789a1796212800"`), on the stack.
        let mut tag = [0u8; 72];
        let unused = {
            let mut rest = &mut tag[..];
            // 72 bytes hold any u64, any day and any time in seconds with the quotes.
            let _ = match read_at {
                None => write!(rest, "\"v{views}d{today}\""),
                Some(at) => write!(rest, "\"v{views}d{today}a{}\"", at / 1000),
            };
            rest.len()
        };
        let etag = std::str::from_utf8(&tag[..tag.len() - unused]).unwrap_or_default();
        if revalidate(request, etag, REVALIDATE, response) {
            return;
        }
        response.set_content_type("application/json");
        let body = &mut response.body;
        body.extend_from_slice(b"{\"videoId\":");
        json::write_string(body, entry.video_id());
        body.extend_from_slice(b",\"views\":");
        json::write_u64(body, views);
        let (today_views, today_uniques) = entry.day(today);
        body.extend_from_slice(b",\"today\":");
        json::write_u64(body, today_views);
        body.extend_from_slice(b",\"uniqueViewersToday\":");
        json::write_u64(body, today_uniques);
        if let Some(at) = read_at {
            body.extend_from_slice(b",\"asOf\":\"");
            calendar::write_timestamp(body, at);
            body.push(b'"');
        }
        if let Some((first, last)) = range {
            let mut counted = entry.days(first, last).into_iter().peekable();
            body.extend_from_slice(b",\"days\":[");
            for day in first..=last {
                let (day_views, day_uniques) = match counted.next_if(|count| count.day == day) {
                    Some(count) => (count.views, count.unique_viewers),
                    None => (0, 0),
                };
                if day > first {
                    body.push(b',');
                }
                body.extend_from_slice(b"{\"date\":\"");
                calendar::write_date(body, day);
                body.push(b'"');
                write_day_counts(body, day_views, day_uniques);
            }
            body.push(b']');
        }
        body.push(b'}');
    }

    /// `GET /videos?limit=N&after=ID`: up to `limit` (default 20, at most 100) catalog
    /// documents in `videoId` order after `after`, and the `next` value to ask for the
    /// following page (`null` on the last).
    fn serve_catalog_page(&self, request: &Request<'_>, response: &mut Response) {
        let after = query_param(request, "after").map(decode_segment);
        let limit = match page_limit(request, 20) {
            Ok(limit) => limit,
            Err(message) => {
                response.set_json_error(400, message);
                return;
            }
        };
        let catalog = self.catalog.load();
        let (page, more) = catalog.page(after.as_deref(), limit);
        response.add_header("Cache-Control", REVALIDATE.as_bytes());
        response.set_content_type("application/json");
        let body = &mut response.body;
        body.extend_from_slice(b"{\"videos\":[");
        for (index, entry) in page.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            body.extend_from_slice(entry.body());
        }
        body.extend_from_slice(b"],\"next\":");
        match page.last() {
            Some(last) if more => json::write_string(body, last.video_id()),
            _ => body.extend_from_slice(b"null"),
        }
        body.push(b'}');
    }

    /// `GET /videos/top?date=YYYY-MM-DD&limit=N`: the videos with the most views that day
    /// (default today, 10, at most 100), from the per-day counts in memory.
    fn serve_top_videos(&self, request: &Request<'_>, response: &mut Response) {
        let day = match query_param(request, "date").map(calendar::parse_date) {
            None => utc_day(epoch_millis()),
            Some(Ok(day)) => day,
            Some(Err(error)) => {
                response.set_json_error(400, &format!("query parameter \"date\": {error}"));
                return;
            }
        };
        let limit = match page_limit(request, 10) {
            Ok(limit) => limit,
            Err(message) => {
                response.set_json_error(400, message);
                return;
            }
        };
        if !self.top_videos {
            response.set_json_error(
                501,
                "videos are not ranked by views per day here: with the ScyllaDB store, \
                 --top-refresh-ms is 0",
            );
            return;
        }
        let catalog = self.catalog.load();
        let mut ranked: Vec<(&str, u64, u64)> = catalog
            .entries()
            .map(|entry| {
                let (views, unique_viewers) = entry.day(day);
                (entry.video_id(), views, unique_viewers)
            })
            .filter(|(_, views, _)| *views > 0)
            .collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked.truncate(limit);
        response.add_header("Cache-Control", REVALIDATE.as_bytes());
        response.set_content_type("application/json");
        let body = &mut response.body;
        body.extend_from_slice(b"{\"date\":\"");
        calendar::write_date(body, day);
        body.extend_from_slice(b"\",\"videos\":[");
        for (index, (video_id, views, unique_viewers)) in ranked.into_iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"videoId\":");
            json::write_string(body, video_id);
            write_day_counts(body, views, unique_viewers);
        }
        body.extend_from_slice(b"]}");
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy, in which
    /// case the nearest untrusted address in `X-Forwarded-For` (read right to left, since
    /// only the entries our proxies appended can be believed).
    fn client_ip(&self, request: &Request<'_>) -> IpAddr {
        let peer = request.peer.ip().to_canonical();
        if self.trusted_proxies.is_empty() || !self.is_trusted(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = request
            .headers_named("x-forwarded-for")
            .flat_map(|value| value.split(|&b| b == b','))
            .filter_map(|item| std::str::from_utf8(item).ok())
            .filter_map(|item| item.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|ip| !self.is_trusted(**ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
    }

    /// With `--rate-limit`, how long this client must wait before its next request on
    /// this route (`None`: go ahead). Health checks, metrics and preflights are never
    /// limited.
    fn over_rate_limit(&self, route: Route<'_>, request: &Request<'_>) -> Option<Duration> {
        let limiter = self.rate_limiter.as_ref()?;
        if matches!(route, Route::Health | Route::Metrics) || request.method == "OPTIONS" {
            return None;
        }
        limiter
            .check(self.client_ip(request), route.kind().metric_index())
            .err()
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

impl Service for VideoApi {
    fn call(&self, request: &Request<'_>, response: &mut Response) {
        let started = self.metrics.request_started();
        let route = route(request.path());
        match self.over_rate_limit(route, request) {
            Some(wait) => refuse_too_many(wait, response),
            None => self.dispatch(route, request, response),
        }
        if let Some(origin) = self.cors.allowed_origin(request.header("origin")) {
            response.add_header("Access-Control-Allow-Origin", origin.as_bytes());
        }
        self.metrics.observe_request(
            route.kind().metric_index(),
            response.status(),
            Some(started),
        );
    }

    fn common_headers(&self) -> &[u8] {
        &self.common_headers
    }

    fn rejected(&self, error: &HttpError) {
        self.metrics
            .observe_request(RouteKind::Rejected.metric_index(), error.status(), None);
    }

    fn connection_opened(&self) {
        self.metrics.connections_open.inc();
        self.metrics.connections_accepted.inc();
    }

    fn connection_closed(&self) {
        self.metrics.connections_open.dec();
    }

    fn connection_parked(&self, parked: bool) {
        if parked {
            self.metrics.connections_parked.inc();
        } else {
            self.metrics.connections_parked.dec();
        }
    }
}

/// The API described in OpenAPI 3 (`docs/openapi.json`), served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../docs/openapi.json");
/// Its entity tag, a hash of the document.
static OPENAPI_ETAG: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| page::entity_tag(OPENAPI.as_bytes()));

/// A play: only the viewer's own cache may keep it, and it asks us before every use, so
/// each play reaches the server and is counted.
const PLAY: &str = "private, no-cache";
/// Responses any cache may store but must revalidate with us before every use.
const REVALIDATE: &str = "no-cache";
/// Responses no cache may keep. (Errors get it from [`Response::set_json_error`].)
const NEVER_STORE: &str = "no-store";

/// Sets the validator and caching of a revalidated resource, and answers `304 Not Modified`
/// (returning true) when the request's `If-None-Match` already holds `etag`.
fn revalidate(
    request: &Request<'_>,
    etag: &str,
    cache_control: &'static str,
    response: &mut Response,
) -> bool {
    response.set_cache_control(cache_control);
    response.add_header("ETag", etag.as_bytes());
    let not_modified = conditional::none_match(request, etag);
    if not_modified {
        response.set_status(304);
    }
    not_modified
}

/// A file of the page (compiled in), revalidated by its entity tag.
fn serve_page_file(asset: &page::Asset, request: &Request<'_>, response: &mut Response) {
    response.add_header("X-Content-Type-Options", b"nosniff");
    if !revalidate(request, &asset.etag, REVALIDATE, response) {
        response.set_content_type(asset.content_type);
        response.body.extend_from_slice(asset.body.as_bytes());
    }
}

/// A 429 that says when to come back.
fn refuse_too_many(wait: Duration, response: &mut Response) {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response.set_json_error(
        429,
        &format!("too many requests from this client; retry in {seconds} s"),
    );
    let mut digits = itoa::Buffer::new();
    response.add_header("Retry-After", digits.format(seconds.max(1)).as_bytes());
}

/// A 401 that says what was wrong and how to authenticate.
fn refuse_unauthorized(refusal: Refusal, response: &mut Response) {
    response.set_json_error(401, refusal.message());
    response.add_header("WWW-Authenticate", b"Bearer realm=\"video-server\"");
}

/// A CORS preflight: 204 with the methods the path answers.
fn preflight(route: Route<'_>, response: &mut Response) {
    let methods = route.allowed_methods().as_bytes();
    response.set_status(204);
    response.add_header("Access-Control-Allow-Methods", methods);
    response.add_header("Access-Control-Max-Age", b"86400");
    response.add_header("Allow", methods);
}

/// `application/json`, `application/json; charset=utf-8`, `application/*+json`.
fn is_json_media_type(value: &[u8]) -> bool {
    let essence = value
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() > 17
            && essence[..12].eq_ignore_ascii_case(b"application/")
            && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// Percent-decodes a path segment (`12%33` is `123`), as Express decoded route params.
fn decode_segment(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|byte| byte == b'%') {
        return Cow::Borrowed(raw);
    }
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy()
}

/// Parses `--trusted-proxies`: addresses or CIDR blocks, comma separated.
pub fn parse_trusted_proxies(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{item:?} is not an IP address or CIDR block"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/video/token"), Route::Token);
        assert_eq!(route("/video/token/"), Route::Token);
        assert_eq!(route("/video/12345"), Route::Video("12345"));
        assert_eq!(route("/video/12345/"), Route::Video("12345"));
        assert_eq!(route("/video/12345/views"), Route::VideoViews("12345"));
        assert_eq!(route("/video/"), Route::NotFound);
        assert_eq!(route("/video"), Route::NotFound);
        assert_eq!(route("/video/1/2"), Route::NotFound);
        assert_eq!(route("/"), Route::Page);
        assert_eq!(route("/assets/page.css"), Route::PageAsset("page.css"));
        assert_eq!(route("/assets/"), Route::NotFound);
        assert_eq!(route("/index.html"), Route::NotFound);
        assert_eq!(route("/healthz"), Route::Health);
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type(b"application/json"));
        assert!(is_json_media_type(b"Application/JSON; charset=utf-8"));
        assert!(is_json_media_type(b"application/vnd.api+json"));
        assert!(!is_json_media_type(b"text/plain"));
        assert!(!is_json_media_type(b"application/x-www-form-urlencoded"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode_segment("12%334"), "1234");
        assert_eq!(decode_segment("plain"), "plain");
    }

    #[test]
    fn trusted_proxy_lists() {
        let nets = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1,::1").expect("valid");
        assert_eq!(nets.len(), 3);
        assert!(nets[1].contains(&"127.0.0.1".parse::<IpAddr>().expect("ip")));
        assert!(parse_trusted_proxies("10.0.0.0/8,nope").is_err());
        assert!(parse_trusted_proxies("").expect("empty").is_empty());
    }
}
