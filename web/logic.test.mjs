// Unit tests of the page's logic (web/logic.mjs): `node --test web/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  addDays,
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
  niceScale,
  pickSource,
} from './logic.mjs';

test('counts get thousands separators', () => {
  assert.equal(formatCount(0), '0');
  assert.equal(formatCount(999), '999');
  assert.equal(formatCount(1000), '1,000');
  assert.equal(formatCount(1234567), '1,234,567');
  assert.equal(formatCount(-4200), '-4,200');
  assert.equal(formatCount(undefined), '–');
});

test('days are UTC and cross months, leap days and years', () => {
  assert.equal(isoDay(Date.UTC(2026, 11, 2, 23, 59, 59)), '2026-12-02');
  assert.equal(addDays('2026-03-01', -1), '2026-02-28');
  assert.equal(addDays('2028-03-01', -1), '2028-02-29');
  assert.equal(addDays('2026-12-31', 1), '2027-01-01');
  assert.deepEqual(dayRange('2026-12-02', 30), { from: '2026-11-03', to: '2026-12-02' });
  assert.deepEqual(dayRange('2026-12-02', 1), { from: '2026-12-02', to: '2026-12-02' });
});

test('a range is filled with zeros where the answer has no day', () => {
  const days = fillDays([{ date: '2026-12-01', views: 3, uniqueViewers: 2 }], '2026-11-30', '2026-12-02');
  assert.deepEqual(days, [
    { date: '2026-11-30', views: 0, uniqueViewers: 0 },
    { date: '2026-12-01', views: 3, uniqueViewers: 2 },
    { date: '2026-12-02', views: 0, uniqueViewers: 0 },
  ]);
  assert.equal(fillDays(undefined, '2026-01-01', '2026-01-30').length, 30);
});

test('days and clock times read as people write them', () => {
  assert.equal(formatDay('2026-12-02'), '2 Dec');
  assert.equal(formatDay('2027-01-31'), '31 Jan');
  assert.equal(formatClock(Date.UTC(2026, 11, 2, 14, 5, 9) / 1000), '14:05:09 UTC');
  assert.equal(formatRemaining(0), 'in 0 s');
  assert.equal(formatRemaining(59.4), 'in 59 s');
  assert.equal(formatRemaining(299), 'in 4 min 59 s');
  assert.equal(formatRemaining(3725), 'in 1 h 2 min');
  assert.equal(formatRemaining(90_000), 'in 1 d 1 h');
  assert.equal(formatRemaining(-5), '5 s ago');
});

test('the server clock is believed only beyond the Date header resolution', () => {
  const now = Date.UTC(2026, 11, 2, 12, 0, 0, 400);
  assert.equal(clockSkew('Wed, 02 Dec 2026 12:00:00 GMT', now), 0);
  assert.equal(clockSkew('Wed, 02 Dec 2026 12:01:00 GMT', now), 59_600);
  assert.equal(clockSkew(null, now), 0);
  assert.equal(clockSkew('not a date', now), 0);
});

test('the y scale steps by 1, 2 or 5 times a power of ten and covers the maximum', () => {
  assert.deepEqual(niceScale(0), { top: 1, step: 1, ticks: [0, 1] });
  assert.deepEqual(niceScale(1), { top: 1, step: 1, ticks: [0, 1] });
  assert.deepEqual(niceScale(3), { top: 3, step: 1, ticks: [0, 1, 2, 3] });
  assert.deepEqual(niceScale(7), { top: 8, step: 2, ticks: [0, 2, 4, 6, 8] });
  assert.deepEqual(niceScale(10), { top: 10, step: 5, ticks: [0, 5, 10] });
  assert.deepEqual(niceScale(1234), { top: 1500, step: 500, ticks: [0, 500, 1000, 1500] });
  for (let max = 0; max < 5000; max += 37) {
    const { top, step, ticks } = niceScale(max);
    assert.ok(top >= max && Number.isInteger(step) && ticks.length <= 5 + 1, `max ${max}`);
    assert.equal(ticks.at(-1), top);
  }
});

test('the chart puts one bar per day inside the box, heights in proportion', () => {
  const days = fillDays([
    { date: '2026-12-01', views: 4, uniqueViewers: 1 },
    { date: '2026-12-02', views: 2, uniqueViewers: 2 },
  ], '2026-11-03', '2026-12-02');
  const chart = barChart(days, { width: 600, height: 200 });
  assert.equal(chart.bars.length, 30);
  for (const bar of chart.bars) {
    assert.ok(bar.x >= 36 && bar.x + bar.width <= 600 - 16 + 1e-9, `bar ${bar.date} inside`);
    assert.ok(Math.abs(bar.y + bar.height - chart.baseline) < 1e-9, 'bars stand on the baseline');
  }
  const [dec1, dec2] = chart.bars.slice(-2);
  assert.equal(dec1.height, 2 * dec2.height);
  assert.equal(dec1.y, chart.ticks.at(-1).y, 'the highest bar reaches the top tick (4)');
  assert.equal(chart.bars[0].height, 0);
  // Labels every seventh day, counting back from today, so today is always labelled.
  assert.deepEqual(chart.labels.map((label) => label.text), ['4 Nov', '11 Nov', '18 Nov', '25 Nov', '2 Dec']);
  // The last label is centred under the last bar, with room for its text before the edge.
  assert.ok(600 - chart.labels.at(-1).x >= 16 + 5, 'the last label fits');
});

