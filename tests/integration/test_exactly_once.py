#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Exactly once in every corner (issue 9): the real mlc-agent against the JD
Edwards and Jira simulators, treated the way the world treats it: killed
with SIGKILL in the middle of write-back, its state database lost, a Jira
site where other people create issues while the search index lags, Jira
answers that were lost after the write happened, people's own labels, and
assignees the mapping does not know.

Each test asserts what the simulators and the state database hold afterwards.
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
FLOW = "jde_workorders"
STATUS_MAP = {"To Do": "10", "In Progress": "40", "Done": "95"}
WRITEBACK = {
    "orchestration": "MLC_UpdateWOStatus",
    "inputs": {"WorkOrder": "{key}", "Status": "{code}"},
    "verify": {"SRST": "{code}"},
    "status_map": STATUS_MAP,
    "hold": {"statuses": ["Blocked"], "orchestration": "MLC_HoldWorkOrder",
             "inputs": {"WorkOrder": "{key}", "HoldCode": "H1"}, "verify": {"WR10": "H1"}},
    "echo_ttl": "10m",
    "settle_after": "2s",
    "agent_account": harness.JIRA_SYNC_ACCOUNT,
}


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Env:
    def __init__(self, orders):
        self.dir = tempfile.mkdtemp(prefix="mlc-x1-")
        self.jde = harness.Sim("jde_sim.py", ["--seed", str(orders)])
        self.jira = harness.Sim("jira_sim.py")
        self.config = None
        self.files = 0

    def configure(self, **kw):
        self.config = harness.make_config(self.dir, self.jde.url, self.jira.url, **kw)
        return self.config

    def agent(self, *args, timeout=600):
        return harness.run_agent(ARGS.agent, self.config, *args, timeout=timeout)

    def sync(self, want_rc=0, what="sync"):
        r = self.agent("sync", FLOW)
        expect(r.returncode == want_rc,
               f"{what}: exit {r.returncode}, expected {want_rc}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}")
        return r, summary(r)

    def issues(self):
        return self.jira.ctl("/_sim/issues")

    def db(self, sql, *params):
        con = sqlite3.connect(os.path.join(self.dir, "state.db"))
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def jira_api(self, method, path, body=None):
        """Jira REST as another program on the same site would call it."""
        auth = base64.b64encode(f"sync@example.com:{harness.JIRA_TOKEN}".encode()).decode()
        req = urllib.request.Request(self.jira.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Basic " + auth,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
            return json.loads(data) if data else None

    def foreign_issues(self, n, project="MFG"):
        for i in range(n):
            self.jira_api("POST", "/rest/api/3/issue",
                          {"fields": {"project": {"key": project}, "issuetype": {"name": "Task"},
                                      "summary": f"created by someone else #{i}"}})

    def body_file(self, body):
        self.files += 1
        path = os.path.join(self.dir, f"hook-{self.files}.json")
        with open(path, "w") as f:
            json.dump(body, f)
        return path

    def close(self):
        self.jde.stop()
        self.jira.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def summary(r):
    for line in r.stdout.splitlines():
        if line.startswith(FLOW + ": created"):
            parts = line.split(":", 1)[1].replace(",", "").split()
            return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
    raise AssertionError(f"no summary line in: {r.stdout!r} {r.stderr[-2000:]!r}")


def adds_up(s):
    total = sum(s[k] for k in ("created", "updated", "unchanged", "adopted", "failed", "pending"))
    expect(total == s["seen"], f"summary does not add up: {s}")


def marker_counts(issues):
    c = collections.Counter()
    for it in issues:
        for lab in it.get("labels", []):
            if lab.startswith("jdewo-"):
                c[lab] += 1
    return c


def no_duplicates(issues, n):
    c = marker_counts(issues)
    dup = [k for k, v in c.items() if v > 1]
    expect(not dup, f"{len(dup)} work orders have more than one issue, e.g. {dup[:5]}")
    expect(len(c) == n, f"{len(c)} work orders have an issue, expected {n}")


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except sqlite3.OperationalError:
            pass  # the agent has not created its tables yet
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- item 1


@test
def kill_9_during_write_back_calls_each_orchestration_once():
    """300 Jira status changes; the agent killed 20 times during `inbox apply`.
    Every change that needed a write reaches JD Edwards exactly once."""
    n = 300 if not ARGS.quick else 80
    kills = 20 if not ARGS.quick else 8
    e = Env(n)
    rng = random.Random(int(os.environ.get("MLC_TEST_SEED", "11")))
    try:
        e.configure(flow={"writeback": WRITEBACK})
        e.sync(what="first sync")
        issues = {lab[len("jdewo-"):]: it for it in e.issues() for lab in it["labels"]
                  if lab.startswith("jdewo-")}
        rows = {str(r["DOCO"]): r for r in e.jde.ctl("/_sim/rows?table=F4801")}
        want = {}
        files = []
        for doco, row in rows.items():
            # a status whose code differs from the work order's: a write is needed
            status = next(s for s, c in STATUS_MAP.items() if c != str(row["SRST"]).strip())
            want[doco] = STATUS_MAP[status]
            files.append(e.body_file(harness.jira_status_event(issues[doco], status)))
        r = e.agent("inbox", "add", *files)
        expect(r.returncode == 0, f"inbox add: {r.stderr[-2000:]}")
        e.jde.ctl("/_sim/orchestrations/clear", {})
        e.jde.faults(slow_ms=70)
        killed = 0
        for _ in range(kills):
            p = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "inbox", "apply"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=harness.agent_env())
            time.sleep(rng.uniform(0.15, 1.2))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed += 1
            p.wait()
        e.jde.faults(slow_ms=0)
        time.sleep(2.5)  # settle_after: calls that died with the agent have ended at JD Edwards
        r = e.agent("inbox", "apply")
        expect(r.returncode == 0, f"final apply: exit {r.returncode}: {r.stdout} {r.stderr[-2000:]}")
        expect(killed >= kills // 2, f"only {killed} of {kills} applies were still running when killed")
        calls = [c for c in e.jde.ctl("/_sim/orchestrations?name=MLC_UpdateWOStatus")
                 if c.get("outcome") == "ok"]
        per_wo = collections.Counter(str(c["inputs"]["WorkOrder"]) for c in calls)
        twice = [k for k, v in per_wo.items() if v > 1]
        settled = e.db("SELECT count(*) FROM state_audit WHERE action = 'writeback_settled'")[0][0]
        print(f"#   {killed} kills; orchestration calls {len(calls)} for {len(want)} changes; "
              f"settled by reading back: {settled}", flush=True)
        expect(not twice, f"{len(twice)} work orders got the orchestration more than once, e.g. "
                          f"{[(k, per_wo[k]) for k in twice[:5]]}")
        expect(len(calls) == len(want), f"{len(calls)} orchestration calls for {len(want)} changes")
        now = {str(r_["DOCO"]): str(r_["SRST"]).strip() for r_ in e.jde.ctl("/_sim/rows?table=F4801")}
        wrong = [k for k, v in want.items() if now[k] != v]
        expect(not wrong, f"{len(wrong)} work orders do not have their new status, e.g. {wrong[:5]}")
        left = e.db("SELECT count(*) FROM state_inbox WHERE state IN ('pending', 'inflight')")[0][0]
        expect(left == 0, f"{left} deliveries still pending")
    finally:
        e.close()


@test
def in_flight_write_back_without_verify_is_not_repeated():
    """Without writeback.verify the agent cannot read an in-flight write
    back: it says so and does not call the orchestration a second time."""
    e = Env(5)
    try:
        wb = dict(WRITEBACK)
        wb.pop("verify")
        e.configure(flow={"writeback": wb})
        e.sync(what="first sync")
        issue = next(it for it in e.issues() if any(l.startswith("jdewo-") for l in it["labels"]))
        doco = next(l for l in issue["labels"] if l.startswith("jdewo-"))[len("jdewo-"):]
        row = e.jde.ctl(f"/_sim/rows?table=F4801&key={doco}")
        row = row[0] if isinstance(row, list) else row
        status = next(s for s, c in STATUS_MAP.items() if c != str(row["SRST"]).strip())
        r = e.agent("inbox", "add", e.body_file(harness.jira_status_event(issue, status)))
        expect(r.returncode == 0, r.stderr)
        # as if the agent died right after marking the delivery in flight
        con = sqlite3.connect(os.path.join(e.dir, "state.db"))
        con.execute("UPDATE state_inbox SET state = 'inflight', sent_ms = 1")
        con.commit()
        con.close()
        e.jde.ctl("/_sim/orchestrations/clear", {})
        r = e.agent("inbox", "apply")
        expect(r.returncode == 1, f"apply: exit {r.returncode}: {r.stdout}")
        expect(e.jde.ctl("/_sim/orchestrations") == [], "orchestration called again without verify")
        detail = e.db("SELECT state, detail FROM state_inbox")[0]
        expect(detail[0] == "dead" and "verify" in detail[1], f"inbox row: {detail}")
    finally:
        e.close()


# ---------------------------------------------------------------- item 2


@test
def lost_state_database_adopts_instead_of_duplicating():
    n = 500 if not ARGS.quick else 150
    e = Env(n)
    try:
        e.configure(jde={"page_size": 100})
        _, s = e.sync(what="first sync")
        expect(s["created"] == n, f"first sync: {s}")
        for suffix in ("", "-wal", "-shm"):
            p = os.path.join(e.dir, "state.db" + suffix)
            if os.path.exists(p):
                os.remove(p)
        e.jira.ctl("/_sim/reset_stats", {})
        _, s = e.sync(what="sync with a new state database")
        adds_up(s)
        expect(s["created"] == 0 and s["adopted"] == n and s["updated"] == 0,
               f"after losing the state: {s}")
        st = e.jira.stats()
        expect(st["writes"] == 0, f"jira writes while adopting: {st}")
        searches = st["requests"].get("search_jql", 0)
        expect(searches <= n // 50 + 2, f"{searches} searches to adopt {n} records (one per 50 expected)")
        no_duplicates(e.issues(), n)
        # the ledger knows them now: a third run costs no Jira call per record
        e.jira.ctl("/_sim/reset_stats", {})
        _, s = e.sync(what="third sync")
        expect(s["created"] == 0 and s["updated"] == 0 and s["adopted"] == 0, f"third sync: {s}")
        expect(e.jira.stats()["writes"] == 0, "writes on the third sync")
        # a changed record after adoption is an update of the adopted issue
        touched = e.jde.ctl("/_sim/touch", {"count": 10, "table": "F4801"})["keys"]
        _, s = e.sync(what="sync after changes")
        expect(s["updated"] == 10 and s["created"] == 0, f"after 10 changes: {s}")
        no_duplicates(e.issues(), n)
        print(f"#   adopted {n}, {searches} searches, 0 writes; then updated {len(touched)}", flush=True)
    finally:
        e.close()


# ---------------------------------------------------------------- item 3


def lost_create_behind_foreign_issues(e, extra_faults=None):
    """Sync 50 work orders; other people create 60 issues in the project; the
    agent is killed while its next bulk create of 50 is under way, the create
    lands, and the search index lags by 120 s. Returns Jira's issue count."""
    e.configure(jde={"page_size": 50}, flow={"batch_size": 50})
    e.jde.faults(slow_ms=1500)
    p = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "sync", FLOW],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=harness.agent_env())
    try:
        wait_for(lambda: e.db("SELECT count(*) FROM state_ledger")[0][0] >= 50, 60, "the first batch")
        e.foreign_issues(60)  # while the agent reads its next page
        faults = {"slow_ms": 1500, "index_lag_ms": 120000}
        faults.update(extra_faults or {})
        bulks = e.jira.stats()["requests"].get("issue_bulk", 0)
        e.jira.faults(**faults)
        wait_for(lambda: e.jira.stats()["requests"].get("issue_bulk", 0) > bulks, 60,
                 "the second bulk create")
        time.sleep(0.4)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    time.sleep(1.8)  # Jira finishes the create the agent never heard back from
    e.jira.faults(slow_ms=0)
    e.jde.faults(slow_ms=0)
    return len(e.issues())


