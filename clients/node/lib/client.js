'use strict';
// The sluice client: submit a batch, follow it, control it.
//
// One Client talks to one queue of one Redis, through ioredis. It writes
// only through the sluice function library (docs/PROTOCOL.md, section 5),
// which it loads when it is missing (library.js), and reads the batch hash,
// the results hash and the event channels with plain commands (sections 1,
// 3, 8 and 10). Items are sent as they are given, as item objects in the
// README's JSON Lines format; the function checks every field.

const crypto = require('crypto');
const os = require('os');
const path = require('path');
const Redis = require('ioredis');
const {QueueRedis} = require('./cluster');
const library = require('./library');
const {follow} = require('./follow');
const {SluiceError, ItemError, BatchCancelledError, BatchNotFoundError, BatchStateError, ProtocolError,
       RedisFullError, fromReply} = require('./errors');

const GROUP = 'workers';        // the consumer group of every queue
const CHUNK_ITEMS = 250;        // items per submit call: each call checks every item (~30 us each)
const CHUNK_BYTES = 4 << 20;    // item bytes per submit call
const RESULTS_PAGE = 500;       // HMGET fields per call
const STEP = 1000;              // entries one cancel, resume or retry call handles
const SEND_TRIES = 5;           // tries of one chunk when the connection breaks
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

// 26 characters of Crockford base32: 48 bits of ms time, 80 random bits.
function newBatchId() {
  let t = BigInt(Date.now());
  let r = BigInt('0x' + crypto.randomBytes(10).toString('hex'));
  let head = '';
  let tail = '';
  for (let i = 0; i < 10; i++, t >>= 5n) head = CROCKFORD[Number(t & 31n)] + head;
  for (let i = 0; i < 16; i++, r >>= 5n) tail = CROCKFORD[Number(r & 31n)] + tail;
  return head + tail;
}

