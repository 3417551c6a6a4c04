// The batches view (#/): the newest batches with live bars, and the batch
// view (#/batch/ID): counters, timings, controls and items. Bars move only
// when the server says so: a state read, or an event of /v1/events or
// /v1/batches/{id}/events. Events that come faster than the screen are
// coalesced: the newest of each batch is drawn once per animation frame.

import {follow, getJSON, getLines, postJSON} from './api.js';
import {bar, clear, confirmDialog, h, num, setBar, span, time} from './dom.js';

const STATUSES = ['submitting', 'queued', 'running', 'paused', 'completed', 'cancelled'];
const COUNTS = [
  ['queued', 'queued'], ['scheduled', 'scheduled'], ['waiting', 'waiting'], ['running', 'running'],
  ['retrying', 'retrying'], ['paused', 'paused'], ['succeeded', 'succeeded'], ['failed', 'failed'],
  ['cancelled', 'cancelled'],
];
const ALWAYS = new Set(['queued', 'running', 'retrying', 'paused', 'succeeded', 'failed', 'cancelled']);
const MAX_ROWS = 200;

// Newer state wins: by the server's ts, then by done.
function newer(a, b) {
  return !b || a.ts > b.ts || (a.ts === b.ts && a.done >= b.done);
}

function counts(state) {
  return h('ul', {class: 'counts'}, COUNTS.filter(([k]) => ALWAYS.has(k) || state[k] > 0).map(([k, label]) =>
    h('li', {class: `c-${k}`, 'data-count': k}, h('span', {class: 'n'}, num(state[k] || 0)), ' ', label)));
}

function rate(state) {
  if (typeof state.rate !== 'number') return state.status === 'running' ? 'rate: measuring' : '';
  const eta = typeof state.eta_ms === 'number' ? ` · ETA ${span(state.eta_ms)}` : '';
  return `${state.rate.toFixed(1)} items/s${eta}`;
}

function labels(state) {
  const l = state.labels || {};
  return h('span', {class: 'labels'}, Object.entries(l).map(([k, v]) => h('span', {class: 'label'}, `${k}=${v}`)));
}

function ago(ms) {
  return ms ? `${span(Date.now() - ms)} ago` : '';
}

// Applies events once per animation frame: the newest per batch.
function coalescer(apply) {
  const pending = new Map();
  let frame = 0;
  return (ev) => {
    const old = pending.get(ev.batch);
    if (!old || newer(ev, old)) pending.set(ev.batch, ev);
    if (!frame) {
      frame = requestAnimationFrame(() => {
        frame = 0;
        const all = [...pending.values()];
        pending.clear();
        for (const e of all) apply(e);
      });
    }
  };
}

// ---- #/: the list ----

