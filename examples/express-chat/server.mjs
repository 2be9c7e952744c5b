// A stateless WebSocket chat: an Express origin with @fanoutio/serve-grip behind Holdfast's
// WebSocket-over-HTTP. The origin keeps no connection state: each WebSocket event arrives as an
// HTTP request, an opening connection is accepted and subscribed to channel "room", and each
// text message is published to the room, so every client (the sender too) receives it. The page
// is the websocket-chat example's: the two chats differ only in their origin.
import { readFileSync } from 'node:fs';

import { WebSocketMessageFormat } from '@fanoutio/grip';
import { ServeGrip } from '@fanoutio/serve-grip';
import express from 'express';

const page = readFileSync(new URL('../websocket-chat/index.html', import.meta.url));
const serveGrip = new ServeGrip({
  grip: { control_uri: process.env.PUBLISH_URL ?? 'http://127.0.0.1:5561' },
});
const publisher = serveGrip.getPublisher();

const app = express();
app.use(serveGrip);
app.get('/', (req, res) => res.type('html').send(page));
app.post('/chat', async (req, res) => {
  const { wsContext } = req.grip;
  if (wsContext == null) {
    res.status(400).send('Not a WebSocket-over-HTTP request: connect with a WebSocket\n');
    return;
  }
  if (wsContext.isOpening()) {
    wsContext.accept();
    wsContext.subscribe('room');
  }
  while (wsContext.canRecv()) {
    const message = wsContext.recv();
    if (message == null) {
      // The client closed: answer the close.
      wsContext.close();
      break;
    }
    await publisher.publishFormats('room', new WebSocketMessageFormat(message));
  }
  res.end();
});

const port = Number(process.env.ORIGIN_PORT ?? 8000);
app.listen(port, '127.0.0.1');
