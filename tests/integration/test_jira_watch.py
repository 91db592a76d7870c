#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests: the Jira connector's watch() (webhook registration) and
changes() (polling fallback) against the Jira simulator on 127.0.0.1, called
through tests/integration/jira_watch_driver.c (built with
`make O=<dir> <dir>/tests/jira_watch_driver`). Each test starts a fresh
simulator, drives its clock and controls, and checks what the simulator holds.

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402

ARGS = None
TESTS = []
CLOUD = "11111111-2222-3333-4444-555555555555"
DAY_MS = 86400 * 1000
BASIC = {"Authorization": "Basic " + base64.b64encode(b"sync@example.com:demo-token").decode()}


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Receiver:
    """Stands in for the relay: records each webhook delivery, answers 200."""

    def __init__(self):
        rec = self
        self.got = []
        self.lock = threading.Lock()

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with rec.lock:
                    rec.got.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hooks/jira/t1" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def take(self):
        with self.lock:
            out, self.got = self.got, []
        return out

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class Env:
    """A fresh Jira simulator, a receiver, and the driver's files."""

    def __init__(self, oauth, sim_args=()):
        self.dir = tempfile.mkdtemp(prefix="mlc-jw-")
        args = ["--cloud-id", CLOUD, "--webhook-retry-scale", "0.001"] + list(sim_args)
        self.jira = harness.Sim("jira_sim.py", args)
        self.rx = Receiver()
        system = {"type": "jira", "base_url": self.jira.url}
        if oauth:
            system.update({"auth": "oauth", "client_id": "mlc-client", "client_secret": "mlc-secret",
                           "refresh_token": "rt-initial", "cloud_id": CLOUD})
        else:
            system.update({"auth": "basic", "email": "sync@example.com", "api_token": "demo-token"})
        self.config = os.path.join(self.dir, "driver.json")
        with open(self.config, "w") as f:
            json.dump({"system": system, "target": {"system": "jira", "project": "MFG", "issue_type": "Task"},
                       "state_db": os.path.join(self.dir, "state.db"),
                       "key_file": os.path.join(self.dir, "secret.key")}, f)
        self.state = os.path.join(self.dir, "state.json")
        with open(self.state, "w") as f:
            json.dump({"state": {}, "cursor": None}, f)
        self.stderr = ""

    def drive(self, *args):
        env = dict(os.environ)
        env.setdefault("MLC_LOG_LEVEL", "warn")
        p = subprocess.run([ARGS.driver, self.config, self.state] + list(args), capture_output=True, text=True,
                           timeout=120, env=env)
        self.stderr = p.stderr
        expect(p.returncode == 0, f"driver exit {p.returncode}: {p.stderr[-2000:]}")
        return json.loads(p.stdout)

    def watch(self, secret=None):
        r = self.drive("watch", self.rx.url, *([secret] if secret else []))
        expect(r["rc"] == "ok", f"watch failed: {r}")
        return r

    def changes(self):
        r = self.drive("changes")
        expect(r["rc"] == "ok", f"changes failed: {r}")
        return r

    def ctl(self, path, body=None):
        return self.jira.ctl(path, body)

    def hooks(self):
        return self.ctl("/_sim/webhooks")

    def sim_now_ms(self):
        return self.ctl("/_sim/clock")["now_ms"]

    def advance(self, days):
        self.ctl("/_sim/clock", {"advance_s": days * 86400})

    def api(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.jira.url + "/rest/api/3" + path, data=data, method=method,
                                     headers=dict(BASIC, **{"Content-Type": "application/json"}))
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def create(self, marker):
        return self.api("POST", "/issue", {"fields": {"project": {"key": "MFG"}, "issuetype": {"name": "Task"},
                                                      "summary": "WO " + marker, "labels": [marker]}})["key"]

    def transition(self, key, status, **kw):
        return self.ctl("/_sim/transition", dict(kw, key=key, status=status))

    def requests(self):
        return self.jira.stats()["requests"]

    def close(self):
        self.rx.close()
        self.jira.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_deliveries(e):
    r = e.ctl("/_sim/deliveries/wait", {"timeout_s": 15})
    expect(r["idle"], f"deliveries did not finish: {r}")


