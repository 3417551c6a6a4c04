'use strict';
// The dashboard of `sluice serve`, in a real headless Chromium (Debian's,
// driven with puppeteer-core through executablePath; no browser download),
// against a real redis-server, `sluice serve` and two `sluice worker`s.
//
//   open       a 2,000-item batch of sleep items (20 of them failing)
//              submitted through the API appears on the page; its bar moves
//              (intermediate values seen) and reaches 100%; the row's final
//              counts equal `sluice status --json`; the detail view, failed
//              only, shows a failed item's real error text; the keyboard
//              (Tab) reaches the batch's link; the dark theme follows
//              prefers-color-scheme; screenshots at 1440 px (light and dark)
//              and 375 px (no wider than the screen) go to the build folder
//   control    pause and resume a running batch from its page, then cancel
//              another one (through the confirmation dialog): each state
//              checked through the API
//   busy       200 batches listed, one batch's events published at about
//              2,000 a second for 4 s: the page's main-thread busy time per
//              second (Chromium's Performance.getMetrics TaskDuration) is
//              printed, and the bar is drawn at most once per frame
//   tokens     with a tokens file: the page asks for a token; with a read
//              token of tenant acme it lists acme's batch and not the other
//              tenant's, and shows no control buttons
//
// Every case fails on any console error or uncaught exception of the page.
//
// usage: node test_dashboard.js [CASE...]  (SLUICE_BIN, NODE_PATH with
// puppeteer-core, SLUICE_CHROMIUM (default /usr/bin/chromium), SLUICE_SHOTS:
// the folder for screenshots)
const {spawn, execFileSync} = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const puppeteer = require('puppeteer-core');

const SLUICE = process.env.SLUICE_BIN || 'sluice';
const CHROMIUM = process.env.SLUICE_CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SLUICE_SHOTS || os.tmpdir();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Polls fn until it returns a truthy value, at most ms.
async function until(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`waited ${ms} ms for ${what}, in vain`);
    await sleep(50);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const {port} = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

class Env {
  async start(queue, tokens) {
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-ui-'));
    this.sock = path.join(this.tmp, 'redis.sock');
    this.url = `unix://${this.sock}`;
    this.queue = queue;
    this.procs = [];
    this.procs.push(spawn('redis-server', ['--port', '0', '--unixsocket', this.sock, '--save', '', '--appendonly',
                                           'no', '--dir', this.tmp, '--logfile', path.join(this.tmp, 'redis.log')],
                          {stdio: 'inherit'}));
    await until(() => fs.existsSync(this.sock), 10000, 'redis-server');
    execFileSync(SLUICE, ['library', 'load', '--redis', this.url], {stdio: 'ignore'});
    this.port = await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    const args = ['serve', '--redis', this.url, '--queue', queue, '--listen', `127.0.0.1:${this.port}`, '--quiet'];
    if (tokens) {
      const file = path.join(this.tmp, 'tokens.txt');
      fs.writeFileSync(file, tokens.map(([tenant, role, tok]) =>
        `${tenant} ${role} ${crypto.createHash('sha256').update(tok).digest('hex')}\n`).join(''));
      args.push('--tokens', file);
    }
    this.procs.push(spawn(SLUICE, args, {stdio: 'inherit'}));
    await until(async () => {
      try {
        return (await fetch(`${this.base}/healthz`)).ok;
      } catch (e) {
        return false;
      }
    }, 10000, 'sluice serve');
  }

  workers(n, concurrency) {
    for (let i = 0; i < n; i++) {
      this.procs.push(spawn(SLUICE, ['worker', '--redis', this.url, '--queue', this.queue, '--concurrency',
                                     String(concurrency), '--quiet'], {stdio: 'inherit'}));
    }
  }

  async api(method, p, body, tok, ctype) {
    const headers = {};
    if (tok) headers.Authorization = `Bearer ${tok}`;
    if (body !== undefined) headers['Content-Type'] = ctype || 'application/json';
    const res = await fetch(`${this.base}${p}`, {method, headers,
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body)});
    const text = await res.text();
    check(res.ok, `${method} ${p}: ${res.status} ${text}`);
    return JSON.parse(text);
  }

  // Submits items (objects) as NDJSON; returns the batch id.
  async submit(items, name, tok) {
    const body = items.map((i) => JSON.stringify(i)).join('\n') + '\n';
    const r = await this.api('POST', `/v1/batches?name=${encodeURIComponent(name)}`, body, tok,
                             'application/x-ndjson');
    return r.batch;
  }

  status(batch) {
    return JSON.parse(execFileSync(SLUICE, ['status', '--redis', this.url, '--queue', this.queue, batch, '--json']));
  }

  // Stops every process (workers and the server first, Redis last) and
  // waits for each to exit, then removes the temporary folder.
  async stop() {
    for (const p of this.procs.reverse()) {
      if (p.exitCode === null && p.signalCode === null) {
        const gone = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        await Promise.race([gone, sleep(30000)]);
      }
    }
    fs.rmSync(this.tmp, {recursive: true, force: true});
  }
}

