// SockJS (route option `sockjs=`) with the real `sockjs-client`, one transport at a time
// (websocket, xhr-streaming, xhr-polling, eventsource), against a GRIP WebSocket origin built on
// `ws` and a WebSocket-over-HTTP origin built on Express and @fanoutio/serve-grip. Each session
// must be one WebSocket session at the origin: messages echo, a publish to the channel the
// origin subscribed it to reaches the client, and closing the client ends the subscription.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { Publisher, WebSocketMessageFormat } from '@fanoutio/grip';
import { ServeGrip } from '@fanoutio/serve-grip';
import express from 'express';
import SockJS from 'sockjs-client';
import { WebSocketServer } from 'ws';

import { startHoldfast, waitUntil } from './support.mjs';

const TEST_TIMEOUT = 40_000;
const TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource'];

/**
 * A GRIP WebSocket origin: it accepts with the `grip` extension, subscribes each connection
 * to `room`, and echoes each message. `seen` records the path and headers of each handshake.
 */
async function startGripOrigin(t) {
  const seen = [];
  const server = createServer((req, res) => { res.writeHead(404); res.end(); });
  const wss = new WebSocketServer({ noServer: true });
  wss.on('headers', (headers) => headers.push('Sec-WebSocket-Extensions: grip'));
  server.on('upgrade', (req, socket, head) => {
    seen.push({ url: req.url, headers: req.headers });
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send('c:{"type":"subscribe","channel":"room"}');
      ws.on('message', (data) => ws.send(`m:echo ${data}`));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    for (const ws of wss.clients) ws.terminate();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return { port: server.address().port, seen, routeParams: '' };
}

/** A WebSocket-over-HTTP origin with serve-grip: accept, subscribe to `room`, echo. */
async function startOverHttpOrigin(t) {
  const seen = [];
  const serveGrip = new ServeGrip({ grip: { control_uri: 'http://127.0.0.1:1' } });
  const app = express();
  app.use(serveGrip);
  app.post(/.*/, (req, res) => {
    const { wsContext } = req.grip;
    if (wsContext == null) {
      res.statusCode = 400;
      res.end('Not a WebSocket-over-HTTP request\n');
      return;
    }
    if (wsContext.isOpening()) {
      seen.push({ url: req.url, headers: req.headers });
      wsContext.accept();
      wsContext.subscribe('room');
    }
    try {
      while (wsContext.canRecv()) {
        const message = wsContext.recv();
        if (message == null) {
          wsContext.close();
          break;
        }
        wsContext.send(`echo ${message}`);
      }
    } catch {
      // DISCONNECT
    }
    res.end();
  });
  const server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  t.after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return { port: server.address().port, seen, routeParams: ',over_http' };
}

/** Holdfast with a SockJS endpoint at /sockjs and a 1 s session timeout. */
async function startSockJsHoldfast(t, origin) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-sockjs-'));
  const config = path.join(dir, 'holdfast.toml');
  await writeFile(config, '[sockjs]\ndisconnect_secs = 1\n');
  const hf = await startHoldfast(origin.port, {
    args: ['--config', config],
    routes: `*,sockjs=/sockjs 127.0.0.1:${origin.port}${origin.routeParams}\n`,
  });
  t.after(async () => {
    await hf.stop();
    await rm(dir, { recursive: true, force: true });
  });
  t.after(() => {
    if (t.passed === false) t.diagnostic(`holdfast log:\n${hf.log()}`);
  });
  return hf;
}

/** A sockjs-client restricted to `transport`, with a queue of what it received. */
function connect(url, transport) {
  const sock = new SockJS(url, null, { transports: [transport] });
  const messages = [];
  let closed = null;
  sock.onmessage = (e) => messages.push(e.data);
  sock.onclose = (e) => { closed = { code: e.code, reason: e.reason }; };
  return {
    sock,
    opened: new Promise((resolve, reject) => {
      sock.onopen = resolve;
      setTimeout(() => reject(new Error(`${transport}: no open within 10 s (closed: ${JSON.stringify(closed)})`)), 10_000).unref();
    }),
    next: () => waitUntil(() => messages.length > 0 && messages.shift(), { what: `a message over ${transport}` }),
    closed: () => waitUntil(() => closed, { what: `the close over ${transport}` }),
  };
}

for (const [kind, startOrigin] of [['GRIP WebSocket', startGripOrigin], ['WebSocket-over-HTTP', startOverHttpOrigin]]) {
  for (const transport of TRANSPORTS) {
    test(`sockjs-client over ${transport} to a ${kind} origin: echo, publish, close`, { timeout: TEST_TIMEOUT }, async (t) => {
      const origin = await startOrigin(t);
      const hf = await startSockJsHoldfast(t, origin);
      const client = connect(hf.url('/sockjs'), transport);
      await client.opened;
      assert.equal(client.sock.transport, transport, 'the transport asked for');
      await hf.waitSubscriptions(1);

      client.sock.send('hi');
      assert.equal(await client.next(), 'echo hi');
      client.sock.send('ünïcødé \u2028 "quoted"');
      assert.equal(await client.next(), 'echo ünïcødé \u2028 "quoted"');

      const publisher = new Publisher({ control_uri: hf.controlUri });
      await publisher.publishFormats('room', new WebSocketMessageFormat('pushed!'));
      assert.equal(await client.next(), 'pushed!');

      // One WebSocket session at the origin, on the path Pushpin uses for this transport.
      assert.equal(origin.seen.length, 1, 'one origin session');
      const want = transport === 'websocket' ? '/sockjs/websocket' : '/sockjs';
      assert.equal(origin.seen[0].url.split('?')[0], want);

      client.sock.close();
      await client.closed();
      // The origin's session ends: at once for a WebSocket, after the session timeout for
      // the HTTP transports.
      await hf.waitSubscriptions(0);
    });
  }
}

test('a publish that closes the connection closes the sockjs-client with its code', { timeout: TEST_TIMEOUT }, async (t) => {
  const origin = await startGripOrigin(t);
  const hf = await startSockJsHoldfast(t, origin);
  for (const transport of ['websocket', 'xhr-polling']) {
    const client = connect(hf.url('/sockjs'), transport);
    await client.opened;
    await hf.waitSubscriptions(1);
    const publisher = new Publisher({ control_uri: hf.controlUri });
    await publisher.publishFormats('room', new WebSocketMessageFormat(null, true, 4001));
    const closed = await client.closed();
    assert.equal(closed.code, 4001, transport);
    await hf.waitSubscriptions(0);
  }
});