@test
def lost_create_behind_other_peoples_issues_is_found_not_repeated():
    e = Env(100)
    try:
        landed = lost_create_behind_foreign_issues(e)
        expect(landed == 160, f"expected 50 + 60 foreign + 50 unseen issues, Jira has {landed}")
        _, s = e.sync(what="sync after the crash (index still lagging)")
        adds_up(s)
        no_duplicates(e.issues(), 100)
        rec = e.db("SELECT count(*) FROM state_audit WHERE action = 'recovered'")[0][0]
        expect(rec == 50, f"{rec} creates confirmed at Jira, expected 50")
        expect(len(e.issues()) == 160, f"{len(e.issues())} issues in Jira")
        print(f"#   160 issues (60 foreign), 50 unanswered creates found by reading the project, 0 duplicates",
              flush=True)
    finally:
        e.close()


@test
def unanswered_create_waits_while_the_lookup_could_be_stale():
    """The same, where the consistent read is not available: the 50 unanswered
    creates stay in flight (pending, exit 1, shown by `status`) while the search
    lags, and are recorded once the index catches up; never created twice."""
    e = Env(100)
    try:
        landed = lost_create_behind_foreign_issues(e, {"no_bulkfetch": True})
        expect(landed == 160, f"Jira has {landed} issues, expected 160")
        e.jira.faults(no_bulkfetch=True, index_lag_ms=120000)
        r, s = e.sync(want_rc=1, what="sync while the index lags")
        adds_up(s)
        expect(s["created"] == 0 and s["pending"] == 50, f"while lagging: {s}")
        expect("undelivered" in r.stderr, f"no message about undelivered records: {r.stderr[-1500:]}")
        st = e.agent("status")
        expect("unanswered" in st.stdout, f"status does not show the unanswered creates:\n{st.stdout}")
        no_duplicates(e.issues(), 100)
        e.jira.faults(index_lag_ms=0)  # the index caught up
        _, s = e.sync(what="sync after the index caught up")
        adds_up(s)
        expect(s["created"] == 50 and s["pending"] == 0, f"after the index caught up: {s}")
        no_duplicates(e.issues(), 100)
        expect(len(e.issues()) == 160, f"{len(e.issues())} issues in Jira")
    finally:
        e.close()


