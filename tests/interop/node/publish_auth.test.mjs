// Publishing with @fanoutio/grip's Publisher through a Holdfast whose publish API requires
// authentication: a key with control_iss (a JWT: HS256 for a secret, RS256 for a PEM private key)
// and a key without control_iss (a static Bearer token). Each publish must reach a held client; a
// wrong key must get a 401 and reach no one.

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Publisher } from '@fanoutio/grip';

import { startHoldfast, startOrigin } from './support.mjs';

const TEST_TIMEOUT = 30_000;
const CHANNEL = 'auth';
const KEY_B64 = Buffer.from('holdfast-publish-key-for-the-node-tests').toString('base64');
const SCRAPE = 'metrics-scrape-token';
const testData = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'crates', 'holdfast', 'tests', 'data',
);

/** A stream-holding origin and a Holdfast with `args`; both stop after `t`. */
async function setup(t, args) {
  const origin = await startOrigin((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Grip-Hold': 'stream', 'Grip-Channel': CHANNEL });
    res.end('open\n');
  });
  let hf;
  try {
    // /metrics is scraped with a token, as Prometheus would.
    hf = await startHoldfast(origin.port, {
      args: [...args, '--publish-token', SCRAPE],
      auth: `Bearer ${SCRAPE}`,
    });
  } catch (err) {
    await origin.close();
    throw err;
  }
  t.after(async () => {
    await hf.stop();
    await origin.close();
  });
  t.after(() => {
    if (t.passed === false) t.diagnostic(`holdfast log:\n${hf.log()}`);
  });
  return hf;
}

/** A client holding a stream through `hf`: `readUntil(text)` returns everything read so far. */
async function heldStream(t, hf) {
  const controller = new AbortController();
  t.after(() => controller.abort());
  const res = await fetch(hf.url('/stream'), { signal: controller.signal });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let got = '';
  const readUntil = async (want) => {
    const deadline = Date.now() + 10_000;
    while (!got.includes(want)) {
      assert.ok(Date.now() < deadline, `no ${JSON.stringify(want)} within 10 s; got ${JSON.stringify(got)}`);
      const { value, done } = await reader.read();
      assert.ok(!done, `stream ended before ${JSON.stringify(want)}; got ${JSON.stringify(got)}`);
      got += decoder.decode(value, { stream: true });
    }
    return got;
  };
  assert.equal(await readUntil('open\n'), 'open\n');
  await hf.waitSubscriptions(1);
  return readUntil;
}

async function assertRefused(publisher, reason) {
  await assert.rejects(publisher.publishHttpStream(CHANNEL, 'refused\n'), (err) => {
    assert.equal(err.context?.statusCode, 401, JSON.stringify(err));
    assert.equal(err.context.httpBody, `${reason}\n`);
    assert.match(err.context.headers.get('www-authenticate'), /^Bearer realm="holdfast"/);
    return true;
  });
}

test('Publisher with control_iss and key publishes with an HS256 JWT', { timeout: TEST_TIMEOUT }, async (t) => {
  const hf = await setup(t, ['--publish-jwt-key', `base64:${KEY_B64}`, '--publish-jwt-iss', 'realm']);
  const readUntil = await heldStream(t, hf);
  const publisher = (key, iss = 'realm') => new Publisher({ control_uri: hf.controlUri, control_iss: iss, key });

  await assertRefused(publisher(`base64:${Buffer.from('wrong').toString('base64')}`), 'bad signature');
  await assertRefused(publisher(`base64:${KEY_B64}`, 'other'), 'issuer does not match');
  await publisher(`base64:${KEY_B64}`).publishHttpStream(CHANNEL, 'jwt\n');
  assert.equal(await readUntil('jwt\n'), 'open\njwt\n');
});

test('Publisher with a GRIP URL carrying iss and key publishes with a JWT', { timeout: TEST_TIMEOUT }, async (t) => {
  const hf = await setup(t, ['--publish-jwt-key', `base64:${KEY_B64}`, '--publish-jwt-iss', 'realm']);
  const readUntil = await heldStream(t, hf);
  const url = `${hf.controlUri}?iss=realm&key=base64:${encodeURIComponent(KEY_B64)}`;
  await new Publisher(url).publishHttpStream(CHANNEL, 'grip-url\n');
  assert.equal(await readUntil('grip-url\n'), 'open\ngrip-url\n');
});

test('Publisher with control_iss and a PEM private key publishes with an RS256 JWT', { timeout: TEST_TIMEOUT }, async (t) => {
  const hf = await setup(t, [
    '--publish-jwt-key', `file:${path.join(testData, 'publish-rs256-public.pem')}`,
  ]);
  const readUntil = await heldStream(t, hf);
  const key = await readFile(path.join(testData, 'publish-rs256-private.pem'), 'utf8');
  const { privateKey: otherKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  await assertRefused(
    new Publisher({ control_uri: hf.controlUri, control_iss: 'x', key: otherKey }),
    'bad signature',
  );
  await new Publisher({ control_uri: hf.controlUri, control_iss: 'x', key }).publishHttpStream(CHANNEL, 'rs256\n');
  assert.equal(await readUntil('rs256\n'), 'open\nrs256\n');
});

test('Publisher with a key and no control_iss publishes with a Bearer token', { timeout: TEST_TIMEOUT }, async (t) => {
  const hf = await setup(t, ['--publish-token', 'publisher-token']);
  const readUntil = await heldStream(t, hf);
  await assertRefused(new Publisher({ control_uri: hf.controlUri, key: 'other-token' }), 'unknown token');
  await new Publisher({ control_uri: hf.controlUri, key: 'publisher-token' }).publishHttpStream(CHANNEL, 'bearer\n');
  assert.equal(await readUntil('bearer\n'), 'open\nbearer\n');
});
