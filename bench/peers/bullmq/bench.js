#!/usr/bin/env node
/*
 * The BullMQ peer of bench/sluice_bench.c: the same workload, measured the
 * same way, so bench/run.sh can print the two side by side.
 *
 *   node bench.js (--socket PATH | --host H --port P) [--items N]
 *                 [--concurrency C] [--chunk K] [--stall-s S] [--verbose]
 *
 * 1. submit   N no-op jobs ({name: 'noop', data: {}}) are added with
 *             Queue.addBulk, K jobs per call, one call after the other; only
 *             the adding is timed (the job descriptors are built before).
 * 2. process  one Worker with concurrency C runs `async () => null` until
 *             N jobs have completed (its 'completed' events); the time runs
 *             from creating the Worker to the N-th event.
 *
 * Jobs carry removeOnComplete: true, so completed jobs do not pile up in
 * Redis (sluice keeps one result line per item; BullMQ keeps nothing here,
 * which favours BullMQ on memory, not the reverse).
 *
 * Redis commands per job come from INFO commandstats after a CONFIG
 * RESETSTAT: the sum of calls= before and after each phase. Commands run
 * inside Lua scripts (EVALSHA) are counted as well as the script call
 * itself, as for sluice's FCALL. The bench's own commands (INFO) are
 * subtracted. The Queue's connection is made ready before the reset, as
 * sluice_bench opens its client before it; the Worker's start-up commands
 * count in the processing phase, as the sluice workers' do. used_memory_peak
 * is since the server started (CONFIG RESETSTAT leaves it), so give the
 * bench a fresh server, as bench/run.sh does.
 *
 * Human-readable lines go to stderr; stdout gets one JSON line with the same
 * keys as sluice_bench's. Nothing asserts on timings: the exit status is
 * non-zero only when the run failed (no Redis, failed jobs, no progress for
 * --stall-s seconds).
 */
'use strict';

const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