export function batchesView(app, main) {
  const rows = new Map(); // batch -> {state, el}
  const reading = new Set(); // batches whose state is being read
  const unwanted = new Set(); // batches the name filter leaves out
  const filter = {status: sessionStorage.getItem('sluice.fstatus') || '', name: sessionStorage.getItem('sluice.fname') || ''};
  const list = h('ol', {class: 'batches', 'aria-live': 'off'});
  const note = h('p', {class: 'muted'});
  let stream = null;
  let stopped = false;

  function row(state) {
    const el = h('li', {class: 'batch', 'data-batch': state.batch});
    fill(el, state);
    return el;
  }

  function fill(el, state) {
    clear(el).append(
      h('div', {class: 'head'},
        h('a', {href: `#/batch/${state.batch}`, class: 'name'}, state.name || state.batch),
        h('span', {class: `status s-${state.status}`}, state.status),
        labels(state),
        h('span', {class: 'age muted'}, ago(state.created_at))),
      h('div', {class: 'progress'}, bar(state),
        h('span', {class: 'pct'}, `${(state.pct || 0).toFixed(1)}% · ${num(state.done)}/${num(state.total)}`)),
      h('div', {class: 'foot'}, counts(state), h('span', {class: 'rate muted'}, rate(state))));
  }

  function update(ev) {
    const r = rows.get(ev.batch);
    if (r) {
      if (!newer(ev, r.state)) return;
      r.state = Object.assign({}, r.state, ev);
      const b = r.el.querySelector('.bar');
      setBar(b, r.state);
      r.el.querySelector('.pct').textContent = `${(r.state.pct || 0).toFixed(1)}% · ${num(r.state.done)}/${num(r.state.total)}`;
      r.el.querySelector('.foot').replaceChildren(counts(r.state), h('span', {class: 'rate muted'}, rate(r.state)));
      const st = r.el.querySelector('.status');
      st.textContent = r.state.status;
      st.className = `status s-${r.state.status}`;
      return;
    }
    if ((filter.status && ev.status !== filter.status) || reading.has(ev.batch) || unwanted.has(ev.batch)) return;
    // a batch not listed yet: read its whole state (name, labels, times), once
    reading.add(ev.batch);
    getJSON(`/v1/batches/${ev.batch}`, {queue: app.queue}).then((state) => {
      if (stopped || rows.has(state.batch)) return;
      if (filter.name && state.name !== filter.name) {
        unwanted.add(state.batch); // its name never changes
        return;
      }
      add(state, true);
    }).catch(() => {}).finally(() => reading.delete(ev.batch));
  }

  function add(state, first) {
    const el = row(state);
    rows.set(state.batch, {state, el});
    if (first) list.prepend(el);
    else list.append(el);
    while (rows.size > MAX_ROWS) {
      const lastEl = list.lastElementChild;
      rows.delete(lastEl.dataset.batch);
      lastEl.remove();
    }
    note.textContent = '';
  }

  const form = h('form', {class: 'filters', role: 'search', onsubmit: (ev) => {
    ev.preventDefault();
    filter.status = form.elements.status.value;
    filter.name = form.elements.name.value.trim();
    sessionStorage.setItem('sluice.fstatus', filter.status);
    sessionStorage.setItem('sluice.fname', filter.name);
    load();
  }},
  h('label', {}, 'Status ', h('select', {name: 'status'}, h('option', {value: ''}, 'any'),
    STATUSES.map((s) => h('option', {value: s, selected: s === filter.status}, s)))),
  h('label', {}, 'Name ', h('input', {name: 'name', type: 'search', value: filter.name, placeholder: 'exact name'})),
  h('button', {type: 'submit'}, 'Filter'));

  async function load() {
    if (stream) stream.stop();
    rows.clear();
    unwanted.clear();
    clear(list);
    note.textContent = 'Loading…';
    try {
      const page = await getJSON('/v1/batches', {queue: app.queue, limit: MAX_ROWS, status: filter.status,
        name: filter.name});
      if (stopped) return;
      for (const s of page.batches) add(s, false);
      note.textContent = page.batches.length ? '' : 'No batches yet.';
    } catch (e) {
      note.textContent = '';
      app.error(e);
      return;
    }
    const push = coalescer(update);
    stream = follow('/v1/events', {queue: app.queue}, (name, data) => {
      if (name === 'batch') push(data);
      else if (name === 'snapshot') for (const s of data.batches || []) if (rows.has(s.batch)) push(s);
    }, (e) => app.error(e));
  }

  clear(main).append(h('h1', {}, `Batches of ${app.queue}`), form, note, list);
  load();
  return {
    stop() {
      stopped = true;
      if (stream) stream.stop();
    },
  };
}

// ---- #/batch/ID: one batch ----

// Which controls the batch's state allows (the API answers 409 otherwise).
function allowed(state) {
  const s = state.status;
  return {
    pause: s === 'submitting' || s === 'queued' || s === 'running',
    resume: s === 'paused',
    cancel: s !== 'completed' && s !== 'cancelled',
    abort: s !== 'completed' && (s !== 'cancelled' || (state.running || 0) + (state.waiting || 0) > 0),
    retry: s !== 'cancelled' && (state.failed || 0) > 0,
  };
}

