// Holdfast with the Node GRIP library (@fanoutio/grip) as origin helper and publisher, and the
// `eventsource` package as an SSE client.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { GripInstruct, HttpStreamFormat, Publisher, createGripChannelHeader } from '@fanoutio/grip';
import { EventSource } from 'eventsource';

import { startHoldfast, startOrigin, waitUntil } from './support.mjs';

const TEST_TIMEOUT = 30_000;

/** Starts an origin answering with `handler` and a Holdfast routing to it; both stop after `t`. */
async function setup(t, handler) {
  const origin = await startOrigin(handler);
  let hf;
  try {
    hf = await startHoldfast(origin.port);
  } catch (err) {
    await origin.close();
    throw err;
  }
  t.after(async () => {
    await hf.stop();
    await origin.close();
  });
  t.after(() => {
    // Reported by the test runner only when the test failed.
    if (t.passed === false) t.diagnostic(`holdfast log:\n${hf.log()}`);
  });
  const publisher = new Publisher({ control_uri: hf.controlUri });
  return { origin, hf, publisher };
}

function sseHandler(channel, initial) {
  return (req, res) => {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      'Grip-Hold': 'stream',
      'Grip-Channel': createGripChannelHeader(channel),
    });
    res.end(initial);
  };
}

/** Opens an EventSource that records every event it sees; closed when `t` ends. */
function openEventSource(t, url, types) {
  const es = new EventSource(url);
  const seen = [];
  const errors = [];
  es.addEventListener('open', () => seen.push({ type: 'open' }));
  es.addEventListener('error', (ev) => errors.push(ev.message ?? String(ev)));
  for (const type of types) {
    es.addEventListener(type, (ev) => seen.push({ type: ev.type, data: ev.data, id: ev.lastEventId }));
  }
  t.after(() => es.close());
  return { es, seen, errors };
}

test('a long-poll client receives what publishHttpResponse publishes', { timeout: TEST_TIMEOUT }, async (t) => {
  const verifier = new Publisher({ control_uri: 'http://127.0.0.1:1', verify_key: 'changeme' });
  const sigChecks = [];
  const { hf, publisher } = await setup(t, async (req, res) => {
    sigChecks.push(await verifier.validateGripSig(req.headers['grip-sig'] ?? null));
    const instruct = new GripInstruct('node-lp');
    instruct.setHoldLongPoll(55);
    res.writeHead(200, instruct.toHeaders({ 'Content-Type': 'text/plain', 'X-Origin': 'node' }));
    res.end('timed out\n');
  });

  const pending = fetch(hf.url('/poll'), { signal: AbortSignal.timeout(20_000) });
  await hf.waitSubscriptions(1);
  await publisher.publishHttpResponse('node-lp', 'hello from node');

  const res = await pending;
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'hello from node');
  assert.equal(res.headers.get('content-type'), 'text/plain');
  assert.equal(res.headers.get('x-origin'), 'node');
  assert.deepEqual([...res.headers.keys()].filter((h) => h.startsWith('grip-')), []);
  assert.ok(sigChecks.length >= 1);
  assert.deepEqual(sigChecks[0], { isProxied: true, needsSigned: true, isSigned: true });
  await hf.waitSubscriptions(0);
});

test('an EventSource client receives what publishHttpStream publishes', { timeout: TEST_TIMEOUT }, async (t) => {
  const { origin, hf, publisher } = await setup(t, sseHandler('node-sse', ': welcome\n\n'));

  const { seen, errors } = openEventSource(t, hf.url('/events'), ['message', 'update']);
  await waitUntil(() => seen.length >= 1, { what: 'the EventSource to open' });
  await hf.waitSubscriptions(1);
  await publisher.publishHttpStream('node-sse', 'event: update\nid: 7\ndata: first\n\n');
  await publisher.publishHttpStream('node-sse', 'id: 8\ndata: second\ndata: lines\n\n');

  await waitUntil(() => seen.length >= 3, { what: 'two published events' });
  assert.deepEqual(seen, [
    { type: 'open' },
    { type: 'update', data: 'first', id: '7' },
    { type: 'message', data: 'second\nlines', id: '8' },
  ]);
  assert.deepEqual(errors, []);
  assert.equal(origin.requests[0].headers.accept, 'text/event-stream');
});

test('a close action ends the stream and EventSource reconnects with Last-Event-ID', { timeout: TEST_TIMEOUT }, async (t) => {
  const { origin, hf, publisher } = await setup(t, sseHandler('node-close', 'retry: 50\n\n'));

  const { seen } = openEventSource(t, hf.url('/events'), ['message']);
  await hf.waitSubscriptions(1);
  await publisher.publishHttpStream('node-close', 'id: 41\ndata: before close\n\n');
  await waitUntil(() => seen.some((e) => e.data === 'before close'), { what: 'the event before close' });

  await publisher.publishHttpStream('node-close', new HttpStreamFormat(null, true));
  const reconnect = await waitUntil(
    () => origin.requests.slice(1).find((r) => 'last-event-id' in r.headers),
    { what: 'EventSource to reconnect' },
  );
  assert.equal(origin.requests[0].headers['last-event-id'], undefined);
  assert.equal(reconnect.headers['last-event-id'], '41');
});

test('closing an EventSource removes its subscription', { timeout: TEST_TIMEOUT }, async (t) => {
  const { hf } = await setup(t, sseHandler('node-gone', ': welcome\n\n'));

  const { es, seen } = openEventSource(t, hf.url('/events'), []);
  await waitUntil(() => seen.length >= 1, { what: 'the EventSource to open' });
  await hf.waitSubscriptions(1);

  es.close();
  await hf.waitSubscriptions(0);
});
