// The page's logic that is not drawing: formatting, UTC days, the chart's scale and layout,
// reading a signed URL, choosing a source and explaining a failed one. No DOM here, so that
// `node --test web/` runs it as it is (web/logic.test.mjs); page.mjs imports it.

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAY_MS = 86_400_000;

/** A count with thousands separators: 1234567 → "1,234,567". */
export function formatCount(count) {
  if (!Number.isFinite(count)) return '–';
  const digits = String(Math.trunc(Math.abs(count)));
  const grouped = digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return count < 0 ? `-${grouped}` : grouped;
}

/** The UTC day of a time in milliseconds, as the API writes days: "2026-12-02". */
export function isoDay(epochMs) {
  return new Date(epochMs).toISOString().slice(0, 10);
}

/** The day `count` days after `day` (before, when negative): ("2026-03-01", -1) → "2026-02-28". */
export function addDays(day, count) {
  return isoDay(Date.parse(`${day}T00:00:00Z`) + count * DAY_MS);
}

/** The `count` days ending on `today`, both ends included, as `?from=&to=` takes them. */
export function dayRange(today, count) {
  return { from: addDays(today, 1 - count), to: today };
}

/** Every day from `from` to `to`, with its counts from `days` (zero where it has none). */
export function fillDays(days, from, to) {
  const known = new Map((days ?? []).map((day) => [day.date, day]));
  const filled = [];
  for (let day = from; day <= to; day = addDays(day, 1)) {
    const counted = known.get(day);
    filled.push({
      date: day,
      views: counted?.views ?? 0,
      uniqueViewers: counted?.uniqueViewers ?? 0,
    });
  }
  return filled;
}

/** A day for people: "2026-12-02" → "2 Dec". */
export function formatDay(day) {
  const [, month, date] = day.split('-').map(Number);
  return `${date} ${MONTHS[month - 1]}`;
}

/** A time of day in UTC for people: epoch seconds → "14:05:09 UTC". */
export function formatClock(epochSeconds) {
  return `${new Date(epochSeconds * 1000).toISOString().slice(11, 19)} UTC`;
}

