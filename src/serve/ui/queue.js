// The queue view (#/queue): depth by priority, running, delayed, parked
// and dead; throughput of the last 30 minutes (an SVG chart drawn here);
// and, for an admin token, the live workers, the limits and the dead
// letters with requeue and purge. The figures are read every 5 s (they are
// the queue's, not one batch's, and have no events of their own).

import {getJSON, postJSON} from './api.js';
import {clear, confirmDialog, h, num, span, time} from './dom.js';

const EVERY_MS = 5000;
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

// Bars of items ended per minute, the oldest first, with a text equivalent.
function chart(per) {
  const max = Math.max(1, ...per);
  const w = 300;
  const hgt = 80;
  const bw = w / per.length;
  const total = per.reduce((a, b) => a + b, 0);
  const el = svg('svg', {viewBox: `0 0 ${w} ${hgt}`, class: 'chart', role: 'img',
    'aria-label': `items ended per minute over the last ${per.length} minutes: ${per.join(', ')}; ${total} in all`});
  per.forEach((n, i) => {
    const bh = Math.round((n / max) * (hgt - 4));
    el.append(svg('rect', {x: (i * bw + 1).toFixed(1), y: hgt - bh, width: Math.max(1, bw - 2).toFixed(1), height: bh},
      svg('title', {}, `${per.length - 1 - i} min ago: ${n}`)));
  });
  return el;
}

function table(caption, cols, rows) {
  return h('table', {class: 'grid'}, h('caption', {}, caption),
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', {scope: 'col'}, c)))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', {colspan: cols.length, class: 'muted'}, 'none'))));
}

export function queueView(app, main) {
  const stats = h('section', {'aria-label': 'Depth'});
  const admin = h('section', {'aria-label': 'Fleet'});
  let timer = 0;
  let stopped = false;
  let adminDrawn = false;

  function drawStats(s) {
    const fig = (label, n) => h('div', {class: 'figure'}, h('span', {class: 'n'}, num(n)), h('span', {}, label));
    clear(stats).append(
      h('div', {class: 'figures'},
        fig('high', s.high.queued), fig('normal', s.normal.queued), fig('low', s.low.queued),
        fig('running', s.running), fig('delayed', s.delayed), fig('parked', s.parked),
        fig('waiting for a lease', s.waiting_lease), fig('dead', s.dead), fig('live workers', s.workers)),
      h('h2', {}, 'Throughput'),
      h('p', {class: 'muted'}, `${s.per_s.toFixed(1)} items/s over the last minute; items ended per minute, ` +
        `the last ${(s.throughput || []).length} minutes:`),
      chart(s.throughput || []));
  }

  async function drawAdmin() {
    const [workers, limits, dead] = await Promise.all([
      getJSON('/v1/workers', {queue: app.queue}), getJSON('/v1/limits', {queue: app.queue}),
      getJSON('/v1/dead', {queue: app.queue, limit: 50})]);
    if (stopped) return;
    const requeueAll = h('button', {type: 'button', onclick: async () => {
      if (!(await confirmDialog('Run every dead letter of this queue again?', 'Requeue all'))) return;
      try {
        const r = await postJSON('/v1/dead/requeue', {queue: app.queue}, {all: 0});
        app.error(null);
        requeueAll.textContent = `Requeued ${r.requeued}`;
        tick();
      } catch (e) {
        app.error(e);
      }
    }}, 'Requeue all');
    const purge = h('button', {type: 'button', class: 'danger', onclick: async () => {
      if (!(await confirmDialog('Delete every dead letter of this queue? Results stay; this cannot be undone.',
        'Purge'))) return;
      try {
        await postJSON('/v1/dead/purge', {queue: app.queue});
        tick();
      } catch (e) {
        app.error(e);
      }
    }}, 'Purge');
    clear(admin).append(
      table('Live workers', ['worker', 'host', 'pid', 'running', 'concurrency', 'last beat', 'types'],
        workers.map((w) => h('tr', {}, h('td', {}, w.id), h('td', {}, w.host), h('td', {class: 'n'}, String(w.pid)),
          h('td', {class: 'n'}, num(w.running)), h('td', {class: 'n'}, num(w.concurrency)),
          h('td', {}, `${span(w.last_beat_ms_ago)} ago`), h('td', {}, (w.types || []).join(', '))))),
      table('Limits', ['name', 'rate', 'burst', 'concurrency', 'state'],
        limits.map((l) => h('tr', {}, h('td', {}, l.name), h('td', {}, l.rate === '-' ? '–' : l.rate),
          h('td', {class: 'n'}, num(l.burst)), h('td', {class: 'n'}, l.concurrency ? num(l.concurrency) : '–'),
          h('td', {}, [l.concurrency ? `${l.running} running` : '', l.waiting ? `${l.waiting} waiting` : '',
            l.reserved_ahead_ms ? `starts reserved ${span(l.reserved_ahead_ms)} ahead` : '']
            .filter((x) => x).join(', ') || 'idle')))),
      h('div', {class: 'dead'},
        table('Dead letters (the newest 50)', ['id', 'batch', 'item', 'attempts', 'when', 'error'],
          dead.map((d) => h('tr', {}, h('td', {}, d.id), h('td', {}, h('a', {href: `#/batch/${d.batch}`}, d.batch)),
            h('td', {}, d.item !== undefined ? String(d.item) : String(d.index)),
            h('td', {class: 'n'}, num(d.attempts)), h('td', {}, time(d.at)), h('td', {class: 'err'}, d.error)))),
        h('div', {class: 'buttons'}, requeueAll, purge)));
    adminDrawn = true;
  }

  async function tick() {
    try {
      const s = await getJSON(`/v1/queues/${app.queue}/stats`);
      if (stopped) return;
      drawStats(s);
      if (app.can('admin') && (!adminDrawn || !admin.contains(document.activeElement))) await drawAdmin();
    } catch (e) {
      app.error(e);
    }
    if (!stopped) timer = setTimeout(tick, EVERY_MS);
  }

  clear(main).append(h('h1', {}, `Queue ${app.queue}`), stats, admin);
  tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
