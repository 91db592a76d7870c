#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of the write-back of fields other than status (issue 11,
item 8): a Jira change of due date or priority is written into the JD Edwards
work order (F4801 DRQJ, PRTS) through the orchestrations named in the flow's
writeback.fields, once; echoes are dropped per field; a field changed on both
sides since the last sync follows its conflict rule, with an audit row.

How the tests drive it: the real mlc-agent syncs work orders from the JD
Edwards simulator to the Jira simulator. A person then edits the issue in the
Jira simulator (/_sim/edit), and a person in JD Edwards edits the work order
(/_sim/update). The Jira simulator delivers its webhook for every issue
update to a receiver on 127.0.0.1 in this file; those bodies, exactly as the
simulator sent them, go into the agent with `mlc-agent inbox add` and
`mlc-agent inbox apply` (like test_writeback.py). One test runs the whole way
instead: Jira simulator -> mlc-relay -> tunnel -> `mlc-agent run` (--relay).
The JDE simulator's call log (/_sim/orchestrations) and rows (/_sim/rows),
the Jira simulator's issues and the agent's state database (state_audit,
state_inbox) show what happened.

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import base64
import datetime as dt
import http.server
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

ARGS = None
TESTS = []
FLOW = "jde_workorders"

STATUS_MAP = {"To Do": "10", "In Progress": "40", "Done": "95"}
PRIORITY_NAMES = dict(harness.WORK_ORDER_MAPPING["priority"]["map"])  # PRTS code -> Jira priority name


def fields_config(duedate_rule="target_wins", priority_rule="newest_wins"):
    """writeback.fields as the brief gives it; the rules can be changed per test."""
    return {
        "duedate": {"orchestration": "MLC_UpdateWODates",
                    "inputs": {"WorkOrder": "{key}", "RequestedDate": "{value}"},
                    "verify": {"DRQJ": "{value}"}, "conflict": duedate_rule},
        "priority": {"orchestration": "MLC_UpdateWOPriority",
                     "inputs": {"WorkOrder": "{key}", "Priority": "{value}"},
                     "verify": {"PRTS": "{value}"}, "conflict": priority_rule},
    }


def writeback_config(fields=None, agent_account=True):
    """Today's status write-back, unchanged, plus "fields"."""
    wb = {
        "orchestration": "MLC_UpdateWOStatus",
        "inputs": {"WorkOrder": "{key}", "Status": "{code}"},
        "verify": {"SRST": "{code}"},
        "status_map": STATUS_MAP,
        "echo_ttl": "10m",
        "fields": fields if fields is not None else fields_config(),
    }
    if agent_account:
        wb["agent_account"] = harness.JIRA_SYNC_ACCOUNT
    return wb


# The standard mapping's description embeds {DRQJ} and {PRTS}: a write-back of
# either changes the description, so the next sync rightly updates the issue.
# Without the description, a written-back field is the only mapped change.
MAPPING_WITHOUT_DESCRIPTION = {k: v for k, v in harness.WORK_ORDER_MAPPING.items() if k != "description"}


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def iso(ymd):
    """20261210 -> 2026-12-10"""
    return f"{ymd[0:4]}-{ymd[4:6]}-{ymd[6:8]}"


def shift(ymd, days):
    """A YYYYMMDD date moved by days."""
    return (dt.datetime.strptime(ymd, "%Y%m%d") + dt.timedelta(days=days)).strftime("%Y%m%d")


