// SPDX-License-Identifier: Apache-2.0
// mlc-agent status page: one snapshot from GET /api/status, then live
// snapshots over the WebSocket /ws (subprotocol mlc-status). Every string
// that comes from the agent reaches the page as a text node or an attribute
// value, never as markup.
'use strict';

(function () {
  const STALE_MS = 10000;         // no snapshot for this long: say the page is not live
  const TICK_MS = 5000;           // relative times are redrawn this often
  const PENDING_MAX_MS = 120000;  // an action nobody confirmed is forgotten after this

  const st = {
    snap: null,
    skew: 0,              // agent clock minus browser clock, ms
    lastSnapAt: 0,        // browser time of the last snapshot
    loginRequired: false,
    ws: null,
    wsTimer: 0,
    wsRetry: 0,
    running: false,       // dashboard started (not on the login form)
    audit: { q: '', results: null, seq: 0, timer: 0, topId: null },
    pending: { sync: new Map(), dead: new Map(), all: new Map() },
    ping: { busy: false, result: null, error: null, at: 0 },
    announceTimer: 0,
    alertTimer: 0,
  };

  const $ = (id) => document.getElementById(id);
  const nf = new Intl.NumberFormat();

  // ---------------------------------------------------------------- DOM

  function add(el, kids) {
    for (const k of kids) {
      if (k === null || k === undefined || k === false) continue;
      if (Array.isArray(k)) add(el, k);
      else if (k instanceof Node) el.appendChild(k);
      else el.appendChild(document.createTextNode(String(k)));
    }
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const name of Object.keys(attrs)) {
      const v = attrs[name];
      if (v === null || v === undefined || v === false) continue;
      el.setAttribute(name, v === true ? '' : String(v));
    }
  }

  // h('p', {class: 'x'}, 'text', child, [more]) - text is always a text node
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    return add(el, kids);
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    return add(el, kids);
  }

  // Make `live` look like `fresh` while keeping the nodes that stay, so
  // focus, scroll position and screen-reader context survive an update and
  // aria-live regions speak only about what really changed. Children with
  // a data-key attribute are matched by key, the others by position.
  function keyOf(n) {
    return n.nodeType === 1 && n.hasAttribute('data-key') ? n.tagName + '\u0000' + n.getAttribute('data-key') : null;
  }

  function sameKind(a, b) {
    if (a.nodeType !== b.nodeType) return false;
    if (a.nodeType !== 1) return true;
    return a.namespaceURI === b.namespaceURI && a.tagName === b.tagName;
  }

  function morphAttrs(live, fresh) {
    for (const a of Array.from(live.attributes)) {
      if (!fresh.hasAttribute(a.name)) live.removeAttribute(a.name);
    }
    for (const a of Array.from(fresh.attributes)) {
      if (live.getAttribute(a.name) !== a.value) live.setAttribute(a.name, a.value);
    }
  }

  function morphChildren(live, fresh) {
    const keyed = new Map();
    for (const c of Array.from(live.childNodes)) {
      const k = keyOf(c);
      if (k !== null) keyed.set(k, c);
    }
    let cur = live.firstChild;
    for (const f of Array.from(fresh.childNodes)) {
      const k = keyOf(f);
      let match = null;
      if (k !== null) {
        match = keyed.get(k) || null;
        keyed.delete(k);
      } else if (cur && keyOf(cur) === null && sameKind(cur, f)) {
        match = cur;
      }
      if (match === null) {
        live.insertBefore(f, cur);
        continue;
      }
      if (match === cur) cur = cur.nextSibling;
      else live.insertBefore(match, cur);
      if (match.nodeType === 1) {
        morphAttrs(match, f);
        morphChildren(match, f);
      } else if (match.nodeValue !== f.nodeValue) {
        match.nodeValue = f.nodeValue;
      }
    }
    while (cur) {
      const next = cur.nextSibling;
      live.removeChild(cur);
      cur = next;
    }
  }

  function render(container, ...kids) {
    const fresh = container.cloneNode(false);
    add(fresh, kids);
    morphChildren(container, fresh);
  }

  // ---------------------------------------------------------------- values

  const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
  const text = (x, dflt) => (x === null || x === undefined || x === '' ? (dflt === undefined ? '' : dflt) : String(x));
  const arr = (x) => (Array.isArray(x) ? x : []);
  const obj = (x) => (x && typeof x === 'object' && !Array.isArray(x) ? x : {});
  const count = (x) => (isNum(x) ? nf.format(x) : '—');
  const now = () => Date.now() + st.skew;

  function duration(sec) {
    if (!isNum(sec)) return '—';
    const s = Math.max(0, Math.round(sec));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min';
    const hr = Math.floor(m / 60);
    if (hr < 48) return m % 60 ? `${hr} h ${m % 60} min` : `${hr} h`;
    const d = Math.floor(hr / 24);
    return hr % 24 ? `${d} d ${hr % 24} h` : `${d} d`;
  }

  function relative(ms) {
    const diff = Math.round((now() - ms) / 1000);
    if (Math.abs(diff) < 5) return diff >= 0 ? 'just now' : 'in a moment';
    return diff > 0 ? duration(diff) + ' ago' : 'in ' + duration(-diff);
  }

  function absolute(ms) {
    return new Date(ms).toLocaleString(undefined, {
      year: 'numeric', month: 'short', day: 'numeric',
      hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
    });
  }

  // <time> with "3 min ago" and the exact time in title
  function when(ms, none) {
    if (!isNum(ms) || ms <= 0) return h('span', { class: 'muted' }, none || '—');
    return h('time', { datetime: new Date(ms).toISOString(), title: absolute(ms) }, relative(ms));
  }

  const LEVEL_TEXT = { ok: 'OK', warn: 'Warning', crit: 'Critical' };
  function level(x) { return x === 'ok' || x === 'warn' || x === 'crit' ? x : 'unknown'; }

  function badge(lvl, label, testid) {
    return h('span', { class: 'badge', 'data-level': lvl, 'data-testid': testid }, label);
  }

  // a <dl> row; value may be a node or text
  function row(label, value, attrs) {
    return h('div', Object.assign({ class: 'kv' }, attrs || {}), h('dt', null, label), h('dd', null, value));
  }

  // ---------------------------------------------------------------- messages

  function announce(msg) {
    const el = $('announce');
    clearTimeout(st.announceTimer);
    el.textContent = '';
    st.announceTimer = setTimeout(() => { el.textContent = msg; }, 60);
  }

  function showAlert(msg) {
    const el = $('alert');
    clearTimeout(st.alertTimer);
    render(el, h('span', null, msg),
      h('button', { type: 'button', class: 'btn btn-quiet', 'data-action': 'dismiss', 'aria-label': 'Dismiss message' }, '×'));
    el.hidden = false;
    st.alertTimer = setTimeout(hideAlert, 20000);
  }

  function hideAlert() {
    $('alert').hidden = true;
  }

  // ---------------------------------------------------------------- HTTP

  class HttpError extends Error {
    constructor(status, msg) { super(msg); this.status = status; }
  }

  async function api(method, path, body) {
    const opt = { method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } };
    if (method !== 'GET') {
      opt.headers['X-Requested-With'] = 'mlc';
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body || {});
    }
    let r;
    try {
      r = await fetch(path, opt);
    } catch (e) {
      throw new HttpError(0, 'the agent did not answer (' + e.message + ')');
    }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const msg = data && typeof data.error === 'string' ? data.error : 'HTTP ' + r.status;
      if (r.status === 401 && path !== '/login' && st.running) showLogin('Your session has ended. Log in again.');
      throw new HttpError(r.status, msg);
    }
    return data;
  }

  // ---------------------------------------------------------------- login

  function showLogin(why) {
    st.running = false;
    closeWs();
    $('dashboard').hidden = true;
    $('ping-all').hidden = true;
    $('logout').hidden = true;
    $('agent-health').hidden = true;
    $('login').hidden = false;
    setConn('locked', 'Login required');
    $('login-error').textContent = why || '';
    $('login-password').value = '';
    $('login-password').focus();
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const pw = $('login-password').value;
    const btn = $('login-submit');
    if (!pw) {
      $('login-error').textContent = 'Enter the password.';
      $('login-password').focus();
      return;
    }
    btn.disabled = true;
    $('login-error').textContent = '';
    try {
      await api('POST', '/login', { password: pw });
      $('login-password').value = '';
      $('login').hidden = true;
      announce('Logged in.');
      startDashboard();
    } catch (e) {
      $('login-error').textContent = e.status === 401 ? 'Wrong password.' : 'Login failed: ' + e.message;
      $('login-password').select();
      $('login-password').focus();
    } finally {
      btn.disabled = false;
    }
  }

  async function logout() {
    try { await api('POST', '/logout'); } catch (e) { /* the form shows either way */ }
    showLogin('Logged out.');
  }

  // ---------------------------------------------------------------- live updates

  function setConn(state, label) {
    const el = $('conn-state');
    if (el.getAttribute('data-state') === state && el.textContent === label) return;
    el.setAttribute('data-state', state);
    el.textContent = label;
  }

  function closeWs() {
    clearTimeout(st.wsTimer);
    if (st.ws) {
      const ws = st.ws;
      st.ws = null;
      ws.onclose = null;
      ws.close();
    }
  }

  function connectWs() {
    if (st.ws || !st.running) return;
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    let ws;
    try {
      ws = new WebSocket(url, 'mlc-status');
    } catch (e) {
      reconnectLater();
      return;
    }
    st.ws = ws;
    ws.onopen = () => {
      st.wsRetry = 0;
      setConn('live', 'Live');
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let snap;
      try { snap = JSON.parse(ev.data); } catch (e) { return; }
      applySnapshot(snap);
    };
    ws.onclose = () => {
      if (st.ws !== ws) return;
      st.ws = null;
      if (!st.running) return;
      setConn('down', 'Reconnecting…');
      reconnectLater();
    };
  }

  function reconnectLater() {
    clearTimeout(st.wsTimer);
    const delay = Math.min(15000, 1000 * Math.pow(2, Math.min(st.wsRetry, 4)));
    st.wsRetry++;
    st.wsTimer = setTimeout(async () => {
      if (!st.running) return;
      try {
        const s = await api('GET', '/api/session');
        if (s && s.login_required && !s.logged_in) {
          showLogin('Your session has ended. Log in again.');
          return;
        }
        applySnapshot(await api('GET', '/api/status'));
      } catch (e) {
        if (st.running) reconnectLater();
        return;
      }
      connectWs();
    }, delay);
  }

  function checkStale() {
    if (!st.running) return;
    const age = Date.now() - st.lastSnapAt;
    if (st.ws && st.ws.readyState === WebSocket.OPEN) {
      if (st.lastSnapAt && age > STALE_MS) setConn('stale', 'No update for ' + duration(age / 1000));
      else setConn('live', 'Live');
    }
  }

  // ---------------------------------------------------------------- snapshot

  function flowByName(snap, name) {
    return arr(snap && snap.flows).find((f) => f && f.name === name) || null;
  }

  function noticeChanges(prev, snap) {
    if (!prev) return;
    const said = [];
    for (const f of arr(snap.flows)) {
      const p = flowByName(prev, f.name);
      const lr = obj(f.last_run);
      const plr = p ? obj(p.last_run) : {};
      if (p && lr.finished_ms && lr.finished_ms !== plr.finished_ms) {
        if (lr.status === 'failed') said.push(`${f.name}: sync failed${lr.error ? ': ' + lr.error : ''}.`);
        else said.push(`${f.name}: sync finished: created ${count(lr.created)}, updated ${count(lr.updated)}, ` +
                        `unchanged ${count(lr.unchanged)}, failed ${count(lr.failed)}.`);
      }
      if (p && isNum(f.dead) && isNum(p.dead) && f.dead !== p.dead) {
        said.push(`${f.name}: ${count(f.dead)} dead letter${f.dead === 1 ? '' : 's'}.`);
      }
    }
    const pa = obj(prev.agent);
    const a = obj(snap.agent);
    if (pa.health && a.health && pa.health !== a.health) said.push('Overall health: ' + (LEVEL_TEXT[a.health] || a.health) + '.');
    const pt = obj(prev.tunnel);
    const t = obj(snap.tunnel);
    if (t.configured && pt.connected !== t.connected) said.push(t.connected ? 'Relay tunnel connected.' : 'Relay tunnel disconnected.');
    if (said.length) announce(said.join(' '));
  }

  function settlePending(snap) {
    const t = Date.now();
    for (const [name, p] of st.pending.sync) {
      const f = flowByName(snap, name);
      const started = f && f.last_run ? f.last_run.started_ms : null;
      if (!f || f.running || started !== p.started || t - p.at > PENDING_MAX_MS) st.pending.sync.delete(name);
    }
    const deadIds = new Set(arr(snap.dead).map((d) => String(d && d.id)));
    for (const [id, at] of st.pending.dead) {
      if (!deadIds.has(id) || t - at > PENDING_MAX_MS) st.pending.dead.delete(id);
    }
    for (const [name, at] of st.pending.all) {
      const f = flowByName(snap, name);
      if (!f || !f.dead || t - at > PENDING_MAX_MS) st.pending.all.delete(name);
    }
  }

  function applySnapshot(snap) {
    if (!snap || typeof snap !== 'object' || !Array.isArray(snap.flows)) return;
    const prev = st.snap;
    st.snap = snap;
    st.lastSnapAt = Date.now();
    const a = obj(snap.agent);
    if (isNum(a.now_ms)) st.skew = a.now_ms - Date.now();
    settlePending(snap);
    noticeChanges(prev, snap);
    renderAll();
    const top = arr(snap.audit).length ? snap.audit[0].id : null;
    if (st.audit.q && top !== st.audit.topId) runAuditSearch();
    st.audit.topId = top;
  }

  // ---------------------------------------------------------------- sections

  function renderHeader(snap) {
    const a = obj(snap.agent);
    const lvl = level(a.health);
    const label = { ok: 'Healthy', warn: 'Needs attention', crit: 'Critical', unknown: 'Unknown' }[lvl];
    const hb = $('agent-health');
    hb.hidden = false;
    hb.setAttribute('data-level', lvl);
    hb.textContent = label;
    $('agent-version').textContent = a.version ? 'mlc-agent ' + a.version : '';
    render($('agent-uptime'), isNum(a.started_ms) && a.started_ms > 0
      ? ['up ', h('time', { datetime: new Date(a.started_ms).toISOString(), title: 'started ' + absolute(a.started_ms) },
        duration((now() - a.started_ms) / 1000))]
      : null);
    document.title = (lvl === 'ok' ? '' : label + ' · ') + 'ML Connector agent status';
  }

  function renderHealth(snap) {
    const items = arr(snap.health);
    if (!items.length) {
      render($('health'), h('li', { class: 'muted' }, 'No health checks reported.'));
      return;
    }
    render($('health'), items.map((it, i) => {
      const x = obj(it);
      const lvl = level(x.level);
      return h('li', { class: 'health-item', 'data-level': lvl, 'data-testid': 'health-' + i, 'data-key': text(x.what, 'item ' + i) },
        h('div', { class: 'health-line' },
          badge(lvl, LEVEL_TEXT[lvl] || 'Unknown'),
          h('span', { class: 'health-what' }, text(x.what)),
          x.value !== undefined && x.value !== null && x.value !== '' ? h('span', { class: 'health-value' }, text(x.value)) : null),
        x.advice && lvl !== 'ok' ? h('p', { class: 'advice' }, text(x.advice)) : null);
    }));
  }

  function renderSystems(snap) {
    const systems = arr(snap.systems);
    if (!systems.length) {
      render($('systems'), h('p', { class: 'muted' }, 'No systems configured.'));
      return;
    }
    render($('systems'), systems.map((s0) => {
      const s = obj(s0);
      const name = text(s.name, '?');
      const reach = s.reachable === true ? 'Reachable' : s.reachable === false ? 'Unreachable' : 'Not checked yet';
      const auth = s.auth === 'ok' ? 'OK' : s.auth === 'failed' ? 'Failed' : 'Unknown';
      const lvl = s.reachable === false || s.auth === 'failed' ? 'crit' : s.reachable === true && s.auth === 'ok' ? 'ok' : 'unknown';
      return h('article', { class: 'card', 'data-key': name, 'data-testid': 'system-' + name, 'data-level': lvl, 'aria-label': 'System ' + name },
        h('h3', null, h('span', { class: 'dot', 'data-level': lvl, 'aria-hidden': 'true' }), name, ' ',
          h('span', { class: 'sub' }, text(s.type))),
        h('dl', { class: 'kvs' },
          row('Network', reach, { 'data-testid': 'system-' + name + '-reachable' }),
          row('Sign-in', auth, { 'data-testid': 'system-' + name + '-auth' }),
          row('Checked', when(s.checked_ms, 'not yet')),
          isNum(s.expires_ms) ? row('Expires', [text(s.expires_what, 'Credential'), ' ', when(s.expires_ms)]) : null),
        s.detail ? h('p', { class: 'detail' }, text(s.detail)) : null);
    }));
  }

  function renderPing() {
    const p = st.ping;
    const btn = $('ping-all');
    btn.disabled = p.busy;
    btn.textContent = p.busy ? 'Pinging…' : 'Ping all systems';
    const box = $('ping-result');
    if (p.busy) {
      render(box, h('p', { class: 'muted' }, 'Trying every system’s credentials…'));
    } else if (p.error) {
      render(box, h('p', { class: 'form-error' }, 'Ping failed: ' + p.error));
    } else if (p.result) {
      const list = arr(p.result.systems);
      render(box,
        h('h3', null, 'Ping ', h('time', { datetime: new Date(p.at).toISOString(), title: absolute(p.at) }, relative(p.at))),
        list.length ? h('ul', { class: 'ping-list' }, list.map((s0) => {
          const s = obj(s0);
          return h('li', { 'data-key': text(s.name, '?'), 'data-testid': 'ping-' + text(s.name, '?'), 'data-level': s.ok ? 'ok' : 'crit' },
            badge(s.ok ? 'ok' : 'crit', s.ok ? 'OK' : 'Failed'), ' ',
            h('strong', null, text(s.name, '?')), ' ', h('span', { class: 'sub' }, text(s.type)),
            s.detail ? h('span', { class: 'detail' }, ' — ' + text(s.detail)) : null);
        })) : h('p', { class: 'muted' }, 'No systems answered.'));
    } else {
      render(box);
    }
  }

  function renderTunnel(snap) {
    const t = obj(snap.tunnel);
    let state;
    let lvl;
    if (!t.configured) { state = 'Not configured'; lvl = 'unknown'; }
    else if (t.connected) { state = 'Connected'; lvl = 'ok'; }
    else { state = 'Disconnected'; lvl = 'crit'; }
    render($('tunnel'),
      h('p', { class: 'tunnel-line' }, h('span', { class: 'dot', 'data-level': lvl, 'aria-hidden': 'true' }),
        h('strong', { 'data-testid': 'tunnel-state', 'data-state': t.configured ? (t.connected ? 'connected' : 'disconnected') : 'off' }, state)),
      t.configured
        ? h('dl', { class: 'kvs' },
          row(t.connected ? 'Connected since' : 'Down since', when(t.since_ms)),
          row('Last message', when(t.last_rx_ms, 'none yet')),
          row('Round trip', isNum(t.rtt_ms) ? nf.format(Math.round(t.rtt_ms)) + ' ms' : '—'),
          t.url ? row('Relay', h('span', { class: 'mono break' }, text(t.url))) : null)
        : h('p', { class: 'muted' }, 'No relay in the configuration: Jira changes are polled, nothing reaches this agent from outside.'),
      t.last_error ? h('p', { class: 'error-box' }, 'Last error: ' + text(t.last_error)) : null);
  }

  const RUN_TEXT = { ok: 'Succeeded', failed: 'Failed', running: 'Running' };

  function renderFlows(snap) {
    const flows = arr(snap.flows);
    if (!flows.length) {
      render($('flows'), h('p', { class: 'muted' }, 'No flows configured.'));
      return;
    }
    render($('flows'), flows.map((f0) => {
      const f = obj(f0);
      const name = text(f.name, '?');
      const id = 'flow-' + name;
      const lr = f.last_run ? obj(f.last_run) : null;
      const queued = st.pending.sync.has(name);
      const replaying = st.pending.all.has(name);
      const runLvl = !lr ? 'unknown' : lr.status === 'failed' ? 'crit' : lr.status === 'running' ? 'unknown' : 'ok';
      const stat = (key, label) => h('div', { class: 'stat', 'data-stat': key },
        h('dt', null, label),
        h('dd', { 'data-testid': id + '-' + key, 'data-value': lr && isNum(lr[key]) ? lr[key] : '' }, lr ? count(lr[key]) : '—'));
      const depth = (key, label, oldest) => row(label,
        [h('span', { 'data-testid': id + '-' + key, 'data-value': isNum(f[key]) ? f[key] : '' }, count(f[key])),
          isNum(oldest) && f[key] > 0 ? h('span', { class: 'muted' }, ' (oldest ' + duration(oldest) + ')') : null]);
      const wh = f.webhook ? obj(f.webhook) : null;
      let syncLabel = 'Sync now';
      if (f.running) syncLabel = 'Syncing…';
      else if (queued) syncLabel = 'Queued…';
      return h('article', { class: 'card flow', 'data-key': name, 'data-testid': id, 'aria-labelledby': id + '-h' },
        h('div', { class: 'card-head' },
          h('h3', { id: id + '-h' }, name),
          h('span', { class: 'route' }, text(f.source, '?'), h('span', { 'aria-hidden': 'true' }, ' → '),
            h('span', { class: 'visually-hidden' }, ' to '), text(f.target, '?')),
          f.enabled === false ? badge('unknown', 'Disabled', id + '-disabled') : null,
          f.running ? badge('run', 'Running', id + '-running') : queued ? badge('run', 'Queued', id + '-queued') : null),
        h('dl', { class: 'stats', 'aria-label': 'Last run counts' },
          stat('created', 'Created'), stat('updated', 'Updated'), stat('unchanged', 'Unchanged'),
          stat('adopted', 'Adopted'), stat('failed', 'Failed'), stat('pending', 'Pending'), stat('warnings', 'Warnings')),
        h('dl', { class: 'kvs' },
          row('Last run', lr
            ? [badge(runLvl, RUN_TEXT[lr.status] || text(lr.status, '?'), id + '-status'), ' ', when(lr.started_ms),
              isNum(lr.finished_ms) && isNum(lr.started_ms)
                ? h('span', { class: 'muted' }, ' (took ' + duration((lr.finished_ms - lr.started_ms) / 1000) + ')') : null]
            : h('span', { class: 'muted', 'data-testid': id + '-status' }, 'never')),
          row('Next run', f.enabled === false ? h('span', { class: 'muted' }, 'disabled') : when(f.next_run_ms, 'not scheduled'),
            { 'data-testid': id + '-next' }),
          row('Schedule', [text(f.schedule, 'manual'),
            f.schedule_zone ? h('span', { class: 'muted', 'data-testid': id + '-zone', title: 'the agent\'s local time zone' }, ' \u2014 ' + text(f.schedule_zone)) : null]),
          row('Records in sync', h('span', { 'data-testid': id + '-synced', 'data-value': isNum(f.synced) ? f.synced : '' }, count(f.synced))),
          depth('outbox', 'Outbox', f.oldest_outbox_s),
          depth('inbox', 'Inbox', f.oldest_inbox_s),
          depth('dead', 'Dead letters', null),
          isNum(f.unanswered) && f.unanswered > 0 ? depth('unanswered', 'Unanswered creates', null) : null,
          isNum(f.cursor_lag_s) ? row('Source lag', duration(f.cursor_lag_s)) : null,
          f.cursor ? row('Cursor', h('span', { class: 'mono break' }, text(f.cursor))) : null,
          wh ? row('Jira changes', [text({ dynamic: 'webhook (dynamic)', admin: 'webhook (admin)', poll: 'polling' }[wh.mode], text(wh.mode, '?')),
            isNum(wh.expires_ms) ? [', renews ', when(wh.expires_ms)] : null]) : null),
        lr && lr.error ? h('p', { class: 'error-box', 'data-testid': id + '-error' }, 'Last error: ' + text(lr.error)) : null,
        h('div', { class: 'actions' },
          h('button', {
            type: 'button', class: 'btn btn-primary', 'data-action': 'sync', 'data-flow': name, 'data-testid': 'sync-' + name,
            disabled: f.running || queued || f.enabled === false,
            title: f.enabled === false ? 'The flow is disabled in the configuration' : null,
            'aria-label': syncLabel + ': ' + name,
          }, syncLabel),
          isNum(f.dead) && f.dead > 0
            ? h('button', {
              type: 'button', class: 'btn', 'data-action': 'replay-all', 'data-flow': name, 'data-testid': 'replay-all-' + name,
              disabled: replaying, 'aria-label': 'Replay all ' + f.dead + ' dead letters of ' + name,
            }, replaying ? 'Replaying…' : 'Replay all ' + count(f.dead) + ' dead')
            : null));
    }));
  }

  function niceCeil(v) {
    if (v <= 4) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function hourLabel(sec) {
    const d = new Date(sec * 1000);
    return String(d.getHours()).padStart(2, '0') + ':00';
  }

  function renderChart(snap) {
    const tp = obj(snap.throughput);
    const pts = arr(tp.points).map(obj).filter((p) => isNum(p.t) && isNum(p.records));
    const bucket = isNum(tp.bucket_s) && tp.bucket_s > 0 ? tp.bucket_s : 3600;
    // drawn at the size it is shown, so the labels keep their size on a phone
    const W = Math.round(Math.max(300, Math.min(1200, $('chart').clientWidth || 720)));
    const H = W < 500 ? 180 : 220, L = 44, R = 8, T = 12, B = 28;
    const pw = W - L - R, ph = H - T - B;
    const max = pts.reduce((m, p) => Math.max(m, p.records), 0);
    const total = pts.reduce((m, p) => m + p.records, 0);
    const top = niceCeil(max);
    const peak = pts.find((p) => p.records === max);
    const summary = pts.length
      ? `Records per hour over the last ${pts.length} hours: ${nf.format(total)} in total` +
        (max > 0 ? `, at most ${nf.format(max)} in the hour from ${hourLabel(peak.t)}.` : ', none synced.')
      : 'No throughput data yet.';
    const kids = [svg('title', null, 'Throughput'), svg('desc', null, summary)];
    for (const frac of [0, 0.5, 1]) {
      const y = T + ph - frac * ph;
      kids.push(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y, y2: y }));
      kids.push(svg('text', { class: 'axis', x: L - 6, y: y + 4, 'text-anchor': 'end' }, nf.format(top * frac)));
    }
    const slot = pts.length ? pw / pts.length : pw;
    pts.forEach((p, i) => {
      const bh = top > 0 ? (p.records / top) * ph : 0;
      const x = L + i * slot + slot * 0.12;
      kids.push(svg('rect', {
        class: 'bar', 'data-key': String(p.t), 'data-records': p.records,
        x: x.toFixed(1), y: (T + ph - bh).toFixed(1), width: (slot * 0.76).toFixed(1), height: Math.max(bh, p.records > 0 ? 1 : 0).toFixed(1),
      }, svg('title', null, `${hourLabel(p.t)}–${hourLabel(p.t + bucket)}: ${nf.format(p.records)} record${p.records === 1 ? '' : 's'}`)));
      const every = W < 500 ? 6 : 3;
      if (i % every === 0) {
        kids.push(svg('text', { class: 'axis', x: (L + i * slot + slot / 2).toFixed(1), y: H - 8, 'text-anchor': 'middle' }, hourLabel(p.t)));
      }
    });
    kids.push(svg('line', { class: 'baseline', x1: L, x2: W - R, y1: T + ph, y2: T + ph }));
    render($('chart'),
      svg('svg', {
        viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary, 'data-testid': 'throughput-chart',
        'data-total': total, preserveAspectRatio: 'xMidYMid meet', focusable: 'false',
      }, kids),
      h('p', { class: 'hint' }, summary));
  }

  function renderDead(snap) {
    const dead = arr(snap.dead).map(obj);
    if (!dead.length) {
      render($('dead'), h('p', { class: 'muted', 'data-testid': 'dead-empty' }, 'No dead letters. Every record reached its target or is still being retried.'));
      return;
    }
    render($('dead'), h('div', { class: 'table-wrap' }, h('table', { class: 'table stack' },
      h('caption', { class: 'visually-hidden' }, 'Dead letters'),
      h('thead', null, h('tr', null, ['ID', 'Flow', 'Source key', 'Error', 'Attempts', 'When', 'Audit ID', 'Action'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, dead.map((d) => {
        const id = text(d.id, '?');
        const busy = st.pending.dead.has(id);
        return h('tr', { 'data-key': id, 'data-testid': 'dead-row-' + id },
          h('td', { 'data-label': 'ID', class: 'num' }, id),
          h('td', { 'data-label': 'Flow' }, text(d.flow)),
          h('td', { 'data-label': 'Source key', class: 'mono' }, text(d.source_key)),
          h('td', { 'data-label': 'Error', class: 'wrap' }, text(d.error)),
          h('td', { 'data-label': 'Attempts', class: 'num' }, count(d.attempts)),
          h('td', { 'data-label': 'When' }, when(d.at_ms)),
          h('td', { 'data-label': 'Audit ID', class: 'mono break' }, text(d.audit_id)),
          h('td', { 'data-label': 'Action' }, h('button', {
            type: 'button', class: 'btn', 'data-action': 'replay-dead', 'data-id': id, 'data-testid': 'replay-' + id,
            disabled: busy, 'aria-label': `Replay dead letter ${id} (${text(d.source_key, 'no key')})`,
          }, busy ? 'Replaying…' : 'Replay')));
      })))));
  }

  function renderAudit(snap) {
    const searching = st.audit.q !== '';
    const entries = (searching ? arr(st.audit.results) : arr(snap && snap.audit)).map(obj);
    const status = $('audit-status');
    let msg;
    if (searching && st.audit.results === null) msg = 'Searching…';
    else if (searching) msg = `${entries.length} entr${entries.length === 1 ? 'y matches' : 'ies match'} “${st.audit.q}”.`;
    else msg = entries.length ? `Latest ${entries.length} entries.` : 'No audit entries yet.';
    if (status.textContent !== msg) status.textContent = msg;
    if (!entries.length) {
      render($('audit'));
      return;
    }
    render($('audit'), h('div', { class: 'table-wrap' }, h('table', { class: 'table stack' },
      h('caption', { class: 'visually-hidden' }, searching ? 'Audit entries matching the search' : 'Latest audit entries'),
      h('thead', null, h('tr', null, ['When', 'Flow', 'Action', 'Source key', 'Target key', 'Audit ID', 'Detail'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, entries.map((e) => h('tr', { 'data-key': text(e.id, ''), 'data-testid': 'audit-row', 'data-action-name': text(e.action) },
        h('td', { 'data-label': 'When' }, when(e.at_ms)),
        h('td', { 'data-label': 'Flow' }, text(e.flow)),
        h('td', { 'data-label': 'Action' }, h('span', { class: 'action', 'data-kind': text(e.action) }, text(e.action))),
        h('td', { 'data-label': 'Source key', class: 'mono', 'data-testid': 'audit-source-key' }, text(e.source_key, '—')),
        h('td', { 'data-label': 'Target key', class: 'mono', 'data-testid': 'audit-target-key' }, text(e.target_key, '—')),
        h('td', { 'data-label': 'Audit ID', class: 'mono break', 'data-testid': 'audit-id' }, text(e.audit_id, '—')),
        h('td', { 'data-label': 'Detail', class: 'wrap' }, text(e.detail))))))));
  }

  function renderAll() {
    const snap = st.snap;
    if (!snap) return;
    renderHeader(snap);
    renderHealth(snap);
    renderSystems(snap);
    renderTunnel(snap);
    renderFlows(snap);
    renderChart(snap);
    renderDead(snap);
    renderAudit(snap);
    renderPing();
  }

  // ---------------------------------------------------------------- audit search

  function runAuditSearch() {
    const q = st.audit.q;
    const seq = ++st.audit.seq;
    if (!q) {
      st.audit.results = null;
      renderAudit(st.snap);
      return;
    }
    api('GET', '/api/audit?q=' + encodeURIComponent(q) + '&limit=100').then((r) => {
      if (seq !== st.audit.seq) return;
      st.audit.results = arr(r && r.entries);
      renderAudit(st.snap);
    }, (e) => {
      if (seq !== st.audit.seq) return;
      st.audit.results = [];
      renderAudit(st.snap);
      showAlert('Audit search failed: ' + e.message);
    });
  }

  function onAuditInput(immediate) {
    const q = $('audit-search').value.trim();
    clearTimeout(st.audit.timer);
    if (q === st.audit.q && !immediate) return;
    if (q !== st.audit.q) {
      st.audit.q = q;
      st.audit.results = null;
      renderAudit(st.snap);
    }
    if (immediate) runAuditSearch();
    else st.audit.timer = setTimeout(runAuditSearch, 250);
  }

  // ---------------------------------------------------------------- actions

  async function syncNow(name) {
    const f = flowByName(st.snap, name);
    st.pending.sync.set(name, { at: Date.now(), started: f && f.last_run ? f.last_run.started_ms : null });
    renderAll();
    try {
      await api('POST', '/api/flows/' + encodeURIComponent(name) + '/sync');
      announce(`Sync of ${name} queued.`);
    } catch (e) {
      st.pending.sync.delete(name);
      renderAll();
      showAlert(`Sync of ${name} was not started: ${e.message}`);
    }
  }

  async function replayDead(id) {
    st.pending.dead.set(id, Date.now());
    renderAll();
    try {
      await api('POST', '/api/dead/' + encodeURIComponent(id) + '/replay');
      announce(`Dead letter ${id} queued for replay.`);
    } catch (e) {
      st.pending.dead.delete(id);
      renderAll();
      showAlert(`Dead letter ${id} was not replayed: ${e.message}`);
    }
  }

  async function replayAll(name) {
    st.pending.all.set(name, Date.now());
    renderAll();
    try {
      const r = await api('POST', '/api/flows/' + encodeURIComponent(name) + '/replay');
      const n = r && isNum(r.replayed) ? r.replayed : 0;
      announce(`${name}: ${n} dead letter${n === 1 ? '' : 's'} queued for replay.`);
    } catch (e) {
      st.pending.all.delete(name);
      renderAll();
      showAlert(`Dead letters of ${name} were not replayed: ${e.message}`);
    }
  }

  async function pingAll() {
    if (st.ping.busy) return;
    st.ping = { busy: true, result: null, error: null, at: Date.now() };
    renderPing();
    try {
      const r = await api('POST', '/api/ping');
      st.ping = { busy: false, result: obj(r), error: null, at: Date.now() };
      const list = arr(r && r.systems);
      const bad = list.filter((s) => !(s && s.ok)).length;
      announce(bad ? `Ping: ${bad} of ${list.length} systems failed.` : `Ping: all ${list.length} systems answered.`);
    } catch (e) {
      st.ping = { busy: false, result: null, error: e.message, at: Date.now() };
    }
    renderPing();
  }

  function onClick(ev) {
    const b = ev.target instanceof Element ? ev.target.closest('button[data-action]') : null;
    if (!b || b.disabled) return;
    const act = b.getAttribute('data-action');
    if (act === 'sync') syncNow(b.getAttribute('data-flow'));
    else if (act === 'replay-dead') replayDead(b.getAttribute('data-id'));
    else if (act === 'replay-all') replayAll(b.getAttribute('data-flow'));
    else if (act === 'ping') pingAll();
    else if (act === 'logout') logout();
    else if (act === 'dismiss') hideAlert();
  }

  // ---------------------------------------------------------------- start

  async function startDashboard() {
    st.running = true;
    $('login').hidden = true;
    $('dashboard').hidden = false;
    $('ping-all').hidden = false;
    $('logout').hidden = !st.loginRequired;
    setConn('connecting', 'Connecting…');
    try {
      applySnapshot(await api('GET', '/api/status'));
    } catch (e) {
      if (!st.running) return;
      showAlert('Could not load the status: ' + e.message);
    }
    connectWs();
  }

  async function boot() {
    let s;
    try {
      s = await api('GET', '/api/session');
    } catch (e) {
      setConn('down', 'Agent not answering');
      showAlert('The agent did not answer: ' + e.message + '. Retrying…');
      setTimeout(boot, 3000);
      return;
    }
    hideAlert();
    st.loginRequired = !!(s && s.login_required);
    if (st.loginRequired && !s.logged_in) showLogin();
    else startDashboard();
  }

  document.addEventListener('click', onClick);
  $('login-form').addEventListener('submit', onLogin);
  $('audit-form').addEventListener('submit', (ev) => { ev.preventDefault(); onAuditInput(true); });
  $('audit-search').addEventListener('input', () => onAuditInput(false));
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (st.running && st.snap) renderChart(st.snap); }, 150);
  });
  setInterval(() => {
    checkStale();
    if (st.running) renderAll();
  }, TICK_MS);
  boot();
}());