export function batchView(app, main, id) {
  let state = null;
  let stream = null;
  let stopped = false;
  const top = h('section', {class: 'summary', 'aria-labelledby': 'batch-title'});
  const controls = h('div', {class: 'controls', role: 'group', 'aria-label': 'Controls'});
  const items = h('section', {class: 'items', 'aria-label': 'Items'});
  const buttons = {};

  function info(label, value) {
    return [h('dt', {}, label), h('dd', {}, value)];
  }

  function draw() {
    const s = state;
    const facts = [
      info('status', h('span', {class: `status s-${s.status}`}, s.status)),
      info('progress', `${(s.pct || 0).toFixed(1)}% · ${num(s.done)} of ${num(s.total)} ended`),
      info('rate', rate(s) || '–'),
      info('created', time(s.created_at)), info('started', time(s.started_at)), info('finished', time(s.finished_at)),
      info('elapsed', span(s.elapsed_ms)),
    ];
    if (s.skipped) facts.push(info('skipped', `${num(s.skipped)} duplicates`));
    if (s.refused) facts.push(info('refused', `${num(s.refused)} (a secret not granted)`));
    if (s.reran) facts.push(info('reran', `${num(s.reran)} items ran more than once`));
    for (const [m, v] of Object.entries(s.metrics || {})) {
      facts.push(info(m, `${v.final} over final attempts, ${v.all} over all`));
    }
    if (s.webhook) {
      const w = s.webhook;
      const wstate = w.delivered_at ? `delivered ${time(w.delivered_at)}` : w.error ? w.error : s.finished_at ?
        `sending (${w.attempts} tries)` : 'sent when the batch ends';
      facts.push(info('webhook', `${w.url} — ${wstate}`));
    }
    clear(top).append(
      h('h1', {id: 'batch-title'}, s.name || s.batch),
      h('p', {class: 'muted'}, s.batch, ' ', labels(s)),
      h('div', {class: 'progress big'}, bar(s)),
      counts(s),
      h('dl', {class: 'facts'}, facts.flat()));
    const ok = allowed(s);
    for (const [k, b] of Object.entries(buttons)) b.disabled = !ok[k];
  }

  async function control(action, query, text, yes) {
    if (text && !(await confirmDialog(text, yes))) return;
    try {
      const r = await postJSON(`/v1/batches/${id}/${action}`, Object.assign({queue: app.queue}, query));
      const next = r.batch || r;
      if (newer(next, state)) state = next;
      draw();
      if (action === 'retry' || action === 'resume') listen();
    } catch (e) {
      app.error(e);
    }
  }

  if (app.can('submit')) {
    buttons.pause = h('button', {type: 'button', onclick: () => control('pause')}, 'Pause');
    buttons.resume = h('button', {type: 'button', onclick: () => control('resume')}, 'Resume');
    buttons.cancel = h('button', {type: 'button', class: 'danger', onclick: () => control('cancel', {},
      'Cancel this batch? Items not started yet will not run; running items finish.', 'Cancel batch')}, 'Cancel');
    buttons.abort = h('button', {type: 'button', class: 'danger', onclick: () => control('cancel', {abort: 1},
      'Cancel this batch and stop its running items now?', 'Cancel and abort')}, 'Cancel and abort running');
    buttons.retry = h('button', {type: 'button', onclick: () => control('retry')}, 'Retry failed');
    controls.append(...Object.values(buttons));
  }

  // The items: finished ones from the results (paged, failed only on
  // demand), unfinished ones from /items.
  let cursor = '0';
  let failedOnly = false;
  const tbody = h('tbody');
  const more = h('button', {type: 'button', onclick: () => page(false)}, 'More');
  const unfinished = h('button', {type: 'button', onclick: () => pending()}, 'Show unfinished items');
  const failedBox = h('input', {type: 'checkbox', id: 'failed-only', onchange: (ev) => {
    failedOnly = ev.target.checked;
    page(true);
  }});

  async function page(fresh) {
    if (fresh) {
      cursor = '0';
      clear(tbody);
    }
    try {
      const r = await getLines(`/v1/batches/${id}/results`, {queue: app.queue, limit: 100, cursor,
        status: failedOnly ? 'failed' : ''});
      for (const l of r.lines) {
        tbody.append(h('tr', {class: `r-${l.status}`},
          h('td', {}, String(l.id)), h('td', {}, l.status), h('td', {class: 'n'}, num(l.attempts)),
          h('td', {class: 'n'}, l.duration_ms === null ? '–' : span(l.duration_ms)), h('td', {}, l.worker || '–'),
          h('td', {class: 'err'}, l.error || '')));
      }
      cursor = r.next;
      more.hidden = !cursor;
      if (!tbody.firstChild) tbody.append(h('tr', {}, h('td', {colspan: 6, class: 'muted'}, 'No ended items yet.')));
    } catch (e) {
      app.error(e);
    }
  }

  async function pending() {
    try {
      const r = await getLines(`/v1/batches/${id}/items`, {queue: app.queue, limit: 100});
      const list = h('table', {class: 'grid'}, h('caption', {}, 'Unfinished items (the first 100)'),
        h('thead', {}, h('tr', {}, ['id', 'state', 'attempt', 'detail'].map((c) => h('th', {scope: 'col'}, c)))),
        h('tbody', {}, r.lines.map((i) => h('tr', {}, h('td', {}, String(i.id)), h('td', {}, i.state),
          h('td', {class: 'n'}, num(i.attempt)),
          h('td', {}, i.worker ? `on ${i.worker}${i.since ? ` since ${time(i.since)}` : ''}` :
            i.due ? `at ${time(i.due)}` : i.until ? `until ${time(i.until)}` : i.detail || '')))));
      unfinished.replaceWith(list);
    } catch (e) {
      app.error(e);
    }
  }

  function listen() {
    if (stream) stream.stop();
    const push = coalescer((ev) => {
      if (!newer(ev, state)) return;
      state = Object.assign({}, state, ev);
      draw();
    });
    stream = follow(`/v1/batches/${id}/events`, {queue: app.queue}, (name, data) => {
      if (name === 'batch' || name === 'message') push(data);
    }, (e) => app.error(e), true);
  }

  items.append(
    h('h2', {}, 'Items'),
    h('p', {}, h('label', {for: 'failed-only'}, failedBox, ' failed only')),
    h('table', {class: 'grid'},
      h('thead', {}, h('tr', {}, ['id', 'status', 'attempts', 'duration', 'worker', 'error'].map((c) =>
        h('th', {scope: 'col'}, c)))), tbody),
    more, ' ', unfinished);

  clear(main).append(h('p', {}, h('a', {href: '#/'}, '← Batches')), top, controls, items);
  getJSON(`/v1/batches/${id}`, {queue: app.queue}).then((s) => {
    if (stopped) return;
    state = s;
    draw();
    listen();
    page(true);
  }).catch((e) => {
    top.append(h('p', {class: 'muted'}, 'This batch could not be read.'));
    app.error(e);
  });
  return {
    stop() {
      stopped = true;
      if (stream) stream.stop();
    },
  };
}
