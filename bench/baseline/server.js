'use strict';

// The service video-server replaces, re-created for the benchmarks: Node.js, Express 4 and
// Joi, one process, the two routes of docs/api.md's contract with the same tokens.
//
// The old service kept its catalog and its views in MongoDB. This re-creation keeps both in
// memory, as the old service ran for its load tests without a database: the catalog is a Map
// holding the seeded video 12345, and each view is appended to an array after the response
// has been handed to Express (setImmediate), so no request waits for it. The array is never
// trimmed; its length is printed on SIGINT/SIGTERM. bench/baseline/check.sh proves the
// tokens and answers match video-server's; bench/run.sh measures it beside ours.
//
//   PORT=3002 node server.js

const crypto = require('crypto');
const express = require('express');
const Joi = require('joi');

const port = Number(process.env.PORT) || 3002;

// The old service's three CloudFront distributions, taken in turn: one per token request.
const cdns = [
  { name: 'AWS CDN 1', address: 'https://d2usdis6r1u782.cloudfront.net', key: 'U5e0IskwtIfA' },
  { name: 'AWS CDN 2', address: 'https://d2oukvvww2uoq.cloudfront.net', key: '9Weh3dv6QgDN' },
  { name: 'AWS CDN 3', address: 'https://dbke9ww44or29.cloudfront.net', key: '7x1vGkO75i1Y' },
];
let cdnTurn = 0;

function nextCdn() {
  const cdn = cdns[cdnTurn];
  cdnTurn = (cdnTurn + 1) % cdns.length;
  return cdn;
}

// The contract's token: lowercase hex of MD5(src + "?secret=" + key), appended to the
// CDN's address and the source path.
function signedSrc(cdn, src) {
  const token = crypto.createHash('md5').update(`${src}?secret=${cdn.key}`).digest('hex');
  return `${cdn.address}${src}?token=${token}`;
}

const catalog = new Map();
catalog.set('12345', {
  _id: '6213a7299fa2604f1b188ee0',
  videoId: '12345',
  title: 'Big Buck Bunny',
  sources: [
    { src: '/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4', size: 1080, type: 'video/mp4' },
    { src: '/Big_Buck_Bunny_720p_surround_FrostWire.com.mp4', size: 720, type: 'video/mp4' },
  ],
});

const views = [];

// A string with something other than white space in it ("  " is empty, as in the contract).
const text = () => Joi.string().pattern(/\S/, 'non-blank');

// Joi objects refuse unknown keys by default: "no other keys anywhere".
const tokenRequest = Joi.object({
  video: Joi.object({
    _id: Joi.string().hex().length(24),
    videoId: text().required(),
    title: text().required(),
    sources: Joi.array().items(Joi.object({
      src: text().required(),
      size: Joi.number().integer().required(),
      type: text().required(),
    })).required(),
  }).required(),
});

const app = express();
app.use(express.json());
app.use((req, res, next) => {
  res.set('Access-Control-Allow-Origin', '*');
  res.set('Access-Control-Allow-Headers', '*');
  next();
});

// A browser's preflight, on either route.
app.options(['/video/token', '/video/:videoId'], (req, res) => {
  res.set('Access-Control-Allow-Methods', 'GET, HEAD, POST, OPTIONS');
  res.status(204).end();
});

app.post('/video/token', (req, res) => {
  // convert: false, or Joi would accept "1080" as a size by turning it into 1080.
  const { error } = tokenRequest.validate(req.body, { convert: false });
  if (error) {
    res.status(400).json({ error: error.details[0].message });
    return;
  }
  const cdn = nextCdn();
  const { video } = req.body;
  video.sources = video.sources.map((source) => ({ ...source, src: signedSrc(cdn, source.src) }));
  res.json(video);
});

app.get('/video/:videoId', (req, res) => {
  const video = catalog.get(req.params.videoId);
  if (video === undefined) {
    res.status(404).json({ error: `video ${JSON.stringify(req.params.videoId)} not found` });
    return;
  }
  res.json(video);
  const view = { videoId: video.videoId, clientIp: req.ip, timestamp: Date.now() };
  setImmediate(() => views.push(view));
});

// Bad JSON and oversized bodies keep the status body-parser gave them; the rest is a 500.
// Express knows an error handler by its four parameters, so `next` stays.
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  const status = err.status || err.statusCode || 500;
  res.status(status).json({ error: status < 500 ? err.message : 'internal error' });
});

const server = app.listen(port, () => {
  console.log(`node baseline listening on port ${port} (pid ${process.pid})`);
});

function stop(signal) {
  console.log(`${signal}: ${views.length} views recorded in memory; exiting`);
  server.close();
  process.exit(0);
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
