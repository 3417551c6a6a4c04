'use strict';
// Following a batch to its end: subscribe first, read the hash second.
//
// The batch's channel (sluice:{Q}:events:BATCH) is subscribed, and the
// subscription confirmed, before the batch hash is read; so every change
// after the read arrives as an event, and none falls between the two
// (docs/PROTOCOL.md, section 10). Events published before the read can
// still arrive after it: the read is atomic with the server's TIME, and
// events with an earlier `ts`, or of the same ms but not newer than what
// was read, are skipped. After idleMs without events the hash is read
// again (events lost with a connection are not replayed). A batch has
// ended when its status is completed, or cancelled with done = total.

const {SluiceError} = require('./errors');
const {QueueRedis} = require('./cluster');

const RANK = {submitting: 0, queued: 1, running: 2, paused: 2, completed: 3, cancelled: 3};
const KEYS = ['status', 'total', 'done', 'succeeded', 'failed', 'cancelled'];

const ended = (ev) => ev.status === 'completed' || (ev.status === 'cancelled' && ev.done >= ev.total);

// True for an event the read already covers.
function stale(ev, held, readTs) {
  if (ev.ts !== readTs) return ev.ts < readTs;
  if (ev.done < held.done || ev.total < held.total) return true;
  return ev.done === held.done && ev.total === held.total && (RANK[ev.status] || 0) <= (RANK[held.status] || 0);
}

function eventOf(s) {
  const {queue, batch, status, total, done, succeeded, failed, cancelled, pct, queued, scheduled, waiting, running,
    retrying, paused, rate, eta_ms: etaMs, ts} = s;
  const ev = {queue, batch, status, total, done, succeeded, failed, cancelled, pct, queued, scheduled, waiting,
    running, retrying, paused, rate, eta_ms: etaMs, ts};
  if (s.reran !== undefined) ev.reran = s.reran;
  if (s.metrics !== undefined) ev.metrics = s.metrics;
  return ev;
}

async function* follow(client, batch, {timeoutMs = null, progress = false, idleMs = 5000} = {}) {
  const deadline = timeoutMs === null ? null : Date.now() + timeoutMs;
  if (client.redis instanceof QueueRedis) await client.redis.ready(); // on the queue's master (a cluster)
  const sub = client.redis.duplicate();
  const inbox = [];
  let wake = null;
  sub.on('smessage', (channel, message) => { // sharded pub/sub: the queue's slot (PROTOCOL.md section 8)
    inbox.push(message);
    if (wake) wake();
  });
  const wait = (ms) => new Promise((resolve) => {
    const t = setTimeout(() => { wake = null; resolve(); }, Math.max(0, ms));
    wake = () => { clearTimeout(t); wake = null; resolve(); };
  });
  const left = (ms) => {
    if (deadline === null) return ms;
    const l = deadline - Date.now();
    if (l <= 0) throw new SluiceError(`batch ${batch} did not end in time`, 'TIMEOUT');
    return Math.min(ms, l);
  };
  try {
    await sub.ssubscribe(`${client.prefix}events:${batch}`); // resolves once Redis confirmed it
    let state = await client.status(batch);
    let held = eventOf(state);
    let readTs = state.ts;
    yield {...held};
    if (state.ended) return;
    let lastNews = Date.now();
    for (;;) {
      if (inbox.length === 0) await wait(left(idleMs - (Date.now() - lastNews)));
      if (inbox.length === 0) {
        if (Date.now() - lastNews >= idleMs) {
          state = await client.status(batch);
          lastNews = Date.now();
          if (KEYS.some((k) => state[k] !== held[k])) {
            held = eventOf(state);
            readTs = state.ts;
            yield {...held};
            if (state.ended) return;
          }
        }
        continue;
      }
      lastNews = Date.now();
      const ev = JSON.parse(inbox.shift());
      if ('type' in ev) {
        if (progress) yield ev;
        continue;
      }
      if (readTs !== null && stale(ev, held, readTs)) continue;
      readTs = null; // a live event: all after it are newer
      held = ev;
      yield {...ev};
      if (ended(ev)) return;
    }
  } finally {
    sub.disconnect();
  }
}

module.exports = {follow};
