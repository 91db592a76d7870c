#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// Browser tests of the mlc-agent status page, in Debian's Chromium through
// playwright-core. tests/integration/test_status_page.py starts the
// simulators and the agents and runs this script; by hand:
//
//   node tests/browser/status_page.mjs --out DIR --url http://127.0.0.1:PORT/ \
//        --jde http://127.0.0.1:P1 --jira http://127.0.0.1:P2 --orders 60 \
//        [--dead-url URL --dead-jde URL --dead-jira URL --dead-orders N] \
//        [--login-url URL]   (password in MLC_STATUS_PASSWORD) [--only NAME]
//
// --url/--jde/--jira: an agent that syncs jde_workorders from a JD Edwards
// simulator seeded with --orders work orders (schedule "every 15m").
// --dead-*: a second agent whose flow is on schedule "manual" (it has not
// synced yet). --login-url: an agent off loopback with a status password.
// Prints "ok N name" / "not ok N name" and "N passed, N failed"; exit 1 on
// any failure. Each test leaves a screenshot in --out.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    out: { type: 'string', default: 'browser-shots' },
    url: { type: 'string' },
    jde: { type: 'string' },
    jira: { type: 'string' },
    orders: { type: 'string', default: '60' },
    'dead-url': { type: 'string' },
    'dead-jde': { type: 'string' },
    'dead-jira': { type: 'string' },
    'dead-orders': { type: 'string', default: '30' },
    'login-url': { type: 'string' },
    chromium: { type: 'string', default: process.env.MLC_CHROMIUM || '/usr/bin/chromium' },
    only: { type: 'string' },
    'test-timeout': { type: 'string', default: '180' },
  },
  strict: true,
});

const FLOW = 'jde_workorders';
const ORDERS = Number(opt.orders);
const DEAD_ORDERS = Number(opt['dead-orders']);
const PASSWORD = process.env.MLC_STATUS_PASSWORD || '';
const SYNC_WAIT_MS = 60000;

// ------------------------------------------------------------------ helpers

class Fail extends Error {}

function expect(cond, msg) {
  if (!cond) throw new Fail(msg);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// poll fn() until it returns something truthy
async function waitUntil(fn, what, timeoutMs = SYNC_WAIT_MS, everyMs = 250) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Fail(`timed out after ${timeoutMs / 1000} s waiting for ${what} (last: ${describe(last)})`);
    await sleep(everyMs);
  }
}

function describe(x) {
  if (x instanceof Error) return x.message;
  try { return JSON.stringify(x); } catch (e) { return String(x); }
}

