#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of the IFS Cloud write-back (issue 14): Jira status
changes written into IFS Cloud purchase orders (flow ifs_pos: a custom
field, PATCH with If-Match) and work orders (flow ifs_wos: the custom field,
and a bound state action for "In Progress"), by the real mlc-agent against
the IFS Cloud simulator (tests/sims/ifs_sim.py) and the Jira simulator.

How the tests drive it: the agent syncs the IFS records into Jira project
MFG; Jira status changes then reach the agent as Jira's webhook bodies, with
`mlc-agent inbox add` + `mlc-agent inbox apply` (as test_writeback.py does),
and in the first test the whole way: Jira simulator -> mlc-relay -> tunnel
-> `mlc-agent run` (needs --relay). What each test asserts is what the
simulators and the state database hold afterwards: the IFS rows
(/_sim/rows), the IFS write log (/_sim/writes: every PATCH and action, with
its If-Match, applied or refused), the Jira issues and the audit trail.

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import base64
import collections
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402

ARGS = None
TESTS = []
SECRET = "mlc-secret"
CF = "Cf_Jira_Status"  # the simulator's custom field; the configuration names it "Jira_Status"

# Jira status -> the value the custom field gets
STATUS_MAP = {"To Do": "OPEN", "In Progress": "WORKING", "Done": "DONE"}

FLOWS = {
    "po": {"flow": "ifs_pos", "projection": "PurchaseOrderHandling", "entity_set": "PurchaseOrderSet",
           "key": "OrderNo", "prefix": "ifspo-",
           "mapping": {"summary": {"template": "PO {OrderNo}: {VendorName}", "required": True, "max": 255},
                       "description": "Purchase order {OrderNo} ({Objstate}) for project {ProjectId}: "
                                      "{TotalAmount} {CurrencyCode}. Note: {NoteText}",
                       "labels": {"list": ["ifs", "{ProjectId}"]}}},
    "wo": {"flow": "ifs_wos", "projection": "ActiveWorkOrdersHandling", "entity_set": "ActiveSeparateSet",
           "key": "WoNo", "prefix": "ifswo-",  # a number: $metadata says so, no numeric_keys needed
           "mapping": {"summary": {"template": "WO {WoNo}: {ErrDescr}", "required": True, "max": 255},
                       "description": "Work order {WoNo} ({Objstate}), work type {WorkTypeId}.",
                       "labels": {"list": ["ifs", "{WorkTypeId}"]}}},
}


def writeback(kind, **over):
    """The flow's writeback: Jira status -> the custom field (both flows);
    for work orders "In Progress" is instead the state action Release, done
    once the work order is Released."""
    wb = {"custom_field": "Jira_Status", "status_map": dict(STATUS_MAP), "verify": {CF: "{code}"},
          "echo_ttl": "10m", "settle_after": "2s", "agent_account": harness.JIRA_SYNC_ACCOUNT}
    if kind == "wo":
        del wb["status_map"]["In Progress"]
        wb["hold"] = {"statuses": ["In Progress"], "action": "Release", "done_when": {"Objstate": "Released"},
                      "verify": {"Objstate": "Released"}}
    wb.update(over)
    return wb


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
        try:
            last = pred()
        except sqlite3.OperationalError:
            last = None  # the agent has not created its tables yet
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def jira_basic():
    return "Basic " + base64.b64encode(f"sync@example.com:{harness.JIRA_TOKEN}".encode()).decode()


