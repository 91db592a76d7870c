#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of the way back: real mlc-relay and mlc-agent processes,
the Jira and JD Edwards simulators, SQLite and a real PostgreSQL (started on
127.0.0.1 by tests/pg.py). Jira webhooks go to the relay, down the tunnel to
the agent's inbox, and into JD Edwards through an orchestration.

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import collections
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402
import relay_harness as rh  # noqa: E402

ARGS = None
TESTS = []
STATUS_MAP = {"To Do": "10", "In Progress": "40", "Done": "95"}


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def wait_for(pred, timeout, what, step=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class World:
    """Simulators, one relay (SQLite unless told), a tenant and an agent config."""

    def __init__(self, orders=20, relay_store=None, jira_args=(), jde_args=(), tenant="acme",
                 start_relay=True):
        self.dir = tempfile.mkdtemp(prefix="mlc-relay-it-")
        self.jde = harness.Sim("jde_sim.py", ["--seed", str(orders)] + list(jde_args))
        self.jira = harness.Sim("jira_sim.py", list(jira_args))
        self.relay = rh.Relay(ARGS.relay, store=relay_store, workdir=self.dir)
        self.relays = [self.relay]
        self.tenant = tenant
        self.secrets = self.relay.tenant_add(tenant)
        if start_relay:
            self.relay.start()
        self.agent_proc = None
        self.agent_log = os.path.join(self.dir, "agent.log")

    def configure(self, relay=None, key=None, tenant=None, jira=None, writeback=None, relay_extra=None):
        relay = relay or self.relay
        path = harness.make_config(self.dir, self.jde.url, self.jira.url, jira=jira,
                                   agent={"log_level": "info"})
        with open(path) as f:
            cfg = json.load(f)
        cfg["relay"] = {"url": relay.tunnel_url, "tenant": tenant or self.tenant,
                        "key": "${MLC_RELAY_KEY}", "heartbeat": "2s", "watch_every": "1h",
                        "hook_secret": "${MLC_HOOK_SECRET}"}
        cfg["relay"].update(relay_extra or {})
        cfg["flows"]["jde_workorders"]["writeback"] = writeback or {
            "orchestration": "MLC_UpdateWOStatus",
            "inputs": {"WorkOrder": "{key}", "Status": "{code}"},
            "status_map": STATUS_MAP,
            "hold": {"statuses": ["Blocked"], "orchestration": "MLC_HoldWorkOrder",
                     "inputs": {"WorkOrder": "{key}", "HoldCode": "H1"}},
        }
        cfg["flows"]["jde_workorders"]["schedule"] = "manual"
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        self.config = path
        self.key = key or self.secrets["agent_key"]
        return path

    def env(self):
        env = harness.agent_env()
        env["MLC_RELAY_KEY"] = self.key
        env["MLC_HOOK_SECRET"] = self.secrets["jira_webhook_secret"]
        return env

    def agent(self, *args, timeout=600):
        return harness.run_agent(ARGS.agent, self.config, *args, timeout=timeout, env=self.env())

    def start_agent(self):
        self.agent_logf = open(self.agent_log, "a")
        self.agent_proc = subprocess.Popen([ARGS.agent, "-q", "-c", self.config, "run"],
                                           stdout=self.agent_logf, stderr=subprocess.STDOUT,
                                           env=self.env())
        return self.agent_proc

    def stop_agent(self, sig=signal.SIGTERM):
        if self.agent_proc and self.agent_proc.poll() is None:
            self.agent_proc.send_signal(sig)
            try:
                self.agent_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.agent_proc.kill()
                self.agent_proc.wait()
        rc = self.agent_proc.returncode if self.agent_proc else None
        self.agent_proc = None
        return rc

    def agent_log_text(self):
        try:
            with open(self.agent_log) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def db(self, sql, *params):
        con = sqlite3.connect(os.path.join(self.dir, "state.db"), timeout=10)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def ledger(self):
        """source key -> Jira issue key, from the agent's ledger."""
        return dict(self.db("SELECT source_key, target_key FROM state_ledger"))

    def orchestrations(self):
        return self.jde.ctl("/_sim/orchestrations")

    def status_calls(self):
        """work order -> number of successful MLC_UpdateWOStatus calls."""
        c = collections.Counter()
        for o in self.orchestrations():
            if o.get("name") == "MLC_UpdateWOStatus" and str(o.get("outcome", "")).lower() in ("ok", "success"):
                c[str(o["inputs"]["WorkOrder"]).strip()] += 1
        return c

    def close(self):
        self.stop_agent()
        for r in self.relays:
            r.stop()
        self.jde.stop()
        self.jira.stop()
        # sanitizer builds report at exit (leaks, UB): any report fails the test
        for path in [self.agent_log] + [r.log_path for r in self.relays]:
            text = open(path, errors="replace").read() if os.path.exists(path) else ""
            if "Sanitizer" in text or "runtime error:" in text:
                raise AssertionError(f"sanitizer report in {path}:\n" + text[text.find("=="):][:3000])


def wait_applied(w, n, timeout):
    """Wait until n work orders got their status call; on timeout say where the rest are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(w.status_calls()) >= n:
            return
        time.sleep(0.2)
    inbox = w.db("SELECT state, COUNT(*) FROM state_inbox GROUP BY state")
    raise AssertionError(f"after {timeout}s {len(w.status_calls())} of {n} work orders were written; "
                         f"relay pending {w.relay.metrics().get('mlc_relay_deliveries_pending')}, "
                         f"agent inbox {inbox}; agent log: {w.agent_log_text()[-1500:]}")


def events_for(ledger, status="In Progress"):
    """One status-change webhook body per synced work order."""
    return [(wo, rh.jira_status_event(key, status, labels=["jdewo-" + wo], issue_id=str(10000 + i)))
            for i, (wo, key) in enumerate(sorted(ledger.items()))]


# ---------------------------------------------------------------------------
# the relay alone


@test
def tenants_keys_are_shown_once_and_stored_hashed():
    w = World(start_relay=False)
    try:
        s = w.secrets
        expect(s["agent_key"].startswith("mlck_") and len(s["agent_key"]) > 40, s)
        expect(len(s["zoho_token"]) <= 50, "Zoho tokens are at most 50 characters")
        lst = w.relay.cli("tenant", "list").stdout
        expect("acme" in lst and s["agent_key"] not in lst and s["jira_webhook_secret"] not in lst, lst)
        raw = open(os.path.join(w.dir, "relay.db"), "rb").read()
        for wal in ("relay.db-wal",):
            p = os.path.join(w.dir, wal)
            if os.path.exists(p):
                raw += open(p, "rb").read()
        expect(s["agent_key"].encode() not in raw, "the agent key is stored in clear")
        dup = w.relay.cli("tenant", "add", "acme", check=False)
        expect(dup.returncode != 0 and "acme" in dup.stderr, dup.stderr)
        bad = w.relay.cli("tenant", "add", "no/slash", check=False)
        expect(bad.returncode == 2, bad.stderr)
        rot = json.loads(w.relay.cli("tenant", "rotate", "acme", "--json").stdout)
        expect(rot["agent_key"] != s["agent_key"], "rotate must issue a new key")
    finally:
        w.close()


def _store_files(d):
    raw = b""
    for name in ("relay.db", "relay.db-wal", "relay.db-shm"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            raw += open(p, "rb").read()
    return raw


@test
def tenant_secrets_sealed_at_rest_and_files_private():
    """issue 10: relay.db/-wal/-shm 0600 under umask 022; webhook secrets, OAuth client
    secrets and Zoho tokens never in the files; a copy without the key verifies nothing."""
    old_umask = os.umask(0o022)
    w = World(start_relay=False)
    try:
        r, s = w.relay, w.secrets
        r.cli("tenant", "set-secret", w.tenant, stdin="oauth-CLIENT-secret-42\n")
        r.start()
        hc = rh.HookClient(r.port)
        st, _ = hc.jira(w.tenant, rh.jira_status_event("MFG-1", "Done"), secret=s["jira_webhook_secret"])
        expect(st == 200, f"signed webhook: {st}")
        for name in ("relay.db", "relay.db-wal", "relay.db-shm", "relay-secret.key"):
            p = os.path.join(w.dir, name)
            expect(os.path.exists(p), f"{p} missing")
            mode = os.stat(p).st_mode & 0o777
            expect(mode == 0o600, f"{p} has mode {mode:o} under umask 022, expected 600 "
                                  "(private_files in relay/store_sqlite.c, store_key_save)")
        raw = _store_files(w.dir)
        for what in ("jira_webhook_secret", "zoho_token", "agent_key"):
            expect(s[what].encode() not in raw, f"the {what} is in the store's files in clear")
        expect(b"oauth-CLIENT-secret-42" not in raw, "the OAuth client secret is in the store's files in clear")
        rot = json.loads(r.cli("tenant", "rotate", w.tenant, "--all", "--json").stdout)
        expect(rot["jira_webhook_secret"] != s["jira_webhook_secret"], "rotate --all kept the webhook secret")
        st, _ = hc.jira(w.tenant, rh.jira_status_event("MFG-2", "Done"), secret=rot["jira_webhook_secret"])
        expect(st == 200, f"webhook signed with the rotated secret: {st}")
        st, _ = hc.jira(w.tenant, rh.jira_status_event("MFG-3", "Done"), secret=s["jira_webhook_secret"])
        expect(st == 401, f"webhook signed with the old secret after rotation: {st}")
        raw = _store_files(w.dir)
        expect(rot["jira_webhook_secret"].encode() not in raw and rot["zoho_token"].encode() not in raw,
               "rotated secrets are in the store's files in clear")
        hc.close()
        r.stop()
        # a copy of the database without the key: the relay refuses to start, saying why
        copy = tempfile.mkdtemp(prefix="mlc-relay-copy-")
        for name in ("relay.db", "relay.db-wal", "relay.db-shm"):
            if os.path.exists(os.path.join(w.dir, name)):
                shutil.copy(os.path.join(w.dir, name), copy)
        c = rh.Relay(ARGS.relay, store="sqlite:" + os.path.join(copy, "relay.db"), workdir=copy)
        p = subprocess.run([ARGS.relay, "-c", c.cfg, "run"], capture_output=True, text=True, timeout=30)
        out = p.stdout + p.stderr
        expect(p.returncode != 0 and "does not exist" in out and "restore it" in out,
               f"relay on a copy without its key file: exit {p.returncode}: {out[-600:]}")
        expect(not os.path.exists(os.path.join(copy, "relay-secret.key")), "a new key file was made for the copy")
        with open(os.path.join(copy, "relay-secret.key"), "wb") as f:
            f.write(os.urandom(32))
        os.chmod(os.path.join(copy, "relay-secret.key"), 0o600)
        p = subprocess.run([ARGS.relay, "-c", c.cfg, "run"], capture_output=True, text=True, timeout=30)
        out = p.stdout + p.stderr
        expect(p.returncode != 0 and "not the key" in out,
               f"relay on a copy with another key: exit {p.returncode}: {out[-600:]}")
        shutil.rmtree(copy, ignore_errors=True)
        # an older relay's clear rows are sealed on start, and still verify
        db = sqlite3.connect(os.path.join(w.dir, "relay.db"))
        db.execute("UPDATE relay_tenant SET hook_secret = 'old-clear-hook-secret-77' WHERE name = ?",
                   (w.tenant,))
        db.commit()
        db.close()
        expect(b"old-clear-hook-secret-77" in _store_files(w.dir), "the test could not plant a clear row")
        r.start()
        st, _ = rh.HookClient(r.port).jira(w.tenant, rh.jira_status_event("MFG-4", "Done"),
                                           secret="old-clear-hook-secret-77")
        expect(st == 200, f"webhook signed with a secret migrated from clear: {st}")
        expect(b"old-clear-hook-secret-77" not in _store_files(w.dir),
               "a clear secret an older relay left is still in the store's files after start")
        expect("old-clear-hook-secret-77" not in r.log(), "a secret reached the relay log")
    finally:
        os.umask(old_umask)
        w.close()


@test
def webhook_signatures_limits_and_duplicates():
    w = World()
    try:
        r, t, sec = w.relay, w.tenant, w.secrets["jira_webhook_secret"]
        hc = rh.HookClient(r.port)
        body = rh.jira_status_event("MFG-1", "In Progress")

        def pending():
            return r.metrics().get("mlc_relay_deliveries_pending", -1)

        st, _ = hc.jira(t, body, secret=sec, delivery_id="d-1")
        expect(st == 200, f"signed webhook: {st}")
        expect(pending() == 1, f"pending after one: {pending()}")
        st, _ = hc.jira(t, body, secret=sec, delivery_id="d-1")
        expect(st == 200 and pending() == 1, "a repeated delivery identifier is stored once")
        st, _ = hc.jira(t, body, secret="wrong-secret", delivery_id="d-2")
        expect(st == 401 and pending() == 1, f"bad HMAC: {st}, pending {pending()}")
        st, _ = hc.jira(t, body, delivery_id="d-3")
        expect(st == 401 and pending() == 1, f"unsigned: {st}")
        st, _ = hc.post("/hooks/jira/" + t, body, {"X-Hub-Signature": "md5=" + "0" * 32})
        expect(st == 401, f"unknown signature method must fail closed: {st}")
        st, _ = hc.jira(t, b"not json", secret=sec)
        expect(st == 400 and pending() == 1, f"non-JSON: {st}")
        big = rh.jira_status_event("MFG-2", "Done", pad_to=(1 << 20) + 10)
        st, _ = hc.jira(t, big, secret=sec)
        expect(st == 413 and pending() == 1, f"oversize: {st}")
        st, _ = hc.jira(t, rh.jira_status_event("MFG-2", "Done", pad_to=(1 << 20) - 100), secret=sec)
        expect(st == 200 and pending() == 2, f"just under the limit: {st}")
        st, _ = hc.jira("nobody", body, secret=sec)
        expect(st == 404, f"unknown tenant: {st}")
        # dynamic-webhook JWTs: refused until the tenant has the app's client secret
        now = int(time.time())
        good = rh.jwt_hs256("app-client-secret", {"iss": "app", "iat": now, "exp": now + 300})
        st, _ = hc.jira(t, body, jwt=good, delivery_id="j-1")
        expect(st == 401, f"JWT without a configured client secret: {st}")
        r.cli("tenant", "set-secret", t, stdin="app-client-secret\n")
        st, _ = hc.jira(t, body, jwt=good, delivery_id="j-1")
        expect(st == 200 and pending() == 3, f"good JWT: {st}")
        forged = rh.jwt_hs256("another-secret", {"iss": "app", "iat": now, "exp": now + 300})
        expired = rh.jwt_hs256("app-client-secret", {"iss": "app", "iat": now - 7200, "exp": now - 3600})
        none_alg = (rh._b64url(b'{"alg":"none"}') + "." + rh._b64url(b'{"exp":%d}' % (now + 300)) + ".")
        for name, tok in (("forged", forged), ("expired", expired), ("alg none", none_alg)):
            st, _ = hc.jira(t, body, jwt=tok, delivery_id="j-" + name)
            expect(st == 401, f"{name} JWT: {st}")
        expect(pending() == 3, "refused deliveries were stored")
        # Zoho: channel token
        zb = json.dumps({"server_time": 1, "module": "Accounts", "ids": ["1"], "operation": "update",
                         "channel_id": "1000", "token": w.secrets["zoho_token"]}).encode()
        st, _ = hc.post("/hooks/zoho/" + t, zb, {})
        expect(st == 200 and pending() == 4, f"zoho with its token: {st}")
        zbad = zb.replace(w.secrets["zoho_token"].encode(), b"z-wrong")
        st, _ = hc.post("/hooks/zoho/" + t, zbad, {})
        expect(st == 401 and pending() == 4, f"zoho with a wrong token: {st}")
        m = r.metrics()
        expect(m['mlc_relay_webhooks_total{source="jira",result="unauthorized"}'] >= 6, m)
        expect(m['mlc_relay_webhooks_total{source="jira",result="too_large"}'] == 1, m)
        st, health = r.get("/healthz")
        expect(st == 200 and json.loads(health)["ok"] is True, health)
        log = r.log()
        expect(sec not in log and "app-client-secret" not in log, "a secret reached the relay log")
        hc.close()
    finally:
        w.close()


# ---------------------------------------------------------------------------
# relay + tunnel + agent + JD Edwards


def synced_world(orders, **kw):
    w = World(orders=orders, **kw)
    w.configure()
    r = w.agent("sync", "jde_workorders")
    expect(r.returncode == 0, f"initial sync failed: {r.stderr[-2000:]}")
    return w


def post_all(w, events, relay=None, threads=4):
    """POST each (wo, body) once; returns {wo: status or None}."""
    relay = relay or w.relay
    sec = w.secrets["jira_webhook_secret"]
    out = {}
    lock = threading.Lock()
    chunks = [events[i::threads] for i in range(threads)]

    def worker(chunk):
        hc = rh.HookClient(relay.port, timeout=5)
        for wo, body in chunk:
            try:
                st, _ = hc.jira(w.tenant, body, secret=sec, delivery_id="wo-" + wo)
            except OSError:
                st = None
            with lock:
                out[wo] = st
        hc.close()

    ts = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


@test
def status_change_flows_from_jira_to_jde_end_to_end():
    """The Jira simulator's own signed webhook, registered by the agent."""
    w = synced_world(12, jira_args=["--webhook-retry-scale", "0.001"])
    try:
        w.configure(relay_extra={"watch_every": "1s"})
        w.start_agent()
        hooks = wait_for(lambda: _admin_hooks(w), 30, "the agent to register an admin webhook")
        expect(any(h.get("url", "").endswith("/hooks/jira/" + w.tenant) for h in hooks), hooks)
        wo, key = sorted(w.ledger().items())[3]
        w.jira.ctl("/_sim/transition", {"key": key, "to": "In Progress"})
        row = wait_for(lambda: (lambda r: r if r["SRST"].strip() == "40" else None)(
            w.jde.ctl("/_sim/rows?table=F4801&key=" + wo)), 30, "SRST 40 in JD Edwards")
        expect(row["PID"].strip() == "P48013", row)
        audit = w.db("SELECT action, target_key, detail FROM state_audit WHERE action = 'writeback'")
        expect(any(a[1] == key for a in audit), f"no write-back audit row for {key}: {audit}")
    finally:
        w.close()


@test
def oauth_dynamic_webhook_with_jwt_reaches_jde():
    """OAuth 2.0: the agent registers a dynamic webhook; Jira signs deliveries with a JWT."""
    cloud = "11111111-2222-3333-4444-555555555555"
    w = World(orders=6, jira_args=["--cloud-id", cloud, "--webhook-retry-scale", "0.001"])
    try:
        oauth = {"auth": "oauth", "client_id": "mlc-client", "client_secret": "mlc-secret",
                 "refresh_token": "rt-initial", "cloud_id": cloud, "email": None, "api_token": None}
        w.configure(jira=oauth)
        r = w.agent("sync", "jde_workorders")
        expect(r.returncode == 0, r.stderr[-2000:])
        w.relay.cli("tenant", "set-secret", w.tenant, stdin="mlc-secret")
        w.configure(jira=oauth, relay_extra={"watch_every": "1s"})
        w.start_agent()
        dyn = wait_for(lambda: w.jira.ctl("/_sim/webhooks")["dynamic"], 30, "a dynamic webhook")
        expect(len(dyn) == 1 and dyn[0]["url"].endswith("/hooks/jira/" + w.tenant), dyn)
        expect("project" in dyn[0]["jqlFilter"] and "MFG" in dyn[0]["jqlFilter"], dyn)
        wo, key = sorted(w.ledger().items())[2]
        w.jira.ctl("/_sim/transition", {"key": key, "to": "Done"})
        wait_for(lambda: str(w.jde.ctl("/_sim/rows?table=F4801&key=" + wo)["SRST"]).strip() == "95",
                 30, "SRST 95 via a JWT-signed delivery")
        expect(w.relay.metrics().get('mlc_relay_webhooks_total{source="jira",result="unauthorized"}', 0) == 0,
               "the relay refused a JWT-signed delivery")
        # 26 days later on Jira's clock the agent refreshes before the 30-day expiry
        before = dyn[0]["expires_ms"]
        w.jira.ctl("/_sim/clock", {"advance_s": 26 * 86400})
        dyn2 = wait_for(lambda: [d for d in w.jira.ctl("/_sim/webhooks")["dynamic"]
                                 if d["expires_ms"] > before and not d["expired"]], 30, "a refreshed expiry")
        expect(dyn2[0]["id"] == dyn[0]["id"], f"refreshed, not re-registered: {dyn} -> {dyn2}")
    finally:
        w.close()


@test
def tls_relay_with_a_configured_certificate():
    w = World(orders=5, start_relay=False)
    try:
        crt, key = rh.self_signed_cert(w.dir)
        t = rh.Relay(ARGS.relay, store=w.relay.store, workdir=w.dir,
                     extra={"tls_cert": crt, "tls_key": key})
        w.relays.append(t)
        t.start()
        w.configure(relay=t, relay_extra={"ca_file": crt})
        r = w.agent("sync", "jde_workorders")
        expect(r.returncode == 0, r.stderr[-2000:])
        w.start_agent()
        wait_for(lambda: t.metrics().get("mlc_relay_tunnels", 0) == 1, 30, "a wss:// tunnel")
        hc = rh.HookClient(t.port, relay=t)
        wo, key_ = sorted(w.ledger().items())[0]
        st, _ = hc.jira(w.tenant, rh.jira_status_event(key_, "In Progress"),
                        secret=w.secrets["jira_webhook_secret"])
        expect(st == 200, f"https webhook: {st}")
        wait_for(lambda: w.status_calls().get(wo) == 1, 30, "the write-back over wss://")
        hc.close()
        w.stop_agent()
        # an agent that does not trust the certificate never connects
        w.configure(relay=t)
        w.start_agent()
        time.sleep(2)
        expect(t.metrics().get("mlc_relay_tunnels", 0) == 0, "connected without trusting the certificate")
        w.stop_agent()
        # plain HTTP off loopback is refused at start
        bad = rh.Relay(ARGS.relay, store=w.relay.store, workdir=w.dir, extra={"listen": "0.0.0.0:1"})
        p = subprocess.run([ARGS.relay, "-c", bad.cfg, "run"], capture_output=True, text=True, timeout=20)
        expect(p.returncode == 2 and "TLS" in p.stdout + p.stderr, p.stdout + p.stderr)
    finally:
        w.close()


def _admin_hooks(w):
    import base64
    req = urllib.request.Request(w.jira.url + "/rest/webhooks/1.0/webhook", headers={
        "Authorization": "Basic " + base64.b64encode(
            ("sync@example.com:" + harness.JIRA_TOKEN).encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            hooks = json.loads(r.read())
    except OSError:
        return None
    return hooks or None


@test
def agent_down_while_200_webhooks_arrive_each_applied_once():
    w = synced_world(200)
    try:
        ledger = w.ledger()
        expect(len(ledger) == 200, f"ledger has {len(ledger)}")
        res = post_all(w, events_for(ledger))
        expect(all(s == 200 for s in res.values()), collections.Counter(res.values()))
        w.start_agent()
        wait_applied(w, 200, 120)
        time.sleep(1.5)  # anything doubled would show up now
        calls = w.status_calls()
        expect(set(calls) == {k for k in ledger}, "wrong work orders")
        expect(max(calls.values()) == 1, f"applied twice: {[k for k, v in calls.items() if v > 1][:5]}")
        rows = {r["DOCO"]: r for r in w.jde.ctl("/_sim/rows?table=F4801")}
        expect(all(str(rows[int(k)]["SRST"]).strip() == "40" for k in ledger), "SRST not written")
        # the same 200 again (Jira retries) change nothing
        res = post_all(w, events_for(ledger))
        time.sleep(2)
        expect(max(w.status_calls().values()) == 1, "a retried delivery was applied again")
    finally:
        w.close()


@test
def kill_9_of_the_relay_during_1000_webhooks_loses_and_doubles_nothing():
    n = 300 if ARGS.quick else 1000
    w = synced_world(n)
    try:
        ledger = w.ledger()
        w.start_agent()
        events = events_for(ledger)
        results = {}
        killer_done = threading.Event()

        def killer():
            # kill once a third has been answered
            while len(results) < n // 3 and not killer_done.is_set():
                time.sleep(0.005)
            w.relay.kill9()
            killer_done.set()

        kt = threading.Thread(target=killer)
        kt.start()
        sec = w.secrets["jira_webhook_secret"]
        lock = threading.Lock()

        def sender(chunk):
            hc = rh.HookClient(w.relay.port, timeout=3)
            for wo, body in chunk:
                try:
                    st, _ = hc.jira(w.tenant, body, secret=sec, delivery_id="wo-" + wo)
                except OSError:
                    st = None
                with lock:
                    results[wo] = st
            hc.close()

        ts = [threading.Thread(target=sender, args=(events[i::4],)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        killer_done.set()
        kt.join()
        acked = {wo for wo, st in results.items() if st == 200}
        lost_2xx_candidates = set(acked)
        expect(0 < len(acked) < n, f"the kill should split the burst: {len(acked)} of {n} got 200")
        w.relay.start()
        # Jira retries what got no 2xx, with the same identifier
        retry = [(wo, b) for wo, b in events if wo not in acked]
        res2 = post_all(w, retry)
        expect(all(s == 200 for s in res2.values()), collections.Counter(res2.values()))
        wait_applied(w, n, 180)
        time.sleep(2)
        calls = w.status_calls()
        expect(lost_2xx_candidates <= set(calls), "a webhook that got 200 was lost")
        expect(max(calls.values()) == 1, f"applied twice: {[k for k, v in calls.items() if v > 1][:5]}")
    finally:
        w.close()


@test
def a_tenant_key_never_receives_another_tenants_deliveries():
    w = synced_world(10)
    try:
        other = w.relay.tenant_add("globex")
        # an agent of tenant acme presenting globex's key is refused
        w.configure(key=other["agent_key"])
        w.start_agent()
        wait_for(lambda: w.relay.metrics().get("mlc_relay_tunnels_rejected_total", 0) >= 1, 30,
                 "the relay to refuse the wrong key")
        post_all(w, events_for(w.ledger())[:3])
        time.sleep(1.5)
        expect(w.db("SELECT COUNT(*) FROM state_inbox")[0][0] == 0, "deliveries crossed tenants")
        expect("wrong key" in w.agent_log_text() or "4401" in w.agent_log_text(), w.agent_log_text())
        w.stop_agent()
        # globex's own agent connects fine and still gets nothing of acme's
        w.configure(key=other["agent_key"], tenant="globex")
        w.start_agent()
        wait_for(lambda: w.relay.metrics().get("mlc_relay_tunnels", 0) == 1, 30, "globex tunnel up")
        time.sleep(1.5)
        expect(w.db("SELECT COUNT(*) FROM state_inbox")[0][0] == 0, "globex received acme's deliveries")
        w.stop_agent()
        # and acme's right key receives them
        w.configure()
        w.start_agent()
        wait_for(lambda: w.db("SELECT COUNT(*) FROM state_inbox")[0][0] == 3, 30, "acme's 3 deliveries")
    finally:
        w.close()


@test
def relay_commands_ping_and_sync_now_reach_the_agent():
    w = synced_world(15)
    try:
        w.start_agent()
        wait_for(lambda: w.relay.metrics().get("mlc_relay_tunnels", 0) == 1, 30, "tunnel up")
        p = w.relay.cli("command", w.tenant, "ping", "--wait", "20")
        ans = json.loads(p.stdout)
        expect(ans["ok"] is True and "jde_workorders" in ans["flows"], ans)
        touched = w.jde.ctl("/_sim/touch", {"count": 3, "table": "F4801"})["keys"]
        p = w.relay.cli("command", w.tenant, "sync-now", "jde_workorders", "--wait", "60")
        ans = json.loads(p.stdout)
        expect(ans["ok"] is True and ans["flows"]["jde_workorders"]["updated"] == len(touched), ans)
        p = w.relay.cli("command", w.tenant, "sync-now", "nope", "--wait", "20")
        expect(json.loads(p.stdout)["ok"] is False, p.stdout)
    finally:
        w.close()


@test
def blocked_puts_the_work_order_on_hold_and_echoes_are_dropped():
    w = synced_world(6)
    try:
        w.start_agent()
        led = sorted(w.ledger().items())
        sec = w.secrets["jira_webhook_secret"]
        hc = rh.HookClient(w.relay.port)
        wo, key = led[0]
        st, _ = hc.jira(w.tenant, rh.jira_status_event(key, "Blocked"), secret=sec)
        expect(st == 200, st)
        wait_for(lambda: any(o["name"] == "MLC_HoldWorkOrder" for o in w.orchestrations()), 30, "hold call")
        # the same status again (a second event, new identifier) is the agent's own echo/duplicate
        wo2, key2 = led[1]
        st, _ = hc.jira(w.tenant, rh.jira_status_event(key2, "Done"), secret=sec)
        wait_for(lambda: w.status_calls().get(wo2) == 1, 30, "Done applied")
        st, _ = hc.jira(w.tenant, rh.jira_status_event(key2, "Done"), secret=sec)
        time.sleep(1.5)
        expect(w.status_calls().get(wo2) == 1, "the same status was written twice")
        hc.close()
    finally:
        w.close()


@test
def two_relays_on_one_postgresql_deliver_across_nodes():
    import pg
    pgdir = tempfile.mkdtemp(prefix="mlc-pg-")
    conninfo, stop_pg = pg.start(pgdir)
    w = None
    try:
        w = World(orders=8, relay_store=conninfo, start_relay=False)
        b = rh.Relay(ARGS.relay, store=conninfo, workdir=w.dir, node="relay-b")
        w.relays.append(b)
        w.relay.start()
        b.start()
        w.configure(relay=b)
        r = w.agent("sync", "jde_workorders")
        expect(r.returncode == 0, r.stderr[-2000:])
        w.start_agent()
        wait_for(lambda: b.metrics().get("mlc_relay_tunnels", 0) == 1, 30, "tunnel on relay B")
        expect(w.relay.metrics().get("mlc_relay_tunnels", 0) == 0, "the agent is on B only")
        events = events_for(w.ledger())[:5]
        res = post_all(w, events, relay=w.relay)  # webhooks to relay A
        expect(all(s == 200 for s in res.values()), res)
        wait_for(lambda: len(w.status_calls()) == 5, 30, "5 deliveries via relay B")
        expect(b.metrics()["mlc_relay_deliveries_sent_total"] >= 5, b.metrics())
    finally:
        if w:
            w.close()
        stop_pg()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--relay", required=True)
    ap.add_argument("--quick", action="store_true", help="smaller data sets (sanitizer builds)")
    ap.add_argument("-k", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    ARGS.relay = os.path.abspath(ARGS.relay)
    return harness.run_tests(TESTS, ARGS.k)


if __name__ == "__main__":
    sys.exit(main())