// JSON to and from a simulator's control API (/_sim/...)
async function sim(base, p, body) {
  const r = await fetch(new URL(p, base), body === undefined ? {} : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  const t = await r.text();
  expect(r.ok, `${p}: HTTP ${r.status} ${t.slice(0, 200)}`);
  return t ? JSON.parse(t) : null;
}

// an agent's API from outside the browser (no cookie)
async function agentFetch(base, p, init) {
  const r = await fetch(new URL(p, base), init || {});
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  return { status: r.status, body };
}

// the number shown in a data-testid element (its data-value)
async function shown(page, testid) {
  const v = await page.getByTestId(testid).getAttribute('data-value', { timeout: 5000 });
  return v === null || v === '' ? null : Number(v);
}

async function waitShown(page, testid, want, timeoutMs = SYNC_WAIT_MS) {
  const el = page.getByTestId(testid);
  await el.waitFor({ timeout: timeoutMs });
  await page.waitForFunction(([sel, w]) => {
    const e = document.querySelector(sel);
    return e !== null && e.getAttribute('data-value') === String(w);
  }, [`[data-testid="${testid}"]`, want], { timeout: timeoutMs, polling: 100 }).catch(async () => {
    throw new Fail(`${testid} shows ${await el.getAttribute('data-value')} (text "${await el.textContent()}"), wanted ${want}`);
  });
}

// ------------------------------------------------------------------ tests

const tests = [];
function test(name, needs, fn) {
  tests.push({ name, needs, fn });
}

// the relay-less demo: both systems, the flow, its counts, chart, health
test('page_shows_flow_and_systems', ['url'], async ({ page }) => {
  await page.goto(opt.url);
  await page.getByTestId(`flow-${FLOW}`).waitFor();
  for (const s of ['jde', 'jira']) {
    const card = page.getByTestId(`system-${s}`);
    await card.waitFor();
    expect((await card.textContent()).includes(s), `system card ${s} does not name it`);
  }
  // the start-up sync has created every work order
  await waitShown(page, `flow-${FLOW}-created`, ORDERS);
  await waitShown(page, `flow-${FLOW}-failed`, 0);
  const route = await page.getByTestId(`flow-${FLOW}`).locator('.route').textContent();
  expect(route.includes('jde') && route.includes('jira'), `route "${route}"`);
  expect(await shown(page, `flow-${FLOW}-synced`) === ORDERS, 'records in sync');
  expect(await shown(page, `flow-${FLOW}-dead`) === 0, 'dead letters');
  expect((await page.getByTestId(`flow-${FLOW}-status`).textContent()).trim() === 'Succeeded', 'last run status');
  expect((await page.getByTestId('tunnel-state').textContent()).trim() === 'Not configured', 'tunnel state without a relay');
  await page.getByTestId('health-0').waitFor();
  const chart = page.getByTestId('throughput-chart');
  await chart.waitFor();
  expect(await chart.evaluate((e) => e.namespaceURI === 'http://www.w3.org/2000/svg' && e.tagName === 'svg'), 'chart is not inline SVG');
  expect(await chart.locator('rect.bar').count() === 24, 'chart has not 24 hourly bars');
  expect(Number(await chart.getAttribute('data-total')) >= ORDERS, 'chart total below the records synced');
  // times are relative, with the exact time in the title
  const t = page.getByTestId(`flow-${FLOW}`).locator('time').first();
  expect(/ago|just now|in /.test(await t.textContent()), `relative time "${await t.textContent()}"`);
  expect(((await t.getAttribute('title')) || '').length > 8, 'no absolute time in title');
  // the live connection is up
  await page.waitForFunction(() => document.querySelector('[data-testid="conn-state"]').dataset.state === 'live', null, { timeout: 15000 });
  // nothing but the page's own three files was loaded
  expect(page.__foreign.length === 0, 'requests to other origins: ' + page.__foreign.join(', '));
});

test('phone_layout_fits_375px', ['url'], async ({ page }) => {
  await page.setViewportSize({ width: 375, height: 812 });
  await page.goto(opt.url);
  await page.getByTestId(`flow-${FLOW}`).waitFor();
  await page.getByTestId('throughput-chart').waitFor();
  const [sw, cw] = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
  expect(sw <= cw, `page scrolls sideways at 375 px: ${sw} > ${cw}`);
  const box = await page.getByTestId(`sync-${FLOW}`).boundingBox();
  expect(box && box.x >= 0 && box.x + box.width <= 375 && box.height >= 36, `Sync now button not usable: ${JSON.stringify(box)}`);
});

// Sync now: new counts arrive over the WebSocket, the page is not reloaded
test('sync_now_updates_counts_live', ['url', 'jde'], async ({ page }) => {
  let frames = 0;
  let statusFetches = 0;
  let navigations = 0;
  page.on('websocket', (ws) => {
    if (ws.url().endsWith('/ws')) ws.on('framereceived', () => { frames++; });
  });
  await page.goto(opt.url);
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations++; });
  await waitShown(page, `flow-${FLOW}-created`, ORDERS);
  await page.waitForFunction(() => document.querySelector('[data-testid="conn-state"]').dataset.state === 'live', null, { timeout: 15000 });
  await page.evaluate(() => { window.__mlcNoReload = true; });
  page.on('request', (r) => { if (new URL(r.url()).pathname === '/api/status') statusFetches++; });
  const touched = await sim(opt.jde, '/_sim/touch', { count: 5 });
  expect(touched.keys.length === 5, 'the simulator touched ' + touched.keys.length);
  const before = frames;
  const btn = page.getByTestId(`sync-${FLOW}`);
  expect(await btn.isEnabled(), 'Sync now is disabled');
  await btn.click();
  await waitShown(page, `flow-${FLOW}-updated`, 5);
  await waitShown(page, `flow-${FLOW}-created`, 0);
  expect(await page.evaluate(() => window.__mlcNoReload === true) && navigations === 0, 'the page was reloaded');
  expect(frames > before, 'no WebSocket message arrived after the click');
  expect(statusFetches === 0, `the page fetched /api/status ${statusFetches} times instead of using the WebSocket`);
  await expectEnabled(page.getByTestId(`sync-${FLOW}`));
  // the audit log (live, no search) shows the updates
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="audit-row"]')]
    .some((r) => r.dataset.actionName === 'updated'), null, { timeout: 15000 });
});

