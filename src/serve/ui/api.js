// The dashboard's only way to the server: the public API (/v1), with the
// bearer token the user gave (kept in sessionStorage: this tab only).
// Errors carry the API's own message ({"error":{"code","message"}}), so the
// page can show it as it is.

const TOKEN_KEY = 'sluice.token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra) {
  const h = Object.assign({}, extra);
  if (token()) h.Authorization = `Bearer ${token()}`;
  return h;
}

async function failure(res) {
  let code = 'http_' + res.status;
  let message = `${res.status} ${res.statusText}`;
  try {
    const j = await res.json();
    if (j && j.error) {
      code = j.error.code || code;
      message = j.error.message || message;
    }
  } catch (e) {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message);
}

// GET or POST a JSON answer. query: an object of query arguments.
export async function call(method, path, query, body) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  const init = {method, headers: headers(body ? {'Content-Type': 'application/json'} : {})};
  if (body) init.body = JSON.stringify(body);
  const res = await fetch(url, init);
  if (!res.ok) throw await failure(res);
  return res;
}

export async function getJSON(path, query) {
  return (await call('GET', path, query)).json();
}

export async function postJSON(path, query, body) {
  return (await call('POST', path, query, body || {})).json();
}

// NDJSON lines as objects, and the X-Next-Cursor header (or null).
export async function getLines(path, query) {
  const res = await call('GET', path, query);
  const text = await res.text();
  const lines = text.split('\n').filter((l) => l).map((l) => JSON.parse(l));
  return {lines, next: res.headers.get('X-Next-Cursor')};
}

// Follows a server-sent event stream with fetch (EventSource cannot send a
// bearer token): onEvent(name, data) for each event. Reconnects after a
// lost stream, with the last event id, until stop() is called, or, with
// ends, until the server ends the stream. onError gets API errors (401,
// 403 and 404 stop it).
export function follow(path, query, onEvent, onError, ends) {
  let stopped = false;
  let ctl = null;
  let last = '';
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v) url.searchParams.set(k, v);
  }

  async function once() {
    ctl = new AbortController();
    const h = headers({Accept: 'text/event-stream'});
    if (last) h['Last-Event-ID'] = last;
    const res = await fetch(url, {headers: h, signal: ctl.signal});
    if (!res.ok) throw await failure(res);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return true;
      buf += value;
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let name = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).trimStart();
          else if (line.startsWith('id:')) last = line.slice(3).trim();
        }
        if (data) onEvent(name, JSON.parse(data));
      }
    }
  }

  (async () => {
    let wait = 500;
    while (!stopped) {
      try {
        const ended = await once();
        wait = 500;
        if (ended && ends) return;
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError) {
          onError(e);
          if (e.status === 401 || e.status === 403 || e.status === 404) return;
        }
      }
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 10000);
    }
  })();
  return {
    stop() {
      stopped = true;
      if (ctl) ctl.abort();
    },
  };
}