class Env:
    """Fresh simulators and state for one test."""

    def __init__(self, pos=10, wos=10, sim_args=(), jira_args=()):
        self.dir = tempfile.mkdtemp(prefix="mlc-ifswb-")
        self.files = 0
        self.ifs = self.jira = None
        try:
            self.ifs = harness.Sim("ifs_sim.py", ["--pos", str(pos), "--wos", str(wos)] + list(sim_args))
            self.jira = harness.Sim("jira_sim.py", list(jira_args))
        except Exception:
            self.close()
            raise
        self.env = harness.agent_env()
        self.env["MLC_IFS_SECRET"] = SECRET
        self.config = os.path.join(self.dir, "agent.json")
        self.issues = {}

    def configure(self, kinds=("po", "wo"), wb=None, system=None, extra=None):
        """wb: kind -> writeback object (default writeback(kind))."""
        cfg = {
            "agent": {"state_db": os.path.join(self.dir, "state.db"),
                      "key_file": os.path.join(self.dir, "secret.key"), "log_level": "info"},
            "systems": {
                "ifs": {"type": "ifs", "base_url": self.ifs.url, "namespace": "mlc", "client_id": "mlc-client",
                        "client_secret": "${MLC_IFS_SECRET}"},
                "jira": {"type": "jira", "base_url": self.jira.url, "auth": "basic",
                         "email": "sync@example.com", "api_token": "${MLC_JIRA_TOKEN}"},
            },
            "flows": {},
        }
        cfg["systems"]["ifs"].update(system or {})
        for k in kinds:
            fd = FLOWS[k]
            src = {"system": "ifs", "projection": fd["projection"], "entity_set": fd["entity_set"],
                   "key": fd["key"], "changed": "ChangedDate"}
            cfg["flows"][fd["flow"]] = {
                "source": src,
                "target": {"system": "jira", "project": "MFG", "issue_type": "Task", "marker_prefix": fd["prefix"]},
                "mapping": fd["mapping"],
                "writeback": (wb or {}).get(k, writeback(k)),
            }
        cfg.update(extra or {})
        with open(self.config, "w") as f:
            json.dump(cfg, f, indent=2)

    # -- the agent
    def agent(self, *args):
        r = harness.run_agent(ARGS.agent, self.config, *args, env=self.env, timeout=300)
        if "Sanitizer" in r.stderr or "runtime error:" in r.stderr:
            raise AssertionError(f"sanitizer report from mlc-agent {' '.join(args)}:\n"
                                 + r.stderr[r.stderr.find("=="):][:3000])
        return r

    @staticmethod
    def ok(r, what):
        expect(r.returncode == 0, f"{what}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}")

    def sync(self, kind, what="sync"):
        flow = FLOWS[kind]["flow"]
        r = self.agent("sync", flow)
        self.ok(r, f"{what} of {flow}")
        return summary(r, flow)

    def first_sync(self, kinds=("po", "wo")):
        for k in kinds:
            s = self.sync(k, "first sync")
            expect(s["created"] == len(self.rows(k)), f"first sync of {k}: {s}")
        for it in self.jira.ctl("/_sim/issues"):
            for lab in it.get("labels", []):
                for k in kinds:
                    if lab.startswith(FLOWS[k]["prefix"]):
                        self.issues[(k, lab[len(FLOWS[k]["prefix"]):])] = it

    def event(self, kind, key, status, account=harness.JIRA_USER_ACCOUNT):
        """The webhook body of a person moving the record's issue to status."""
        return harness.jira_status_event(self.issues[(kind, str(key))], status, account=account)

    def add(self, *bodies):
        paths = []
        for body in bodies:
            self.files += 1
            path = os.path.join(self.dir, f"hook-{self.files}.json")
            with open(path, "w") as f:
                json.dump(body, f)
            paths.append(path)
        self.ok(self.agent("inbox", "add", *paths), "inbox add")

    def apply(self, want_rc=0):
        r = self.agent("inbox", "apply")
        expect(want_rc is None or r.returncode == want_rc, f"inbox apply: exit {r.returncode}, expected {want_rc}\n"
                                        f"stdout: {r.stdout}\nstderr: {r.stderr[-3000:]}")
        for line in r.stdout.splitlines():
            if line.startswith("inbox: applied"):
                parts = line[len("inbox: "):].replace(",", "").replace("retry later", "retry").split()
                return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}, r
        raise AssertionError(f"no counts from inbox apply: {r.stdout!r} {r.stderr[-2000:]!r}")

    def db(self, sql, *params):
        con = sqlite3.connect(os.path.join(self.dir, "state.db"), timeout=10)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def audit_id(self, key):
        return self.db("SELECT audit_id FROM state_ledger WHERE source_key = ?", str(key))[0][0]

    # -- IFS
    def rows(self, kind):
        return self.ifs.ctl(f"/_sim/rows?kind={kind}")

    def row(self, kind, key):
        return self.ifs.ctl(f"/_sim/rows?kind={kind}&key={key}")

    def writes(self, kind=None, key=None, by=None, applied=None):
        q = [f"{n}={v}" for n, v in (("kind", kind), ("key", key), ("by", by),
                                      ("applied", None if applied is None else str(applied).lower()))
             if v is not None]
        return self.ifs.ctl("/_sim/writes" + ("?" + "&".join(q) if q else ""))

    def agent_writes(self, kind=None, key=None):
        """The API writes IFS applied (the agent is the only API client)."""
        return self.writes(kind, key, by="api", applied=True)

    def pick(self, kind, n, state=None):
        rows = [r for r in self.rows(kind) if state is None or r["Objstate"] == state]
        expect(len(rows) >= n, f"only {len(rows)} {kind} rows in state {state}, {n} wanted")
        return [str(r[FLOWS[kind]["key"]]) for r in rows[:n]]

    def close(self):
        for part in (self.ifs, self.jira):
            if part is not None:
                part.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def summary(r, flow):
    for line in r.stdout.splitlines():
        if line.startswith(flow + ": created"):
            parts = line.split(":", 1)[1].replace(",", "").split()
            return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}
    raise AssertionError(f"no summary line for {flow} in {r.stdout!r}\nstderr: {r.stderr[-2000:]}")


def counts(**kw):
    out = {"applied": 0, "ignored": 0, "echoes": 0, "failed": 0, "retry": 0, "pending": 0}
    out.update(kw)
    return out


def one_patch_per_key(e, kind, want):
    """want: key -> value: IFS applied exactly one API write per key, and
    the custom field holds the value; no API write on any other record."""
    per = collections.Counter(w["key"] for w in e.agent_writes(kind))
    twice = {k: n for k, n in per.items() if n > 1}
    expect(not twice, f"{kind}: {len(twice)} records written more than once by the agent, e.g. "
                      f"{sorted(twice.items())[:5]}")
    missing = sorted(set(want) - set(per))
    expect(not missing, f"{kind}: {len(missing)} changes never written, e.g. {missing[:5]}")
    extra = sorted(set(per) - set(want))
    expect(not extra, f"{kind}: written without a change: {extra[:5]}")
    by_key = {str(r[FLOWS[kind]["key"]]): r for r in e.rows(kind)}
    wrong = [(k, by_key[k].get(CF), v) for k, v in want.items() if by_key[k].get(CF) != v]
    expect(not wrong, f"{kind}: {len(wrong)} records hold the wrong {CF} (key, has, wanted), e.g. {wrong[:5]}")


