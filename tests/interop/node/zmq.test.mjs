// Holdfast's ZeroMQ sockets with Node's `zeromq` package (libzmq, from the package's prebuilt
// addon): a PUSH of a `J` message to the PULL input, an XPUB that sees the SUB input subscribe to
// a held channel and publishes to it, and the stats socket's JSON packets.

import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import * as zmq from 'zeromq';

import { freePort, startHoldfast, startOrigin } from './support.mjs';

const TEST_TIMEOUT = 30_000;
const RECEIVE_TIMEOUT = 10_000;

/** An origin holding every request as a stream on `channel`, and a Holdfast with `[zmq]` on. */
async function setup(t, channel) {
  const origin = await startOrigin((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Grip-Hold': 'stream', 'Grip-Channel': channel });
    res.end('open\n');
  });
  const uris = {};
  for (const name of ['pull', 'sub', 'stats']) uris[name] = `tcp://127.0.0.1:${await freePort()}`;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-zmq-'));
  const config = path.join(dir, 'holdfast.toml');
  await writeFile(config, `[zmq]
push_in_spec = "${uris.pull}"
push_in_sub_specs = "${uris.sub}"
stats_spec = "${uris.stats}"
stats_format = "json"
stats_report_interval = 1
subscription_linger = 0
`);
  let hf;
  try {
    hf = await startHoldfast(origin.port, { args: ['--config', config] });
  } catch (err) {
    await origin.close();
    throw err;
  }
  const sockets = [];
  t.after(async () => {
    for (const s of sockets) s.close();
    await hf.stop();
    await origin.close();
  });
  t.after(() => {
    if (t.passed === false) t.diagnostic(`holdfast log:\n${hf.log()}`);
  });
  const socket = (s) => {
    if ('receiveTimeout' in s) s.receiveTimeout = RECEIVE_TIMEOUT;
    s.linger = 0;
    sockets.push(s);
    return s;
  };
  return { hf, uris, socket };
}

/** Opens a held stream and returns a reader that waits for text to arrive. */
async function openStream(hf) {
  const res = await fetch(hf.url('/s'), { signal: AbortSignal.timeout(20_000) });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let got = '';
  return {
    async until(text) {
      while (!got.includes(text)) {
        const { value, done } = await reader.read();
        assert.ok(!done, `stream ended before ${JSON.stringify(text)}; got ${JSON.stringify(got)}`);
        got += decoder.decode(value, { stream: true });
      }
      return got;
    },
    close: () => reader.cancel(),
  };
}

/** The next stats packet of `kind`, JSON-decoded. */
async function nextPacket(stats, kind) {
  for (;;) {
    const [msg] = await stats.receive();
    const text = msg.toString();
    const space = text.indexOf(' ');
    if (text.slice(0, space) !== kind) continue;
    assert.equal(text[space + 1], 'J', text);
    return JSON.parse(text.slice(space + 2));
  }
}

test('a J message pushed to the PULL input reaches a held stream', { timeout: TEST_TIMEOUT }, async (t) => {
  const { hf, uris, socket } = await setup(t, 'node-pull');
  const stream = await openStream(hf);
  assert.equal(await stream.until('open\n'), 'open\n');
  await hf.waitSubscriptions(1);
  const push = socket(new zmq.Push());
  push.connect(uris.pull);
  const item = { channel: 'node-pull', formats: { 'http-stream': { content: 'from node\n' } } };
  await push.send(`J${JSON.stringify(item)}`);
  assert.equal(await stream.until('from node\n'), 'open\nfrom node\n');
  await stream.close();
});

test('an XPUB sees the SUB input follow a held channel and reaches it', { timeout: TEST_TIMEOUT }, async (t) => {
  const { hf, uris, socket } = await setup(t, 'node-sub');
  const xpub = socket(new zmq.XPublisher());
  xpub.connect(uris.sub);
  const stream = await openStream(hf);
  await stream.until('open\n');
  const [subscribed] = await xpub.receive();
  assert.deepEqual(subscribed, Buffer.from('\x01node-sub'));
  await xpub.send(['node-sub', 'J{"formats": {"http-stream": {"content": "via xpub\\n"}}}']);
  assert.equal(await stream.until('via xpub\n'), 'open\nvia xpub\n');
  await stream.close();
  const [unsubscribed] = await xpub.receive();
  assert.deepEqual(unsubscribed, Buffer.from('\x00node-sub'));
});

test('the stats socket sends JSON conn and sub packets', { timeout: TEST_TIMEOUT }, async (t) => {
  const { hf, uris, socket } = await setup(t, 'node-stats');
  const stats = socket(new zmq.Subscriber());
  stats.connect(uris.stats);
  stats.subscribe();
  // Reports come every second: once one arrives, nothing sent after it is missed.
  const report = await nextPacket(stats, 'report');
  assert.match(report.from, /^holdfast_\d+$/);
  const stream = await openStream(hf);
  await stream.until('open\n');
  const conn = await nextPacket(stats, 'conn');
  assert.deepEqual(conn, {
    from: report.from, id: conn.id, type: 'http', 'peer-address': '127.0.0.1', ttl: 120,
  });
  const sub = await nextPacket(stats, 'sub');
  assert.deepEqual(sub, {
    from: report.from, mode: 'stream', channel: 'node-stats', subscribers: 1, ttl: 60,
  });
  await stream.close();
  assert.deepEqual(await nextPacket(stats, 'conn'), { from: report.from, id: conn.id, unavailable: true });
});