@test
def unanswered_create_that_never_landed_is_sent_after_the_horizon():
    e = Env(20)
    try:
        e.configure(flow={"recreate_after": "10s"})
        e.jira.faults(no_bulkfetch=True, fail_writes_5xx=100)
        e.sync(want_rc=1, what="sync while Jira fails")
        inflight = e.db("SELECT count(*) FROM state_outbox WHERE state = 'inflight'")[0][0]
        expect(inflight == 20, f"{inflight} creates in flight after Jira failed, expected 20")
        e.jira.faults(fail_writes_5xx=0)
        _, s = e.sync(want_rc=1, what="sync within the horizon")
        expect(s["created"] == 0 and s["pending"] == 20, f"within the horizon: {s}")
        sent = e.db("SELECT max(sent_at) FROM state_outbox")[0][0]
        time.sleep(max(0.0, sent + 11 - time.time()))
        _, s = e.sync(what="sync after the horizon")
        expect(s["created"] == 20 and s["pending"] == 0, f"after the horizon: {s}")
        no_duplicates(e.issues(), 20)
        resent = e.db("SELECT count(*) FROM state_audit WHERE action = 'resend'")[0][0]
        expect(resent == 20, f"{resent} resend audit rows")
    finally:
        e.close()


@test
def queued_in_flight_but_never_sent_is_sent_at_once_after_a_crash():
    """New records are queued in flight when their page is stored, and the
    flow's sent mark is made durable just before a batch leaves. Killed while
    the agent still asks Jira whether it has the records (before the mark),
    the restarted agent knows they never left: it creates them at once, even
    while Jira's search lags and the unanswered-create horizon is long."""
    e = Env(100)
    try:
        e.configure(jde={"page_size": 50}, flow={"batch_size": 50})
        e.jde.faults(slow_ms=1500)
        p = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "sync", FLOW],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=harness.agent_env())
        try:
            # the first page goes out (its batch set the sent mark); the
            # second is stored while Jira answers slowly, then the agent dies
            wait_for(lambda: e.db("SELECT count(*) FROM state_ledger")[0][0] >= 50, 60, "the first batch")
            e.jira.faults(slow_ms=1500)
            wait_for(lambda: e.db("SELECT count(*) FROM state_outbox")[0][0] == 50, 60,
                     "the second page stored in the outbox")
            time.sleep(0.2)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        expect(e.jira.stats()["requests"].get("issue_bulk", 0) == 1,
               "the second bulk create was sent before the kill")
        inflight = e.db("SELECT count(*) FROM state_outbox WHERE state = 'inflight'")[0][0]
        expect(inflight == 50, f"{inflight} rows in flight after the kill, expected 50")
        e.jira.faults(slow_ms=0, no_bulkfetch=True, index_lag_ms=120000)
        e.jde.faults(slow_ms=0)
        r, s = e.sync(what="sync after the crash")
        adds_up(s)
        expect(s["created"] == 50 and s["pending"] == 0, f"after the crash: {s}")
        no_duplicates(e.issues(), 100)
        expect(e.jira.stats()["requests"].get("issue_bulk", 0) == 2, "two bulk creates in all")
    finally:
        e.close()