async function expectEnabled(loc) {
  await waitUntil(() => loc.isEnabled(), 'the button to be enabled again', 15000);
}

// a record Jira refuses: dead letter on the page, Replay delivers it
test('dead_letter_replay', ['dead-url', 'dead-jde', 'dead-jira'], async ({ page }) => {
  await page.goto(opt['dead-url']);
  await page.getByTestId(`flow-${FLOW}`).waitFor();
  expect((await sim(opt['dead-jira'], '/_sim/issues')).length === 0, 'the manual flow synced on its own');
  await page.getByTestId('dead-empty').waitFor();
  // the next bulk create refuses its third element (one-shot fault, as in
  // test_agent.py's jira_rejections_are_dead_lettered_and_replayable)
  await sim(opt['dead-jira'], '/_sim/faults', { fail_bulk_element: [2] });
  await page.getByTestId(`sync-${FLOW}`).click();
  const row = page.locator('[data-testid^="dead-row-"]');
  await row.first().waitFor({ timeout: SYNC_WAIT_MS });
  expect(await row.count() === 1, `${await row.count()} dead letters shown, wanted 1`);
  const id = (await row.first().getAttribute('data-testid')).slice('dead-row-'.length);
  const text = await row.first().textContent();
  expect(/fail_bulk_element|Simulated failure|400/.test(text), `dead letter row does not show the error: ${text}`);
  await waitShown(page, `flow-${FLOW}-dead`, 1);
  await waitShown(page, `flow-${FLOW}-failed`, 1);
  await waitShown(page, `flow-${FLOW}-created`, DEAD_ORDERS - 1);
  const key = (await row.first().locator('td[data-label="Source key"]').textContent()).trim();
  expect(/^\d+$/.test(key), `source key "${key}"`);
  await page.getByTestId(`replay-all-${FLOW}`).waitFor();
  await page.screenshot({ path: shotPath('dead_letter_shown') });
  // the cause is gone (the fault was one-shot; clear it all the same)
  await sim(opt['dead-jira'], '/_sim/faults', { fail_bulk_element: null });
  await page.getByTestId(`replay-${id}`).click();
  await page.getByTestId(`dead-row-${id}`).waitFor({ state: 'detached', timeout: SYNC_WAIT_MS });
  await waitShown(page, `flow-${FLOW}-dead`, 0);
  await page.getByTestId('dead-empty').waitFor();
  const issues = await waitUntil(async () => {
    const all = await sim(opt['dead-jira'], '/_sim/issues');
    return all.length === DEAD_ORDERS ? all : null;
  }, `${DEAD_ORDERS} issues in Jira`);
  const delivered = issues.filter((i) => String((i.fields || {}).customfield_10050) === key);
  expect(delivered.length === 1, `work order ${key} is in Jira ${delivered.length} times`);
  await waitShown(page, `flow-${FLOW}-synced`, DEAD_ORDERS);
});

