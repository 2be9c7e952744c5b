// Drives the chat example as two browsers would: both join, then one speaks and both hear it.
// Usage: node check.mjs ws://127.0.0.1:PORT/chat (needs the `ws` package on NODE_PATH).
import { createRequire } from "node:module";
const require = createRequire(new URL("../../tests/interop/package.json", import.meta.url));
const WebSocket = require("ws");

const url = process.argv[2];
const deadline = setTimeout(() => {
  console.error("chat check: no answer within 20 s");
  process.exit(1);
}, 20000);

function client(name) {
  const ws = new WebSocket(url);
  const heard = [];
  const waiters = [];
  ws.on("message", (data) => {
    heard.push(data.toString());
    waiters.splice(0).forEach((w) => w());
  });
  const hears = (text) =>
    new Promise((resolve) => {
      const check = () => (heard.includes(text) ? resolve() : waiters.push(check));
      check();
    });
  const opened = new Promise((resolve) => ws.on("open", resolve));
  return { name, ws, heard, hears, opened };
}

const a = client("a");
const b = client("b");
await Promise.all([a.opened, b.opened]);
// Each is in the room once it hears its own join message back through the room.
a.ws.send("a joined");
b.ws.send("b joined");
await Promise.all([a.hears("a joined"), b.hears("b joined")]);
a.ws.send("hello from a");
await Promise.all([a.hears("hello from a"), b.hears("hello from a")]);
console.log("chat check: both clients heard every message:", JSON.stringify(b.heard));
a.ws.close();
b.ws.close();
clearTimeout(deadline);