# ---------------------------------------------------------------- 1


@test
def status_change_through_relay_lands_in_the_custom_field_once():
    """Jira simulator -> mlc-relay -> tunnel -> mlc-agent run -> one PATCH
    with If-Match on the purchase order's custom field; the audit row carries
    the record's audit id; the agent's own IFS write, read by the next sync
    (sync-now through the relay), costs no Jira write and nothing is written
    back again."""
    if not ARGS.relay:
        raise harness.Skip("needs --relay")
    import relay_harness as rh
    e = Env(pos=8, wos=0, jira_args=["--webhook-retry-scale", "0.001"])
    relay = proc = logf = failure = None
    log = os.path.join(e.dir, "agent.log")
    try:
        relay = rh.Relay(ARGS.relay, workdir=e.dir)
        secrets = relay.tenant_add("acme")
        relay.start()
        e.configure(kinds=("po",), extra={
            # no status page: port 8089 may be another agent's on a shared machine
            "agent": {"state_db": os.path.join(e.dir, "state.db"), "key_file": os.path.join(e.dir, "secret.key"),
                      "log_level": "info", "status_listen": "off"},
            "relay": {"url": relay.tunnel_url, "tenant": "acme", "key": "${MLC_RELAY_KEY}", "heartbeat": "2s",
                      "watch_every": "1s", "hook_secret": "${MLC_HOOK_SECRET}"}})
        with open(e.config) as f:
            cfg = json.load(f)
        cfg["flows"]["ifs_pos"]["schedule"] = "manual"
        with open(e.config, "w") as f:
            json.dump(cfg, f, indent=2)
        e.env["MLC_RELAY_KEY"] = secrets["agent_key"]
        e.env["MLC_HOOK_SECRET"] = secrets["jira_webhook_secret"]
        e.first_sync(kinds=("po",))
        po = e.pick("po", 1)[0]
        issue = e.issues[("po", po)]
        before = e.row("po", po)
        expect(before.get(CF) is None, f"{CF} of {po} before: {before.get(CF)!r}")
        logf = open(log, "a")
        proc = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "run"], stdout=logf, stderr=subprocess.STDOUT,
                                env=e.env)

        def admin_hooks():
            req = urllib.request.Request(e.jira.url + "/rest/webhooks/1.0/webhook",
                                         headers={"Authorization": jira_basic()})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return [h for h in json.loads(resp.read()) if h.get("url", "").endswith("/hooks/jira/acme")]

        wait_for(admin_hooks, 30, "the agent to register its Jira webhook")
        e.jira.ctl("/_sim/transition", {"key": issue["key"], "status": "Done"})
        wait_for(lambda: e.row("po", po).get(CF) == "DONE", 30, f"{CF} = DONE on purchase order {po}")
        writes = e.agent_writes("po")
        expect(len(writes) == 1 and writes[0]["key"] == po and writes[0]["op"] == "PATCH"
               and writes[0]["changes"] == {CF: [None, "DONE"]}, f"IFS API writes: {writes}")
        expect(writes[0]["if_match"] == before["@odata.etag"],
               f"If-Match {writes[0]['if_match']!r}, the record's ETag was {before['@odata.etag']!r}")
        expect(e.writes(by="api", applied=False) == [], f"refused writes: {e.writes(by='api', applied=False)}")
        aid = e.audit_id(po)
        audit = wait_for(lambda: e.db("SELECT flow, audit_id, target_key, detail FROM state_audit"
                                      " WHERE action = 'writeback' AND source_key = ?", po), 10, "the audit row")
        expect(len(audit) == 1 and audit[0][:3] == ("ifs_pos", aid, issue["key"])
               and "custom field Jira_Status" in audit[0][3] and "DONE" in audit[0][3], f"audit {audit}")
        # the next sync reads the agent's own write (ChangedDate moved): nothing to tell Jira
        e.jira.ctl("/_sim/reset_stats", {})
        p = relay.cli("command", "acme", "sync-now", "ifs_pos", "--wait", "60")
        ans = json.loads(p.stdout)
        expect(ans["ok"] is True and ans["flows"]["ifs_pos"]["updated"] == 0
               and ans["flows"]["ifs_pos"]["created"] == 0, f"sync-now after the write-back: {ans}")
        expect(e.jira.stats()["writes"] == 0, f"Jira writes after the agent's own IFS write: {e.jira.stats()}")
        e.jira.ctl("/_sim/deliveries/wait", {"timeout_s": 20})
        wait_for(lambda: e.db("SELECT count(*) FROM state_inbox WHERE state IN ('pending', 'inflight')")[0][0] == 0,
                 20, "the inbox to be settled")
        expect(len(e.agent_writes()) == 1, f"IFS API writes at the end: {e.agent_writes()}")
        expect(e.db("SELECT count(*) FROM state_inbox WHERE state = 'dead'")[0][0] == 0, "a delivery went dead")
    except Exception as ex:
        failure = ex
        raise
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
        text = open(log, errors="replace").read() if os.path.exists(log) else ""
        if relay is not None:
            relay.stop()
        e.close()
        if "Sanitizer" in text or "runtime error:" in text:
            raise AssertionError((f"{failure}\n" if failure else "") + "sanitizer report in the agent log:\n"
                                 + text[text.find("=="):][:3000])
        if failure is not None and text:
            print("#   agent log (end):\n" + "\n".join("#     " + ln for ln in text.splitlines()[-15:]), flush=True)