// A browser page that fails the test on any console error or uncaught
// exception.
async function openPage(browser, url, width) {
  const page = await browser.newPage();
  page.problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(`console.error: ${m.text()} (${m.location().url || ''})`);
  });
  page.on('pageerror', (e) => page.problems.push(`uncaught: ${e.message}`));
  await page.setViewport({width: width || 1440, height: 900});
  await page.goto(url, {waitUntil: 'domcontentloaded'});
  return page;
}

function clean(page) {
  check(page.problems.length === 0, `the page had errors:\n  ${page.problems.join('\n  ')}`);
}

function sleepItems(n, ms, failEvery) {
  const items = [];
  for (let i = 0; i < n; i++) {
    const fail = failEvery && i % failEvery === failEvery - 1;
    items.push({id: `item-${i}`, type: 'sleep', payload: fail ? {ms: 1, fail_rate: 1} : {ms}});
  }
  return items;
}

// The row of a batch in the list: its bar value and counts, or null.
function rowOf(page, batch) {
  return page.evaluate((b) => {
    const row = document.querySelector(`li.batch[data-batch="${b}"]`);
    if (!row) return null;
    const counts = {};
    for (const li of row.querySelectorAll('[data-count]')) {
      counts[li.dataset.count] = Number(li.querySelector('.n').textContent.replace(/,/g, ''));
    }
    const bar = row.querySelector('[role=progressbar]');
    return {pct: Number(bar.getAttribute('aria-valuenow')), text: bar.getAttribute('aria-valuetext'),
            status: row.querySelector('.status').textContent, counts};
  }, batch);
}

async function caseOpen(browser) {
  const env = new Env();
  await env.start('ui');
  try {
    const page = await openPage(browser, `${env.base}/`);
    await page.waitForSelector('ol.batches');
    env.workers(2, 20);
    const batch = await env.submit(sleepItems(2000, 40, 100), 'two thousand');
    const seen = new Set();
    const row = await until(async () => {
      const r = await rowOf(page, batch);
      if (r) seen.add(r.pct);
      return r && r.pct === 100 && r.status === 'completed' ? r : null;
    }, 120000, 'the bar to reach 100%');
    const between = [...seen].filter((p) => p > 0 && p < 100);
    console.log(`  open: the bar showed ${between.length} values between 0 and 100 (${[...seen].sort((a, b) => a - b)
      .slice(0, 8).join(', ')}, ...)`);
    check(between.length >= 3, `the bar did not move: ${[...seen].join(', ')}`);
    const st = env.status(batch);
    for (const k of ['succeeded', 'failed', 'cancelled', 'queued', 'running', 'retrying', 'paused']) {
      check(row.counts[k] === st[k], `row count ${k} ${row.counts[k]} but status says ${st[k]}`);
    }
    check(st.succeeded === 1980 && st.failed === 20, `status: ${JSON.stringify(st)}`);
    check(row.text.includes('2000 of 2000 ended'), `text equivalent: ${row.text}`);
    await page.screenshot({path: path.join(SHOTS, 'dashboard-1440.png'), fullPage: true});
    // the keyboard reaches the batch's link, and Enter opens it
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    let tabs = 0;
    while (!(await page.evaluate((b) => document.activeElement ===
      document.querySelector(`li.batch[data-batch="${b}"] a.name`), batch))) {
      check(++tabs < 30, 'Tab never reached the batch link');
      await page.keyboard.press('Tab');
    }
    console.log(`  open: ${tabs} presses of Tab reach the batch`);
    // a dark theme when the system asks for one
    await page.emulateMediaFeatures([{name: 'prefers-color-scheme', value: 'dark'}]);
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const dark = (bg.match(/\d+/g) || []).slice(0, 3).map(Number).reduce((a, b) => a + b, 0) < 3 * 80;
    check(dark, `the dark theme's background is ${bg}`);
    await page.screenshot({path: path.join(SHOTS, 'dashboard-dark-1440.png'), fullPage: true});
    await page.emulateMediaFeatures([{name: 'prefers-color-scheme', value: 'light'}]);
    await page.setViewport({width: 375, height: 800});
    await page.screenshot({path: path.join(SHOTS, 'dashboard-375.png'), fullPage: true});
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    check(overflow <= 375, `at 375 px the page is ${overflow} px wide`);
    await page.setViewport({width: 1440, height: 900});
    // the detail view: a failed item's real error
    await page.click(`li.batch[data-batch="${batch}"] a.name`);
    await page.waitForSelector('#failed-only');
    await page.click('#failed-only');
    const err = await until(() => page.evaluate(() => {
      const td = document.querySelector('tr.r-failed td.err');
      return td && td.textContent;
    }), 10000, 'a failed item in the detail view');
    check(err.includes('sleep: simulated failure after 1 ms (fail_rate 1)'), `error text: ${err}`);
    await page.screenshot({path: path.join(SHOTS, 'dashboard-batch-1440.png'), fullPage: true});
    // the queue view
    await page.click('#nav-queue');
    await page.waitForSelector('svg.chart');
    const workers = await until(() => page.evaluate(() => document.querySelectorAll('caption').length >= 3 &&
      [...document.querySelectorAll('table')].find((t) => t.caption.textContent === 'Live workers')
        .querySelectorAll('tbody tr').length), 10000, 'the live workers');
    check(workers === 2, `${workers} workers listed`);
    await page.screenshot({path: path.join(SHOTS, 'dashboard-queue-1440.png'), fullPage: true});
    clean(page);
    await page.close();
  } finally {
    await env.stop();
  }
}

