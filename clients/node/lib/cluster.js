'use strict';
// Redis Cluster: a connection that follows one queue's slot.
//
// Every key of a sluice queue carries the hash tag {QUEUE}, so the whole
// queue lives in one slot, on one master, and a client of one queue needs
// one connection: to that master. QueueRedis finds it from the seed nodes of
// a redis+cluster://host:port,host:port URL (CLUSTER SLOTS of the first seed
// that answers) and keeps following it:
//
// - MOVED: the slot has a new master (a failover, a finished migration): the
//   connection goes there and the command is sent again;
// - TRYAGAIN, ASK and CLUSTERDOWN: a migration or a failover is under way
//   (the sluice functions refuse to run while the slot moves): wait a little
//   and send it again, for up to 30 s;
// - a lost connection is thrown as it is (the command may have run), and the
//   next command finds the slot's master again, waiting out a failover.
//
// None of the redirects ran the command, so sending it again is safe. It
// offers the few ioredis methods the client uses (call, hscan, hmget, info,
// time, duplicate, quit). The function library is checked (and loaded) on
// the queue's master, the only node this client uses; `sluice library load`
// loads it on every master.

const Redis = require('ioredis');

const WAIT_MS = 30000; // how long a move or a failover is waited out
const REDIRECTS = 16; // MOVED per command before giving up

function crc16(buf) {
  let crc = 0;
  for (const b of buf) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

// The cluster slot of a key (CRC16 of its hash tag, or of the key).
function keySlot(key) {
  let buf = Buffer.from(key);
  const s = buf.indexOf('{');
  if (s >= 0) {
    const e = buf.indexOf('}', s + 1);
    if (e > s + 1) buf = buf.subarray(s + 1, e);
  }
  return crc16(buf) % 16384;
}

// {seeds: [{host, port}], username, password} of a redis+cluster:// URL.
function parseUrl(url) {
  if (!url.startsWith('redis+cluster://')) throw new Error('a Redis Cluster URL starts with redis+cluster://');
  let rest = url.slice('redis+cluster://'.length);
  let username;
  let password;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const info = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = info.indexOf(':');
    if (colon >= 0) {
      username = decodeURIComponent(info.slice(0, colon)) || undefined;
      password = decodeURIComponent(info.slice(colon + 1));
    } else {
      password = decodeURIComponent(info);
    }
  }
  rest = rest.split('/')[0];
  const seeds = rest.split(',').map((part) => {
    const u = new URL(`redis://${part}`);
    if (!u.hostname) throw new Error(`a node of the Redis Cluster URL has no host: ${part}`);
    return {host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 6379)};
  });
  return {seeds, username, password};
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class QueueRedis {
  constructor(url, queue, options = {}) {
    const {seeds, username, password} = parseUrl(url);
    this.seeds = seeds;
    this.slot = keySlot(`{${queue}}`);
    // No reconnects of its own: a lost master is found again through the seeds.
    this.opts = {...options, username, password, retryStrategy: () => null, maxRetriesPerRequest: 0,
      connectTimeout: 5000};
    this.node = null;
    this.conn = null;
    this.stale = true;
  }

  // The {host, port} of the slot's master, from the first node that
  // answers; waits out a failover until the deadline.
  async findMaster(deadline) {
    let last = 'no node answered';
    for (;;) {
      for (const node of [this.node, ...this.seeds]) {
        if (!node) continue;
        const r = new Redis({host: node.host, port: node.port, ...this.opts, lazyConnect: true});
        r.on('error', () => {});
        try {
          await r.connect();
          const slots = await r.call('CLUSTER', 'SLOTS');
          for (const [lo, hi, master] of slots) {
            if (lo <= this.slot && this.slot <= hi) {
              return {host: String(master[0]) || node.host, port: Number(master[1])};
            }
          }
          last = `no master serves slot ${this.slot}`;
        } catch (e) {
          last = `${node.host}:${node.port}: ${e.message}`;
        } finally {
          r.disconnect();
        }
      }
      if (Date.now() >= deadline) {
        throw new Error(`Redis Cluster: cannot find the master of slot ${this.slot}: ${last}`);
      }
      await sleep(250);
    }
  }

  moveTo(node) {
    if (this.conn && this.node && this.node.host === node.host && this.node.port === node.port) return;
    if (this.conn) this.conn.disconnect();
    this.conn = new Redis({host: node.host, port: node.port, ...this.opts});
    this.conn.on('error', () => {}); // a failed command says why; a lost master is found again
    this.node = node;
  }

  // Connected to the slot's master (the first command, or after a lost connection).
  async ready() {
    if (this.stale || !this.conn) {
      this.stale = false;
      this.moveTo(await this.findMaster(Date.now() + WAIT_MS));
    }
  }

  async run(fn) {
    await this.ready();
    let waited = 0;
    let redirects = 0;
    for (;;) {
      try {
        return await fn(this.conn);
      } catch (e) {
        const msg = String((e && e.message) || '');
        if (!(e instanceof Redis.ReplyError)) {
          this.stale = true; // a failover, perhaps: the next command finds the master again
          throw e;
        }
        if (msg.startsWith('MOVED ') && redirects < REDIRECTS) {
          redirects++;
          const addr = msg.split(' ')[2];
          const colon = addr.lastIndexOf(':');
          this.moveTo({host: addr.slice(0, colon), port: Number(addr.slice(colon + 1))});
          continue;
        }
        if (/^(TRYAGAIN|ASK |CLUSTERDOWN)/.test(msg) && waited < WAIT_MS) {
          const step = waited < 100 ? 10 : waited < 1000 ? 50 : 250;
          await sleep(step);
          waited += step;
          if (msg.startsWith('CLUSTERDOWN')) this.moveTo(await this.findMaster(Date.now() + WAIT_MS - waited));
          continue;
        }
        throw e;
      }
    }
  }

  call(...a) { return this.run((c) => c.call(...a)); }
  hscan(...a) { return this.run((c) => c.hscan(...a)); }
  hmget(...a) { return this.run((c) => c.hmget(...a)); }
  info(...a) { return this.run((c) => c.info(...a)); }
  time() { return this.run((c) => c.time()); }

  // A second connection to the master, for a subscription (call ready() first).
  duplicate() {
    const d = this.conn.duplicate();
    d.on('error', () => {});
    return d;
  }

  async quit() {
    if (this.conn) await this.conn.quit();
  }
}

module.exports = {QueueRedis, keySlot, parseUrl};