# ---------------------------------------------------------------- dynamic (OAuth)

@test
def oauth_registers_one_dynamic_webhook_and_reuses_it():
    e = Env(oauth=True)
    try:
        r = e.watch()
        st = r["state"]
        hooks = e.hooks()["dynamic"]
        expect(st["mode"] == "dynamic" and st["id"] == 1000, f"state {st}")
        expect(len(hooks) == 1, f"hooks {hooks}")
        h = hooks[0]
        expect(h["url"] == e.rx.url and h["jqlFilter"] == "project = MFG" and h["fieldIdsFilter"] == ["status"]
               and h["events"] == ["jira:issue_updated"], f"registration {h}")
        expect(abs(st["expires_ms"] - h["expires_ms"]) < 5000, f"expiry {st} vs {h}")
        expect(0 < r["next_in_ms"] <= 6 * 3600 * 1000, f"next {r['next_in_ms']}")
        r2 = e.watch()
        expect(r2["state"]["id"] == 1000 and len(e.hooks()["dynamic"]) == 1, f"second watch {r2}")
        req = e.requests()
        expect(req.get("webhook_register") == 1 and req.get("webhook_list") == 2
               and not req.get("webhook_refresh"), f"requests {req}")
        # the registration works end to end: a status change reaches the URL
        key = e.create("jdewo-1")
        e.api("PUT", "/issue/" + key, {"fields": {"summary": "edited"}})  # not a status change
        e.transition(key, "In Progress")
        wait_deliveries(e)
        got = e.rx.take()
        expect(len(got) == 1, f"deliveries {got}")
        body = json.loads(got[0][2])
        expect(body["matchedWebhookIds"] == [1000] and got[0][1].get("Authorization", "").startswith("Bearer ")
               and body["changelog"]["items"][0]["toString"] == "In Progress", f"delivery {got[0]}")
    finally:
        e.close()


@test
def dynamic_webhook_is_refreshed_after_26_days_by_the_server_clock():
    e = Env(oauth=True)
    try:
        exp0 = e.watch()["state"]["expires_ms"]
        e.advance(20)  # 10 days left: nothing to do
        r = e.watch()
        expect(abs(r["state"]["expires_ms"] - exp0) < 5000 and not e.requests().get("webhook_refresh"),
               f"early {r}")
        e.advance(6)   # 4 days left (the agent's own clock has not moved)
        r = e.watch()
        now = e.sim_now_ms()
        exp1 = r["state"]["expires_ms"]
        expect(e.requests().get("webhook_refresh") == 1, f"no refresh: {e.requests()}")
        expect(abs(exp1 - (now + 30 * DAY_MS)) < 5000 and exp1 > exp0 + 25 * DAY_MS, f"expiry {exp0} -> {exp1}")
        expect(abs(e.hooks()["dynamic"][0]["expires_ms"] - exp1) < 5000, "state and simulator disagree")
        expect(r["state"]["id"] == 1000 and len(e.hooks()["dynamic"]) == 1, f"{r}")
        # the refresh may answer the string form of expirationDate
        e.ctl("/_sim/faults", {"webhook_expiration_string": True})
        e.advance(26)
        r = e.watch()
        now = e.sim_now_ms()
        expect(e.requests().get("webhook_refresh") == 2, f"{e.requests()}")
        expect(abs(r["state"]["expires_ms"] - (now + 30 * DAY_MS)) < 5000, f"string form: {r['state']}")
        # past the expiry without a refresh, the webhook is gone: registered again
        e.advance(31)
        r = e.watch()
        expect(r["state"]["id"] != 1000 and len(e.hooks()["dynamic"]) == 1
               and e.requests().get("webhook_register") == 2, f"after expiry {r} {e.hooks()}")
    finally:
        e.close()


