// The player page: the catalog, playback through a signed URL, live counts, the chart and
// the day's top videos. Everything here touches the DOM or the network; what has logic of
// its own is in logic.mjs, with unit tests. Text is only ever set with textContent.
import {
  barChart,
  chartSummary,
  clockSkew,
  dayRange,
  describeSignedUrl,
  failureMessage,
  fillDays,
  formatClock,
  formatCount,
  formatDay,
  formatRemaining,
  isoDay,
  pickSource,
  SCHEME_NAMES,
} from '/assets/logic.mjs';

/** How often counts and the ranking are asked for (a count that has not moved is a 304). */
const POLL_MS = 2000;
const CHART_DAYS = 30;
const CHART_HEIGHT = 200;
const PAGE_SIZE = 20;

const $ = (id) => document.getElementById(id);
const video = $('video');

const state = {
  /** The catalog loaded so far: videoId → its document. */
  videos: new Map(),
  /** The `after` of the next catalog page, or null. */
  next: null,
  /** The chosen video's id. */
  selected: null,
  /** Each choice (or retry) gets a number; an answer for an older one is dropped. */
  choice: 0,
  /** The signed source being played: { url, info } (info from describeSignedUrl). */
  playing: null,
  /** Whether this load's play has been recorded (one view per play). */
  counted: false,
  /** The server's clock minus ours (ms): tokens expire by the server's clock. */
  skewMs: 0,
  /** False once /videos/top answered 501 (a server whose ranking is turned off). */
  topAvailable: true,
  /** The last ranking drawn, to redraw only on change. */
  lastTop: '',
  /** The days the chart shows, to redraw it when its width changes. */
  days: [],
  pollTimer: 0,
};

const serverNow = () => Date.now() + state.skewMs;

/** A JSON request to this server: { status, ok, body } (body null if not JSON). */
async function requestJson(path, options = {}) {
  const response = await fetch(path, { cache: 'no-cache', ...options });
  if (response.ok) state.skewMs = clockSkew(response.headers.get('date'), Date.now());
  const body = await response.json().catch(() => null);
  return { status: response.status, ok: response.ok, body };
}

/** Sets an element's text, only when it changes (a live region announces each change). */
function text(id, value) {
  const element = $(id);
  if (element.textContent !== value) element.textContent = value;
}

// ---- the catalog ----------------------------------------------------------------------

async function loadCatalogPage() {
  const more = $('catalog-more');
  more.disabled = true;
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.next) query.set('after', state.next);
  let answer;
  try {
    answer = await requestJson(`/videos?${query}`);
  } catch {
    text('catalog-status', 'The catalog could not be loaded: the server did not answer.');
    more.disabled = false;
    return;
  }
  if (!answer.ok || !Array.isArray(answer.body?.videos)) {
    text('catalog-status', `The catalog could not be loaded (${answer.status}): ${answer.body?.error ?? 'no reason given'}.`);
    more.disabled = false;
    return;
  }
  const list = $('catalog-list');
  for (const doc of answer.body.videos) {
    state.videos.set(doc.videoId, doc);
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'video';
    button.dataset.videoId = doc.videoId;
    button.setAttribute('aria-pressed', 'false');
    const title = document.createElement('span');
    title.className = 'title';
    title.textContent = doc.title;
    const id = document.createElement('span');
    id.className = 'id';
    id.textContent = `${doc.videoId} · ${doc.sources.length} source${doc.sources.length === 1 ? '' : 's'}`;
    button.append(title, id);
    button.addEventListener('click', () => choose(doc.videoId));
    item.append(button);
    list.append(item);
  }
  state.next = answer.body.next;
  more.hidden = state.next === null;
  more.disabled = false;
  const count = state.videos.size;
  text('catalog-status', count === 0 ? 'The catalog is empty.' :
    `${formatCount(count)} video${count === 1 ? '' : 's'}${state.next ? ' so far' : ''}.`);
}

// ---- playback -------------------------------------------------------------------------

function showError(message, canRetry = true) {
  text('play-error-text', message);
  $('retry').hidden = !canRetry;
  $('play-error').hidden = false;
  $('screen').classList.add('failed');
  video.hidden = true;
  text('play-state', 'Not playing.');
}

function clearError() {
  $('play-error').hidden = true;
  $('screen').classList.remove('failed');
  video.hidden = false;
}

