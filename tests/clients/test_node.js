'use strict';
// The Node client (clients/node, as staged by the build) against a real
// redis-server and real `sluice worker` processes.
//
//   library   a missing library is loaded (or, told not to, refused); another
//             version is refused naming both and left loaded; a Redis user
//             that may not load code gets LibraryPermissionError (NOPERM)
//   follow    10,000 items (9,000 succeed, 1,000 fail) followed to the end
//             through events(): the first event is the state read, done
//             never goes down, the last has the exact counters; results()
//             gives every line
//   late      a subscriber that connects after the batch ended (a new
//             client, a new connection) ends from the hash, with one event
//   bad_item  an item refused in chunk 3: ItemError with index, id and field;
//             the batch is cancelled with the chunks written before
//   control   pause, resume, cancel (the workers finish it cancelled), retry
//             of failed items, and an events() timeout on a paused batch
//   readme_acl with the README's producer ACL user (its lines run as they
//             are): submit, status, events, results, pause, resume, cancel,
//             retry all work
//   idempotency the same key twice gives one batch; a second submit while
//             the first is still sending gets the first batch (submitting);
//             items skipped by dedupe name the batch and index holding them
//
// usage: node test_node.js [CASE...]  (SLUICE_BIN, SLUICE_CLIENTS, NODE_PATH
// with ioredis; exit 0 when all hold)
const {spawn} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const Redis = require('ioredis');
const sluice = require(path.resolve(process.env.SLUICE_CLIENTS || '.', 'node'));

const SLUICE = process.env.SLUICE_BIN || 'sluice';

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function expectError(cls, fn) {
  try {
    await fn();
  } catch (e) {
    if (e instanceof cls) return e;
    throw new Error(`expected ${cls.name}, got ${e.constructor.name}: ${e.message}`);
  }
  throw new Error(`expected ${cls.name}, nothing was thrown`);
}

async function collect(it) {
  const out = [];
  for await (const x of it) out.push(x);
  return out;
}