@test
def vanished_dynamic_webhook_is_registered_again():
    e = Env(oauth=True)
    try:
        first = e.watch()["state"]["id"]
        gone = e.ctl("/_sim/webhooks/vanish", {"id": first})
        expect(gone == {"vanished": [first]}, f"{gone}")
        r = e.watch()
        hooks = e.hooks()["dynamic"]
        expect(r["state"]["mode"] == "dynamic" and r["state"]["id"] != first, f"{r}")
        expect([h["id"] for h in hooks] == [r["state"]["id"]], f"{hooks}")
        # a webhook left over for another URL (one URL per app) is deleted
        e.ctl("/_sim/webhooks/vanish", {})
        e.drive("watch", "http://127.0.0.1:9/old/relay")
        r = e.watch()
        hooks = e.hooks()["dynamic"]
        expect(len(hooks) == 1 and hooks[0]["url"] == e.rx.url and hooks[0]["id"] == r["state"]["id"],
               f"{hooks}")
    finally:
        e.close()


# ---------------------------------------------------------------- admin (Basic)

@test
def basic_registers_a_signed_admin_webhook():
    e = Env(oauth=False)
    try:
        r = e.watch(secret="relay-secret-1")
        st = r["state"]
        admin = e.hooks()["admin"]
        expect(st == {"mode": "admin", "id": 1}, f"state {st}")
        expect(len(admin) == 1 and admin[0]["url"] == e.rx.url and admin[0]["has_secret"]
               and admin[0]["filters"] == {"issue-related-events-section": "project = MFG"}
               and admin[0]["events"] == ["jira:issue_updated"], f"{admin}")
        r = e.watch(secret="relay-secret-1")
        req = e.requests()
        expect(r["state"] == st and len(e.hooks()["admin"]) == 1, f"second watch {r}")
        expect(not req.get("webhook_register") and not req.get("webhook_list"), f"dynamic tried: {req}")
        key = e.create("jdewo-2")
        e.transition(key, "Done")
        wait_deliveries(e)
        got = e.rx.take()
        expect(len(got) == 1, f"deliveries {got}")
        _p, hd, body = got[0]
        want = "sha256=" + hmac.new(b"relay-secret-1", body, hashlib.sha256).hexdigest()
        expect(hd.get("X-Hub-Signature") == want, f"signature {hd}")
    finally:
        e.close()


@test
def basic_without_secret_or_admin_rights_falls_back_to_polling():
    e = Env(oauth=False)
    try:
        r = e.watch()
        st = r["state"]
        expect(st["mode"] == "poll" and e.rx.url in st["reason"] and "project = MFG" in st["reason"], f"{st}")
        expect("polling jira" in e.stderr and e.rx.url in e.stderr, f"no operator hint: {e.stderr}")
        expect(e.hooks()["admin"] == [] and 0 < r["next_in_ms"] <= 3600 * 1000, f"{r}")
        e.watch()
        expect("polling jira" not in e.stderr, f"warned again: {e.stderr}")
        # an administrator registers it by hand, as the README shows: it is found by URL
        req = urllib.request.Request(e.jira.url + "/rest/webhooks/1.0/webhook", method="POST",
                                     data=json.dumps({"name": "relay", "url": e.rx.url,
                                                      "events": ["jira:issue_updated"],
                                                      "filters": {"issue-related-events-section": "project = MFG"},
                                                      "secret": "by-hand"}).encode(),
                                     headers=dict(BASIC, **{"Content-Type": "application/json"}))
        urllib.request.urlopen(req, timeout=30).read()
        r = e.watch()
        expect(r["state"] == {"mode": "admin", "id": 1}, f"hand-made webhook not found: {r}")
    finally:
        e.close()
    e = Env(oauth=False, sim_args=["--no-admin"])
    try:
        r = e.watch(secret="relay-secret-1")
        st = r["state"]
        expect(st["mode"] == "poll" and "not a jira administrator" in st["reason"], f"{st}")
        expect(e.hooks()["admin"] == [], "registered anyway")
    finally:
        e.close()