@test
def custom_field_and_state_action_from_the_inbox():
    """Both flows: a purchase order's and a work order's custom field, and a
    work order released by its state action; each once, with If-Match, each
    audited with the record's audit id; a second delivery of the same change
    and the next syncs write nothing."""
    e = Env(pos=6, wos=12)
    try:
        e.configure()
        e.first_sync()
        po = e.pick("po", 1)[0]
        wo_done = e.pick("wo", 1, state="Started")[0]
        wo_rel = e.pick("wo", 1, state="Prepared")[0]
        etags = {k: e.row(kind, k)["@odata.etag"] for kind, k in (("po", po), ("wo", wo_done), ("wo", wo_rel))}
        bodies = [e.event("po", po, "In Progress"), e.event("wo", wo_done, "Done"),
                  e.event("wo", wo_rel, "In Progress")]
        e.add(*bodies)
        got, _ = e.apply()
        expect(got == counts(applied=3), f"apply: {got}")
        w = {(x["kind"], x["key"]): x for x in e.agent_writes()}
        expect(len(e.agent_writes()) == 3, f"IFS API writes: {e.agent_writes()}")
        expect(w[("po", po)]["op"] == "PATCH" and w[("po", po)]["changes"] == {CF: [None, "WORKING"]}, f"{w}")
        expect(w[("wo", wo_done)]["op"] == "PATCH" and w[("wo", wo_done)]["changes"] == {CF: [None, "DONE"]}, f"{w}")
        expect(w[("wo", wo_rel)]["op"] == "ActiveSeparate_Release"
               and w[("wo", wo_rel)]["changes"] == {"Objstate": ["Prepared", "Released"]}, f"{w}")
        for (kind, key), x in w.items():
            expect(x["if_match"] == etags[key], f"{kind} {key}: If-Match {x['if_match']!r}, ETag {etags[key]!r}")
        expect(e.row("wo", wo_rel)["Objstate"] == "Released", "work order not released")
        for kind, key, what in (("po", po, "custom field Jira_Status"), ("wo", wo_done, "custom field Jira_Status"),
                                ("wo", wo_rel, "state action Release")):
            rows = e.db("SELECT flow, audit_id, detail FROM state_audit WHERE action = 'writeback' AND source_key = ?",
                        key)
            expect(len(rows) == 1 and rows[0][0] == FLOWS[kind]["flow"] and rows[0][1] == e.audit_id(key)
                   and what in rows[0][2], f"audit of {kind} {key}: {rows}")
        # the same changes under other deliveries: echoes, nothing written
        e.add(*[dict(b, matchedWebhookIds=[4242]) for b in bodies])
        got, _ = e.apply()
        expect(got == counts(echoes=3), f"second delivery: {got}")
        # the agent's own writes come back on the next syncs: no Jira write
        e.jira.ctl("/_sim/reset_stats", {})
        s = e.sync("po", "sync after the write-back")
        expect(s["created"] == 0 and s["updated"] == 0, f"po after the write-back: {s}")
        expect(e.jira.stats()["writes"] == 0, f"Jira writes after the agent's own PATCH: {e.jira.stats()}")
        # the released work order's description names its state (Released now): that one
        # update is a real change; the custom field written on the other is not
        s = e.sync("wo", "sync after the write-back")
        expect(s["created"] == 0 and s["updated"] == 1, f"wo after the write-back: {s}")
        iss = e.jira.ctl(f"/_sim/issues?key={e.issues[('wo', wo_rel)]['key']}")
        expect("(Released)" in json.dumps(iss["fields"].get("description")), f"issue of {wo_rel}: {iss}")
        expect(len(e.agent_writes()) == 3, f"IFS API writes at the end: {e.agent_writes()}")
    finally:
        e.close()


# ---------------------------------------------------------------- 2


