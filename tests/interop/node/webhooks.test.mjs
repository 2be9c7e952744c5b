// A webhook receiver written with Node's http module checks each delivery with
// webhook_verify.mjs (the snippet docs/webhooks.md shows): the signature, the issuer, the
// expiry, the body hash and the delivery id; a wrong secret and a changed body are refused.

import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { startHoldfast, startOrigin, waitUntil } from './support.mjs';
import { verifyHoldfastWebhook } from './webhook_verify.mjs';

const SECRET = 'node-receiver-secret';

test('a Node receiver verifies the signature of every delivery', { timeout: 30_000 }, async (t) => {
  const got = [];
  const receiver = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      got.push({ headers: req.headers, body, claims: verifyHoldfastWebhook(req.headers, body, SECRET) });
      res.writeHead(204).end();
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  t.after(() => receiver.close());
  const { port } = receiver.address();

  const origin = await startOrigin((req, res) => res.end('origin\n'));
  t.after(() => origin.close());
  const dir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-webhooks-'));
  const config = path.join(dir, 'holdfast.toml');
  await writeFile(config, `[outbound]\nallow = ["127.0.0.0/8"]\n[webhooks]\nsig_key = "${SECRET}"\n`);
  const hf = await startHoldfast(origin.port, { args: ['--config', config] });
  t.after(() => hf.stop());

  const reg = await fetch(hf.pubUrl('/webhooks'), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: 'node', url: `http://127.0.0.1:${port}/in` }),
  });
  assert.equal(reg.status, 201, await reg.clone().text());
  const { id } = await reg.json();
  const pub = await fetch(hf.pubUrl('/publish/'), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ items: [{ channel: 'node', formats: { 'http-request': { body: 'plain text' } } }] }),
  });
  assert.equal(pub.status, 200);
  await waitUntil(() => got.length === 1, { what: 'the delivery' });

  const [{ headers, body, claims }] = got;
  assert.equal(body.toString(), 'plain text');
  assert.equal(claims.sub, id);
  assert.equal(claims.channel, 'node');
  assert.throws(() => verifyHoldfastWebhook(headers, body, 'not-the-secret'), /bad signature/);
  assert.throws(() => verifyHoldfastWebhook(headers, Buffer.from('changed'), SECRET), /body does not match/);
});