# ---------------------------------------------------------------- changes()

@test
def changes_reports_a_status_transition_exactly_once():
    e = Env(oauth=False)
    try:
        k1 = e.create("jdewo-100001")
        r = e.changes()
        expect(r["events"] == [] and r["cursor"], f"first call: {r}")
        e.transition(k1, "Done")
        r = e.changes()
        ev = r["events"]
        expect(len(ev) == 1, f"events {ev}")
        ev = ev[0]
        # a polled change is the agent's generic change JSON, not a fake webhook
        expect(ev["event"] == "poll" and ev["record"] == k1 and ev["markers"] == ["jdewo-100001"]
               and ev["items"] == [{"field": "status", "from": "To Do", "to": "Done"}]
               and ev["author"].startswith("712020:aaaa0001") and ev["at_ms"] > 0, f"{ev}")
        r = e.changes()
        expect(r["events"] == [], f"repeated: {r['events']}")
        # an issue first seen after the start: its changelog tells; the agent's own edit is no change
        k2 = e.create("jdewo-100002")
        k3 = e.create("jdewo-100003")
        e.transition(k2, "In Progress")
        e.api("PUT", "/issue/" + k3, {"fields": {"summary": "edited by the agent"}})
        r = e.changes()
        got = [(x["record"], x["items"][0]["from"], x["items"][0]["to"]) for x in r["events"]]
        expect(got == [(k2, "To Do", "In Progress")], f"{got}")
        expect(e.changes()["events"] == [], "repeated")
        # the window follows the server's clock: three days later (agent clock unchanged)
        e.advance(3)
        e.transition(k1, "In Progress")
        r = e.changes()
        got = [(x["record"], x["items"][0]["to"]) for x in r["events"]]
        expect(got == [(k1, "In Progress")], f"after 3 days: {got}")
        with open(e.state) as f:
            saved = json.load(f)
        expect(saved["cursor"] == r["cursor"] and set(saved["state"]["seen"]) == {k1, k2, k3}
               and abs(saved["state"]["skew_ms"] - 3 * DAY_MS) < 10000, f"saved {saved}")
        expect(e.changes()["events"] == [], "repeated")
        # due date and priority are reported against the values seen last
        e.api("PUT", "/issue/" + k1, {"fields": {"duedate": "2026-12-24", "priority": {"name": "High"}}})
        r = e.changes()
        got = {(x["record"], i["field"], i["to"]) for x in r["events"] for i in x["items"]}
        expect(got == {(k1, "duedate", "2026-12-24"), (k1, "priority", "High")}, f"fields: {r['events']}")
        expect(e.changes()["events"] == [], "repeated after the field change")
    finally:
        e.close()


@test
def failures_leave_state_and_cursor_alone():
    e = Env(oauth=False)
    try:
        e.create("jdewo-7")
        first = e.changes()
        before = open(e.state).read()
        e.jira.faults(basic_401=True)
        r = e.drive("changes")
        expect(r["rc"] != "ok" and "401" in r["err"] and r["events"] == [], f"{r}")
        r2 = e.drive("watch", e.rx.url, "s")
        expect(r2["rc"] != "ok" and r2["state"] == first["state"], f"{r2}")
        expect(open(e.state).read() == before, "state or cursor changed by a failed call")
        e.jira.faults(basic_401=None)
        expect(e.changes()["events"] == [], "events after recovery")
    finally:
        e.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driver", required=True, help="path of the built jira_watch_driver")
    ap.add_argument("-k", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    ARGS.driver = os.path.abspath(ARGS.driver)
    return harness.run_tests(TESTS, ARGS.k)


if __name__ == "__main__":
    sys.exit(main())