// Clicks a button by its text, once it is enabled.
async function press(page, text) {
  await until(() => page.evaluate((t) => {
    const b = [...document.querySelectorAll('button')].find((x) => x.textContent === t);
    return b && !b.disabled;
  }, text), 10000, `the ${text} button to be enabled`);
  await page.evaluate((t) => [...document.querySelectorAll('button')].find((x) => x.textContent === t).click(), text);
}

async function caseControl(browser) {
  const env = new Env();
  await env.start('uictl');
  try {
    env.workers(2, 10);
    const a = await env.submit(sleepItems(2000, 100, 0), 'to pause');
    const b = await env.submit(sleepItems(2000, 100, 0), 'to cancel');
    const page = await openPage(browser, `${env.base}/#/batch/${a}`);
    await press(page, 'Pause');
    await until(() => env.api('GET', `/v1/batches/${a}`).then((s) => s.status === 'paused'), 10000, 'paused');
    await until(() => page.evaluate(() => document.querySelector('.summary .status').textContent === 'paused'), 10000,
                'the page to say paused');
    await press(page, 'Resume');
    await until(() => env.api('GET', `/v1/batches/${a}`).then((s) => s.status === 'running'), 10000, 'resumed');
    await page.goto(`${env.base}/#/batch/${b}`);
    await page.reload({waitUntil: 'domcontentloaded'});
    await press(page, 'Cancel');
    await page.waitForSelector('#confirm[open]');
    await page.click('#confirm-yes');
    await until(() => env.api('GET', `/v1/batches/${b}`).then((s) => s.status === 'cancelled'), 10000, 'cancelled');
    await until(() => page.evaluate(() => {
      const c = [...document.querySelectorAll('button')].find((x) => x.textContent === 'Cancel');
      return c && c.disabled;
    }), 10000, 'the Cancel button to be disabled');
    clean(page);
    await page.close();
  } finally {
    await env.stop();
  }
}