// One item as the argument the submit function takes.
function itemArg(item, defaults) {
  if (typeof item === 'string' || Buffer.isBuffer(item)) {
    if (defaults) throw new TypeError('defaults apply to items given as objects, not as JSON text');
    return Buffer.from(item);
  }
  if (item === null || typeof item !== 'object' || Array.isArray(item)) {
    throw new TypeError('an item is an object, or its JSON text as a string or Buffer');
  }
  return Buffer.from(JSON.stringify(defaults ? {...defaults, ...item} : item));
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// The places an unfinished item can be (PROTOCOL.md, "The live state of a batch").
const LIVE_STATES = ['queued', 'scheduled', 'waiting', 'running', 'retrying', 'paused'];

class Client {
  // redis: an ioredis client, or a Redis URL (default redis://localhost:6379;
  // redis+cluster://host:port,... names nodes of a Redis Cluster, and the
  // client then follows the master of the queue's slot: lib/cluster.js).
  // options: {queue = 'default', loadLibrary = true}.
  // actor: who acts, as the batch log records submit, cancel, pause,
  // resume and retry; "HOST pid N (PROGRAM)" unless given.
  constructor(redis, {queue = 'default', loadLibrary = true, actor = null} = {}) {
    const prog = path.basename(process.argv[1] || 'node') || 'node';
    this.actor = (actor || `${os.hostname()} pid ${process.pid} (${prog})`)
      .replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
    this.ownsRedis = !(redis instanceof Redis);
    if (typeof redis === 'string' && redis.startsWith('redis+cluster://')) this.redis = new QueueRedis(redis, queue);
    else this.redis = this.ownsRedis ? new Redis(redis || 'redis://localhost:6379') : redis;
    this.queue = queue;
    this.prefix = `sluice:{${queue}}:`;
    this.loadLibrary = loadLibrary;
    this.library = null;
  }

  // Closes the connection the client opened itself (not one it was given).
  async close() {
    if (this.ownsRedis) await this.redis.quit();
  }

  bkey(batch) {
    return `${this.prefix}b:${batch}`;
  }

  streams() {
    return ['high', 'normal', 'low'].map((p) => `${this.prefix}s:${p}`);
  }

  // Makes sure the library this client needs is loaded (loading it when
  // missing, unless told not to); resolves to its version.
  async libraryVersion() {
    if (this.library === null) this.library = await library.ensure(this.redis, this.loadLibrary);
    return this.library;
  }

  async fcall(name, keys, args, batch) {
    await this.libraryVersion();
    try {
      return await this.redis.call('FCALL', `sluice_v1_${name}`, keys.length, ...keys, ...args);
    } catch (e) {
      if (!(e instanceof Redis.ReplyError)) throw e;
      if (/Function not found/.test(e.message)) { // flushed, or Redis restarted without it
        this.library = null;
        return this.fcall(name, keys, args, batch);
      }
      throw fromReply(e.message, batch, this.queue);
    }
  }

  // Submits items as one batch; resolves to its id. items: an array or
  // (async) iterable of item objects, or their JSON text. options: name,
  // defaults (fields every object item gets unless it has them),
  // retentionMs, dedupeTtlMs, webhook, batchId; labels (an object of up
  // to 16 labels to find the batch by, {team: 'ml'}); idempotencyKey (1-256
  // bytes: another submit with the same key within idempotencyTtlMs,
  // default 24 h, writes nothing and resolves to the first batch's id,
  // whatever its state); report (resolve to {batch, reused, submitted,
  // skipped: [{index, heldBy: {batch, index}}]} instead of the id). A refused item throws
  // ItemError before anything of its chunk is written; if earlier chunks
  // were, the batch is cancelled first and error.batch names it.
  async submit(items, options = {}) {
    const {name = '', defaults = null, retentionMs, dedupeTtlMs, webhook, idempotencyKey, idempotencyTtlMs,
           labels, report = false} = options;
    const batch = options.batchId || newBatchId();
    const opts = {by: this.actor};
    if (name) opts.name = name;
    if (retentionMs) opts.retention_ms = retentionMs;
    if (dedupeTtlMs) opts.dedupe_ttl_ms = dedupeTtlMs;
    if (webhook) opts.webhook = webhook;
    if (idempotencyKey) opts.idempotency_key = idempotencyKey;
    if (idempotencyTtlMs) opts.idempotency_ttl_ms = idempotencyTtlMs;
    if (labels && Object.keys(labels).length) opts.labels = labels;
    const first = Object.keys(opts).some((k) => k !== 'name') || name.startsWith('{') ? JSON.stringify(opts) : name;
    const keys = [this.bkey(batch), ...this.streams(), `${this.prefix}batches`];
    await this.checkRoom(Array.isArray(items) ? items.length : 1);
    const it = (items[Symbol.asyncIterator] ? items[Symbol.asyncIterator]() : items[Symbol.iterator]());
    let next = await it.next();
    let seq = 0;
    let chunk = [];
    let size = 0;
    let sent = 0;
    for (;;) {
      if (!next.done) {
        const b = itemArg(next.value, defaults);
        chunk.push(b);
        size += b.length;
        next = await it.next();
      }
      const last = Boolean(next.done);
      if (!last && chunk.length < CHUNK_ITEMS && size < CHUNK_BYTES) continue;
      const args = [batch, this.queue, this.prefix, seq, last ? 1 : 0, seq === 0 ? first : '', GROUP, 'items',
                    ...chunk];
      sent += chunk.length;
      let written;
      try {
        written = Number(await this.send(keys, args, batch, seq));
      } catch (e) {
        if (e.code !== 'SLUICE_IDEMPOTENT' || seq !== 0) throw e;
        const firstBatch = e.message.split(' ')[1];
        return report ? {batch: firstBatch, reused: true, submitted: 0, skipped: []} : firstBatch;
      }
      if (last) {
        if (!report) return batch;
        return {batch, reused: false, submitted: written, skipped: written < sent ? await this.skipped(batch) : []};
      }
      seq++;
      chunk = [];
      size = 0;
    }
  }

  // One chunk; sent again after a broken connection (the function
  // recognizes a chunk it already wrote by its number).
  async send(keys, args, batch, seq) {
    let delay = 100;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.fcall('submit', keys, args, batch);
      } catch (e) {
        if (e instanceof ItemError) {
          if (seq > 0) {
            e.batch = batch;
            await this.cancel(batch);
            e.message += ` (batch ${batch} was cancelled: it ends with the items of its first ${seq} chunks)`;
          }
          throw e;
        }
        if (e instanceof SluiceError) {
          if (e.code !== 'SLUICE_IDEMPOTENT') e.batch = batch;
          throw e;
        }
        if (attempt === SEND_TRIES - 1) {
          const err = new SluiceError(`chunk ${seq} of batch ${batch}: the connection broke ${SEND_TRIES} times ` +
                                      `(${e.message}); the batch stays submitting: cancel it, or submit again`);
          err.batch = batch;
          throw err;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 2000);
      }
    }
  }

  // The items of a batch skipped as duplicates, in item order, with the
  // item that holds each one's dedupe key.
  async skipped(batch) {
    const out = [];
    let cursor = '0';
    do {
      const [next, kv] = await this.redis.hscan(`${this.bkey(batch)}:skip`, cursor, 'COUNT', 1000);
      cursor = next;
      for (let i = 0; i + 1 < kv.length; i += 2) {
        const at = kv[i + 1].lastIndexOf(':');
        out.push({index: Number(kv[i]), heldBy: {batch: kv[i + 1].slice(0, at), index: Number(kv[i + 1].slice(at + 1))}});
      }
    } while (cursor !== '0');
    return out.sort((a, b) => a.index - b.index);
  }

  // Refuses a batch that would take Redis past 95% of maxmemory
  // (PROTOCOL.md, section 9, step 5).
  async checkRoom(n) {
    const info = String(await this.redis.info('memory'));
    const field = (k) => Number((new RegExp(`^${k}:(\\d+)`, 'm').exec(info) || [0, 0])[1]);
    const limit = field('maxmemory');
    if (limit > 0 && field('used_memory') + n * 640 > limit * 0.95) {
      throw new RedisFullError(`Redis has no room for ${n} items: used_memory ${field('used_memory')} of ` +
                               `maxmemory ${limit}`);
    }
  }

  // The batch's state now: status, counters, pct, where the unfinished
  // items are (queued, scheduled, waiting, running, retrying, paused: with
  // done they add up to total), rate and eta_ms (null while unknown),
  // times, labels, metrics, reran and `ended`; one atomic read,
  // sluice_v1_state (PROTOCOL.md, "The live state of a batch").
  async status(batch) {
    const r = await this.redis.call('FCALL_RO', 'sluice_v1_state', 1, this.bkey(batch));
    const flat = (r && r[0]) || [];
    if (flat.length === 0) throw new BatchNotFoundError(batch, this.queue);
    const h = {};
    for (let i = 0; i + 1 < flat.length; i += 2) h[String(flat[i])] = String(flat[i + 1]);
    const n = (f) => Number(h[f] || 0);
    const whole = h.whole === '1';
    const total = n('total');
    const done = n('done');
    const st = {
      queue: this.queue, batch, name: h.name || '', status: h.status, total, done,
      succeeded: n('succeeded'), failed: n('failed'), cancelled: n('cancelled'),
      pct: Number(h['live:pct']), ts: n('live:now'), whole,
      submitted: n('submitted'), skipped: n('skipped'), refused: n('refused'), created_at: n('created_at'),
      queued_at: n('queued_at'), started_at: n('started_at'), finished_at: n('finished_at'),
      ended: whole && done >= total && (h.status === 'completed' || h.status === 'cancelled'),
      labels: Object.fromEntries((h.labels || '').split(',').filter((l) => l).map((l) => {
        const eq = l.indexOf('=');
        return [l.slice(0, eq), l.slice(eq + 1)];
      })),
    };
    for (const k of LIVE_STATES) st[k] = n(`live:${k}`);
    st.rate = h['live:rate'] ? Number(h['live:rate']) : null;
    st.eta_ms = h['live:eta_ms'] ? Number(h['live:eta_ms']) : null;
    const metrics = {};
    for (const f of Object.keys(h)) {
      if (f.startsWith('metric:')) {
        metrics[f.slice(7)] = {all: Number(h[f]), final: Number(h[`final:${f.slice(7)}`] || 0)};
      }
    }
    if (Object.keys(metrics).length > 0) st.metrics = metrics;
    if (n('reran') > 0) st.reran = n('reran');
    return st;
  }

  // The results lines of the batch's finished items, in item order, with
  // the item's `index` added (PROTOCOL.md, section 3). Items not finished
  // yet are not yielded.
  async* results(batch) {
    const [indexed, submitted, status] = await this.redis.hmget(this.bkey(batch), 'indexed', 'submitted', 'status');
    if (status === null) throw new BatchNotFoundError(batch, this.queue);
    const n = Number(indexed || submitted || 0);
    for (let lo = 0; lo < n; lo += RESULTS_PAGE) {
      const idx = [];
      for (let i = lo; i < Math.min(n, lo + RESULTS_PAGE); i++) idx.push(i);
      const lines = await this.redis.hmget(`${this.bkey(batch)}:r`, ...idx);
      for (let k = 0; k < idx.length; k++) {
        if (lines[k] !== null) yield {...JSON.parse(lines[k]), index: idx[k]};
      }
    }
  }

  // The batch's state now, then each change, until the batch ends (an async
  // iterator). options: timeoutMs, progress (also yield progress events),
  // idleMs (read the hash again after this long without events, 5000).
  events(batch, options = {}) {
    return follow(this, batch, options);
  }

  async* steps(name, keys, args, batch) {
    for (;;) {
      const r = await this.fcall(name, keys, args, batch);
      if (!Array.isArray(r) || r.length !== 2) throw new ProtocolError(`sluice_v1_${name} answered ${r}`);
      yield r;
      if (Number(r[1]) === 0) return;
    }
  }

  // Cancels the batch (with abort: its running items are stopped too);
  // resolves to its status: cancelled, or completed when it had ended.
  async cancel(batch, {abort = false} = {}) {
    let status = null;
    const args = [this.prefix, this.queue, batch, abort ? 1 : 0, STEP, this.actor];
    for await (const r of this.steps('cancel', [this.bkey(batch), `${this.prefix}delayed`], args, batch)) {
      status = String(r[0]);
    }
    return status;
  }

  // Pauses the batch; an ended or cancelled batch throws BatchStateError.
  async pause(batch) {
    const st = String(await this.fcall('pause', [this.bkey(batch)], [this.prefix, this.queue, batch, this.actor], batch));
    if (st !== 'paused') {
      throw new BatchStateError(`batch ${batch} is ${st}: only a queued, submitting or running batch can be paused`,
                                st);
    }
    return st;
  }

  // Resumes a paused batch; resolves to the status it runs with again.
  async resume(batch) {
    let status = null;
    const keys = [this.bkey(batch), ...this.streams()];
    for await (const r of this.steps('resume', keys, [this.prefix, this.queue, batch, STEP, this.actor], batch)) {
      status = String(r[0]);
    }
    return status;
  }

  // Runs the failed items of the batch again; resolves to how many. Items
  // that fail again while this runs stay failed (each moves once).
  async retry(batch) {
    const b = this.bkey(batch);
    const keys = [b, `${b}:r`, `${b}:f`, ...this.streams(), `${this.prefix}dead`];
    const [sec, usec] = await this.redis.time();
    const since = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    let cursor = '0';
    let moved = 0;
    for (;;) {
      const r = await this.fcall('retry', keys, [this.prefix, this.queue, batch, STEP, GROUP, cursor, since, this.actor], batch);
      if (!Array.isArray(r) || r.length !== 3) throw new ProtocolError(`sluice_v1_retry answered ${r}`);
      moved += Number(r[0]);
      if (Number(r[1]) === 0) return moved;
      cursor = String(r[2]);
    }
  }
}

module.exports = {Client, newBatchId};