@test
def edited_between_read_and_patch_412_reread_applied_once():
    """A person edits the purchase order in IFS between the agent's read and
    its PATCH: 412, nothing applied; the agent reads again and PATCHes with
    the new ETag: the custom field is right, the person's edit stays, one
    PATCH took effect. When the person's edit already set the value, the
    re-read finds it and the agent writes nothing. When the person set the
    custom field to another value, nothing is written in that attempt and
    the delivery waits, saying so; with writeback.conflict target_wins (the
    default) the next attempt writes Jira's status over it, once."""
    e = Env(pos=6, wos=0)
    try:
        # settle_after 0: the conflicting attempt's row is read back at once by the next apply
        e.configure(kinds=("po",), wb={"po": writeback("po", settle_after="0s")})
        e.first_sync(kinds=("po",))
        po, po2, po3 = e.pick("po", 3)
        e.ifs.faults(edit_before_write=1)
        e.add(e.event("po", po, "Done"))
        got, r = e.apply()
        expect(got == counts(applied=1), f"apply: {got}\n{r.stderr[-2000:]}")
        log = e.writes("po", po)
        expect([(x["by"], x["op"], x["applied"], x["status"]) for x in log] ==
               [("KCHEN", "sim_edit_before_write", True, None), ("api", "PATCH", False, 412),
                ("api", "PATCH", True, 200)], f"write log of {po}: {log}")
        expect(log[1]["if_match"] == log[0]["etag_before"] and log[2]["if_match"] == log[0]["etag_after"],
               f"If-Match of the two PATCHes: {log}")
        row = e.row("po", po)
        expect(row[CF] == "DONE" and row["NoteText"].endswith("(edited by KCHEN)"), f"row {row}")
        expect("412" in r.stderr, f"the 412 is not in the agent's log: {r.stderr[-1500:]}")
        # the person set the very value: re-read, nothing to write
        e.ifs.faults(edit_before_write=1, edit_before_write_set={CF: "DONE"})
        e.add(e.event("po", po2, "Done"))
        got, r = e.apply()
        expect(got == counts(applied=1), f"apply: {got}\n{r.stderr[-2000:]}")
        log = e.writes("po", po2)
        expect([(x["by"], x["op"], x["applied"]) for x in log] ==
               [("KCHEN", "sim_edit_before_write", True), ("api", "PATCH", False)], f"write log of {po2}: {log}")
        expect(e.row("po", po2)[CF] == "DONE", f"row {e.row('po', po2)}")
        # the person set another value: this attempt writes nothing and says why
        e.ifs.faults(edit_before_write=1, edit_before_write_set={CF: "ON HOLD"})
        e.add(e.event("po", po3, "Done"))
        got, r = e.apply()
        expect(got == counts(retry=1, pending=1), f"apply: {got}\n{r.stderr[-2000:]}")
        expect(e.row("po", po3)[CF] == "ON HOLD" and e.agent_writes("po", po3) == [],
               f"{po3} after the conflicting edit: {e.writes('po', po3)}")
        lst = e.agent("inbox", "list").stdout
        expect("changed in IFS to 'ON HOLD' while the agent was writing 'DONE'" in lst
               and "writeback.conflict" in lst, f"inbox list: {lst}")
        got, r = e.apply()
        expect(got == counts(applied=1), f"apply after the conflict: {got}\n{r.stderr[-2000:]}")
        last = e.agent_writes("po", po3)
        expect(len(last) == 1 and last[0]["changes"] == {CF: ["ON HOLD", "DONE"]}, f"{po3}: {e.writes('po', po3)}")
        one_patch_per_key(e, "po", {po: "DONE", po3: "DONE"})
    finally:
        e.close()


@test
def conflict_rule_decides_whether_a_persons_status_stands():
    """writeback.conflict: with source_wins a person's value set in IFS
    between the agent's read and its PATCH stays (audited as a conflict,
    nothing written); with newest_wins the later change wins (the Jira
    change here is older than the person's edit); target_wins (the default)
    is the test above."""
    for rule in ("source_wins", "newest_wins"):
        e = Env(pos=3, wos=0)
        try:
            e.configure(kinds=("po",), wb={"po": writeback("po", settle_after="0s", conflict=rule)})
            e.first_sync(kinds=("po",))
            po = e.pick("po", 1)[0]
            ev = e.event("po", po, "Done")
            time.sleep(1.1)  # the person's edit (at the PATCH) is later than the Jira change
            e.ifs.faults(edit_before_write=1, edit_before_write_set={CF: "ON HOLD"})
            e.add(ev)
            got, r = e.apply()
            expect(got == counts(ignored=1), f"{rule}: apply: {got}\n{r.stderr[-2000:]}")
            expect(e.row("po", po)[CF] == "ON HOLD" and e.agent_writes("po", po) == [],
                   f"{rule}: {po} after the person's edit: {e.writes('po', po)}")
            aud = e.db("SELECT detail FROM state_audit WHERE action = 'writeback_conflict'")
            expect(len(aud) == 1 and rule in aud[0][0] and "ON HOLD" in aud[0][0], f"{rule}: audit {aud}")
            got, r = e.apply()
            expect(e.agent_writes("po", po) == [] and e.row("po", po)[CF] == "ON HOLD",
                   f"{rule}: a later apply wrote: {e.writes('po', po)}")
        finally:
            e.close()
    e = Env(pos=1, wos=0)
    try:
        e.configure(kinds=("po",), wb={"po": writeback("po", conflict="jira_wins")})
        r = e.agent("check-config")
        expect(r.returncode != 0 and "writeback.conflict: 'jira_wins' is not a rule" in r.stderr,
               f"bad rule: {r.returncode} {r.stderr[-500:]}")
    finally:
        e.close()


# ---------------------------------------------------------------- 3