/** Chooses a video: asks for a signed URL and plays it, muted, from the CDN. */
async function choose(videoId) {
  const doc = state.videos.get(videoId);
  if (!doc) return;
  const choice = ++state.choice;
  if (state.selected !== videoId) {
    state.selected = videoId;
    state.days = [];
    for (const id of ['views-today', 'uniques-today', 'views-total']) text(id, '–');
    drawChart();
  }
  state.playing = null;
  state.counted = false;
  for (const button of document.querySelectorAll('button.video')) {
    button.setAttribute('aria-pressed', String(button.dataset.videoId === videoId));
  }
  text('player-title', doc.title);
  clearError();
  $('signed').hidden = true;
  video.removeAttribute('src');
  video.load();
  text('play-state', 'Asking the server for a signed URL…');
  pollSoon();

  let answer;
  try {
    answer = await requestJson('/video/token', {
      method: 'POST',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ video: doc }),
    });
  } catch {
    if (choice === state.choice) showError('The server could not be reached to sign the video.');
    return;
  }
  if (choice !== state.choice) return;
  if (!answer.ok) {
    showError(`The server refused to sign this video (${answer.status}): ${answer.body?.error ?? 'no reason given'}.`);
    return;
  }
  const sources = answer.body?.sources ?? [];
  const source = pickSource(sources, (type) => video.canPlayType(type));
  if (!source) {
    const types = sources.map((each) => each.type).join(', ') || 'none';
    showError(`This browser cannot play any source of this video (types: ${types}).`, false);
    return;
  }
  const info = describeSignedUrl(source.src, location.href);
  state.playing = { url: source.src, info };
  text('signed-by', `${info.origin} (${SCHEME_NAMES[info.scheme]})`);
  showExpiry();
  $('signed').hidden = false;
  text('play-state', 'Loading the video from the CDN…');
  video.src = source.src;
  try {
    await video.play();
  } catch (error) {
    // A refused or broken source is reported by the element's error event.
    if (choice === state.choice && error.name === 'NotAllowedError') text('play-state', 'Press play to start.');
  }
}

function showExpiry() {
  const expiresAt = state.playing?.info.expiresAt;
  if (expiresAt === undefined) return;
  text('signed-expiry', expiresAt === null ? 'never (this scheme does not expire)' :
    `${formatClock(expiresAt)} (${formatRemaining(expiresAt - serverNow() / 1000)})`);
}

/** Why the video failed, as far as the page can learn: its clock, then the CDN's answer. */
async function explainFailure() {
  const playing = state.playing;
  if (!playing) return;
  const choice = state.choice;
  const mediaError = video.error?.code ?? null;
  const expired = playing.info.expiresAt !== null && playing.info.expiresAt * 1000 <= serverNow();
  let status = null;
  try {
    // Readable only when the CDN allows this page's origin (CORS); otherwise status stays null.
    status = (await fetch(playing.url, { method: 'HEAD', cache: 'no-store' })).status;
  } catch {
    status = null;
  }
  if (choice !== state.choice) return;
  showError(failureMessage({ status, expired, mediaError, origin: playing.info.origin }));
}

video.addEventListener('playing', () => {
  text('play-state', 'Playing (muted: unmute with the controls).');
  if (state.counted || !state.selected) return;
  state.counted = true;
  // The play itself: GET /video/:id records one view, then the counts are asked for.
  fetch(`/video/${encodeURIComponent(state.selected)}`, { cache: 'no-store' })
    .catch(() => {})
    .finally(pollSoon);
});
video.addEventListener('pause', () => {
  if (!video.ended && !video.error) text('play-state', 'Paused.');
});
video.addEventListener('waiting', () => text('play-state', 'Buffering…'));
video.addEventListener('ended', () => {
  state.counted = false;
  text('play-state', 'Finished. Play it again to count another view.');
});
video.addEventListener('error', () => {
  if (video.getAttribute('src')) explainFailure();
});

// ---- counts, the chart, the ranking ---------------------------------------------------

async function pollViews() {
  const id = state.selected;
  if (!id) return;
  const { from, to } = dayRange(isoDay(serverNow()), CHART_DAYS);
  const answer = await requestJson(`/video/${encodeURIComponent(id)}/views?from=${from}&to=${to}`);
  if (id !== state.selected) return;
  if (!answer.ok) {
    text('chart-summary', `The counts could not be loaded (${answer.status}): ${answer.body?.error ?? 'no reason given'}.`);
    return;
  }
  const counts = answer.body;
  const perDay = counts.today !== undefined;
  text('views-today', perDay ? formatCount(counts.today) : 'not counted');
  text('uniques-today', perDay ? formatCount(counts.uniqueViewersToday) : 'not counted');
  text('views-total', formatCount(counts.views));
  if (Array.isArray(counts.days)) {
    state.days = fillDays(counts.days, from, to);
    drawChart();
  } else {
    state.days = [];
    drawChart();
    text('chart-summary', 'This server\'s store does not count views per day, so there is no chart.');
  }
}

