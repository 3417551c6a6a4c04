'use strict';
// The Node client's path for tests/conformance/run.py: one request per line
// on stdin, {"queue": Q, "text": BASE64} (the item's exact bytes, sent as
// they are) or {"queue": Q, "object": ITEM} (an object the client encodes
// with JSON.stringify); one answer per line on stdout, {"batch": ID} or
// {"error": MESSAGE, "class": NAME}. argv[2]: the Redis unix socket.
const readline = require('readline');
const sluice = require(require('path').resolve(process.env.SLUICE_CLIENTS || '.', 'node'));

const clients = new Map();
const rl = readline.createInterface({input: process.stdin});
const lines = [];
let busy = false;

async function handle(line) {
  const req = JSON.parse(line);
  if (!clients.has(req.queue)) clients.set(req.queue, new sluice.Client(process.argv[2], {queue: req.queue}));
  const c = clients.get(req.queue);
  const item = 'text' in req ? Buffer.from(req.text, 'base64') : req.object;
  try {
    return {batch: await c.submit([item])};
  } catch (e) {
    return {error: e.message, class: e.constructor.name};
  }
}

async function drain() {
  if (busy) return;
  busy = true;
  while (lines.length) process.stdout.write(JSON.stringify(await handle(lines.shift())) + '\n');
  busy = false;
}

rl.on('line', (l) => { lines.push(l); drain(); });
rl.on('close', async () => {
  while (busy) await new Promise((r) => setTimeout(r, 10));
  for (const c of clients.values()) await c.close();
});