@test
def rate_limit_and_503_storms_are_waited_out_each_change_once():
    """429s with Retry-After (seconds, then an HTTP date) and 503s with
    Retry-After while a batch of changes is written back: every change lands
    once, and no request came before its Retry-After."""
    n = 12 if not ARGS.quick else 6
    e = Env(pos=n, wos=0)
    try:
        e.configure(kinds=("po",))
        e.first_sync(kinds=("po",))
        keys = e.pick("po", n)
        want = {}
        bodies = []
        for i, k in enumerate(keys):
            st = ("In Progress", "Done")[i % 2]
            want[k] = STATUS_MAP[st]
            bodies.append(e.event("po", k, st))
        e.ifs.ctl("/_sim/reset_stats", {})
        third = n // 3
        phases = [("429, Retry-After in seconds", {"rate_429": 4, "retry_after": 1}, "429", 4),
                  ("429, Retry-After as an HTTP date", {"rate_429": 3, "retry_after_date": True}, "429", 3),
                  ("503 with Retry-After", {"fail_5xx_ra": 4, "retry_after_date": None}, "503", 4)]
        outs = []
        for i, (what, faults, status, times) in enumerate(phases):
            before = e.ifs.stats()["status_counts"].get(status, 0)
            e.add(*bodies[i * third:(i + 1) * third if i < 2 else n])
            e.ifs.faults(**faults)
            got, r = e.apply(want_rc=None)
            outs.append(f"{what}: {got}\n{r.stderr[-600:]}")
            expect(got["failed"] == 0, f"{what}: {got}\n{r.stderr[-1500:]}")
            answered = e.ifs.stats()["status_counts"].get(status, 0) - before
            expect(answered == times, f"{what}: IFS answered {answered} times {status}, {times} expected")
            e.ifs.faults(rate_429=None, fail_5xx_ra=None)
        for _ in range(5):
            if e.db("SELECT count(*) FROM state_inbox WHERE state IN ('pending', 'inflight')")[0][0] == 0:
                break
            got, r = e.apply(want_rc=None)
            outs.append(f"again: {got}")
        st = e.ifs.stats()
        expect(st["retry_after_violations"] == 0, f"requests before Retry-After ran out: {st}")
        one_patch_per_key(e, "po", want)
        left = e.db("SELECT state, detail FROM state_inbox WHERE state NOT IN ('applied')")
        expect(not left, f"inbox rows not applied: {left}\n" + "\n".join(outs))
        print(f"#   IFS answered {st['status_counts']}", flush=True)
    finally:
        e.close()


# ---------------------------------------------------------------- 4


@test
def kill_9_during_write_back_applies_each_change_once():
    """A batch of Jira status changes; `inbox apply` killed with SIGKILL 20
    times (6 with --quick) at random moments while IFS takes 300 ms per
    write (fault slow_write_ms: the write lands even when its sender is
    gone); then a clean run after settle_after. Every change is in IFS, none
    was PATCHed twice. Twice over: with If-Match on the ETag (a repeat after
    a kill meets 412 if the first PATCH landed meanwhile) and with
    if_match "any" (If-Match: *), where only the core's read-back of rows
    left in flight, after settle_after, stands between a kill and a second
    PATCH."""
    n = 60 if not ARGS.quick else 24
    kills = 20 if not ARGS.quick else 6
    seed = int(os.environ.get("MLC_TEST_SEED", "14"))
    for mode in ("etag", "any"):
        rng = random.Random(seed)
        e = Env(pos=n, wos=0)
        try:
            e.configure(kinds=("po",), wb={"po": writeback("po", if_match=mode)})
            e.first_sync(kinds=("po",))
            want, bodies = {}, []
            for k in e.pick("po", n):
                st = rng.choice(list(STATUS_MAP))
                want[k] = STATUS_MAP[st]
                bodies.append(e.event("po", k, st))
            e.add(*bodies)
            # writes take a while inside IFS: a PATCH still runs there when its agent is killed
            e.ifs.faults(slow_write_ms=300)
            killed = 0
            errlog = os.path.join(e.dir, "killed-runs.log")
            with open(errlog, "w") as errf:
                for _ in range(kills):
                    p = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "inbox", "apply"],
                                         stdout=subprocess.DEVNULL, stderr=errf, env=e.env)
                    time.sleep(rng.uniform(0.15, 1.0))
                    if p.poll() is None:
                        p.send_signal(signal.SIGKILL)
                        killed += 1
                    p.wait()
            with open(errlog, errors="replace") as f:
                text = f.read()
            expect("Sanitizer" not in text and "runtime error:" not in text,
                   "sanitizer report from a killed run:\n" + text[text.find("=="):][:3000])
            e.ifs.faults(slow_write_ms=None)
            inflight = e.db("SELECT count(*) FROM state_inbox WHERE state = 'inflight'")[0][0]
            time.sleep(2.5)  # settle_after (2s): a PATCH that died with its agent has ended in IFS
            got, r = e.apply()
            expect(killed >= kills // 2, f"if_match {mode}: only {killed} of {kills} applies were still running "
                                         "when killed")
            try:
                one_patch_per_key(e, "po", want)
            except AssertionError as ex:
                raise AssertionError(f"if_match {mode}: {ex}") from None
            left = e.db("SELECT state, count(*) FROM state_inbox GROUP BY state")
            expect(left == [("applied", n)], f"if_match {mode}: inbox after the clean run: {left}; last apply {got}")
            audit = e.db("SELECT count(*) FROM state_audit WHERE action IN ('writeback', 'writeback_settled')")[0][0]
            expect(audit == n, f"if_match {mode}: {audit} write-back audit rows for {n} changes")
            settled = e.db("SELECT count(*) FROM state_audit WHERE action = 'writeback_settled'")[0][0]
            stale = len([w for w in e.writes("po", by="api", applied=False) if w["status"] == 412])
            print(f"#   if_match {mode}, seed {seed}: {killed} kills, {inflight} rows in flight after the last kill, "
                  f"{settled} settled by reading back, {stale} PATCHes refused with 412", flush=True)
        finally:
            e.close()


