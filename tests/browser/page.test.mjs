// The page in a real browser, end to end: catalog → token → CDN verifier → playback → view
// → count. Debian's Chromium, driven by playwright-core (no browser download), against the
// demo (scripts/demo.sh: nginx with secure_link as the CDN origin, video-server in front),
// which this test starts and stops the way a person would, so the set-up has one code path.
//
//   node --test tests/browser/page.test.mjs       (scripts/test-page.sh runs it)
//
// Screenshots go to target/browser-test/ (BROWSER_TEST_OUT to change); with
// UPDATE_SCREENSHOT=1 the desktop one also replaces docs/page.png, which the README shows.
// Without Chromium or playwright-core the test is skipped, loudly; under CI it fails.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describeSignedUrl } from '../../web/logic.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const outDir = process.env.BROWSER_TEST_OUT ?? path.join(root, 'target/browser-test');
const VIDEO_TITLE = /Test pattern/;
const VIDEO_PATH = '/bound/test-pattern.mp4';

/** Why this machine cannot run the test, or null. */
async function missingTool() {
  if (!existsSync(chromiumPath)) return `${chromiumPath} is not installed (apt-get install chromium)`;
  try {
    await import('playwright-core');
  } catch {
    return 'playwright-core is not installed (npm ci in tests/browser)';
  }
  return null;
}
const missing = await missingTool();
if (missing) {
  const message = `the browser test cannot run: ${missing}; scripts/install-test-tools.sh installs it`;
  if (process.env.CI) throw new Error(message);
  console.error(`\n*** SKIPPED: ${message} ***\n`);
}

/** Polls `probe` every 50 ms until it gives a truthy value; throws after `ms`. */
async function until(what, ms, probe) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

let demo;
let demoOutput = '';
let ready;
let context;
let userDataDir;
let scratch;