class Env {
  async start() {
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-nodeclient-'));
    this.sock = path.join(this.tmp, 'redis.sock');
    this.url = `unix://${this.sock}`;
    this.redis = spawn('redis-server', ['--port', '0', '--unixsocket', this.sock, '--save', '', '--appendonly', 'no',
                                        '--dir', this.tmp, '--logfile', path.join(this.tmp, 'redis.log')],
                       {stdio: 'inherit'});
    this.workers = [];
    const deadline = Date.now() + 10000;
    while (!fs.existsSync(this.sock)) {
      check(Date.now() < deadline, 'redis-server did not start within 10 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    this.r = new Redis(this.sock);
    await this.r.ping();
  }

  worker(queue, n = 1) {
    for (let i = 0; i < n; i++) {
      this.workers.push(spawn(SLUICE, ['worker', '--redis', this.url, '--queue', queue, '--concurrency', '200',
                                       '--quiet'], {stdio: 'inherit'}));
    }
  }

  async stopWorkers() {
    const exits = this.workers.map((w) => new Promise((res) => w.on('exit', (code) => res(code))));
    for (const w of this.workers) w.kill('SIGTERM');
    const codes = await Promise.all(exits);
    check(codes.every((c) => c === 0), `a worker exited with ${codes}`);
    this.workers = [];
  }

  async close() {
    for (const w of this.workers) w.kill('SIGKILL');
    if (this.r) this.r.disconnect();
    this.redis.kill('SIGKILL');
    fs.rmSync(this.tmp, {recursive: true, force: true});
  }
}

const noop = (extra = {}) => ({type: 'noop', payload: {}, ...extra});

async function testLibrary(env) {
  const r = env.r;
  await r.call('FUNCTION', 'FLUSH');
  const needed = sluice.libraryVersion();
  let e = await expectError(sluice.LibraryMissingError,
                            () => new sluice.Client(r, {queue: 'lib', loadLibrary: false}).libraryVersion());
  check(e.message.includes(needed), `the missing-library error does not name v${needed}: ${e.message}`);
  check(await new sluice.Client(r, {queue: 'lib'}).libraryVersion() === needed, 'the client did not load it');
  check(await r.call('FCALL_RO', 'sluice_v1_version', 0) === needed, 'another version is loaded');

  await r.call('FUNCTION', 'LOAD', 'REPLACE', "#!lua name=sluice\nredis.register_function{function_name=" +
               "'sluice_v1_version', callback=function() return '0.0.1+000000000000' end, flags={'no-writes'}}\n");
  e = await expectError(sluice.LibraryVersionError, () => new sluice.Client(r, {queue: 'lib'}).submit([noop()]));
  check(e.loaded === '0.0.1+000000000000' && e.needed === needed, `version error: ${e.loaded} ${e.needed}`);
  check(e.message.includes(`library v0.0.1+000000000000 is loaded, this client needs v${needed}`), e.message);
  check(await r.call('FCALL_RO', 'sluice_v1_version', 0) === '0.0.1+000000000000', 'the client replaced it');

  await r.call('FUNCTION', 'FLUSH');
  await r.call('ACL', 'SETUSER', 'producer', 'on', '>pw', '~*', '&*', '+@all', '-function');
  const pr = new Redis({path: env.sock, username: 'producer', password: 'pw'});
  e = await expectError(sluice.LibraryPermissionError, () => new sluice.Client(pr, {queue: 'lib'}).submit([noop()]));
  pr.disconnect();
  check(e.message.includes('NOPERM') && e.message.includes('ask the operator to run `sluice library load`'),
        e.message);
  check(await new sluice.Client(r, {queue: 'lib'}).libraryVersion() === needed, 'reloading failed');
  console.log('  library: loads when missing, refuses v0.0.1 naming both, NOPERM named');
}

function tenThousand() {
  const items = [];
  for (let i = 0; i < 10000; i++) {
    if (i % 10 === 3) items.push({id: `f${i}`, type: 'sleep', payload: {ms: 0, fail_rate: 1}});
    else items.push({id: `ok${i}`, type: 'noop', payload: {n: i}, priority: ['high', 'normal', 'low'][i % 3]});
  }
  return items;
}

const WANT = {status: 'completed', total: 10000, done: 10000, succeeded: 9000, failed: 1000, cancelled: 0, pct: 100};

function checkLast(last) {
  for (const [k, v] of Object.entries(WANT)) {
    check(last[k] === v, `last event ${JSON.stringify(last)}: ${k} is not ${v}`);
  }
}

async function testFollow(env) {
  const c = new sluice.Client(env.r, {queue: 'follow'});
  const batch = await c.submit(tenThousand(), {name: 'ten thousand', defaults: {max_attempts: 1}});
  const first = await c.status(batch);
  check(first.total === 10000 && first.status === 'queued', `after submit: ${JSON.stringify(first)}`);
  env.worker('follow', 2);
  const events = await collect(c.events(batch, {timeoutMs: 120000}));
  check(['queued', 'running'].includes(events[0].status), `first event: ${JSON.stringify(events[0])}`);
  check(first.queued === 10000 && first.eta_ms === null, `live state after submit: ${JSON.stringify(first)}`);
  for (let i = 1; i < events.length; i++) {
    check(events[i].done >= events[i - 1].done, `done went down at event ${i}`);
  }
  for (const e of events) { // the live state adds up in the state read and in every event
    const sum = ['queued', 'scheduled', 'waiting', 'running', 'retrying', 'paused'].reduce((a, k) => a + e[k], 0);
    check(sum + e.done === e.total, `counts do not add up: ${JSON.stringify(e)}`);
  }
  checkLast(events[events.length - 1]);
  const lines = await collect(c.results(batch));
  check(lines.length === 10000, `${lines.length} results lines`);
  for (const line of lines) {
    const i = line.index;
    check(line.id === (i % 10 === 3 ? `f${i}` : `ok${i}`), `line ${i}: id ${line.id}`);
    check(line.status === (i % 10 === 3 ? 'failed' : 'succeeded'), `line ${i}: ${JSON.stringify(line)}`);
  }
  await env.stopWorkers();
  console.log(`  follow: 10,000 items, ${events.length} events, exact counters, 10,000 results lines`);
  return batch;
}

async function testLate(env, batch) {
  if (!batch) batch = await testFollow(env);
  const c = new sluice.Client(env.sock, {queue: 'follow'}); // its own connection, made now
  const t0 = Date.now();
  const events = await collect(c.events(batch, {timeoutMs: 10000}));
  await c.close();
  check(events.length === 1, `a late subscriber got ${events.length} events`);
  checkLast(events[0]);
  check(Date.now() - t0 < 5000, 'the late subscriber waited for events instead of ending from the hash');
  console.log(`  late: a subscriber after the end got one event from the hash in ${Date.now() - t0} ms`);
}

async function testBadItem(env) {
  const c = new sluice.Client(env.r, {queue: 'bad'});
  const items = Array.from({length: 1000}, () => noop());
  items[800] = noop({id: 'x800', timeout_ms: 'soon'});
  let e = await expectError(sluice.ItemError, () => c.submit(items));
  check(e.index === 800 && e.id === 'x800' && e.field === 'timeout_ms', `ItemError ${e.index} ${e.id} ${e.field}`);
  check(e.batch && e.message.includes('was cancelled'), `no cancelled batch named: ${e.message}`);
  const st = await c.status(e.batch);
  check(st.status === 'cancelled' && st.total === 750, `the batch after a refused item: ${JSON.stringify(st)}`);
  e = await expectError(sluice.ItemError, () => c.submit([{type: 'noop'}]));
  check(e.field === 'payload' && e.index === 0 && !e.batch, `missing payload: ${e.message}`);
  // Labels: kept sorted, shown by status; a bad one refused by the function, naming it.
  const b = await c.submit([noop()], {labels: {team: 'ml', env: 'prod'}});
  const labels = (await c.status(b)).labels;
  check(JSON.stringify(labels) === '{"env":"prod","team":"ml"}', `labels: ${JSON.stringify(labels)}`);
  e = await expectError(sluice.ProtocolError, () => c.submit([noop()], {labels: {'bad key': 'x'}}));
  check(e.message.includes('label key "bad key" must be'), `bad label: ${e.message}`);
  console.log('  bad_item: index 800 field timeout_ms named, batch cancelled at 750 items; labels kept, a bad one named');
}

async function testControl(env) {
  const c = new sluice.Client(env.r, {queue: 'ctl'});
  const b = await c.submit(Array.from({length: 500}, () => noop()));
  check(await c.pause(b) === 'paused' && (await c.status(b)).status === 'paused', 'pause');
  const e = await expectError(sluice.SluiceError, () => collect(c.events(b, {timeoutMs: 1000, idleMs: 200})));
  check(e.code === 'TIMEOUT', `timeout: ${e.message}`);
  check(await c.resume(b) === 'queued', 'resume');
  check(await c.cancel(b) === 'cancelled', 'cancel');
  env.worker('ctl');
  let events = await collect(c.events(b, {timeoutMs: 60000}));
  let last = events[events.length - 1];
  check(last.status === 'cancelled' && last.done === 500 && last.cancelled === 500, JSON.stringify(last));
  // The batch log names this process for each of its acts.
  const acts = {};
  for (const [, f] of await env.r.xrange(`sluice:{ctl}:b:${b}:log`, '-', '+')) {
    const m = {};
    for (let i = 0; i < f.length; i += 2) m[f[i]] = f[i + 1];
    acts[m.e] = m.by || '';
  }
  for (const ev of ['submitted', 'paused', 'resumed', 'cancelled']) {
    check((acts[ev] || '').includes(` pid ${process.pid} (`), `the log's actors: ${JSON.stringify(acts)}`);
  }
  const se = await expectError(sluice.BatchStateError, () => c.pause(b));
  check(se.status === 'cancelled', `pause of a cancelled batch: ${se.status}`);

  const f = await c.submit(Array.from({length: 100}, () => ({type: 'sleep', payload: {ms: 0, fail_rate: 1}})));
  events = await collect(c.events(f, {timeoutMs: 60000}));
  last = events[events.length - 1];
  check(last.status === 'completed' && last.failed === 100, `failing batch: ${JSON.stringify(last)}`);
  check(await c.retry(f) === 100, 'retry did not put back 100 items');
  events = await collect(c.events(f, {timeoutMs: 60000}));
  last = events[events.length - 1];
  check(last.status === 'completed' && last.failed === 100 && last.done === 100, `after retry: ${JSON.stringify(last)}`);
  await expectError(sluice.BatchNotFoundError, () => c.status('nosuchbatch'));
  await expectError(sluice.BatchNotFoundError, () => c.cancel('nosuchbatch'));
  await env.stopWorkers();
  console.log('  control: pause, resume, cancel, retry, timeout, not found');
}

async function testIdempotency(env) {
  const c = new sluice.Client(env.r, {queue: 'idem'});
  const noops = (n) => Array.from({length: n}, (_, i) => noop({payload: {n: i}}));
  const a = await c.submit(noops(300), {idempotencyKey: 'k1'});
  const b = await c.submit(noops(300), {idempotencyKey: 'k1', report: true});
  check(b.batch === a && b.reused === true && b.submitted === 0, `the same key twice: ${JSON.stringify(b)}`);
  check(await env.r.xlen('sluice:{idem}:s:normal') === 300, 'the second submit wrote items');

  // During: the first submit is held after two chunks (500 items) until the second one is answered.
  let release;
  let held;
  const gate = new Promise((r) => { release = r; });
  const started = new Promise((r) => { held = r; });
  async function* gated() {
    for (let i = 0; i < 1000; i++) {
      if (i === 600) {
        held();
        await gate;
      }
      yield noop();
    }
  }
  const first = c.submit(gated(), {idempotencyKey: 'k2'});
  await started;
  const second = await c.submit(noops(1000), {idempotencyKey: 'k2', report: true});
  const st = await c.status(second.batch);
  release();
  const firstId = await first;
  check(second.reused && second.batch === firstId, `during: ${JSON.stringify(second)}, first ${firstId}`);
  check(st.status === 'submitting' && st.submitted === 500, `during, the first batch: ${JSON.stringify(st)}`);
  check((await c.status(firstId)).total === 1000, 'the first batch did not get all its items');

  const d1 = await c.submit([0, 1, 2].map((i) => noop({dedupe: `img-${i}`})));
  const d2 = await c.submit([2, 3, 0].map((i) => noop({dedupe: `img-${i}`})), {report: true});
  const want = [{index: 0, heldBy: {batch: d1, index: 2}}, {index: 2, heldBy: {batch: d1, index: 0}}];
  check(d2.submitted === 1 && JSON.stringify(d2.skipped) === JSON.stringify(want), `dedupe: ${JSON.stringify(d2)}`);
  console.log('  idempotency: twice, during (first batch submitting, 500 items), dedupe holders');
}

// Runs the README's `redis-cli ACL SETUSER ...` lines (between its acl markers).
async function readmeAcl(r) {
  const text = fs.readFileSync(path.join(__dirname, '..', '..', 'README.md'), 'utf8');
  const block = text.slice(text.indexOf('<!-- acl:begin'), text.indexOf('<!-- acl:end')).replace(/\\\n/g, ' ');
  let users = 0;
  for (const line of block.split('\n')) {
    if (!line.startsWith('redis-cli ACL SETUSER ')) continue;
    const words = [...line.matchAll(/'([^']*)'|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1] : m[2]));
    await r.call(...words.slice(1));
    users++;
  }
  check(users === 3, `the README has ${users} ACL users, not 3`);
}

async function testReadmeAcl(env) {
  await readmeAcl(env.r);
  await new sluice.Client(env.r, {queue: 'acl'}).libraryVersion(); // an operator loads it
  const pr = new Redis({path: env.sock, username: 'sluice-producer', password: 'producer-password'});
  const c = new sluice.Client(pr, {queue: 'acl'});
  const b = await c.submit(Array.from({length: 50}, () => ({type: 'sleep', payload: {ms: 0, fail_rate: 1}})));
  check(await c.pause(b) === 'paused' && await c.resume(b) === 'queued', 'pause and resume as the producer');
  env.worker('acl');
  let events = await collect(c.events(b, {timeoutMs: 60000}));
  check(events[events.length - 1].failed === 50, 'events as the producer');
  check((await collect(c.results(b))).length === 50, 'results as the producer');
  check(await c.retry(b) === 50, 'retry as the producer');
  events = await collect(c.events(b, {timeoutMs: 60000}));
  check(events[events.length - 1].failed === 50, 'events after retry');
  const b2 = await c.submit([noop()], {idempotencyKey: 'acl-1'});
  check(await c.submit([noop()], {idempotencyKey: 'acl-1'}) === b2, 'idempotency as the producer');
  check(['cancelled', 'completed'].includes(await c.cancel(b2)), 'cancel as the producer');
  pr.disconnect();
  await env.stopWorkers();
  console.log("  readme_acl: the README's producer user submits, follows and controls a batch");
}

const CASES = {library: testLibrary, follow: testFollow, late: testLate, bad_item: testBadItem, control: testControl,
               idempotency: testIdempotency, readme_acl: testReadmeAcl};

(async () => {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(CASES);
  const env = new Env();
  let code = 0;
  let batch = null;
  try {
    await env.start();
    for (const name of names) {
      const out = await CASES[name](env, batch);
      if (name === 'follow') batch = out;
    }
    console.log(`node client: ${names.length} cases passed`);
  } catch (e) {
    console.error(`node client: FAILED: ${e.constructor.name}: ${e.message}`);
    code = 1;
  } finally {
    await env.close();
  }
  process.exit(code);
})();
