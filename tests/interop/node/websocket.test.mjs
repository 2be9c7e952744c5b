// WebSocket-over-HTTP (target `over_http`) with an Express origin built on
// @fanoutio/serve-grip in the stateless WebSocket pattern, a real `ws` client, and publishing
// through the origin's own Publisher.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { WebSocketMessageFormat, validateSig } from '@fanoutio/grip';
import { ServeGrip } from '@fanoutio/serve-grip';
import express from 'express';
import WebSocket from 'ws';

import { holdfastBin, waitUntil } from './support.mjs';

const TEST_TIMEOUT = 30_000;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Holdfast routing everything to `127.0.0.1:<originPort>` over WebSocket-over-HTTP. Stops when
 * the test ends; its log is reported when the test failed.
 */
async function startOverHttpHoldfast(t, originPort) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-ws-interop-'));
  const routes = path.join(dir, 'routes');
  await writeFile(routes, `* 127.0.0.1:${originPort},over_http\n`);
  const log = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const pubPort = await freePort();
    const child = spawn(
      holdfastBin,
      ['--listen', `127.0.0.1:${port}`, '--publish-listen', `127.0.0.1:${pubPort}`,
        '--routes', routes, '--log-level', 'info'],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } },
    );
    child.stdout.on('data', (d) => log.push(d.toString()));
    child.stderr.on('data', (d) => log.push(d.toString()));
    const exit = new Promise((resolve) => child.once('exit', resolve));
    let exited = false;
    exit.then(() => { exited = true; });
    const hf = {
      controlUri: `http://127.0.0.1:${pubPort}`,
      wsUrl: (p = '/') => `ws://127.0.0.1:${port}${p}`,
      async subscriptions() {
        const res = await fetch(`http://127.0.0.1:${pubPort}/metrics`, { signal: AbortSignal.timeout(5000) });
        const m = /^holdfast_subscriptions (\d+)\s*$/m.exec(await res.text());
        return m ? Number(m[1]) : NaN;
      },
      async waitSubscriptions(n) {
        await waitUntil(async () => (await hf.subscriptions()) === n, { what: `holdfast_subscriptions == ${n}` });
      },
      async stop() {
        if (exited) return;
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exit;
        clearTimeout(killer);
      },
    };
    const ready = await waitUntil(async () => {
      if (exited) return 'exited';
      try {
        const res = await fetch(`http://127.0.0.1:${pubPort}/metrics`, { signal: AbortSignal.timeout(2000) });
        await res.text();
        return res.ok ? 'ready' : false;
      } catch {
        return false;
      }
    }, { timeout: 15_000, what: 'holdfast to listen' }).catch(() => 'timeout');
    if (ready === 'ready') {
      t.after(async () => {
        await hf.stop();
        await rm(dir, { recursive: true, force: true });
      });
      t.after(() => {
        if (t.passed === false) t.diagnostic(`holdfast log:\n${log.join('')}`);
      });
      return hf;
    }
    await hf.stop();
  }
  await rm(dir, { recursive: true, force: true });
  throw new Error(`holdfast (${holdfastBin}) did not start; log:\n${log.join('')}`);
}

/**
 * The stateless WebSocket pattern of serve-grip: every WebSocket-over-HTTP request is handled
 * on its own; an opening connection is accepted and subscribed to `room`, text is echoed, a
 * close is answered. `seen` records every request's events as serve-grip decoded them, and
 * whether its Grip-Sig verifies with Pushpin's default key and issuer.
 */
async function startOrigin(t) {
  const seen = [];
  const serveGrip = new ServeGrip({ grip: { control_uri: 'http://127.0.0.1:1' } });
  const app = express();
  app.use(serveGrip);
  app.post('/chat', async (req, res) => {
    const { wsContext } = req.grip;
    if (wsContext == null) {
      res.statusCode = 400;
      res.end('Not a WebSocket-over-HTTP request\n');
      return;
    }
    const signed = await validateSig(req.headers['grip-sig'], 'changeme', 'pushpin');
    const record = { cid: wsContext.id, signed, meta: { ...wsContext.meta }, events: [] };
    seen.push(record);
    if (wsContext.isOpening()) {
      record.events.push('OPEN');
      wsContext.accept();
      wsContext.subscribe('room');
      wsContext.meta.user = 'alice';
    }
    try {
      while (wsContext.canRecv()) {
        const message = wsContext.recv();
        if (message == null) {
          record.events.push(`CLOSE ${wsContext.closeCode}`);
          wsContext.close();
          break;
        }
        record.events.push(`TEXT ${message}`);
        wsContext.send(`echo ${message}`);
      }
    } catch {
      record.events.push('DISCONNECT');
    }
    res.end();
  });
  app.post('/refuse', (req, res) => {
    res.statusCode = 403;
    res.setHeader('X-Why', 'nope');
    res.end('go away\n');
  });
  const server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  t.after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return { port: server.address().port, seen };
}