@test
def killed_during_a_repeat_call_waits_settle_after_again():
    """A row left in flight by an earlier run is read back (the value is not
    there) and called again; the agent is killed while that second PATCH
    still runs in IFS. The next run must wait settle_after from the second
    call, not from the first, before reading back: otherwise it reads too
    early and PATCHes a third time. If-Match: * here, so no ETag stops a
    repeat: only the waiting does."""
    e = Env(pos=4, wos=0)
    try:
        e.configure(kinds=("po",), wb={"po": writeback("po", if_match="any", settle_after="3s")})
        e.first_sync(kinds=("po",))
        po = e.pick("po", 1)[0]
        e.add(e.event("po", po, "Done"))
        # as if a run long ago had called IFS and died: in flight, sent at the epoch
        con = sqlite3.connect(os.path.join(e.dir, "state.db"))
        con.execute("UPDATE state_inbox SET state = 'inflight', sent_ms = 1")
        con.commit()
        con.close()
        e.ifs.faults(slow_write_ms=4000)
        route = "PurchaseOrderHandling/PurchaseOrderSet(key) PATCH"
        p = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "inbox", "apply"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e.env)
        try:
            wait_for(lambda: e.ifs.stats()["requests"].get(route, 0) == 1, 30, "the repeat PATCH to reach IFS")
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        # the repeat PATCH is still running inside IFS: the next run must not read back yet
        got, r = e.apply()
        expect(got["applied"] == 0 and e.ifs.stats()["requests"].get(route, 0) == 1,
               f"the run after the kill did not wait for the PATCH in flight: {got}, IFS PATCHes "
               f"{e.ifs.stats()['requests'].get(route, 0)}\n{r.stdout}{r.stderr[-1500:]}")
        wait_for(lambda: e.agent_writes("po", po), 30, "the killed run's PATCH to land")
        e.ifs.faults(slow_write_ms=None)
        time.sleep(3.2)  # settle_after from the repeat call
        got, r = e.apply()
        expect(got == counts(applied=1), f"apply after settle_after: {got}\n{r.stderr[-1500:]}")
        expect(e.db("SELECT action FROM state_audit WHERE action LIKE 'writeback%'") == [("writeback_settled",)],
               f"audit: {e.db('SELECT action, detail FROM state_audit')}")
        one_patch_per_key(e, "po", {po: "DONE"})
    finally:
        e.close()


# ---------------------------------------------------------------- 5


@test
def unknown_custom_field_and_action_name_the_setting():
    """A custom field that is not in $metadata, a state action the entity
    does not have: the delivery goes dead with a message naming
    flows.<flow>.writeback.custom_field / .hold.action; nothing written."""
    e = Env(pos=4, wos=6)
    try:
        wb_po = writeback("po", custom_field="JiraState")
        wb_wo = writeback("wo")
        wb_wo["hold"]["action"] = "Begin"
        e.configure(wb={"po": wb_po, "wo": wb_wo})
        e.first_sync()
        po = e.pick("po", 1)[0]
        wo = e.pick("wo", 1, state="Prepared")[0]
        e.add(e.event("po", po, "Done"), e.event("wo", wo, "In Progress"))
        got, r = e.apply(want_rc=None)
        expect(got["failed"] == 2 and got["applied"] == 0, f"apply: {got}")
        expect(e.writes(by="api") == [], f"IFS API writes: {e.writes(by='api')}")
        rows = dict(e.db("SELECT flow, detail FROM state_audit WHERE action = 'writeback_failed'"))
        expect(set(rows) == {"ifs_pos", "ifs_wos"}, f"failed audit rows: {rows}")
        expect("flows.ifs_pos.writeback.custom_field" in rows["ifs_pos"] and "JiraState" in rows["ifs_pos"]
               and CF in rows["ifs_pos"], f"ifs_pos: {rows['ifs_pos']}")
        expect("flows.ifs_wos.writeback.hold.action" in rows["ifs_wos"] and "Begin" in rows["ifs_wos"],
               f"ifs_wos: {rows['ifs_wos']}")
        lst = e.agent("inbox", "list")
        expect("flows.ifs_pos.writeback.custom_field" in lst.stdout, f"inbox list: {lst.stdout}")
        for flow, msg in rows.items():
            print(f"#   {flow}: {msg[:220]}", flush=True)
    finally:
        e.close()