const SVG = 'http://www.w3.org/2000/svg';

function svgElement(name, attributes, content) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (content !== undefined) element.textContent = content;
  return element;
}

/** Draws state.days as bars, at the width the chart has on screen. */
function drawChart() {
  const svg = $('chart');
  const table = $('chart-table');
  const days = state.days;
  const width = Math.max(240, Math.round(svg.getBoundingClientRect().width) || 600);
  svg.setAttribute('viewBox', `0 0 ${width} ${CHART_HEIGHT}`);
  svg.replaceChildren();
  table.replaceChildren();
  if (days.length === 0) {
    text('chart-summary', 'Views per day, last 30 days (UTC), once a video is chosen.');
    return;
  }
  const chart = barChart(days, { width, height: CHART_HEIGHT, labelEvery: width < 420 ? 14 : 7 });
  for (const tick of chart.ticks) {
    svg.append(
      svgElement('line', { class: 'grid', x1: chart.plotLeft, x2: chart.plotRight, y1: tick.y, y2: tick.y }),
      svgElement('text', { class: 'tick', x: chart.plotLeft - 6, y: tick.y + 4, 'text-anchor': 'end' }, formatCount(tick.value)),
    );
  }
  const today = days[days.length - 1].date;
  for (const bar of chart.bars) {
    const rect = svgElement('rect', {
      class: bar.date === today ? 'bar today' : 'bar',
      x: bar.x.toFixed(2), y: bar.y.toFixed(2), width: bar.width.toFixed(2), height: bar.height.toFixed(2),
      'data-date': bar.date, 'data-views': bar.views,
    });
    rect.append(svgElement('title', {}, `${formatDay(bar.date)}: ${formatCount(bar.views)} views, ` +
      `${formatCount(bar.uniqueViewers)} unique viewers`));
    svg.append(rect);
  }
  for (const label of chart.labels) {
    svg.append(svgElement('text', { class: 'label', x: label.x.toFixed(2), y: chart.baseline + 16, 'text-anchor': 'middle' }, label.text));
  }
  text('chart-summary', chartSummary(days));
  for (const day of [...days].reverse()) {
    const row = document.createElement('tr');
    for (const value of [formatDay(day.date), formatCount(day.views), formatCount(day.uniqueViewers)]) {
      const cell = document.createElement('td');
      cell.textContent = value;
      row.append(cell);
    }
    table.append(row);
  }
}

async function pollTop() {
  if (!state.topAvailable) return;
  const answer = await requestJson('/videos/top?limit=5');
  if (answer.status === 501) {
    state.topAvailable = false;
    text('top-status', 'This server does not rank videos by views (its ranking is turned off).');
    return;
  }
  if (!answer.ok || !Array.isArray(answer.body?.videos)) {
    text('top-status', `The ranking could not be loaded (${answer.status}).`);
    return;
  }
  const key = JSON.stringify(answer.body);
  if (key === state.lastTop) return;
  state.lastTop = key;
  const list = $('top-list');
  list.replaceChildren();
  for (const entry of answer.body.videos) {
    const item = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'title';
    name.textContent = state.videos.get(entry.videoId)?.title ?? entry.videoId;
    const counts = document.createElement('span');
    counts.className = 'id';
    counts.textContent = `${formatCount(entry.views)} view${entry.views === 1 ? '' : 's'}, ` +
      `${formatCount(entry.uniqueViewers)} unique`;
    item.append(name, counts);
    list.append(item);
  }
  text('top-status', answer.body.videos.length === 0 ? `No views yet on ${formatDay(answer.body.date)} (UTC).` : '');
}

async function poll() {
  clearTimeout(state.pollTimer);
  try {
    await Promise.all([pollViews(), pollTop()]);
  } catch {
    // The server is away for a moment: the next poll tries again.
  }
  if (!document.hidden) state.pollTimer = setTimeout(poll, POLL_MS);
}

function pollSoon() {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(poll, 0);
}

// ---- start ----------------------------------------------------------------------------

$('catalog-more').addEventListener('click', loadCatalogPage);
$('retry').addEventListener('click', () => state.selected && choose(state.selected));
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) pollSoon();
});
setInterval(showExpiry, 1000);
let drawnWidth = 0;
new ResizeObserver(([entry]) => {
  const width = Math.round(entry.contentRect.width);
  if (width !== drawnWidth) {
    drawnWidth = width;
    drawChart();
  }
}).observe($('chart'));
await loadCatalogPage();
poll();