test('the chart is summarised in one sentence', () => {
  const days = fillDays([{ date: '2026-12-01', views: 1234, uniqueViewers: 1 }], '2026-11-30', '2026-12-02');
  assert.equal(chartSummary(days), 'Views per day from 30 Nov to 2 Dec: 1,234 in all, most on 1 Dec (1,234).');
  assert.equal(chartSummary(fillDays([], '2026-11-30', '2026-12-02')), 'Views per day from 30 Nov to 2 Dec: none yet.');
});

test('a signed URL tells its CDN, its scheme and its expiry', () => {
  const cases = [
    ['http://127.0.0.1:8080/bound/demo.mp4?md5=Xc2L0zUDyk1PMjjoSKWnTw&expires=1796185592', 'nginx', 1796185592],
    ['https://v.example.net/a.mp4?__token__=ip=1.2.3.4~st=1492404013~exp=1492407613~hmac=ab12', 'akamai', 1492407613],
    ['https://v.example.net/a.mp4?hdnts=exp=1492407613~acl=/hls/*~hmac=ab12', 'akamai', 1492407613],
    ['https://d1.cloudfront.net/a.mp4?Expires=1257894000&Signature=abc~&Key-Pair-Id=K2JC', 'cloudfront', 1257894000],
    ['https://cdn.example.org/a.mp4?Expires=1558131010&KeyName=k&Signature=s', 'google', 1558131010],
    ['https://cdn.example.org/hls/a.m3u8?URLPrefix=aHR0cHM6&Expires=1558131010&KeyName=k&Signature=s', 'google', 1558131010],
    ['https://x.b-cdn.net/a.mp4?token=HS256-1-abc&token_path=%2Fa%2F&expires=1598024587', 'bunny', 1598024587],
    ['https://d2usdis6r1u782.cloudfront.net/a.mp4?token=c6346e68c6808c506faa8851ca0f6aef', 'md5', null],
    [`https://www.cdn.com/a.mp4?token=${'ab'.repeat(32)}`, 'sha256', null],
    ['https://plain.example/a.mp4', 'unknown', null],
  ];
  for (const [url, scheme, expiresAt] of cases) {
    assert.deepEqual(describeSignedUrl(url), { origin: new URL(url).origin, scheme, expiresAt }, url);
  }
  // A CloudFront custom policy: the expiry is its DateLessThan.
  const policy = '{"Statement":[{"Resource":"https://d1.cloudfront.net/a/*","Condition":' +
    '{"DateGreaterThan":{"AWS:EpochTime":100},"DateLessThan":{"AWS:EpochTime":1257894000}}}]}';
  const encoded = btoa(policy).replace(/\+/g, '-').replace(/=/g, '_').replace(/\//g, '~');
  const custom = describeSignedUrl(`https://d1.cloudfront.net/a/b.mp4?Policy=${encoded}&Signature=s&Key-Pair-Id=K`);
  assert.deepEqual(custom, { origin: 'https://d1.cloudfront.net', scheme: 'cloudfront', expiresAt: 1257894000 });
  // A relative address (a contract CDN whose address is not a URL) resolves against the page.
  assert.equal(describeSignedUrl('/a.mp4?token=c6346e68c6808c506faa8851ca0f6aef', 'http://page.example/').origin,
    'http://page.example');
  assert.equal(describeSignedUrl('http://[bad').scheme, 'unknown');
});

test('the first source the browser may play is chosen', () => {
  const sources = [
    { src: '/hls/a.m3u8', type: 'application/x-mpegURL' },
    { src: '/a.mp4', type: 'video/mp4' },
    { src: '/b.mp4', type: 'video/mp4' },
  ];
  const mp4Only = (type) => (type === 'video/mp4' ? 'maybe' : '');
  assert.equal(pickSource(sources, mp4Only).src, '/a.mp4');
  assert.equal(pickSource(sources.slice(0, 1), mp4Only), null);
  assert.equal(pickSource([], mp4Only), null);
});

test('a failed video is explained by what the CDN answered', () => {
  const origin = 'http://127.0.0.1:8080';
  assert.match(failureMessage({ status: 403, origin }), /^http:\/\/127\.0\.0\.1:8080 refused the signed URL \(403 Forbidden\)/);
  assert.match(failureMessage({ status: 410, origin }), /has expired/);
  // Expired by our clock and unknown status: expired. A 403 wins over our clock.
  assert.match(failureMessage({ expired: true, mediaError: 4 }), /has expired/);
  assert.match(failureMessage({ expired: true, status: 403, origin }), /refused/);
  assert.match(failureMessage({ status: 404, origin }), /has no such file \(404 Not Found\)/);
  assert.match(failureMessage({ status: 502, origin }), /answered 502/);
  assert.match(failureMessage({ status: 206, mediaError: 3 }), /could not be decoded/);
  assert.match(failureMessage({ mediaError: 4, origin }), /did not load from http:\/\/127\.0\.0\.1:8080: the file could not be loaded/);
  assert.match(failureMessage({}), /did not load from the CDN/);
});