# ---------------------------------------------------------------- item 4


@test
def lost_replies_leave_records_pending_until_delivered():
    e = Env(40)
    try:
        e.configure()
        e.sync(what="first sync")
        keys = e.jde.ctl("/_sim/touch", {"count": 40, "table": "F4801"})["keys"]
        e.jira.faults(lost_reply_502=100000)  # Jira applies each edit, the answer is lost
        r, s = e.sync(want_rc=1, what="sync with lost answers")
        adds_up(s)
        expect(s["unchanged"] == 0 and s["pending"] == 40 and s["updated"] == 0,
               f"with lost answers: {s}")
        e.jira.faults(lost_reply_502=0)
        _, s = e.sync(what="next sync")
        adds_up(s)
        expect(s["updated"] == 40 and s["pending"] == 0 and s["unchanged"] == 0, f"next sync: {s}")
        e.jira.ctl("/_sim/reset_stats", {})
        _, s = e.sync(what="third sync")
        expect(s["created"] == 0 and s["updated"] == 0 and s["pending"] == 0, f"third sync: {s}")
        expect(e.jira.stats()["writes"] == 0, "jira writes on the third sync")
        by_marker = {lab: it for it in e.issues() for lab in it["labels"] if lab.startswith("jdewo-")}
        for k in keys:
            row = e.jde.ctl(f"/_sim/rows?table=F4801&key={k}")
            row = row[0] if isinstance(row, list) else row
            expect(by_marker[f"jdewo-{k}"]["fields"]["summary"].startswith(f"WO {k}: ")
                   and "(rev" in by_marker[f"jdewo-{k}"]["fields"]["summary"], f"issue for {k} is stale")
    finally:
        e.close()