@test
def if_match_lost_on_the_way_is_reported_not_retried():
    """A proxy between the agent and IFS drops the If-Match header: IFS
    answers ODP_MISSING_PRECONDITION. The delivery goes dead with a message
    that says the agent did send it (and what), nothing is written, and the
    agent never falls back to a write without the check."""
    e = Env(pos=4, wos=0)
    try:
        e.configure(kinds=("po",))
        e.first_sync(kinds=("po",))
        po = e.pick("po", 1)[0]
        e.ifs.faults(drop_if_match=1)
        e.add(e.event("po", po, "Done"))
        got, r = e.apply(want_rc=1)
        expect(got == counts(failed=1), f"apply: {got}\n{r.stderr[-1500:]}")
        refused = e.writes("po", po, by="api")
        expect(len(refused) == 1 and refused[0]["code"] == "ODP_MISSING_PRECONDITION" and not refused[0]["applied"],
               f"IFS write log of {po}: {refused}")
        lst = e.agent("inbox", "list").stdout
        expect("precondition is missing although the agent sent 'If-Match: W/" in lst and "proxy" in lst,
               f"inbox list: {lst}")
        expect(e.row("po", po).get(CF) is None, f"{po}: {e.row('po', po)}")
    finally:
        e.close()


# ---------------------------------------------------------------- 6


@test
def state_action_mi_modified_retried_and_locked_reported():
    """The work order's Release action under If-Match: a MI_MODIFIED_ERROR is
    retried at once and the action taken once; a locked work order (423) is
    not released: the delivery waits, the reason (locked) is shown in
    `inbox list`, and once the lock goes the next apply releases it once. A
    work order already past Released is refused by IFS: a dead letter that
    quotes IFS's reason, nothing written."""
    e = Env(pos=0, wos=10)
    try:
        # the row of the refused call stays in flight; it is read back (not waited for) next time
        e.configure(kinds=("wo",), wb={"wo": writeback("wo", settle_after="0s")})
        e.first_sync(kinds=("wo",))
        wo, wo2 = e.pick("wo", 2, state="Prepared")
        etag = e.row("wo", wo)["@odata.etag"]
        e.ifs.faults(mi_modified_writes=1)
        e.add(e.event("wo", wo, "In Progress"))
        got, r = e.apply()
        expect(got == counts(applied=1), f"apply with MI_MODIFIED_ERROR: {got}\n{r.stderr[-1500:]}")
        log = [(x["op"], x["applied"], x["if_match"]) for x in e.writes("wo", wo, by="api")]
        expect(log == [("ActiveSeparate_Release", True, etag)], f"IFS write log of {wo}: {log} (ETag {etag})")
        st = e.ifs.stats()["status_counts"]
        expect(st.get("500", 0) == 1, f"no MI_MODIFIED_ERROR was answered: {st}")
        expect(e.row("wo", wo)["Objstate"] == "Released", "not released")
        # locked
        e.ifs.ctl("/_sim/lock", {"kind": "wo", "key": wo2})
        e.add(e.event("wo", wo2, "In Progress"))
        got, r = e.apply()
        expect(got == counts(retry=1, pending=1), f"apply of a locked work order: {got}\n{r.stderr[-1500:]}")
        expect(e.row("wo", wo2)["Objstate"] == "Prepared", "a locked work order changed")
        refused = e.writes("wo", wo2, by="api", applied=False)
        expect(refused and all(x["status"] == 423 for x in refused) and e.agent_writes("wo", wo2) == [],
               f"IFS write log of {wo2}: {e.writes('wo', wo2)}")
        lst = e.agent("inbox", "list")
        expect("1 pending or dead deliveries" in lst.stdout and "locked" in lst.stdout and "423" in lst.stdout,
               f"inbox list: {lst.stdout} {lst.stderr}\ninbox: {e.db('SELECT seq, state, attempts, detail FROM state_inbox')}")
        expect("locked in IFS" in r.stderr, f"the apply's warning does not say why: {r.stderr[-1500:]}")
        st = e.agent("status")
        expect("inbox: 1 pending, 0 dead" in st.stdout, f"status: {st.stdout}")
        print("#   " + next((ln for ln in lst.stdout.splitlines() if "locked" in ln), "")[:240], flush=True)
        e.ifs.ctl("/_sim/lock", {"kind": "wo", "key": wo2, "locked": False})
        got, r = e.apply()
        expect(got["applied"] == 1 and got["failed"] == 0, f"apply after the lock went: {got}\n{r.stderr[-1500:]}")
        expect(e.row("wo", wo2)["Objstate"] == "Released", "not released after the lock went")
        expect(len(e.agent_writes("wo", wo2)) == 1, f"IFS write log of {wo2}: {e.writes('wo', wo2)}")
        # a work order past Released (Started): IFS refuses the event; a dead letter that quotes IFS
        wo3 = e.pick("wo", 1, state="Started")[0]
        e.add(e.event("wo", wo3, "In Progress"))
        got, r = e.apply(want_rc=1)
        expect(got == counts(failed=1), f"apply of Release on a started work order: {got}\n{r.stderr[-1500:]}")
        lst = e.agent("inbox", "list").stdout
        expect("dead" in lst and "Release is not allowed in state Started" in lst, f"inbox list: {lst}")
        expect(e.agent_writes("wo", wo3) == [] and e.row("wo", wo3)["Objstate"] == "Started",
               f"IFS write log of {wo3}: {e.writes('wo', wo3)}")
    finally:
        e.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--relay", help="mlc-relay binary, for the test that runs the whole way")
    ap.add_argument("-k", default=None, help="run only tests whose name contains this")
    ap.add_argument("--quick", action="store_true", help="fewer changes and kills")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    if ARGS.relay:
        ARGS.relay = os.path.abspath(ARGS.relay)
    return harness.run_tests(TESTS, ARGS.k)


if __name__ == "__main__":
    sys.exit(main())
