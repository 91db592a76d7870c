#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of the write-back direction: the real mlc-agent syncs
work orders from the JD Edwards simulator to the Jira simulator, then Jira
status changes (webhook bodies shaped as Jira sends them) go in with
`mlc-agent inbox add` and `mlc-agent inbox apply`; the JDE simulator's
orchestration log (/_sim/orchestrations) and rows (/_sim/rows) and the
agent's state database show what was written back, once.

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402

ARGS = None
TESTS = []

WRITEBACK = {
    "orchestration": "MLC_UpdateWOStatus",
    "inputs": {"WorkOrder": "{key}", "Status": "{code}",
               "Comment": "Jira {issue} is now {status} (audit {audit_id})"},
    "status_map": {"To Do": "10", "In Progress": "40", "Done": "95"},
    "hold": {"statuses": ["Blocked"], "orchestration": "MLC_HoldWorkOrder",
             "inputs": {"WorkOrder": "{key}", "HoldCode": "H1"}},
    "echo_ttl": "10m",
    "agent_account": harness.JIRA_SYNC_ACCOUNT,
}


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Env:
    """Fresh simulators, state and a synced set of work orders for one test."""

    def __init__(self, orders=20, flow=None):
        self.dir = tempfile.mkdtemp(prefix="mlc-wb-")
        self.jde = harness.Sim("jde_sim.py", ["--seed", str(orders)])
        self.jira = harness.Sim("jira_sim.py")
        self.files = 0
        try:
            fl = {"writeback": WRITEBACK}
            fl.update(flow or {})
            self.config = harness.make_config(self.dir, self.jde.url, self.jira.url, flow=fl)
            r = self.agent("sync", "jde_workorders")
            self.ok(r, "first sync")
            self.issues = {lab[len("jdewo-"):]: it for it in self.jira.ctl("/_sim/issues")
                           for lab in it["labels"] if lab.startswith("jdewo-")}
            expect(len(self.issues) == orders, f"{len(self.issues)} issues for {orders} work orders")
            self.jde.ctl("/_sim/orchestrations/clear", {})
        except Exception:
            self.close()
            raise

    def agent(self, *args):
        return harness.run_agent(ARGS.agent, self.config, *args, timeout=300)

    @staticmethod
    def ok(r, what):
        expect(r.returncode == 0, f"{what}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}")

    def row(self, doco):
        return self.jde.ctl(f"/_sim/rows?table=F4801&key={doco}")

    def pick(self, n=1, not_srst=None):
        """n work orders (DOCO strings) whose SRST is not not_srst."""
        rows = [r for r in self.jde.ctl("/_sim/rows?table=F4801") if r["SRST"] != not_srst]
        expect(len(rows) >= n, "not enough work orders")
        return [str(r["DOCO"]) for r in rows[:n]]

    def body_file(self, body):
        self.files += 1
        path = os.path.join(self.dir, f"hook-{self.files}.json")
        with open(path, "w") as f:
            json.dump(body, f)
        return path

    def add(self, body_or_path):
        path = body_or_path if isinstance(body_or_path, str) else self.body_file(body_or_path)
        r = self.agent("inbox", "add", path)
        self.ok(r, "inbox add")
        return r.stdout

    def apply(self, ok=True):
        r = self.agent("inbox", "apply")
        if ok:
            self.ok(r, "inbox apply")
        for line in r.stdout.splitlines():
            if line.startswith("inbox: applied"):
                parts = line[len("inbox: "):].replace(",", "").replace("retry later", "retry").split()
                return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
        raise AssertionError(f"no counts from inbox apply: {r.stdout!r} {r.stderr[-2000:]!r}")

    def calls(self, name=None):
        return self.jde.ctl("/_sim/orchestrations" + (f"?name={name}" if name else ""))

    def db(self, sql, *params):
        con = sqlite3.connect(os.path.join(self.dir, "state.db"))
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def audit_id(self, doco):
        return self.db("SELECT audit_id FROM state_ledger WHERE source_key = ?", doco)[0][0]

    def close(self):
        self.jde.stop()
        self.jira.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def counts(applied=0, ignored=0, echoes=0, failed=0, retry=0, pending=0):
    return {"applied": applied, "ignored": ignored, "echoes": echoes, "failed": failed, "retry": retry,
            "pending": pending}