/** How long until a moment, or since: 3725 → "in 1 h 2 min", -5 → "5 s ago". */
export function formatRemaining(seconds) {
  const whole = Math.round(Math.abs(seconds));
  let text;
  if (whole < 60) text = `${whole} s`;
  else if (whole < 3600) text = `${Math.floor(whole / 60)} min ${whole % 60} s`;
  else if (whole < 86_400) text = `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
  else text = `${Math.floor(whole / 86_400)} d ${Math.floor((whole % 86_400) / 3600)} h`;
  return seconds < 0 ? `${text} ago` : `in ${text}`;
}

/**
 * The server's clock minus ours, in milliseconds, from a response's `Date` header (to the
 * second): tokens expire by the server's clock and "today" is the server's day.
 */
export function clockSkew(dateHeader, localNowMs) {
  const serverMs = Date.parse(dateHeader ?? '');
  if (Number.isNaN(serverMs)) return 0;
  const skew = serverMs - localNowMs;
  // Within the header's one-second resolution, trust our own clock.
  return Math.abs(skew) < 1500 ? 0 : skew;
}

/**
 * A y axis for counts up to `max`: a top and a step that are whole numbers of the
 * 1-2-5 series, with at most `maxTicks` steps. 0 → {top: 1, step: 1}; 7 → {top: 8, step: 2}.
 */
export function niceScale(max, maxTicks = 4) {
  const ceiling = Math.max(1, Math.ceil(max));
  const rough = ceiling / maxTicks;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= rough));
  const top = Math.ceil(ceiling / step) * step;
  const ticks = [];
  for (let value = 0; value <= top; value += step) ticks.push(value);
  return { top, step, ticks };
}

/**
 * The bar chart of `days` (as fillDays gives them) in a `width` × `height` box, less margins
 * for the axis labels: one bar per day, the y ticks, and a label under every
 * `labelEvery`-th day counting back from the last (so today is always labelled).
 */
export function barChart(days, { width, height, left = 36, right = 16, bottom = 22, top = 8, labelEvery = 7 }) {
  const scale = niceScale(Math.max(0, ...days.map((day) => day.views)));
  const plotHeight = height - top - bottom;
  const slot = (width - left - right) / Math.max(1, days.length);
  const barWidth = Math.max(1, slot * 0.75);
  const y = (value) => top + plotHeight - (value / scale.top) * plotHeight;
  const bars = days.map((day, index) => ({
    ...day,
    x: left + index * slot + (slot - barWidth) / 2,
    y: y(day.views),
    width: barWidth,
    height: (day.views / scale.top) * plotHeight,
  }));
  const ticks = scale.ticks.map((value) => ({ value, y: y(value) }));
  const labels = bars
    .filter((_, index) => (days.length - 1 - index) % labelEvery === 0)
    .map((bar) => ({ x: bar.x + bar.width / 2, text: formatDay(bar.date) }));
  return { bars, ticks, labels, baseline: top + plotHeight, plotLeft: left, plotRight: width - right };
}

/** One sentence for a screen reader about what the chart shows. */
export function chartSummary(days) {
  if (days.length === 0) return 'No days to show.';
  const total = days.reduce((sum, day) => sum + day.views, 0);
  const first = formatDay(days[0].date);
  const last = formatDay(days[days.length - 1].date);
  if (total === 0) return `Views per day from ${first} to ${last}: none yet.`;
  const best = days.reduce((most, day) => (day.views > most.views ? day : most));
  return `Views per day from ${first} to ${last}: ${formatCount(total)} in all, ` +
    `most on ${formatDay(best.date)} (${formatCount(best.views)}).`;
}

/** CloudFront's URL-safe base64 (`-` `_` `~` for `+` `=` `/`) decoded to text, or null. */
function cloudFrontBase64(text) {
  try {
    return atob(text.replace(/-/g, '+').replace(/_/g, '=').replace(/~/g, '/'));
  } catch {
    return null;
  }
}

/**
 * What a signed URL says about itself: the CDN it points at (`origin`), the scheme that
 * signed it, as far as its query shows, and when it expires (epoch seconds; null when it
 * never does or cannot be told). The token answer carries only URLs, so this is read back
 * from them, per scheme (src/token/*.rs write them):
 * nginx `md5&expires`, Akamai `…~exp=…~hmac=`, CloudFront `Expires` or a `Policy`,
 * Google `Expires&KeyName`, bunny.net `token=HS256-…&expires`, the contract's `token`.
 */
export function describeSignedUrl(url, base = 'http://localhost/') {
  let parsed;
  try {
    parsed = new URL(url, base);
  } catch {
    return { origin: null, scheme: 'unknown', expiresAt: null };
  }
  const query = parsed.searchParams;
  const number = (value) => (value !== null && /^\d+$/.test(value) ? Number(value) : null);
  const describe = (scheme, expiresAt) => ({ origin: parsed.origin, scheme, expiresAt });
  if (query.has('md5') && query.has('expires')) return describe('nginx', number(query.get('expires')));
  if (query.has('Key-Pair-Id')) {
    if (query.has('Expires')) return describe('cloudfront', number(query.get('Expires')));
    const policy = cloudFrontBase64(query.get('Policy') ?? '');
    const match = policy && /"AWS:EpochTime"\s*:\s*(\d+)/.exec(policy.split('DateLessThan')[1] ?? '');
    return describe('cloudfront', match ? Number(match[1]) : null);
  }
  if (query.has('KeyName')) return describe('google', number(query.get('Expires')));
  const token = query.get('token');
  if (token?.startsWith('HS256-')) return describe('bunny', number(query.get('expires')));
  for (const value of query.values()) {
    const expiry = /(?:^|~)exp=(\d+)(?:~|$)/.exec(value);
    if (expiry && value.includes('hmac=')) return describe('akamai', Number(expiry[1]));
  }
  if (token && /^[0-9a-f]{32}$/.test(token)) return describe('md5', null);
  if (token && /^[0-9a-f]{64}$/.test(token)) return describe('sha256', null);
  return describe('unknown', null);
}

/** People's names of the signing schemes. */
export const SCHEME_NAMES = {
  nginx: 'nginx secure_link',
  akamai: 'Akamai EdgeAuth',
  cloudfront: 'CloudFront signed URL',
  google: 'Google Cloud CDN signed URL',
  bunny: 'bunny.net token',
  md5: 'MD5 token',
  sha256: 'SHA-256 token',
  unknown: 'unrecognised token',
};

/**
 * The source to play: the first whose type the browser may play (`canPlay(type)` is the
 * element's canPlayType), or null.
 */
export function pickSource(sources, canPlay) {
  return (sources ?? []).find((source) => canPlay(source.type) !== '') ?? null;
}

const MEDIA_ERRORS = {
  1: 'playback was aborted',
  2: 'a network error interrupted the download',
  3: 'the file could not be decoded',
  4: 'the file could not be loaded or its format is not supported',
};

/**
 * A readable sentence for a video that failed: from the HTTP status the CDN answered (if
 * the page could learn it; null otherwise), whether the token had expired by the page's
 * clock, and the media element's error code.
 */
export function failureMessage({ status = null, expired = false, mediaError = null, origin = 'the CDN' }) {
  if (status === 410 || (expired && status !== 403)) {
    return 'The signed URL has expired: the CDN no longer accepts it. Get a new token to play again.';
  }
  if (status === 403) {
    return `${origin} refused the signed URL (403 Forbidden): its token does not match this file, ` +
      'this viewer or the CDN\'s key.';
  }
  if (status === 404) return `${origin} has no such file (404 Not Found).`;
  if (status !== null && status >= 400) return `${origin} answered ${status}: the video cannot be played.`;
  const detail = MEDIA_ERRORS[mediaError] ?? 'the video could not be played';
  if (status !== null) return `The browser could not play this video: ${detail}.`;
  return `The video did not load from ${origin}: ${detail}. The CDN may have refused the signed ` +
    'URL, or it could not be reached.';
}