/** A `ws` client with a queue of what it received. */
function connect(url) {
  const ws = new WebSocket(url);
  const messages = [];
  let closed = null;
  ws.on('message', (data) => messages.push(data.toString()));
  ws.on('close', (code, reason) => { closed = { code, reason: reason.toString() }; });
  return {
    ws,
    opened: new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }),
    next: () => waitUntil(() => messages.length > 0 && messages.shift(), { what: 'a message' }),
    closed: () => waitUntil(() => closed, { what: 'the close' }),
  };
}

test('an Express + serve-grip origin accepts, subscribes, echoes and gets published to', { timeout: TEST_TIMEOUT }, async (t) => {
  const origin = await startOrigin(t);
  const hf = await startOverHttpHoldfast(t, origin.port);
  const client = connect(hf.wsUrl('/chat'));
  await client.opened;
  await hf.waitSubscriptions(1);

  const publisher = new ServeGrip({ grip: { control_uri: hf.controlUri } }).getPublisher();
  await publisher.publishFormats('room', new WebSocketMessageFormat('pushed!'));
  assert.equal(await client.next(), 'pushed!');

  client.ws.send('hi');
  assert.equal(await client.next(), 'echo hi');

  client.ws.close(4000, 'done');
  assert.equal((await client.closed()).code, 4000);
  await waitUntil(() => origin.seen.some((r) => r.events.some((e) => e.startsWith('CLOSE'))), { what: 'the CLOSE at the origin' });
  await hf.waitSubscriptions(0);

  assert.deepEqual(origin.seen[0].events, ['OPEN']);
  assert.equal(new Set(origin.seen.map((r) => r.cid)).size, 1, 'one Connection-Id');
  assert.ok(origin.seen.every((r) => r.signed), 'every request carries a valid Grip-Sig');
  const text = origin.seen.find((r) => r.events.includes('TEXT hi'));
  assert.equal(text.meta.user, 'alice', 'Set-Meta-User came back as Meta-User');
});

test('publishing close ends the client with its code', { timeout: TEST_TIMEOUT }, async (t) => {
  const origin = await startOrigin(t);
  const hf = await startOverHttpHoldfast(t, origin.port);
  const client = connect(hf.wsUrl('/chat'));
  await client.opened;
  await hf.waitSubscriptions(1);
  const publisher = new ServeGrip({ grip: { control_uri: hf.controlUri } }).getPublisher();
  await publisher.publishFormats('room', new WebSocketMessageFormat(null, true, 4001));
  assert.equal((await client.closed()).code, 4001);
});

test('a vanished client is reported to the origin', { timeout: TEST_TIMEOUT }, async (t) => {
  const origin = await startOrigin(t);
  const hf = await startOverHttpHoldfast(t, origin.port);
  const client = connect(hf.wsUrl('/chat'));
  await client.opened;
  await hf.waitSubscriptions(1);
  client.ws.terminate();
  await waitUntil(() => origin.seen.some((r) => r.events.includes('DISCONNECT')), { what: 'DISCONNECT at the origin' });
  await hf.waitSubscriptions(0);
});

test('an origin refusing the OPEN answers the client over HTTP', { timeout: TEST_TIMEOUT }, async (t) => {
  const origin = await startOrigin(t);
  const hf = await startOverHttpHoldfast(t, origin.port);
  const ws = new WebSocket(hf.wsUrl('/refuse'));
  const refused = await new Promise((resolve, reject) => {
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, why: res.headers['x-why'], body }));
    });
    ws.once('open', () => reject(new Error('the WebSocket opened')));
    ws.once('error', () => {});
  });
  assert.deepEqual(refused, { status: 403, why: 'nope', body: 'go away\n' });
});
