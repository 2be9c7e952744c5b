// The leaderboard's WebSocket as a client sees it: the board on connecting, then the board in
// which PLAYER has SCORE. Prints "ready" once the first board arrived, so the caller changes
// the scores only then. Usage: node check.mjs ws://127.0.0.1:PORT/scores/ws PLAYER SCORE
import { createRequire } from "node:module";
const require = createRequire(new URL("../../tests/interop/package.json", import.meta.url));
const WebSocket = require("ws");

const [url, player, score] = process.argv.slice(2);
const deadline = setTimeout(() => {
  console.error("leaderboard check: no such board within 20 s");
  process.exit(1);
}, 20000);
const ws = new WebSocket(url);
let first = true;
ws.on("message", (data) => {
  const board = JSON.parse(data.toString());
  if (first) {
    first = false;
    console.log("ready");
    return;
  }
  if (board.scores.some((s) => s.player === player && s.score === Number(score))) {
    console.log(`leaderboard check: the WebSocket got version ${board.version}`);
    clearTimeout(deadline);
    ws.close();
  }
});