@test
def conflicts_are_counted_pending_and_retried_by_the_next_run():
    e = Env(40)
    try:
        e.configure()
        e.sync(what="first sync")
        e.jde.ctl("/_sim/touch", {"count": 40, "table": "F4801"})
        e.jira.faults(conflict_409=5)
        _, s = e.sync(want_rc=1, what="sync with 5 conflicts")
        adds_up(s)
        expect(s["updated"] == 35 and s["pending"] == 5 and s["seen"] == 40, f"with 5 conflicts: {s}")
        _, s = e.sync(what="next sync")
        adds_up(s)
        expect(s["updated"] == 5 and s["pending"] == 0, f"next sync: {s}")
        expect(e.db("SELECT count(*) FROM state_outbox")[0][0] == 0, "outbox not empty")
    finally:
        e.close()


# ---------------------------------------------------------------- item 5


@test
def peoples_labels_survive_updates():
    e = Env(10)
    try:
        e.configure()
        e.sync(what="first sync")
        rows = e.jde.ctl("/_sim/rows?table=F4801")
        doco = str(rows[0]["DOCO"])
        old_type = rows[0]["DCTO"].strip()
        new_type = "EN" if old_type != "EN" else "WM"
        it = next(i for i in e.issues() if f"jdewo-{doco}" in i["labels"])
        e.jira_api("PUT", f"/rest/api/3/issue/{it['key']}",
                   {"update": {"labels": [{"add": "customer-escalation"}]}})
        # the order type (a mapped label) changes in JD Edwards
        e.jde.ctl("/_sim/update", {"key": doco, "set": {"DCTO": new_type}})
        _, s = e.sync(what="sync after the change")
        expect(s["updated"] == 1, f"after the change: {s}")
        labels = set(next(i for i in e.issues() if i["key"] == it["key"])["labels"])
        expect("customer-escalation" in labels, f"a person's label was removed: {sorted(labels)}")
        expect(new_type in labels and old_type not in labels,
               f"mapped label not moved from {old_type} to {new_type}: {sorted(labels)}")
        expect(f"jdewo-{doco}" in labels and "jde" in labels, f"labels: {sorted(labels)}")
    finally:
        e.close()