async function caseBusy(browser) {
  const env = new Env();
  await env.start('uibusy');
  try {
    const ids = [];
    for (let i = 0; i < 200; i++) ids.push(await env.submit([{type: 'noop', payload: {}}], `small-${i}`));
    const hot = await env.submit(sleepItems(100000, 1, 0).slice(0, 5000), 'hot');
    const page = await openPage(browser, `${env.base}/`);
    await until(async () => (await page.evaluate(() => document.querySelectorAll('li.batch').length)) >= 50, 20000,
                'the list');
    // count the bar's redraws per frame
    await page.evaluate((b) => {
      window.__draws = 0;
      window.__frames = 0;
      window.__maxPerFrame = 0;
      let inFrame = 0;
      const bar = document.querySelector(`li.batch[data-batch="${b}"] [role=progressbar]`);
      new MutationObserver(() => {
        window.__draws++;
        inFrame++;
      }).observe(bar, {attributes: true, attributeFilter: ['aria-valuenow']});
      const tick = () => {
        window.__maxPerFrame = Math.max(window.__maxPerFrame, inFrame);
        inFrame = 0;
        window.__frames++;
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    }, hot);
    const cdp = await page.target().createCDPSession();
    await cdp.send('Performance.enable');
    const m = (set, name) => set.metrics.find((x) => x.name === name).value;
    // the same page without events first, for comparison
    const idle0 = await cdp.send('Performance.getMetrics');
    const i0 = Date.now();
    await sleep(2000);
    const idle1 = await cdp.send('Performance.getMetrics');
    const idle = (m(idle1, 'TaskDuration') - m(idle0, 'TaskDuration')) / ((Date.now() - i0) / 1000);
    const before = await cdp.send('Performance.getMetrics');
    const t0 = Date.now();
    // about 2,000 events a second of the hot batch, published as the functions do
    const pub = spawn('redis-cli', ['-s', env.sock], {stdio: ['pipe', 'ignore', 'inherit']});
    let sent = 0;
    const total = 5000;
    for (let s = 0; s < 4; s++) {
      const start = Date.now();
      let lines = '';
      for (let i = 0; i < 2000; i++) {
        sent++;
        const done = Math.min(total, sent);
        const ev = {queue: 'uibusy', batch: hot, status: 'running', total, done, succeeded: done, failed: 0,
                    cancelled: 0, pct: Math.floor(done * 1000 / total) / 10, queued: total - done, scheduled: 0,
                    waiting: 0, running: 0, retrying: 0, paused: 0, rate: 2000, eta_ms: 1000, ts: t0 + 1000 + sent};
        lines += `PUBLISH sluice:{uibusy}:events ${JSON.stringify(JSON.stringify(ev))}\n`;
      }
      pub.stdin.write(lines);
      await sleep(Math.max(0, 1000 - (Date.now() - start)));
    }
    pub.stdin.end();
    await new Promise((r) => pub.on('exit', r));
    await sleep(500);
    const after = await cdp.send('Performance.getMetrics');
    const wall = (Date.now() - t0) / 1000;
    const busy = (m(after, 'TaskDuration') - m(before, 'TaskDuration')) / wall;
    const script = (m(after, 'ScriptDuration') - m(before, 'ScriptDuration')) / wall;
    const stats = await page.evaluate(() => ({draws: window.__draws, frames: window.__frames, max: window.__maxPerFrame}));
    console.log(`  busy: 200 batches listed, ${sent} events of one batch in ${wall.toFixed(1)} s: main thread busy ` +
                `${(busy * 1000).toFixed(0)} ms per second (script ${(script * 1000).toFixed(0)} ms); the bar drawn ` +
                `${stats.draws} times in ${stats.frames} frames, at most ${stats.max} per frame (without events: ` +
                `${(idle * 1000).toFixed(0)} ms per second)`);
    check(stats.max <= 1, `the bar was drawn ${stats.max} times in one frame`);
    check(stats.draws > 0, 'the bar never moved');
    clean(page);
    await page.close();
  } finally {
    await env.stop();
  }
}

async function caseTokens(browser) {
  const env = new Env();
  const tokens = [['acme', 'read', 'acme-read-token'], ['acme', 'submit', 'acme-submit-token'],
                  ['other', 'submit', 'other-submit-token']];
  await env.start('uitok', tokens);
  try {
    const mine = await env.submit([{type: 'noop', payload: {}}], 'acme batch', 'acme-submit-token');
    const theirs = await env.submit([{type: 'noop', payload: {}}], 'other batch', 'other-submit-token');
    const page = await openPage(browser, `${env.base}/`);
    await page.waitForSelector('#login[open]');
    await page.type('#login-token', 'acme-read-token');
    await page.click('#login-form button[type=submit]');
    await until(() => rowOf(page, mine), 10000, "acme's batch in the list");
    check(!(await rowOf(page, theirs)), "the other tenant's batch is listed");
    const who = await page.evaluate(() => document.getElementById('who').textContent);
    check(who === 'acme · read', `who: ${who}`);
    await page.click(`li.batch[data-batch="${mine}"] a.name`);
    await page.waitForSelector('.summary h1');
    const buttons = await page.evaluate(() => [...document.querySelectorAll('.controls button')].length);
    check(buttons === 0, `a read token sees ${buttons} control buttons`);
    // the other tenant's batch: the API's message, not a blank page
    await page.goto(`${env.base}/#/batch/${theirs}`);
    await page.reload({waitUntil: 'domcontentloaded'});
    const err = await until(() => page.evaluate(() => {
      const e = document.getElementById('error');
      return !e.hidden && e.textContent;
    }), 10000, 'the error line');
    check(err.includes('not_found'), `error line: ${err}`);
    // Chromium logs the refused request itself ("Failed to load resource: ...
    // 404"): that one, for this batch, is expected; nothing else is
    page.problems = page.problems.filter((p) => !(p.includes('status of 404') && p.includes(`/v1/batches/${theirs}`)));
    clean(page);
    await page.close();
  } finally {
    await env.stop();
  }
}

const CASES = {open: caseOpen, control: caseControl, busy: caseBusy, tokens: caseTokens};

async function main() {
  check(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium (scripts/dev does)`);
  const browser = await puppeteer.launch({executablePath: CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage']});
  let failed = 0;
  try {
    for (const name of process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(CASES)) {
      const t0 = Date.now();
      try {
        await CASES[name](browser);
        console.log(`ok - ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      } catch (e) {
        failed++;
        console.log(`not ok - ${name}: ${e.stack}`);
      }
    }
  } finally {
    await browser.close();
  }
  return failed ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => {
  console.error(e);
  process.exit(1);
});