@test
def mapped_status_lands_in_srst():
    e = Env()
    try:
        wo, wo2 = e.pick(2, not_srst="95")
        issue = e.issues[wo]
        e.add(harness.jira_status_event(issue, "Done"))
        e.add(harness.jira_status_event(e.issues[wo2], "In Progress", "To Do"))
        got = e.apply()
        expect(got == counts(applied=2), f"apply: {got}")
        calls = e.calls()
        expect([c["name"] for c in calls] == ["MLC_UpdateWOStatus"] * 2, f"calls {calls}")
        aid = e.audit_id(wo)
        want = {"WorkOrder": wo, "Status": "95", "Comment": f"Jira {issue['key']} is now Done (audit {aid})"}
        expect(calls[0]["inputs"] == want and calls[0]["outcome"] == "ok", f"inputs {calls[0]} != {want}")
        expect(e.row(wo)["SRST"] == "95", f"SRST of {wo}: {e.row(wo)['SRST']}")
        expect(e.row(wo2)["SRST"] == "40", f"SRST of {wo2}: {e.row(wo2)['SRST']}")
        audit = e.db("SELECT flow, audit_id, target_key, detail FROM state_audit"
                     " WHERE action = 'writeback' AND source_key = ?", wo)
        expect(len(audit) == 1, f"audit rows {audit}")
        flow, a_id, tkey, detail = audit[0]
        expect(flow == "jde_workorders" and a_id == aid and tkey == issue["key"], f"audit {audit}")
        expect("MLC_UpdateWOStatus" in detail and "code 95" in detail, f"audit detail {detail!r}")
        st = e.agent("status")
        e.ok(st, "status")
        expect("inbox: 0 pending, 0 dead" in st.stdout, st.stdout)
        # nothing left to do: a second apply calls nothing
        expect(e.apply() == counts(), "second apply")
        expect(len(e.calls()) == 2, "calls after the second apply")
    finally:
        e.close()


@test
def blocked_puts_the_work_order_on_hold():
    e = Env()
    try:
        wo = e.pick(1)[0]
        before = e.row(wo)
        expect(before["WR10"].strip() == "", f"WR10 before: {before['WR10']!r}")
        e.add(harness.jira_status_event(e.issues[wo], "Blocked", "In Progress"))
        expect(e.apply() == counts(applied=1), "apply")
        calls = e.calls()
        expect(len(calls) == 1 and calls[0]["name"] == "MLC_HoldWorkOrder"
               and calls[0]["inputs"] == {"WorkOrder": wo, "HoldCode": "H1"}, f"calls {calls}")
        after = e.row(wo)
        expect(after["WR10"].strip() == "H1" and after["SRST"] == before["SRST"], f"row {after}")
        audit = e.db("SELECT audit_id, detail FROM state_audit WHERE action = 'writeback' AND source_key = ?", wo)
        expect(len(audit) == 1 and audit[0][0] == e.audit_id(wo) and "MLC_HoldWorkOrder" in audit[0][1],
               f"audit {audit}")
    finally:
        e.close()


@test
def the_same_delivery_twice_calls_the_orchestration_once():
    e = Env()
    try:
        wo = e.pick(1, not_srst="95")[0]
        body = harness.jira_status_event(e.issues[wo], "Done")
        path = e.body_file(body)
        out = e.add(path)
        expect("stored as delivery -1" in out, out)
        expect(e.apply() == counts(applied=1), "first apply")
        out = e.add(path)  # the same delivery again (same content, same id)
        expect("already in the inbox" in out, out)
        expect(e.apply() == counts(), "second apply")
        # the same change under another delivery id (a second webhook): the echo table drops it
        again = dict(body, matchedWebhookIds=[1000])
        e.add(again)
        expect(e.apply() == counts(echoes=1), "apply of the second delivery")
        expect(len(e.calls()) == 1, f"orchestration calls {e.calls()}")
        expect(e.db("SELECT count(*) FROM state_audit WHERE action = 'writeback'")[0][0] == 1, "audit rows")
        expect(e.db("SELECT state FROM state_inbox ORDER BY id") == [("applied",), ("echo",)], "inbox states")
    finally:
        e.close()


@test
def an_event_from_the_agents_own_account_is_dropped():
    e = Env()
    try:
        wo = e.pick(1, not_srst="95")[0]
        srst = e.row(wo)["SRST"]
        e.add(harness.jira_status_event(e.issues[wo], "Done", account=harness.JIRA_SYNC_ACCOUNT))
        expect(e.apply() == counts(echoes=1), "apply")
        expect(e.calls() == [], f"calls {e.calls()}")
        expect(e.row(wo)["SRST"] == srst, "SRST changed")
        rows = e.db("SELECT detail FROM state_audit WHERE action = 'writeback_echo' AND source_key = ?", wo)
        expect(len(rows) == 1 and "own account" in rows[0][0], f"audit {rows}")
    finally:
        e.close()


@test
def an_unmapped_status_is_ignored_with_an_audit_entry():
    e = Env()
    try:
        wo = e.pick(1)[0]
        srst = e.row(wo)["SRST"]
        e.add(harness.jira_status_event(e.issues[wo], "In Review", "In Progress"))
        expect(e.apply() == counts(ignored=1), "apply")
        expect(e.calls() == [], f"calls {e.calls()}")
        expect(e.row(wo)["SRST"] == srst, "SRST changed")
        rows = e.db("SELECT audit_id, target_key, detail FROM state_audit"
                    " WHERE action = 'writeback_ignored' AND source_key = ?", wo)
        expect(len(rows) == 1 and rows[0][0] == e.audit_id(wo) and rows[0][1] == e.issues[wo]["key"]
               and "'In Review' is not in" in rows[0][2] and "status_map" in rows[0][2], f"audit {rows}")
    finally:
        e.close()