// audit search by the JD Edwards order number, then by Jira key and audit ID
test('audit_search_by_order_number', ['url'], async ({ page }) => {
  await page.goto(opt.url);
  await waitShown(page, `flow-${FLOW}-synced`, ORDERS);
  const order = String(100000 + Math.min(ORDERS, 42));
  const box = page.getByTestId('audit-search');
  await box.fill(order);
  const rows = page.getByTestId('audit-row');
  const got = await waitUntil(async () => {
    const keys = await rows.locator('[data-testid="audit-source-key"]').allTextContents();
    return keys.length > 0 && keys.every((k) => k.trim() === order) ? keys : null;
  }, `audit rows for work order ${order} only`, 15000);
  expect(got.length >= 1, 'no row');
  const first = rows.first();
  const target = (await first.locator('[data-testid="audit-target-key"]').textContent()).trim();
  const auditId = (await first.locator('[data-testid="audit-id"]').textContent()).trim();
  expect(/^MFG-\d+$/.test(target), `target key "${target}"`);
  expect(/^[0-9a-f]{16,}$/.test(auditId), `audit id "${auditId}"`);
  expect((await page.getByTestId('audit-status').textContent()).includes(order), 'the result count does not name the query');
  await page.screenshot({ path: shotPath('audit_by_order') });
  for (const q of [target, auditId]) {
    await box.fill(q);
    await waitUntil(async () => {
      const keys = await rows.locator('[data-testid="audit-source-key"]').allTextContents();
      return keys.length > 0 && keys.every((k) => k.trim() === order);
    }, `audit rows for ${q}`, 15000);
  }
  await box.fill('no-such-key-' + Date.now());
  await waitUntil(async () => (await rows.count()) === 0, 'no rows for an unknown key', 15000);
  await box.fill('');
  await waitUntil(async () => (await rows.count()) > 1, 'the latest entries again', 15000);
});

test('ping_all_systems', ['url'], async ({ page }) => {
  await page.goto(opt.url);
  await page.getByTestId(`flow-${FLOW}`).waitFor();
  await page.getByTestId('ping-all').click();
  const res = page.getByTestId('ping-result');
  for (const s of ['jde', 'jira']) {
    const item = res.getByTestId(`ping-${s}`);
    await item.waitFor({ timeout: 30000 });
    expect(await item.getAttribute('data-level') === 'ok', `ping ${s}: ${await item.textContent()}`);
  }
  // the system cards now show the check
  await waitUntil(async () => (await page.getByTestId('system-jde-reachable').textContent()).includes('Reachable') &&
    (await page.getByTestId('system-jira-auth').textContent()).includes('OK'), 'the systems to show the ping', 15000);
});

// off loopback: nothing without the password
test('login_required_off_loopback', ['login-url'], async ({ page, context }) => {
  const base = opt['login-url'];
  expect(PASSWORD !== '', 'MLC_STATUS_PASSWORD is not set');
  let r = await agentFetch(base, '/api/status');
  expect(r.status === 401, `/api/status without a session: HTTP ${r.status}`);
  r = await agentFetch(base, '/api/session');
  expect(r.status === 200 && r.body.login_required === true && r.body.logged_in === false, `/api/session: ${describe(r)}`);
  await page.goto(base);
  await page.getByTestId('login-form').waitFor();
  expect(await page.getByTestId('dashboard').isHidden(), 'the dashboard shows before login');
  expect(await page.getByTestId(`flow-${FLOW}`).count() === 0, 'flow data on the page before login');
  await page.screenshot({ path: shotPath('login_form') });
  // a wrong password is refused
  await page.getByTestId('login-password').fill(PASSWORD + '-wrong');
  await page.getByTestId('login-submit').click();
  await waitUntil(async () => (await page.getByTestId('login-error').textContent()).trim() !== '', 'the login error', 10000);
  expect(await page.getByTestId('dashboard').isHidden(), 'a wrong password opened the dashboard');
  // the right one opens the dashboard
  await page.getByTestId('login-password').fill(PASSWORD);
  await page.getByTestId('login-submit').click();
  await page.getByTestId(`flow-${FLOW}`).waitFor();
  expect(await page.getByTestId('login-form').isHidden(), 'the login form is still shown');
  await page.waitForFunction(() => document.querySelector('[data-testid="conn-state"]').dataset.state === 'live', null, { timeout: 15000 });
  const cookies = await context.cookies();
  const c = cookies.find((x) => x.name === 'mlc_session');
  expect(c && c.httpOnly && c.sameSite === 'Strict', `session cookie ${describe(c)}`);
  // a POST without the session is refused (and changes nothing)
  r = await agentFetch(base, `/api/flows/${FLOW}/sync`, { method: 'POST', headers: { 'X-Requested-With': 'mlc' }, body: '{}' });
  expect(r.status === 401 || r.status === 403, `POST without a session: HTTP ${r.status}`);
  r = await agentFetch(base, '/api/ping', { method: 'POST', headers: { 'X-Requested-With': 'mlc', Cookie: 'mlc_session=forged' }, body: '{}' });
  expect(r.status === 401 || r.status === 403, `POST with a made-up session: HTTP ${r.status}`);
  // with the session but without the CSRF header: refused too
  const csrf = await page.evaluate(async (flow) => (await fetch(`/api/flows/${flow}/sync`, { method: 'POST', body: '{}' })).status, FLOW);
  expect(csrf === 403, `POST with the session but without X-Requested-With: HTTP ${csrf}`);
  // and with both it works
  const okSync = await page.evaluate(async (flow) => (await fetch(`/api/flows/${flow}/sync`,
    { method: 'POST', headers: { 'X-Requested-With': 'mlc' }, body: '{}' })).status, FLOW);
  expect(okSync === 202, `POST with the session: HTTP ${okSync}`);
  await page.screenshot({ path: shotPath('logged_in') });
  // log out: the session is gone on the server too
  const stolen = `mlc_session=${c.value}`;
  await page.getByTestId('logout').click();
  await page.getByTestId('login-form').waitFor();
  r = await agentFetch(base, '/api/status', { headers: { Cookie: stolen } });
  expect(r.status === 401, `/api/status with the logged-out session: HTTP ${r.status}`);
});

