// The pieces the Node interop tests are built from: the holdfast binary as a child process on
// free loopback ports, an origin written in the test, and a bounded wait for a condition.
// Every test starts its own Holdfast and origin; nothing is shared between tests.

import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export const holdfastBin = process.env.HOLDFAST_BIN || path.join(repo, 'target', 'debug', 'holdfast');

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` until it returns a truthy value, failing after `timeout` ms. */
export async function waitUntil(predicate, { timeout = 10_000, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await delay(20);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.setTimeout(1000);
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => resolve(false));
    sock.once('timeout', () => { sock.destroy(); resolve(false); });
  });
}

/**
 * An HTTP origin on a free port. `handler(req, res)` answers each request; `requests` records
 * what the origin saw.
 */
export async function startOrigin(handler) {
  const requests = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method, url: req.url, headers: req.headers });
    Promise.resolve(handler(req, res)).catch((err) => {
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(`origin handler failed: ${err}\n`);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Starts the holdfast binary with routes `* 127.0.0.1:<originPort>` (or `routes`, the routes
 * file's text) and waits until it serves. `args` are more command-line arguments; `auth` is the
 * Authorization value sent to the publish API's /metrics when publish authentication is
 * configured; `port` is the client listener's port (to bring a stopped Holdfast back on it).
 */
export async function startHoldfast(originPort, { args = [], auth, routes: routesText, port: fixedPort } = {}) {
  const metricsHeaders = auth ? { Authorization: auth } : {};
  await access(holdfastBin, constants.X_OK).catch(() => {
    throw new Error(`holdfast binary not found at ${holdfastBin}: build it (cargo build -p holdfast) or set HOLDFAST_BIN`);
  });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-interop-'));
  const routes = path.join(dir, 'routes');
  await writeFile(routes, routesText ?? `* 127.0.0.1:${originPort}\n`);
  const log = [];
  // A port found free can be taken before Holdfast binds it: retry with new ports.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = fixedPort ?? await freePort();
    const pubPort = await freePort();
    const child = spawn(
      holdfastBin,
      ['--listen', `127.0.0.1:${port}`, '--publish-listen', `127.0.0.1:${pubPort}`,
        '--routes', routes, '--log-level', 'info', ...args],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } },
    );
    let exited = false;
    const exit = new Promise((resolve) => {
      child.once('exit', () => { exited = true; resolve(); });
      child.once('error', (err) => {
        log.push(`spawn ${holdfastBin} failed: ${err.message}\n`);
        exited = true;
        resolve();
      });
    });
    child.stdout.on('data', (d) => log.push(d.toString()));
    child.stderr.on('data', (d) => log.push(d.toString()));
    const hf = holdfastHandle({
      child, exit, port, pubPort, dir, log, metricsHeaders, isExited: () => exited,
    });
    const ready = await waitUntil(async () => {
      if (exited) return 'exited';
      if (!(await canConnect(port))) return false;
      try {
        const res = await fetch(hf.pubUrl('/metrics'), {
          headers: metricsHeaders,
          signal: AbortSignal.timeout(2000),
        });
        await res.text();
        return res.ok ? 'ready' : false;
      } catch {
        return false;
      }
    }, { timeout: 15_000, what: 'holdfast to listen' }).catch(() => 'timeout');
    if (ready === 'ready') return hf;
    await hf.stop({ keepDir: true });
  }
  await rm(dir, { recursive: true, force: true });
  throw new Error(`holdfast (${holdfastBin}) did not start; log:\n${log.join('')}`);
}

function holdfastHandle({ child, exit, port, pubPort, dir, log, metricsHeaders, isExited }) {
  const hf = {
    port,
    pubPort,
    controlUri: `http://127.0.0.1:${pubPort}`,
    url: (p = '/') => `http://127.0.0.1:${port}${p}`,
    pubUrl: (p = '/') => `http://127.0.0.1:${pubPort}${p}`,
    log: () => log.join(''),
    isRunning: () => !isExited(),
    async subscriptions() {
      const res = await fetch(hf.pubUrl('/metrics'), {
        headers: metricsHeaders,
        signal: AbortSignal.timeout(5000),
      });
      const text = await res.text();
      const m = /^holdfast_subscriptions (\d+)\s*$/m.exec(text);
      if (!m) throw new Error(`no holdfast_subscriptions in /metrics:\n${text}`);
      return Number(m[1]);
    },
    async waitSubscriptions(n, timeout = 10_000) {
      let last;
      await waitUntil(async () => (last = await hf.subscriptions()) === n, {
        timeout,
        what: `holdfast_subscriptions == ${n}`,
      }).catch((err) => { throw new Error(`${err.message} (last value ${last})`); });
    },
    async stop({ keepDir = false } = {}) {
      if (!isExited()) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exit;
        clearTimeout(killer);
      }
      if (!keepDir) await rm(dir, { recursive: true, force: true });
    },
  };
  return hf;
}
