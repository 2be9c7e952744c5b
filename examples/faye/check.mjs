// examples/test's client for examples/faye: two faye clients, one over long-polling and one
// over WebSocket, each subscribed to /chat/room; each publishes a line, and both must receive
// both lines (the origin republishes what clients publish). Exits non-zero after 15 s.
import faye from 'faye';

const endpoint = process.argv[2];
const timer = setTimeout(() => { console.error('faye check: timed out'); process.exit(1); }, 15_000);

const polling = new faye.Client(endpoint);
polling.disable('websocket');
const socket = new faye.Client(endpoint);
const clients = [polling, socket];
const got = clients.map(() => []);
await Promise.all(clients.map((c, i) => c.subscribe('/chat/room', (data) => got[i].push(data.text))));
try {
  await socket.subscribe('/secret', () => {});
  throw new Error('a subscription outside /chat/ was allowed');
} catch (err) {
  if (err.code !== 403) throw err;
}
await polling.publish('/chat/room', { text: 'from long-polling' });
await socket.publish('/chat/room', { text: 'from websocket' });
const want = ['from long-polling', 'from websocket'];
while (!got.every((g) => want.every((w) => g.includes(w)))) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
await Promise.all(clients.map((c) => c.disconnect()));
clearTimeout(timer);
console.log('examples/faye: both clients got both lines');
