// Small DOM helpers. Text always goes in as text (never as HTML): batch
// names, labels, ids and errors come from producers and items.

// h('div', {class: 'x', onclick: f}, child, 'text', ...)
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// 1234567 -> "1,234,567"
export function num(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : '–';
}

// A span of ms for people: "850 ms", "12 s", "4 min 10 s", "3 h 5 min".
export function span(ms) {
  if (typeof ms !== 'number' || !isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 100000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  if (ms < 6000000) return `${Math.floor(ms / 60000)} min ${Math.floor(ms / 1000) % 60} s`;
  return `${Math.floor(ms / 3600000)} h ${Math.floor(ms / 60000) % 60} min`;
}

export function time(ms) {
  return ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '–';
}

// A progress bar with its text equivalent: role=progressbar and the
// numbers beside it.
export function bar(state) {
  const pct = typeof state.pct === 'number' ? state.pct : 0;
  const fill = h('div', {class: 'fill'});
  const el = h('div', {class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100}, fill);
  setBar(el, state);
  return el;
}

export function setBar(el, state) {
  const pct = typeof state.pct === 'number' ? state.pct : 0;
  el.firstChild.style.transform = `scaleX(${pct / 100})`; // no layout: the compositor scales it
  el.setAttribute('aria-valuenow', String(pct));
  el.setAttribute('aria-valuetext', `${pct.toFixed(1)}% — ${state.done} of ${state.total} ended`);
  el.dataset.status = state.status || '';
}

// Asks in the page's confirmation dialog; resolves true for yes. The
// dialog is modal, so the keyboard stays in it until it closes.
export function confirmDialog(text, yes) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-yes').textContent = yes;
  dlg.returnValue = '';
  dlg.showModal();
  return new Promise((resolve) => dlg.addEventListener('close', () => resolve(dlg.returnValue === 'yes'), {once: true}));
}
