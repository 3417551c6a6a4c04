// The dashboard of `sluice serve`: who the token is, the queue picker, the
// router (#/, #/batch/ID, #/queue) and the error line. Views live in
// batches.js and queue.js; every request goes through api.js.

import {ApiError, getJSON, setToken, token} from './api.js';
import {batchesView, batchView} from './batches.js';
import {h} from './dom.js';
import {queueView} from './queue.js';

const app = {
  me: null,      // {auth, tenant, role, queues}
  queue: '',     // the queue shown
  view: null,    // the current view: {stop()} or null
  can(role) {    // the token's role allows role's actions
    const rank = {none: 0, read: 1, submit: 2, admin: 3};
    return (rank[this.me && this.me.role] || 0) >= rank[role];
  },
  // Shows an error of the API as its message; null hides the line.
  error(e) {
    const el = document.getElementById('error');
    if (!e) {
      el.hidden = true;
      return;
    }
    el.textContent = e instanceof ApiError ? `${e.message} (${e.code})` : String(e.message || e);
    el.hidden = false;
    if (e instanceof ApiError && e.status === 401) askToken(e.message);
  },
};

// Asks for a token in a modal dialog; resolves once /v1/me accepts it.
function askToken(why) {
  const dlg = document.getElementById('login');
  const err = document.getElementById('login-error');
  if (dlg.open) return;
  err.hidden = !why || !token();
  err.textContent = why || '';
  dlg.showModal();
  document.getElementById('login-token').focus();
}

async function signIn() {
  try {
    app.me = await getJSON('/v1/me');
    if (app.me.role === 'none') {
      // a server with tokens, and none given yet: ask (no refused request)
      askToken('');
      return false;
    }
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      askToken(token() ? e.message : '');
      return false;
    }
    app.error(e);
    return false;
  }
  document.getElementById('login').close();
  const who = document.getElementById('who');
  who.textContent = app.me.auth ? `${app.me.tenant || 'every tenant'} · ${app.me.role}` : 'no tokens · admin';
  document.getElementById('signout').hidden = !app.me.auth;
  const pick = document.getElementById('queue');
  pick.replaceChildren(...app.me.queues.map((q) => h('option', {value: q}, q)));
  app.queue = sessionStorage.getItem('sluice.queue') || app.me.queues[0];
  if (!app.me.queues.includes(app.queue)) app.queue = app.me.queues[0];
  pick.value = app.queue;
  return true;
}

function route() {
  if (!app.me) return;
  if (app.view) app.view.stop();
  app.view = null;
  app.error(null);
  const main = document.getElementById('main');
  const hash = location.hash || '#/';
  let m;
  for (const a of document.querySelectorAll('nav a')) a.removeAttribute('aria-current');
  if ((m = hash.match(/^#\/batch\/([0-9A-Za-z_-]+)$/))) {
    app.view = batchView(app, main, m[1]);
  } else if (hash === '#/queue') {
    document.getElementById('nav-queue').setAttribute('aria-current', 'page');
    app.view = queueView(app, main);
  } else {
    document.getElementById('nav-batches').setAttribute('aria-current', 'page');
    app.view = batchesView(app, main);
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('unhandledrejection', (ev) => {
  app.error(ev.reason);
  ev.preventDefault();
});

document.addEventListener('DOMContentLoaded', async () => {
  document.getElementById('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setToken(document.getElementById('login-token').value.trim());
    if (await signIn()) route();
  });
  document.getElementById('login').addEventListener('cancel', (ev) => ev.preventDefault());
  document.getElementById('signout').addEventListener('click', () => {
    setToken('');
    location.reload();
  });
  document.getElementById('queue').addEventListener('change', (ev) => {
    app.queue = ev.target.value;
    sessionStorage.setItem('sluice.queue', app.queue);
    location.hash = '#/';
    route();
  });
  if (await signIn()) route();
});