@test
def an_unknown_issue_is_ignored_with_an_audit_entry():
    e = Env()
    try:
        stranger = {"key": "MFG-999", "id": "19999", "labels": ["other"], "status": "To Do"}
        e.add(harness.jira_status_event(stranger, "Done"))
        expect(e.apply() == counts(ignored=1), "apply")
        expect(e.calls() == [], f"calls {e.calls()}")
        rows = e.db("SELECT flow, source_key, target_key, detail FROM state_audit WHERE action = 'writeback_ignored'")
        expect(len(rows) == 1 and rows[0][1] is None and rows[0][2] == "MFG-999"
               and rows[0][3].startswith("unknown record MFG-999"), f"audit {rows}")
        # an issue the ledger does not know (moved, say) is still found by its marker label
        wo = e.pick(1, not_srst="95")[0]
        moved = dict(e.issues[wo], key="OPS-7", id="29999")
        e.add(harness.jira_status_event(moved, "Done"))
        expect(e.apply() == counts(applied=1), "apply by marker")
        expect(e.row(wo)["SRST"] == "95" and e.calls()[0]["inputs"]["WorkOrder"] == wo, f"calls {e.calls()}")
    finally:
        e.close()


@test
def an_orchestration_500_is_retried_and_then_succeeds():
    e = Env()
    try:
        wo, wo2 = e.pick(2, not_srst="95")
        # one 500: the connector's own retry gets through within the same apply
        e.jde.faults(error_500=1)
        e.add(harness.jira_status_event(e.issues[wo], "Done"))
        expect(e.apply() == counts(applied=1), "apply through one 500")
        calls = e.calls()
        expect([c["status"] for c in calls] == [500, 200], f"calls {calls}")
        expect(e.row(wo)["SRST"] == "95", "SRST after one 500")
        # JDE keeps failing: the delivery waits for a later try, then succeeds once
        e.jde.ctl("/_sim/orchestrations/clear", {})
        e.jde.faults(error_500=1000)
        e.add(harness.jira_status_event(e.issues[wo2], "Done"))
        t0 = time.monotonic()
        got = e.apply()
        expect(got == counts(retry=1, pending=1), f"apply while JDE fails: {got}")
        failing = e.calls()
        expect(len(failing) >= 2 and all(c["status"] == 500 for c in failing), f"calls {failing}")
        row = e.db("SELECT state, attempts, next_ms, detail FROM state_inbox ORDER BY id DESC LIMIT 1")[0]
        expect(row[0] == "pending" and row[1] == 1 and row[2] > int(time.time() * 1000)
               and "attempt 1 of 5" in row[3] and "HTTP 500" in row[3], f"inbox row {row} ({time.monotonic() - t0:.1f}s)")
        lst = e.agent("inbox", "list")
        expect("1 pending or dead deliveries" in lst.stdout and "attempt 1 of 5" in lst.stdout, lst.stdout)
        e.jde.faults(error_500=None)
        expect(e.apply() == counts(applied=1), "apply after JDE recovered")
        ok = [c for c in e.calls() if c["status"] == 200]
        expect(len(ok) == 1 and ok[0]["inputs"]["WorkOrder"] == wo2, f"calls {e.calls()}")
        expect(e.row(wo2)["SRST"] == "95", "SRST after the retry")
        expect(e.db("SELECT count(*) FROM state_audit WHERE action = 'writeback'")[0][0] == 2, "audit rows")
    finally:
        e.close()


@test
def a_delivery_that_keeps_failing_goes_dead():
    e = Env(flow={"max_attempts": 2})
    try:
        wo = e.pick(1, not_srst="95")[0]
        e.jde.faults(error_500=1000)
        e.add(harness.jira_status_event(e.issues[wo], "Done"))
        expect(e.apply() == counts(retry=1, pending=1), "first apply")
        got = e.apply(ok=False)
        expect(got == counts(failed=1), f"second apply: {got}")
        st = e.agent("status")
        expect("inbox: 0 pending, 1 dead" in st.stdout, st.stdout)
        lst = e.agent("inbox", "list")
        expect("dead" in lst.stdout and "failed on every attempt" in lst.stdout, lst.stdout)
        rows = e.db("SELECT audit_id, detail FROM state_audit WHERE action = 'writeback_failed' AND source_key = ?", wo)
        expect(len(rows) == 1 and rows[0][0] == e.audit_id(wo) and "MLC_UpdateWOStatus" in rows[0][1], f"audit {rows}")
        e.jde.faults(error_500=None)
        expect(e.apply() == counts(), "a dead delivery is not retried")
        expect(all(c["status"] == 500 for c in e.calls()), "no successful call")
    finally:
        e.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--quick", action="store_true", help="accepted for symmetry with test_agent.py")
    ap.add_argument("-k", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    return harness.run_tests(TESTS, ARGS.k)


if __name__ == "__main__":
    sys.exit(main())
