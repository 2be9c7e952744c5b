// Bayeux (route option `bayeux=`) with the real `faye` client, over long-polling (websocket
// disabled) and over WebSocket. The origin authorises each handshake and subscribe (answering
// with `Grip-Channel`) and republishes what clients publish as a `json-object` item, as an
// application would. Checked: delivery of publishes from the publish API and from another
// client, a refused subscription, and the client's re-handshake after Holdfast restarts.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';

import faye from 'faye';

import { startHoldfast, waitUntil } from './support.mjs';

const TEST_TIMEOUT = 60_000;

/**
 * The application: subscriptions to `/private/…` are refused; a client publish is sent back
 * through the publish API of `hf()` (the Holdfast running now) as a `json-object` item.
 * `seen` records every Bayeux message it was asked about.
 */
async function startOrigin(t, hf) {
  const seen = [];
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const m = JSON.parse(body);
    seen.push(m);
    if (m.channel === '/meta/subscribe') {
      const subs = [].concat(m.subscription);
      if (subs.some((s) => s.startsWith('/private'))) {
        res.writeHead(403);
      } else {
        res.writeHead(200, { 'Grip-Channel': subs.join(', ') });
      }
    } else if (!m.channel.startsWith('/meta/')) {
      await publish(hf(), m.channel, { ...m.data, via: 'origin' });
      res.writeHead(200);
    } else {
      res.writeHead(200);
    }
    res.end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return { port: server.address().port, seen };
}

async function publish(hf, channel, data) {
  const res = await fetch(hf.pubUrl('/publish/'), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ items: [{ channel, formats: { 'json-object': { data } } }] }),
  });
  assert.equal(res.status, 200, await res.text());
}

/**
 * A faye client of `hf` over `transport`, added to `clients`; `connectionTypes` records what
 * its connects used.
 */
function client(clients, hf, transport) {
  const c = new faye.Client(hf.url('/bayeux'), { retry: 0.2, timeout: 10 });
  if (transport === 'long-polling') c.disable('websocket');
  const connectionTypes = new Set();
  c.addExtension({
    outgoing(message, callback) {
      if (message.channel === '/meta/connect') connectionTypes.add(message.connectionType);
      callback(message);
    },
  });
  clients.push(c);
  return { c, connectionTypes };
}

/**
 * Runs `body(clients)`, then disconnects every client it made while Holdfast still answers
 * (a faye client whose server has gone keeps retrying), then stops Holdfast.
 */
async function withClients(stop, body) {
  const clients = [];
  try {
    await body(clients);
  } finally {
    await Promise.all(clients.map((c) => c.disconnect()));
    await stop();
  }
}

for (const transport of ['long-polling', 'websocket']) {
  test(`faye over ${transport}: subscribe, receive, publish, refusal`, { timeout: TEST_TIMEOUT }, async (t) => {
    let hf;
    const origin = await startOrigin(t, () => hf);
    hf = await startHoldfast(origin.port, { routes: `*,bayeux=/bayeux 127.0.0.1:${origin.port}\n` });
    await withClients(() => hf.stop(), async (clients) => {
      const { c, connectionTypes } = client(clients, hf, transport);
      const got = [];
      await c.subscribe('/chat/room', (data) => got.push(data));
      await hf.waitSubscriptions(1);

      await publish(hf, '/chat/room', { text: 'from the publish API' });
      await waitUntil(() => got.length === 1, { what: 'the first message' });
      assert.deepEqual(got[0], { text: 'from the publish API' });

      // A client's publish goes to the origin, which publishes it back.
      const other = client(clients, hf, transport).c;
      await other.publish('/chat/room', { text: 'from a client' });
      await waitUntil(() => got.length === 2, { what: 'the client publish' });
      assert.deepEqual(got[1], { text: 'from a client', via: 'origin' });
      assert.ok(origin.seen.some((m) => m.channel === '/chat/room' && m.data.text === 'from a client'));

      await assert.rejects(
        Promise.resolve(c.subscribe('/private/x', () => {})),
        (err) => err.code === 403 && /Forbidden channel/.test(err.message),
      );
      assert.ok(connectionTypes.has(transport), `connects used ${[...connectionTypes]}`);
    });
  });

  test(`faye over ${transport}: re-handshakes after Holdfast restarts`, { timeout: TEST_TIMEOUT }, async (t) => {
    let hf;
    const origin = await startOrigin(t, () => hf);
    const routes = `*,bayeux=/bayeux 127.0.0.1:${origin.port}\n`;
    hf = await startHoldfast(origin.port, { routes });
    await withClients(() => hf.stop(), async (clients) => {
      const { c } = client(clients, hf, transport);
      const got = [];
      await c.subscribe('/feed', (data) => got.push(data));
      await hf.waitSubscriptions(1);
      await publish(hf, '/feed', { n: 1 });
      await waitUntil(() => got.length === 1, { what: 'the message before the restart' });

      const { port } = hf;
      const handshakes = () => origin.seen.filter((m) => m.channel === '/meta/handshake').length;
      const before = handshakes();
      await hf.stop();
      hf = await startHoldfast(origin.port, { routes, port });
      // The old client id is unknown to the new process: faye handshakes again and resubscribes.
      await hf.waitSubscriptions(1, 30_000);
      assert.ok(handshakes() > before, 'a new handshake reached the origin');
      await publish(hf, '/feed', { n: 2 });
      await waitUntil(() => got.length === 2, { what: 'the message after the restart' });
      assert.deepEqual(got, [{ n: 1 }, { n: 2 }]);
    });
  });
}