// ------------------------------------------------------------------ runner

let current = '';
function shotPath(suffix) {
  return path.join(opt.out, `${current}${suffix ? '-' + suffix : ''}.png`);
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Fail(`${what}: no result after ${ms / 1000} s`)), ms); })])
    .finally(() => clearTimeout(t));
}

async function main() {
  fs.mkdirSync(opt.out, { recursive: true });
  const selected = tests.filter((t) => !opt.only || t.name.includes(opt.only));
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  let browser;
  try {
    browser = await chromium.launch({ executablePath: opt.chromium, args: ['--no-sandbox'] });
  } catch (e) {
    console.log(`not ok 1 launch_chromium`);
    for (const l of String(e.message).split('\n').slice(0, 20)) console.log(`#   ${l}`);
    console.log('0 passed, 1 failed');
    return 1;
  }
  for (const [i, t] of selected.entries()) {
    const n = i + 1;
    current = `${String(n).padStart(2, '0')}-${t.name}`;
    const missing = t.needs.filter((k) => !opt[k]);
    if (missing.length) {
      skipped++;
      console.log(`ok ${n} ${t.name} # SKIP no --${missing.join(', --')}`);
      continue;
    }
    const t0 = Date.now();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-GB' });
    const page = await context.newPage();
    page.setDefaultTimeout(30000);
    const errors = [];
    page.__foreign = [];
    page.on('pageerror', (e) => errors.push('page error: ' + e.message));
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (!['http:', 'ws:', 'data:'].includes(u.protocol) || (u.hostname !== '127.0.0.1' && u.hostname !== 'localhost')) {
        if (u.protocol !== 'data:') page.__foreign.push(r.url());
      }
    });
    let err = null;
    try {
      await withTimeout(t.fn({ page, context }), Number(opt['test-timeout']) * 1000, t.name);
      expect(errors.length === 0, errors.join('; '));
    } catch (e) {
      err = e;
    }
    try {
      await page.screenshot({ path: shotPath(), fullPage: true });
    } catch (e) { /* the page may be gone */ }
    await context.close().catch(() => {});
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    if (err === null) {
      passed++;
      console.log(`ok ${n} ${t.name} (${secs}s)`);
    } else {
      failed++;
      console.log(`not ok ${n} ${t.name} (${secs}s)`);
      const msg = err instanceof Fail ? err.message : (err.stack || String(err));
      for (const l of msg.split('\n').slice(0, 30)) console.log(`#   ${l}`);
    }
  }
  await browser.close();
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  return failed ? 1 : 0;
}

main().then((rc) => { process.exitCode = rc; }, (e) => {
  console.log(`not ok 0 runner`);
  console.log(`#   ${e.stack || e}`);
  console.log('0 passed, 1 failed');
  process.exitCode = 1;
});