function usage(msg) {
  if (msg) process.stderr.write(`bench.js: ${msg}\n`);
  process.stderr.write(
    'usage: node bench.js (--socket PATH | --host H --port P) [--items N] [--concurrency C]\n' +
      '                     [--chunk K] [--stall-s S] [--verbose]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { socket: null, host: null, port: 6379, items: 100000, concurrency: 200, chunk: 2000,
              stallS: 60, verbose: false };
  const int = (name, v, max) => {
    if (!/^[0-9]+$/.test(v || '') || Number(v) < 1 || Number(v) > max)
      usage(`${name}: expected an integer from 1 to ${max}, got "${v}"`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--socket': o.socket = argv[++i]; break;
      case '--host': o.host = argv[++i]; break;
      case '--port': o.port = int(a, argv[++i], 65535); break;
      case '--items': o.items = int(a, argv[++i], 10000000); break;
      case '--concurrency': o.concurrency = int(a, argv[++i], 100000); break;
      case '--chunk': o.chunk = int(a, argv[++i], 100000); break;
      case '--stall-s': o.stallS = int(a, argv[++i], 86400); break;
      case '--verbose': o.verbose = true; break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument "${a}"`);
    }
  }
  if (!o.socket && !o.host) usage('give --socket PATH or --host H [--port P]');
  return o;
}

/* ---- INFO commandstats, minus the bench's own commands ---- */

class Stats {
  constructor(redis) {
    this.redis = redis; /* the bench's own connection */
    this.own = new Map(); /* commands sent on it since the last RESETSTAT, by name */
  }

  count(name) {
    this.own.set(name, (this.own.get(name) || 0) + 1);
  }

  async resetstat() {
    await this.redis.call('CONFIG', 'RESETSTAT');
    this.own = new Map();
  }

  async info(section) {
    const text = await this.redis.call('INFO', section);
    this.count('info');
    return text;
  }

  /* A Map name -> calls. The server counts a command after running it, so
   * the INFO that produces the snapshot is not in it, but our earlier ones are. */
  async snapshot() {
    const own = new Map(this.own);
    const text = await this.info('commandstats');
    const snap = new Map();
    for (const line of text.split(/\r?\n/)) {
      const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
      if (m) snap.set(m[1], Number(m[2]));
    }
    for (const [name, n] of own) snap.set(name, (snap.get(name) || 0) - n);
    return snap;
  }
}

function diff(after, before) {
  const d = new Map();
  for (const name of new Set([...after.keys(), ...before.keys()])) {
    const v = (after.get(name) || 0) - (before.get(name) || 0);
    if (v !== 0) d.set(name, v);
  }
  return d;
}

const total = (m) => [...m.values()].reduce((a, b) => a + b, 0);

function breakdown(d, n, top) {
  return [...d.entries()].filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]).slice(0, top)
    .map(([k, v]) => `${k} ${(v / n).toFixed(3)}`).join(', ');
}

function infoField(text, field) {
  const m = new RegExp(`^${field}:(.*)$`, 'm').exec(text);
  return m ? m[1].trim() : '';
}

const log = (s) => process.stderr.write(`${s}\n`);

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const connection = o.socket ? { path: o.socket } : { host: o.host, port: o.port };
  const where = o.socket ? `unix://${o.socket}` : `redis://${o.host}:${o.port}`;
  const name = `bench-${process.pid}`;
  const own = new IORedis({ ...connection, maxRetriesPerRequest: null });
  const stats = new Stats(own);
  let queue = null;
  let worker = null;
  let ok = false;

  try {
    const version = infoField(await stats.info('server'), 'redis_version');
    queue = new Queue(name, { connection: { ...connection },
                              defaultJobOptions: { removeOnComplete: true } });
    await queue.waitUntilReady();
    log(`bench.js: BullMQ ${require('bullmq/package.json').version}, ${o.items} no-op jobs, ` +
        `1 Worker x concurrency ${o.concurrency}, Redis ${version} at ${where}, queue "${name}"`);

    const jobs = [];
    for (let i = 0; i < o.items; i++)
      jobs.push({ name: 'noop', data: {}, opts: { removeOnComplete: true } });

    /* ---- Submit ---- */
    await stats.resetstat();
    const s0 = await stats.snapshot();
    const tSub0 = process.hrtime.bigint();
    for (let i = 0; i < jobs.length; i += o.chunk)
      await queue.addBulk(jobs.slice(i, i + o.chunk));
    const tSub1 = process.hrtime.bigint();
    const s1 = await stats.snapshot();

    /* ---- Process ---- */
    let completed = 0;
    let failed = 0;
    let lastProgress = Date.now();
    let finish;
    const allDone = new Promise((resolve) => { finish = resolve; });
    const tProc0 = process.hrtime.bigint();
    let tProc1 = 0n;
    worker = new Worker(name, async () => null, { connection: { ...connection },
                                                  concurrency: o.concurrency });
    worker.on('completed', () => {
      completed++;
      lastProgress = Date.now();
      if (completed + failed === o.items) {
        tProc1 = process.hrtime.bigint();
        finish(true);
      }
    });
    worker.on('failed', () => {
      failed++;
      lastProgress = Date.now();
      if (completed + failed === o.items) {
        tProc1 = process.hrtime.bigint();
        finish(true);
      }
    });
    worker.on('error', (e) => log(`bench.js: worker error: ${e && e.message}`));
    const stallTimer = setInterval(() => {
      if (Date.now() - lastProgress > o.stallS * 1000) {
        log(`bench.js: no progress for ${o.stallS} s (${completed + failed} of ${o.items}); giving up`);
        finish(false);
      }
    }, 1000);
    const done = await allDone;
    clearInterval(stallTimer);
    if (!done) return 1;
    const s2 = await stats.snapshot();
    const mem = await stats.info('memory');
    const peak = Number(infoField(mem, 'used_memory_peak')) || 0;

    /* ---- Report ---- */
    const n = o.items;
    const subS = Number(tSub1 - tSub0) / 1e9;
    const procS = Number(tProc1 - tProc0) / 1e9;
    const dsub = diff(s1, s0);
    const dproc = diff(s2, s1);
    const cpiSub = total(dsub) / n;
    const cpiProc = total(dproc) / n;
    log(`submit    ${n} jobs in ${subS.toFixed(3)} s: ${(n / subS).toFixed(0)} jobs/s ` +
        `(${Math.ceil(n / o.chunk)} addBulk calls of ${o.chunk})`);
    log(`process   ${n} jobs in ${procS.toFixed(3)} s: ${(n / procS).toFixed(0)} jobs/s ` +
        `(from creating the Worker to the last 'completed'; ${failed} failed)`);
    log('redis commands per job (INFO commandstats; commands run inside Lua scripts are included,\n' +
        '  and each EVALSHA counts once itself):');
    log(`  submit   ${cpiSub.toFixed(3).padStart(8)}   (${breakdown(dsub, n, 6)})`);
    log(`  process  ${cpiProc.toFixed(3).padStart(8)}   (${breakdown(dproc, n, 6)})`);
    log(`  total    ${(cpiSub + cpiProc).toFixed(3).padStart(8)}`);
    log(`redis used_memory_peak ${infoField(mem, 'used_memory_peak_human')} (${peak} bytes)`);
    if (o.verbose) {
      for (const [label, d] of [['submit', dsub], ['process', dproc]]) {
        log(`per-command calls, ${label}:`);
        for (const [k, v] of d) log(`  ${k.padEnd(24)} ${String(v).padStart(10)} ${(v / n).toFixed(4).padStart(10)}`);
      }
    }
    process.stdout.write(JSON.stringify({
      bench: 'bullmq',
      bullmq_version: require('bullmq/package.json').version,
      items: n,
      workers: 1,
      concurrency: o.concurrency,
      redis_version: version,
      submit_s: Number(subS.toFixed(4)),
      submit_items_per_s: Number((n / subS).toFixed(1)),
      process_s: Number(procS.toFixed(4)),
      process_items_per_s: Number((n / procS).toFixed(1)),
      cmds_submit: total(dsub),
      cmds_process: total(dproc),
      cmds_per_item_submit: Number(cpiSub.toFixed(4)),
      cmds_per_item_process: Number(cpiProc.toFixed(4)),
      cmds_per_item_total: Number((cpiSub + cpiProc).toFixed(4)),
      cmds_include_script_inner: true,
      used_memory_peak_bytes: peak,
      jobs_failed: failed,
    }) + '\n');
    ok = failed === 0;
  } finally {
    if (worker) await worker.close().catch(() => {});
    if (queue) {
      await queue.obliterate({ force: true }).catch(() => {});
      await queue.close().catch(() => {});
    }
    own.disconnect();
  }
  return ok ? 0 : 1;
}

main().then((rc) => process.exit(rc), (e) => {
  log(`bench.js: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