before(async () => {
  if (missing) return;
  scratch = mkdtempSync(path.join(tmpdir(), 'video-server-browser-'));
  const readyFile = path.join(scratch, 'ready.json');
  demo = spawn('bash', [path.join(root, 'scripts/demo.sh')], {
    env: { ...process.env, DEMO_READY_FILE: readyFile, DEMO_TTL_SECONDS: '600' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  demo.stdout.on('data', (chunk) => { demoOutput += chunk; });
  demo.stderr.on('data', (chunk) => { demoOutput += chunk; });
  // The first run may build video-server.
  ready = await until('scripts/demo.sh to be ready', 300_000, () => {
    if (demo.exitCode !== null) throw new Error(`scripts/demo.sh exited ${demo.exitCode}:\n${demoOutput}`);
    return existsSync(readyFile) && JSON.parse(readFileSync(readyFile, 'utf8'));
  });
  userDataDir = path.join(scratch, 'chromium-profile');
  mkdirSync(outDir, { recursive: true });
  const { chromium } = await import('playwright-core');
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1200, height: 860 },
    // Without the background-networking flags Chromium calls home, on a closed network.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await context?.close();
  if (demo && demo.exitCode === null) {
    const exited = new Promise((resolve) => demo.once('exit', resolve));
    demo.kill('SIGTERM');
    await exited;
  }
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  // The demo removes what it wrote: its nginx, its store, its logs.
  if (ready) assert.equal(existsSync(ready.work), false, `the demo left ${ready.work} behind`);
});

/** `GET` on video-server as JSON. */
async function api(pathAndQuery) {
  const response = await fetch(new URL(pathAndQuery, ready.url));
  assert.equal(response.status, 200, `${pathAndQuery}: ${response.status}`);
  return response.json();
}

async function metric(name) {
  const text = await (await fetch(new URL('/metrics', ready.url))).text();
  const line = text.split('\n').find((each) => each.startsWith(`${name} `));
  return Number(line?.split(' ')[1] ?? 0);
}

/** A page that records what it logs and what the CDN answered. */
async function openPage() {
  const page = await context.newPage();
  const seen = { errors: [], media: [] };
  page.on('console', (message) => {
    if (message.type() === 'error') seen.errors.push(message.text());
  });
  page.on('pageerror', (error) => seen.errors.push(String(error)));
  page.on('response', (response) => {
    if (response.url().startsWith(ready.cdn)) seen.media.push({ url: response.url(), status: response.status() });
  });
  await page.goto(ready.url);
  await page.getByRole('button', { name: VIDEO_TITLE }).waitFor();
  return { page, seen };
}

test('the page plays the video through a signed URL from the nginx origin, and its view arrives', { skip: missing ?? false, timeout: 120_000 }, async () => {
  const { page, seen } = await openPage();
  const before = await api('/video/test-pattern/views');

  // From the keyboard: Tab to the video in the list, Enter to choose it.
  await until('keyboard focus on the video', 10_000, async () => {
    await page.keyboard.press('Tab');
    return page.evaluate(() => document.activeElement?.textContent?.includes('Test pattern'));
  });
  await page.keyboard.press('Enter');

  // Actually playing, muted, from the nginx origin, through the signed URL.
  await page.waitForFunction(() => {
    const video = document.querySelector('video');
    return !video.paused && video.muted && video.readyState >= 3 && video.currentTime > 0.5;
  }, null, { timeout: 20_000 });
  const source = new URL(await page.evaluate(() => document.querySelector('video').currentSrc));
  assert.equal(source.origin, ready.cdn);
  assert.equal(source.pathname, VIDEO_PATH);
  assert.match(source.searchParams.get('md5') ?? '', /^[A-Za-z0-9_-]{22}$/);
  assert.match(source.searchParams.get('expires') ?? '', /^\d+$/);
  assert.ok(seen.media.some((each) => each.url === source.href && [200, 206].includes(each.status)),
    `nginx served the signed URL: ${JSON.stringify(seen.media)}`);
  const signedBy = await page.locator('#signed-by').textContent();
  assert.equal(signedBy, `${ready.cdn} (nginx secure_link)`);
  assert.match(await page.locator('#signed-expiry').textContent(), /^\d\d:\d\d:\d\d UTC \(in (9|10) min \d+ s\)$/);

  // The play counts one view, and the page shows it arrive.
  const expected = String(before.today + 1);
  await page.waitForFunction((text) => document.getElementById('views-today').textContent === text,
    expected, { timeout: 15_000 });
  const afterPlay = await api('/video/test-pattern/views');
  assert.equal(afterPlay.views, before.views + 1, 'one play, one view');
  assert.equal(await page.locator('#views-total').textContent(), String(afterPlay.views));
  assert.equal(await page.locator('#uniques-today').textContent(), '1');

  // The chart: 30 days, today's bar with the new count, a summary for screen readers.
  const chart = page.getByRole('img', { name: /^Views per day from/ });
  await chart.waitFor();
  assert.equal(await page.locator('#chart rect.bar').count(), 30);
  const todayBar = page.locator('#chart rect.bar.today');
  await until('today\'s bar to show the view', 5_000, async () => (await todayBar.getAttribute('data-views')) === expected);
  assert.ok(Number(await todayBar.getAttribute('height')) > 0, 'today\'s bar is drawn');

  // The day's ranking lists it.
  await page.locator('#top-list li', { hasText: VIDEO_TITLE }).waitFor({ timeout: 10_000 });
  // Polls revalidate: once the count stops moving, the browser's poll is a 304 (no body).
  await until('a poll of the counts answered 304', 10_000,
    async () => (await metric('http_requests_total{route="video_views",status="304"}')) > 0);

  assert.deepEqual(seen.errors, [], 'no errors in the console (CSP included)');
  await page.screenshot({ path: path.join(outDir, 'page.png'), fullPage: true });
  if (process.env.UPDATE_SCREENSHOT === '1') copyFileSync(path.join(outDir, 'page.png'), path.join(root, 'docs/page.png'));

  // A phone-sized screen: nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await until('the chart to fit the phone', 5_000, () => page.evaluate(() => document.documentElement.scrollWidth <= 390));
  await page.screenshot({ path: path.join(outDir, 'page-phone.png'), fullPage: true });
  await page.close();
});

test('a tampered token shows the error state and counts no view', { skip: missing ?? false, timeout: 60_000 }, async () => {
  const { page } = await openPage();
  // The token answer as the server sent it, but with one character of the hash changed.
  await page.route('**/video/token', async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    for (const source of body.sources) {
      const url = new URL(source.src);
      const hash = url.searchParams.get('md5');
      url.searchParams.set('md5', (hash[0] === 'A' ? 'B' : 'A') + hash.slice(1));
      source.src = url.href;
    }
    await route.fulfill({ response, json: body });
  });
  const accepted = await metric('views_accepted_total');
  await page.getByRole('button', { name: VIDEO_TITLE }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor({ timeout: 20_000 });
  assert.match(await alert.textContent(), /refused the signed URL \(403 Forbidden\)/);
  assert.equal(await page.locator('video').isVisible(), false, 'the error replaces the player');
  assert.equal(await page.getByRole('button', { name: /Get a new token/ }).isVisible(), true);
  assert.equal(await metric('views_accepted_total'), accepted, 'a refused video is no view');
  await page.screenshot({ path: path.join(outDir, 'page-refused.png') });
  await page.close();
});

test('the page reads the CDN, scheme and expiry of what video-server signs, for every scheme', { skip: missing ?? false }, () => {
  // The token answer carries only URLs, so web/logic.mjs reads them back: checked here
  // against the URLs the binary itself writes (`video-server sign`), a file and an HLS
  // folder token per scheme, so that a change of a URL format cannot leave the page behind.
  const at = 1_700_000_000;
  const cdns = [
    { scheme: 'md5', key: 'k' },
    { scheme: 'sha256', key: 'k' },
    { scheme: 'nginx', key: 'k', ttl_seconds: 600 },
    { scheme: 'akamai', key: '7a5c2be9f42a1f32cd889d1cf775f05d', ttl_seconds: 600 },
    { scheme: 'cloudfront', key_file: path.join(root, 'tests/fixtures/cloudfront-test-key.pem'),
      key_id: 'K2JCJMDEHXQW5F', ttl_seconds: 3600 },
    { scheme: 'google', key: 'nZtRohdNF9m3cKM24IcK4w==', key_id: 'my-key', ttl_seconds: 600 },
    { scheme: 'bunny', key: 'SecurityKey', ttl_seconds: 600 },
  ];
  const file = path.join(scratch, 'cdns.json');
  writeFileSync(file, JSON.stringify(cdns.map((cdn) => ({ name: cdn.scheme, address: 'https://cdn.example.com', ...cdn }))));
  for (const cdn of cdns) {
    for (const [src, type] of [['/videos/a.mp4', 'video/mp4'], ['/hls/a/master.m3u8', 'application/x-mpegURL']]) {
      const url = execFileSync(ready.bin, ['sign', '--cdns', file, '--cdn', cdn.scheme, '--at', String(at), '--type', type, src],
        { encoding: 'utf8' }).trim();
      const read = describeSignedUrl(url);
      assert.equal(read.origin, 'https://cdn.example.com', url);
      assert.equal(read.scheme, cdn.scheme, url);
      if (cdn.ttl_seconds === undefined) {
        assert.equal(read.expiresAt, null, url);
      } else if (cdn.scheme === 'cloudfront') {
        // Rounded up to a window of a tenth of the TTL, so that signatures are reused.
        assert.ok(read.expiresAt >= at + cdn.ttl_seconds && read.expiresAt <= at + 1.1 * cdn.ttl_seconds, url);
      } else {
        assert.equal(read.expiresAt, at + cdn.ttl_seconds, url);
      }
    }
  }
});