def wait_for(pred, timeout, what, step=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except sqlite3.OperationalError:
            last = None  # the agent has not created its tables yet
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Receiver:
    """Takes the Jira simulator's webhook deliveries on 127.0.0.1 and keeps
    each body as sent (answers 200)."""

    def __init__(self):
        got, lock = [], threading.Lock()
        self.got, self.lock = got, lock

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    got.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/jira"
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def take(self):
        with self.lock:
            out, self.got[:] = list(self.got), []
        return out

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def jira_basic():
    return "Basic " + base64.b64encode(f"sync@example.com:{harness.JIRA_TOKEN}".encode()).decode()


class Env:
    """Fresh simulators and state, work orders synced to Jira, and the Jira
    simulator's issue-update webhooks going to a receiver in this process."""

    def __init__(self, orders=12, fields=None, mapping=None, agent_account=True, jde_args=()):
        self.dir = tempfile.mkdtemp(prefix="mlc-wbf-")
        self.files = 0
        self.jde = self.jira = self.rx = None
        try:
            self.jde = harness.Sim("jde_sim.py", ["--seed", str(orders)] + list(jde_args))
            self.jira = harness.Sim("jira_sim.py")
            self.rx = Receiver()
            self.config = harness.make_config(
                self.dir, self.jde.url, self.jira.url, mapping=mapping,
                flow={"writeback": writeback_config(fields, agent_account)})
            self.ok(self.agent("sync", FLOW), "first sync")
            self.issues = {lab[len("jdewo-"):]: it for it in self.jira.ctl("/_sim/issues")
                           for lab in it["labels"] if lab.startswith("jdewo-")}
            expect(len(self.issues) == orders, f"{len(self.issues)} issues for {orders} work orders")
            req = urllib.request.Request(
                self.jira.url + "/rest/webhooks/1.0/webhook", method="POST",
                data=json.dumps({"name": "test receiver", "url": self.rx.url,
                                 "events": ["jira:issue_updated"]}).encode(),
                headers={"Authorization": jira_basic(), "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                expect(r.status == 201, f"webhook registration: {r.status}")
            self.jde.ctl("/_sim/orchestrations/clear", {})
        except Exception:
            self.close()
            raise

    # -- the agent
    def agent(self, *args):
        return harness.run_agent(ARGS.agent, self.config, *args, timeout=300)

    @staticmethod
    def ok(r, what):
        expect(r.returncode == 0, f"{what}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}")

    def sync(self):
        r = self.agent("sync", FLOW)
        self.ok(r, "sync")
        for line in r.stdout.splitlines():
            if line.startswith(FLOW + ": created"):
                parts = line.split(":", 1)[1].replace(",", "").split()
                return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}
        raise AssertionError(f"no summary line in: {r.stdout!r} {r.stderr[-2000:]!r}")

    def feed(self, bodies):
        """Each webhook body into the agent's inbox, as a delivery."""
        paths = []
        for body in bodies:
            self.files += 1
            path = os.path.join(self.dir, f"hook-{self.files}.json")
            with open(path, "wb") as f:
                f.write(body if isinstance(body, bytes) else json.dumps(body).encode())
            paths.append(path)
        if paths:
            self.ok(self.agent("inbox", "add", *paths), "inbox add")
        return len(paths)

    def apply(self):
        r = self.agent("inbox", "apply")
        for line in r.stdout.splitlines():
            if line.startswith("inbox: applied"):
                parts = line[len("inbox: "):].replace(",", "").replace("retry later", "retry").split()
                return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
        raise AssertionError(f"no counts from inbox apply (exit {r.returncode}): {r.stdout!r} {r.stderr[-2000:]!r}")

    def db(self, sql, *params):
        con = sqlite3.connect(os.path.join(self.dir, "state.db"))
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def audit(self, action, doco):
        return [d for (d,) in self.db("SELECT COALESCE(detail, '') FROM state_audit"
                                      " WHERE action = ? AND source_key = ? ORDER BY rowid", action, doco)]

    # -- JD Edwards
    def row(self, doco):
        return self.jde.ctl(f"/_sim/rows?table=F4801&key={doco}")

    def rows(self, n):
        rows = self.jde.ctl("/_sim/rows?table=F4801")
        expect(len(rows) >= n, "not enough work orders")
        return [dict(r, DOCO=str(r["DOCO"])) for r in rows[:n]]

    def jde_edit(self, doco, **cols):
        """A person changes the work order in JD Edwards (UPMJ/TDAY move)."""
        return self.jde.ctl("/_sim/update", {"key": doco, "set": cols})

    def calls(self, name=None, doco=None):
        """Successful orchestration calls (of name, for work order doco)."""
        out = []
        for c in self.jde.ctl("/_sim/orchestrations" + (f"?name={name}" if name else "")):
            if c["outcome"] == "ok" and (doco is None or str(c["inputs"].get("WorkOrder")) == doco):
                out.append(c)
        return out

    # -- Jira
    def issue(self, doco):
        return self.jira.ctl(f"/_sim/issues?key={self.issues[doco]['key']}")

    def jira_edit(self, doco, fields, **who):
        """A person edits the issue in Jira (who: actor=accountId or as_agent=True)."""
        return self.jira.ctl("/_sim/edit", dict({"key": self.issues[doco]["key"], "fields": fields}, **who))

    def hooks(self):
        """The webhook bodies the Jira simulator has sent since the last call."""
        idle = self.jira.ctl("/_sim/deliveries/wait", {"timeout_s": 20})
        expect(idle.get("idle"), f"Jira deliveries still pending: {idle}")
        return self.rx.take()

    def close(self):
        for part in (self.jde, self.jira, self.rx):
            if part is not None:
                part.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def hook_items(body):
    ev = json.loads(body)
    return ev.get("user", {}).get("accountId"), [i["field"] for i in ev.get("changelog", {}).get("items", [])]


def counts(**kw):
    out = {"applied": 0, "ignored": 0, "echoes": 0, "failed": 0, "retry": 0, "pending": 0}
    out.update(kw)
    return out


def no_failures(got, what):
    expect(got["failed"] == 0 and got["retry"] == 0 and got["pending"] == 0, f"{what}: {got}")


# ---------------------------------------------------------------- (a) due date


@test
def due_date_change_lands_in_drqj_once_and_is_not_synced_back():
    e = Env(mapping=MAPPING_WITHOUT_DESCRIPTION)
    try:
        wo = e.rows(1)[0]
        doco, d0 = wo["DOCO"], wo["DRQJ"]
        d2 = shift(d0, 40)
        expect(e.issue(doco)["fields"].get("duedate") == iso(d0), f"issue due date after the first sync: {e.issue(doco)}")
        e.jira_edit(doco, {"duedate": iso(d2)})
        bodies = e.hooks()
        expect(len(bodies) == 1 and hook_items(bodies[0])[1] == ["duedate"], f"Jira webhooks: {bodies}")
        e.feed(bodies)
        got = e.apply()
        expect(got == counts(applied=1), f"apply: {got}")
        calls = e.calls()
        expect(len(calls) == 1 and calls[0]["name"] == "MLC_UpdateWODates"
               and calls[0]["inputs"] == {"WorkOrder": doco, "RequestedDate": d2},
               f"orchestration calls {calls} (want one MLC_UpdateWODates, RequestedDate {d2})")
        expect(e.row(doco)["DRQJ"] == d2, f"DRQJ of {doco}: {e.row(doco)['DRQJ']}, want {d2}")
        audit = e.audit("writeback", doco)
        expect(len(audit) == 1 and "MLC_UpdateWODates" in audit[0], f"writeback audit rows of {doco}: {audit}")
        expect(e.apply() == counts(), "a second apply found work")
        # the next sync sees the work order changed at JD Edwards (UPMJ moved), but the
        # only mapped change is the due date Jira already has: no update of the issue
        writes = e.issue(doco)["write_count"]
        e.jira.ctl("/_sim/reset_stats", {})
        s = e.sync()
        expect(s["updated"] == 0 and s["created"] == 0 and s["failed"] == 0,
               f"sync after the write-back: {s} (the ledger should know the written value)")
        expect(e.jira.stats()["writes"] == 0 and e.issue(doco)["write_count"] == writes,
               f"Jira writes after the write-back: {e.jira.stats()}")
        expect(e.issue(doco)["fields"].get("duedate") == iso(d2), f"issue due date: {e.issue(doco)}")
        expect(e.hooks() == [], "Jira sent webhooks after a sync that should not have written")
        expect(len(e.calls()) == 1, f"orchestration calls {e.calls()}")
    finally:
        e.close()


# ---------------------------------------------------------------- (b) priority


@test
def priority_change_lands_in_prts_once():
    e = Env(mapping=MAPPING_WITHOUT_DESCRIPTION)
    try:
        wo = e.rows(1)[0]
        doco, p0 = wo["DOCO"], wo["PRTS"]
        p2 = "2" if p0 != "2" else "4"
        expect(e.issue(doco)["fields"]["priority"]["name"] == PRIORITY_NAMES[p0], f"issue priority: {e.issue(doco)}")
        e.jira_edit(doco, {"priority": {"name": PRIORITY_NAMES[p2]}})
        bodies = e.hooks()
        expect(len(bodies) == 1 and hook_items(bodies[0])[1] == ["priority"], f"Jira webhooks: {bodies}")
        e.feed(bodies)
        got = e.apply()
        expect(got == counts(applied=1), f"apply: {got}")
        calls = e.calls()
        expect(len(calls) == 1 and calls[0]["name"] == "MLC_UpdateWOPriority"
               and calls[0]["inputs"] == {"WorkOrder": doco, "Priority": p2},
               f"orchestration calls {calls} (want one MLC_UpdateWOPriority, Priority {p2})")
        expect(e.row(doco)["PRTS"] == p2, f"PRTS of {doco}: {e.row(doco)['PRTS']}, want {p2}")
        expect(len(e.audit("writeback", doco)) == 1, f"writeback audit rows {e.audit('writeback', doco)}")
        s = e.sync()
        expect(s["updated"] == 0 and s["failed"] == 0, f"sync after the write-back: {s}")
        expect(e.hooks() == [] and len(e.calls()) == 1, f"after the sync: calls {e.calls()}")
    finally:
        e.close()


@test
def priority_goes_back_through_the_mapping_not_the_jira_id():
    """A site whose priority codes run the other way (1 = lowest): Jira's
    priority ids (1 = Highest) are not JD Edwards codes."""
    mapping = dict(MAPPING_WITHOUT_DESCRIPTION)
    mapping["priority"] = {"from": "PRTS", "map": {"1": "Lowest", "2": "Low", "3": "Medium", "4": "High",
                                                    "5": "Highest"}, "default": "Medium"}
    e = Env(mapping=mapping)
    try:
        wo = next(r for r in e.rows(12) if r["PRTS"] != "4")
        doco = wo["DOCO"]
        e.jira_edit(doco, {"priority": {"name": "High"}})  # Jira priority id 2
        bodies = e.hooks()
        ev = json.loads(bodies[0]) if len(bodies) == 1 else {}
        item = (ev.get("changelog", {}).get("items") or [{}])[0]
        expect(item.get("to") == "2" and item.get("toString") == "High", f"webhook: {bodies}")
        e.feed(bodies)
        got = e.apply()
        expect(got == counts(applied=1), f"apply: {got}")
        calls = e.calls("MLC_UpdateWOPriority")
        expect(len(calls) == 1 and calls[0]["inputs"] == {"WorkOrder": doco, "Priority": "4"},
               f"calls {calls} (High is code 4 at this site)")
        expect(e.row(doco)["PRTS"] == "4", f"PRTS {e.row(doco)['PRTS']}")
    finally:
        e.close()


# ---------------------------------------------------------------- (c) echoes


@test
def the_agents_own_updates_are_not_written_back():
    """Without writeback.agent_account, so the per-field check has to catch them."""
    e = Env(agent_account=False)
    try:
        wo = e.rows(1)[0]
        doco, d0 = wo["DOCO"], wo["DRQJ"]
        d2, d3 = shift(d0, 40), shift(d0, 60)
        e.jira_edit(doco, {"duedate": iso(d2)})
        change = e.hooks()
        e.feed(change)
        expect(e.apply() == counts(applied=1), "apply of the person's change")
        expect(len(e.calls()) == 1 and e.row(doco)["DRQJ"] == d2, f"calls {e.calls()}")
        # the same change again under another delivery (a second webhook): JD Edwards
        # already holds the value
        again = dict(json.loads(change[0]), matchedWebhookIds=[1000])
        e.feed([again])
        got = e.apply()
        expect(got == counts(echoes=1), f"apply of the repeated change: {got}")
        echo = e.audit("writeback_echo", doco)
        expect(len(echo) == 1, f"writeback_echo audit rows of {doco}: {echo}")
        # the standard description embeds {DRQJ}: the next sync updates the issue, and
        # Jira's webhook of that update comes back to the agent
        s = e.sync()
        expect(s["updated"] == 1, f"sync after the write-back: {s}")
        back = e.hooks()
        expect(back and all(hook_items(b)[0] == harness.JIRA_SYNC_ACCOUNT for b in back),
               f"webhooks of the agent's update: {[hook_items(b) for b in back]}")
        e.feed(back)
        got = e.apply()
        expect(got["applied"] == 0, f"apply of the agent's own update: {got}")
        no_failures(got, "apply of the agent's own update")
        # a person changes the date in JD Edwards; the sync carries it to Jira, whose
        # webhook (a duedate change by the agent's account) comes back
        e.jde_edit(doco, DRQJ=d3)
        s = e.sync()
        expect(s["updated"] == 1 and e.issue(doco)["fields"].get("duedate") == iso(d3), f"sync of {d3}: {s}")
        back = e.hooks()
        expect(any("duedate" in hook_items(b)[1] for b in back),
               f"no duedate change in the webhooks of the agent's update: {[hook_items(b) for b in back]}")
        e.feed(back)
        got = e.apply()
        expect(got["applied"] == 0, f"apply of the agent's own due-date update: {got}")
        no_failures(got, "apply of the agent's own due-date update")
        calls = e.calls()
        expect(len(calls) == 1, f"orchestration calls {calls} (only the person's change)")
        expect(e.row(doco)["DRQJ"] == d3, f"DRQJ {e.row(doco)['DRQJ']}, want JD Edwards' own {d3}")
        expect(len(e.audit("writeback", doco)) == 1, f"writeback audit rows {e.audit('writeback', doco)}")
        expect(e.db("SELECT count(*) FROM state_inbox WHERE state IN ('pending', 'inflight', 'dead')")[0][0] == 0,
               f"inbox: {e.db('SELECT state, detail FROM state_inbox')}")
    finally:
        e.close()


# ---------------------------------------------------------------- (d) conflicts


def both_sides_change(e, doco, d1, d2):
    """JD Edwards changes DRQJ to d1, then a person in Jira changes the due date
    (still showing the last synced value) to d2; the webhook goes in."""
    e.jde_edit(doco, DRQJ=d1)
    e.jira_edit(doco, {"duedate": iso(d2)})
    bodies = e.hooks()
    expect(len(bodies) == 1, f"Jira webhooks: {bodies}")
    e.feed(bodies)


def conflict_row(e, doco, rule, jde_value, jira_value):
    rows = e.audit("writeback_conflict", doco)
    expect(len(rows) == 1, f"writeback_conflict audit rows of {doco}: {rows}")
    detail = rows[0]
    expect(rule in detail, f"conflict audit does not name the rule {rule}: {detail!r}")
    for v in (jde_value, jira_value):
        expect(v in detail or iso(v) in detail, f"conflict audit does not show {v}: {detail!r}")


@test
def conflict_target_wins_writes_jiras_date():
    e = Env(fields=fields_config(duedate_rule="target_wins"))
    try:
        wo = e.rows(1)[0]
        doco, d0 = wo["DOCO"], wo["DRQJ"]
        d1, d2 = shift(d0, 20), shift(d0, 40)
        both_sides_change(e, doco, d1, d2)
        got = e.apply()
        expect(got == counts(applied=1), f"apply: {got}")
        calls = e.calls()
        expect(len(calls) == 1 and calls[0]["inputs"] == {"WorkOrder": doco, "RequestedDate": d2}, f"calls {calls}")
        expect(e.row(doco)["DRQJ"] == d2, f"DRQJ {e.row(doco)['DRQJ']}, want Jira's {d2}")
        conflict_row(e, doco, "target_wins", d1, d2)
        s = e.sync()
        expect(e.issue(doco)["fields"].get("duedate") == iso(d2) and s["failed"] == 0, f"after the sync: {s}")
    finally:
        e.close()


@test
def conflict_source_wins_keeps_jdes_date_and_the_sync_carries_it():
    e = Env(fields=fields_config(duedate_rule="source_wins"))
    try:
        wo = e.rows(1)[0]
        doco, d0 = wo["DOCO"], wo["DRQJ"]
        d1, d2 = shift(d0, 20), shift(d0, 40)
        both_sides_change(e, doco, d1, d2)
        got = e.apply()
        expect(got["applied"] == 0, f"apply: {got}")
        no_failures(got, "apply")
        expect(e.calls() == [], f"calls {e.calls()}")
        expect(e.row(doco)["DRQJ"] == d1, f"DRQJ {e.row(doco)['DRQJ']}, want JD Edwards' {d1}")
        conflict_row(e, doco, "source_wins", d1, d2)
        s = e.sync()
        expect(s["updated"] == 1, f"sync: {s}")
        expect(e.issue(doco)["fields"].get("duedate") == iso(d1),
               f"Jira due date {e.issue(doco)['fields'].get('duedate')}, want JD Edwards' {iso(d1)}")
        # Jira's webhook of that update (d2 -> d1 by the agent) is not a change to write
        back = e.hooks()
        e.feed(back)
        got = e.apply()
        expect(got["applied"] == 0, f"apply of the agent's update: {got}")
        expect(e.calls() == [] and e.row(doco)["DRQJ"] == d1, f"calls {e.calls()}")
    finally:
        e.close()


def newest_wins_case(e):
    """Three work orders changed on both sides, one side clearly (> 2 s) later:
    A and C later in Jira (due date, priority), B later in JD Edwards."""
    a, b, c = e.rows(3)
    da1, da2 = shift(a["DRQJ"], 20), shift(a["DRQJ"], 40)
    db1, db2 = shift(b["DRQJ"], 20), shift(b["DRQJ"], 40)
    pc0 = c["PRTS"]
    pc1, pc2 = [p for p in "12345" if p != pc0][:2]
    e.jde_edit(a["DOCO"], DRQJ=da1)
    e.jde_edit(c["DOCO"], PRTS=pc1)
    e.jira_edit(b["DOCO"], {"duedate": iso(db2)})
    time.sleep(2.5)  # UPMJ/TDAY count whole seconds
    e.jira_edit(a["DOCO"], {"duedate": iso(da2)})
    e.jira_edit(c["DOCO"], {"priority": {"name": PRIORITY_NAMES[pc2]}})
    e.jde_edit(b["DOCO"], DRQJ=db1)
    bodies = e.hooks()
    expect(len(bodies) == 3, f"Jira webhooks: {[hook_items(x) for x in bodies]}")
    e.feed(bodies)
    got = e.apply()
    expect(got["applied"] == 2, f"apply: {got} (want A and C written, B kept)")
    no_failures(got, "apply")
    calls = sorted((x["name"], x["inputs"]["WorkOrder"]) for x in e.calls())
    expect(calls == sorted([("MLC_UpdateWODates", a["DOCO"]), ("MLC_UpdateWOPriority", c["DOCO"])]), f"calls {calls}")
    expect(e.row(a["DOCO"])["DRQJ"] == da2, f"A: DRQJ {e.row(a['DOCO'])['DRQJ']}, want Jira's later {da2}")
    expect(e.row(c["DOCO"])["PRTS"] == pc2, f"C: PRTS {e.row(c['DOCO'])['PRTS']}, want Jira's later {pc2}")
    expect(e.row(b["DOCO"])["DRQJ"] == db1, f"B: DRQJ {e.row(b['DOCO'])['DRQJ']}, want JD Edwards' later {db1}")
    conflict_row(e, a["DOCO"], "newest_wins", da1, da2)
    conflict_row(e, b["DOCO"], "newest_wins", db1, db2)
    crow = e.audit("writeback_conflict", c["DOCO"])
    expect(len(crow) == 1 and "newest_wins" in crow[0], f"conflict audit of C: {crow}")
    e.sync()
    expect(e.issue(b["DOCO"])["fields"].get("duedate") == iso(db1), f"B in Jira after the sync: {e.issue(b['DOCO'])}")


@test
def conflict_newest_wins_takes_the_later_change():
    e = Env(fields=fields_config(duedate_rule="newest_wins"))
    try:
        newest_wins_case(e)
    finally:
        e.close()


@test
def newest_wins_reads_jde_stamps_in_the_servers_time_zone():
    """UPMJ/TDAY are JD Edwards server-local time (userInfo.timeZoneOffset), Jira's
    times are UTC: read as UTC, JD Edwards looks 5 hours older (-05:00) or newer
    (+05:00) than it is, and one of the two sides wins wrongly."""
    for tz in ("-05:00", "+05:00"):
        e = Env(fields=fields_config(duedate_rule="newest_wins"), jde_args=[f"--tz-offset={tz}"])
        try:
            newest_wins_case(e)
        except AssertionError as ex:
            raise AssertionError(f"JD Edwards at UTC{tz}: {ex}") from None
        finally:
            e.close()


# ---------------------------------------------------------------- (e) configuration


@test
def check_config_refuses_an_unknown_rule_and_a_field_it_cannot_reverse():
    work = tempfile.mkdtemp(prefix="mlc-wbf-cfg-")
    try:
        def check(fields):
            path = harness.make_config(work, "http://127.0.0.1:9", "http://127.0.0.1:9",
                                       flow={"writeback": writeback_config(fields)})
            return harness.run_agent(ARGS.agent, path, "check-config", timeout=60)

        r = check(fields_config())
        expect(r.returncode == 0, f"the brief's writeback.fields refused: exit {r.returncode}: {r.stderr[-1500:]}")
        base = f"flows.{FLOW}.writeback.fields"
        bad = fields_config()
        bad["duedate"]["conflict"] = "loudest_wins"
        r = check(bad)
        expect(r.returncode == 2 and f"{base}.duedate.conflict" in r.stderr,
               f"unknown conflict rule: exit {r.returncode}: {r.stderr[-1500:]}")
        for field in ("summary", "description", "environment"):
            # summary: a template object; description: a template string; environment: not
            # mapped. Otherwise complete entries, so nothing else is wrong with them.
            fields = fields_config()
            fields[field] = {"orchestration": "MLC_UpdateWOStatus", "inputs": {"WorkOrder": "{key}", "Status": "{value}"},
                             "verify": {"SRST": "{value}"}, "conflict": "source_wins"}
            r = check(fields)
            expect(r.returncode == 2 and f"{base}.{field}" in r.stderr,
                   f"fields.{field} (the mapping cannot give it back): exit {r.returncode}: {r.stderr[-1500:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- the whole way


@test
def due_date_through_relay_and_tunnel_end_to_end():
    """Jira simulator -> mlc-relay -> tunnel -> mlc-agent run -> MLC_UpdateWODates;
    then a relay sync-now, whose issue update comes back the same way and is not
    written back."""
    if not ARGS.relay:
        raise harness.Skip("needs --relay")
    import relay_harness as rh
    work = tempfile.mkdtemp(prefix="mlc-wbf-relay-")
    jde = jira = relay = proc = logf = None
    log = os.path.join(work, "agent.log")
    try:
        jde = harness.Sim("jde_sim.py", ["--seed", "8"])
        jira = harness.Sim("jira_sim.py", ["--webhook-retry-scale", "0.001"])
        relay = rh.Relay(ARGS.relay, workdir=work)
        secrets = relay.tenant_add("acme")
        relay.start()
        path = harness.make_config(work, jde.url, jira.url, agent={"log_level": "info"},
                                   flow={"writeback": writeback_config(), "schedule": "manual"})
        with open(path) as f:
            cfg = json.load(f)
        cfg["relay"] = {"url": relay.tunnel_url, "tenant": "acme", "key": "${MLC_RELAY_KEY}", "heartbeat": "2s",
                        "watch_every": "1s", "hook_secret": "${MLC_HOOK_SECRET}"}
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        env = harness.agent_env()
        env["MLC_RELAY_KEY"] = secrets["agent_key"]
        env["MLC_HOOK_SECRET"] = secrets["jira_webhook_secret"]
        r = harness.run_agent(ARGS.agent, path, "sync", FLOW, env=env, timeout=300)
        expect(r.returncode == 0, f"first sync: exit {r.returncode}: {r.stderr[-2000:]}")
        con = sqlite3.connect(os.path.join(work, "state.db"))
        ledger = dict(con.execute("SELECT source_key, target_key FROM state_ledger").fetchall())
        con.close()
        doco, key = sorted(ledger.items())[2]
        d0 = jde.ctl(f"/_sim/rows?table=F4801&key={doco}")["DRQJ"]
        d2 = shift(d0, 40)
        jde.ctl("/_sim/orchestrations/clear", {})
        logf = open(log, "a")
        proc = subprocess.Popen([ARGS.agent, "-q", "-c", path, "run"], stdout=logf, stderr=subprocess.STDOUT, env=env)

        def admin_hooks():
            req = urllib.request.Request(jira.url + "/rest/webhooks/1.0/webhook", headers={"Authorization": jira_basic()})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return [h for h in json.loads(resp.read()) if h.get("url", "").endswith("/hooks/jira/acme")]

        wait_for(admin_hooks, 30, "the agent to register its Jira webhook")
        jira.ctl("/_sim/edit", {"key": key, "fields": {"duedate": iso(d2)}})
        wait_for(lambda: jde.ctl(f"/_sim/rows?table=F4801&key={doco}")["DRQJ"] == d2, 30,
                 f"DRQJ {d2} in JD Edwards")

        def inbox(sql):
            con = sqlite3.connect(os.path.join(work, "state.db"), timeout=10)
            try:
                return con.execute(sql).fetchone()[0]
            finally:
                con.close()

        before = inbox("SELECT count(*) FROM state_inbox")
        p = relay.cli("command", "acme", "sync-now", FLOW, "--wait", "60")
        ans = json.loads(p.stdout)
        expect(ans["ok"] is True and ans["flows"][FLOW]["updated"] == 1, f"sync-now: {ans}")
        jira.ctl("/_sim/deliveries/wait", {"timeout_s": 20})
        wait_for(lambda: inbox("SELECT count(*) FROM state_inbox") > before
                 and inbox("SELECT count(*) FROM state_inbox WHERE state IN ('pending', 'inflight')") == 0, 30,
                 "the webhook of the agent's own update to reach the agent and be settled")
        expect(inbox("SELECT count(*) FROM state_inbox WHERE state = 'dead'") == 0, "a delivery went dead")
        calls = [c for c in jde.ctl("/_sim/orchestrations") if c["outcome"] == "ok"]
        expect(len(calls) == 1 and calls[0]["name"] == "MLC_UpdateWODates"
               and calls[0]["inputs"] == {"WorkOrder": doco, "RequestedDate": d2}, f"orchestration calls {calls}")
        issue = jira.ctl(f"/_sim/issues?key={key}")
        expect(issue["fields"].get("duedate") == iso(d2), f"Jira due date {issue['fields'].get('duedate')}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if logf is not None:
            logf.close()
        for part in (relay, jde, jira):
            if part is not None:
                part.stop()
        text = open(log, errors="replace").read() if os.path.exists(log) else ""
        shutil.rmtree(work, ignore_errors=True)
        if "Sanitizer" in text or "runtime error:" in text:
            raise AssertionError("sanitizer report in the agent log:\n" + text[text.find("=="):][:3000])


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--relay", help="mlc-relay binary, for the test that runs the whole way")
    ap.add_argument("--quick", action="store_true", help="accepted for symmetry with test_agent.py")
    ap.add_argument("-k", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    if ARGS.relay:
        ARGS.relay = os.path.abspath(ARGS.relay)
    return harness.run_tests(TESTS, ARGS.k)


if __name__ == "__main__":
    sys.exit(main())