# ---------------------------------------------------------------- item 6


@test
def unmapped_assignee_leaves_issue_unassigned_with_a_warning():
    e = Env(100)
    try:
        m = dict(harness.WORK_ORDER_MAPPING)
        m["assignee"] = {"from": "ANP", "map": {"6001": "maria.lopez@example.com"}}
        e.configure(mapping=m)
        rows = e.jde.ctl("/_sim/rows?table=F4801")
        unmapped = [r for r in rows if str(r["ANP"]) != "6001"]
        expect(unmapped, "every seeded work order has ANP 6001")
        r = e.agent("sync", FLOW, "--dry-run")
        expect(r.returncode == 0, f"dry run: {r.stderr[-1500:]}")
        warned = [l for l in r.stdout.splitlines() if l.startswith("warning ") and "assignee" in l]
        expect(len(warned) == len(unmapped), f"dry run lists {len(warned)} assignee warnings, "
                                             f"expected {len(unmapped)}")
        expect(e.jira.stats()["writes"] == 0, "the dry run wrote to Jira")
        _, s = e.sync(what="sync")
        expect(s["created"] == 100 and s["failed"] == 0, f"sync: {s}")
        expect(s["warnings"] == len(unmapped), f"{s['warnings']} warnings, expected {len(unmapped)}")
        expect(e.db("SELECT count(*) FROM state_dead")[0][0] == 0, "dead letters")
        by_marker = {lab: it for it in e.issues() for lab in it["labels"] if lab.startswith("jdewo-")}
        for row in unmapped:
            f = by_marker[f"jdewo-{row['DOCO']}"]["fields"]
            expect(not f.get("assignee"), f"{row['DOCO']} assigned to {f.get('assignee')}")
        st = e.agent("status")
        expect(f"warnings {len(unmapped)}" in st.stdout, f"status does not show the warnings:\n{st.stdout}")
    finally:
        e.close()


# ---------------------------------------------------------------- item 7


@test
def inbox_kinds_are_stored_whole():
    e = Env(3)
    try:
        e.configure(flow={"writeback": WRITEBACK})
        e.sync(what="first sync")
        issue = next(it for it in e.issues() if any(l.startswith("jdewo-") for l in it["labels"]))
        # a polled change travels as the agent's own generic change JSON
        path = e.body_file({"event": "poll", "record": issue["key"], "author": "", "at_ms": 0,
                            "markers": issue["labels"],
                            "items": [{"field": "status", "from": issue.get("status") or "",
                                       "to": "Done"}]})
        r = e.agent("inbox", "add", "--kind", "jira-poll", path)
        expect(r.returncode == 0, f"--kind jira-poll refused: {r.stderr}")
        kinds = [k for (k,) in e.db("SELECT kind FROM state_inbox")]
        expect(kinds == ["jira-poll"], f"stored kinds {kinds}")
        r = e.agent("inbox", "add", "--kind", "sap-poll", path)
        expect(r.returncode == 2 and "sap-poll" in r.stderr, f"unknown kind: {r.returncode} {r.stderr}")
        r = e.agent("inbox", "apply")
        expect(r.returncode == 0 and "applied 1" in r.stdout, f"apply: {r.stdout} {r.stderr[-1000:]}")
    finally:
        e.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--quick", action="store_true", help="smaller data sets (sanitizer builds)")
    ap.add_argument("-k", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    return harness.run_tests(TESTS, ARGS.k)


if __name__ == "__main__":
    sys.exit(main())
