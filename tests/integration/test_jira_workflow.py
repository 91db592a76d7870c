#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Jira status transitions and comments from a source mapping (issue 13,
item 4): the real mlc-agent moving JD Edwards work orders into a Jira
project with a procurement workflow (Open -> Awaiting approval ->
Approved/Rejected -> Closed), custom fields of every kind (text, select,
number), a mapped "status" that moves each issue through /transitions, and
mapped "comments" (from the work order's reference columns VR01/VR02) that
become one Jira comment each, never two, also when the agent is killed with
SIGKILL while it posts comments or makes transitions.

Each test asserts what the simulators and the state database hold afterwards.
Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import collections
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402

ARGS = None
TESTS = []
FLOW = "jde_workorders"
PROJECT = "PROC"
PREFIX = "jdepo-"
MARK = "mlc-comment:"

# JD Edwards status codes this test writes -> the Jira status wanted; the
# simulator's generated codes (10, 30, ...) all mean "Open"
STATUS = {"PA": "Awaiting approval", "AP": "Approved", "RJ": "Rejected", "CL": "Closed"}
MAPPING = {
    "summary": {"template": "PO {DOCO}: {DL01}", "required": True, "max": 255},
    "description": "Purchase order {DOCO} for branch/plant {MCU}.",
    "customfield_10060": "INV-{DOCO}",                     # Invoice Number (text)
    "customfield_10061": "{AN8}",                          # Vendor (text)
    "customfield_10062": {"from": "AN8"},                  # Amount (number)
    "customfield_10063": {"from": "SRST", "map": {"AP": "Approved", "RJ": "Denied"},
                          "default": "Pending"},           # Approval Status (select)
    "status": {"from": "SRST", "map": STATUS, "default": "Open"},
    "comments": {"items": [{"id": "vr1-{VR01}", "text": "Vendor reference {VR01} received"},
                           {"id": "vr2-{VR02}", "text": "Buyer note: {VR02}"}]},
}


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# the statuses on the way to each, in the procurement workflow's order
VIA = {"Approved": ["Awaiting approval"], "Rejected": ["Awaiting approval"],
       "Closed": ["Awaiting approval", "Approved"]}


class Env:
    def __init__(self, orders, target=None):
        self.dir = tempfile.mkdtemp(prefix="mlc-wf-")
        self.jde = harness.Sim("jde_sim.py", ["--seed", str(orders)])
        self.jira = harness.Sim("jira_sim.py", ["--project", PROJECT, "--workflow", PROJECT + "=procurement"])
        tgt = {"system": "jira", "project": PROJECT, "issue_type": "Purchase Order", "marker_prefix": PREFIX}
        tgt.update(target or {})
        self.config = harness.make_config(self.dir, self.jde.url, self.jira.url, mapping=MAPPING,
                                          flow={"target": tgt, "max_attempts": 20,
                                                # the simulators answer within 100 ms here
                                                "settle_after": "1s"})
        self.notes = {}  # source key -> comment ids, in the order they appeared

    def agent(self, *args, timeout=600):
        return harness.run_agent(ARGS.agent, self.config, *args, timeout=timeout)

    def sync(self, want_rc=0, what="sync"):
        r = self.agent("sync", FLOW)
        expect(r.returncode == want_rc,
               f"{what}: exit {r.returncode}, expected {want_rc}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}")
        return r, summary(r)

    def settle(self, what):
        """Sync until a run delivers everything (retries wait out their backoff)."""
        for _ in range(40):
            self.db("UPDATE state_outbox SET next_at = 0")  # no waiting for the backoff
            r = self.agent("sync", FLOW)
            if r.returncode == 0:
                return summary(r)
        raise AssertionError(f"{what}: sync never came back clean: {r.stdout} {r.stderr[-2000:]}")

    def set(self, key, **cols):
        """Change a work order; its notes are remembered in order, as Jira
        keeps a comment when the source's note is replaced by another."""
        self.jde.ctl("/_sim/update", {"key": key, "set": cols})
        for col, prefix in (("VR01", "vr1-"), ("VR02", "vr2-")):
            if cols.get(col, "").strip():
                ids = self.notes.setdefault(str(key), [])
                if prefix + cols[col].strip() not in ids:
                    ids.append(prefix + cols[col].strip())

    def issues(self):
        return {mk: it for it in self.jira.ctl("/_sim/issues") for mk in it["labels"] if mk.startswith(PREFIX)}

    def comments(self, key):
        """The marker ids of the comments on issue key, in order (repeats included)."""
        out = []
        start = 0
        while True:
            page = self.jira_api("GET", f"/rest/api/3/issue/{key}/comment?startAt={start}&maxResults=50")
            for c in page["comments"]:
                out += [t for t in adf_texts(c["body"]) if t.startswith(MARK)]
            start += len(page["comments"])
            if not page["comments"] or start >= page["total"]:
                return [t[len(MARK):] for t in out]

    def jira_api(self, method, path, body=None):
        import base64
        import json
        import urllib.request
        auth = base64.b64encode(f"sync@example.com:{harness.JIRA_TOKEN}".encode()).decode()
        req = urllib.request.Request(self.jira.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Basic " + auth,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
            return json.loads(data) if data else None

    def requests(self, name):
        return self.jira.stats()["requests"].get(name, 0)

    def db(self, sql, *params):
        con = sqlite3.connect(os.path.join(self.dir, "state.db"))
        try:
            rows = con.execute(sql, params).fetchall()
            con.commit()
            return rows
        finally:
            con.close()

    def keys(self):
        return [str(r["DOCO"]) for r in self.jde.ctl("/_sim/rows")]

    def close(self):
        self.jde.stop()
        self.jira.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def adf_texts(node):
    if isinstance(node, dict):
        if node.get("type") == "text":
            yield node.get("text", "")
        for ch in node.get("content") or []:
            yield from adf_texts(ch)


def summary(r):
    for line in r.stdout.splitlines():
        if line.startswith(FLOW + ": created"):
            parts = line.split(":", 1)[1].replace(",", "").split()
            return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
    raise AssertionError(f"no summary line in: {r.stdout!r} {r.stderr[-2000:]!r}")


def wanted(e, rows):
    """source key -> (Jira status, [comment ids]): the status the mapping
    gives now, and every note the work order has had (VR01 and VR02 of one
    change come in mapping order: VR01's first)."""
    out = {}
    for r in rows:
        ids = sorted(e.notes.get(str(r["DOCO"]), []), key=lambda i: e.notes[str(r["DOCO"])].index(i))
        out[str(r["DOCO"])] = (STATUS.get(r["SRST"].strip(), "Open"), ids)
    return out


def check_all(e, what, dead_ok=False):
    """Every work order: one issue, in its mapped status, with each of its
    comments exactly once."""
    rows = e.jde.ctl("/_sim/rows")
    want = wanted(e, rows)
    issues = e.issues()
    labels = collections.Counter(lb for it in e.jira.ctl("/_sim/issues") for lb in it["labels"]
                                 if lb.startswith(PREFIX))
    expect(len(issues) == len(want) and all(n == 1 for n in labels.values()),
           f"{what}: {len(issues)} issues for {len(want)} work orders; repeated markers: "
           f"{[k for k, n in labels.items() if n > 1][:5]}")
    bad = []
    for key, (status, ids) in want.items():
        it = issues[PREFIX + key]
        if it["status"] != status:
            bad.append(f"{it['key']} ({key}) is '{it['status']}', expected '{status}'")
        if it["comments"] != len(ids) or (ids and e.comments(it["key"]) != ids):
            bad.append(f"{it['key']} ({key}) has comments {e.comments(it['key'])}, expected {ids}")
    expect(not bad, f"{what}: {len(bad)} issues wrong: {bad[:5]}")
    dead = e.db("SELECT source_key, error FROM state_dead")
    expect(dead_ok or not dead, f"{what}: dead letters: {dead[:3]}")


# ---------------------------------------------------------------- tests


@test
def fields_status_and_comments_reach_jira_once():
    """Custom fields of each kind on create; status changes move the issue
    one transition; a note in the source becomes one comment; no change
    costs no write, and no comment read."""
    e = Env(20)
    try:
        _, s = e.sync(what="first sync")
        expect(s["created"] == 20, f"first sync: {s}")
        keys = e.keys()
        issues = e.issues()
        rows = {str(r["DOCO"]): r for r in e.jde.ctl("/_sim/rows")}
        it = issues[PREFIX + keys[0]]
        f = it["fields"]
        an8 = rows[keys[0]]["AN8"]
        expect(f["customfield_10062"] == an8 and isinstance(f["customfield_10062"], (int, float)),
               f"Amount (number field) is {f['customfield_10062']!r}, expected the number {an8}")
        expect(f["customfield_10060"] == "INV-" + keys[0] and f["customfield_10061"] == str(an8),
               f"text fields: {f['customfield_10060']!r}, {f['customfield_10061']!r}")
        expect((f["customfield_10063"] or {}).get("value") == "Pending", f"select field: {f['customfield_10063']}")
        expect(f["issuetype"]["name"] == "Purchase Order", f"issue type {f['issuetype']}")
        expect(all(i["status"] == "Open" and i["comments"] == 0 for i in issues.values()),
               "new issues should be Open without comments")
        expect(e.requests("transition_do") == 0 and e.requests("comment_add") == 0,
               "no transition or comment was needed on the first sync")
        # the trace holds the real content hash once the issue is complete
        h = e.db("SELECT hash FROM state_ledger WHERE source_key = ?", keys[0])[0][0]
        expect(it["properties"]["mlc.trace"]["hash"] == h, f"trace {it['properties']['mlc.trace']} vs ledger {h}")

        for k in keys[:6]:
            e.set(k, SRST="PA", VR01="ASN-" + k)
        _, s = e.sync(what="after 6 approvals requested")
        expect(s["updated"] == 6 and s["created"] == 0, f"second sync: {s}")
        check_all(e, "after approvals requested")
        expect(e.requests("transition_do") == 6 and e.requests("comment_add") == 6,
               f"transitions {e.requests('transition_do')}, comments {e.requests('comment_add')}; expected 6 each")

        for k in keys[:3]:
            e.set(k, SRST="AP", VR02="ok-" + k)
        e.set(keys[3], SRST="RJ")
        _, s = e.sync(what="after 3 approvals and a rejection")
        expect(s["updated"] == 4, f"third sync: {s}")
        check_all(e, "after approvals")
        expect((e.issues()[PREFIX + keys[0]]["fields"]["customfield_10063"] or {}).get("value") == "Approved",
               "Approval Status did not follow")

        before = e.jira.stats()
        _, s = e.sync(what="sync without changes")
        after = e.jira.stats()
        expect(s["created"] + s["updated"] == 0 and after["writes"] == before["writes"],
               f"a sync without changes wrote to Jira: {s}, writes {before['writes']} -> {after['writes']}")
        expect(after["requests"].get("comment", 0) == before["requests"].get("comment", 0),
               "a sync without changes read comments back")

        # an issue already in the mapped status: no transition; a comment
        # the ledger lists: no read, no post
        e.set(keys[0], DL01="Renamed order")
        t0, c0, r0 = e.requests("transition_do"), e.requests("comment_add"), e.requests("comment")
        _, s = e.sync(what="a rename")
        expect(s["updated"] == 1, f"rename: {s}")
        now = (e.requests("transition_do"), e.requests("comment_add"), e.requests("comment"))
        expect(now == (t0, c0, r0),
               f"a rename made a transition or touched comments: (transitions, posts, reads) {(t0, c0, r0)} -> {now}")
    finally:
        e.close()


@test
def a_status_no_transition_reaches_is_refused_with_the_way_out():
    """Open -> Closed has no transition in the procurement workflow: the
    record is refused with the issue, both statuses and the reachable ones;
    the issue keeps its fields; fixing the source lets it through."""
    e = Env(5)
    try:
        e.sync(what="first sync")
        k = e.keys()[0]
        issue = e.issues()[PREFIX + k]["key"]
        e.set(k, SRST="CL", DL01="Closed too early")
        r, s = e.sync(what="sync asking for Closed from Open")
        expect(s["failed"] == 1, f"summary {s}")
        dead = e.db("SELECT error FROM state_dead WHERE source_key = ?", k)
        msg = dead[0][0] if dead else r.stderr
        for part in (issue, "'Open'", "'Closed'", "'Awaiting approval'", "no transition"):
            expect(part in msg, f"the refusal does not name {part}: {msg}")
        it = e.issues()[PREFIX + k]
        expect(it["status"] == "Open" and "Closed too early" in it["fields"]["summary"],
               f"issue after the refusal: {it['status']}, {it['fields']['summary']}")
        # the source moves on properly: one step at a time
        e.set(k, SRST="PA")
        e.sync(what="after the fix")
        e.set(k, SRST="AP")
        e.sync(what="approved")
        e.set(k, SRST="CL", DL01="Closed in turn")  # new content: the dead letter's stays dead
        e.sync(what="closed")
        check_all(e, "after the fix", dead_ok=True)  # the refused version stays a dead letter
    finally:
        e.close()


@test
def a_status_the_workflow_lacks_stops_the_flow_at_start():
    """A typo in the status map is named at start-up with the project's
    statuses, before any record is read."""
    e = Env(3)
    try:
        bad = dict(MAPPING)
        bad["status"] = {"from": "SRST", "map": dict(STATUS, AP="Aproved"), "default": "Open"}
        e.config = harness.make_config(
            e.dir, e.jde.url, e.jira.url, mapping=bad,
            flow={"target": {"system": "jira", "project": PROJECT, "issue_type": "Purchase Order",
                             "marker_prefix": PREFIX}})
        r = e.agent("sync", FLOW)
        expect(r.returncode != 0, f"sync with a misspelled status: exit 0\n{r.stdout}")
        for part in ("mapping.status", "'Aproved'", "'Purchase Order'", PROJECT, "'Approved'"):
            expect(part in r.stderr, f"the start-up error does not name {part}: {r.stderr[-1500:]}")
        expect(len(e.jira.ctl("/_sim/issues")) == 0, "issues were created despite the bad mapping")
    finally:
        e.close()


@test
def status_via_walks_the_workflow_also_across_kills():
    """New purchase orders already approved, rejected or closed at the
    source: created Open, each walks through target.status_via to its
    status (up to three transitions), with the agent killed during the walk;
    a bad status_via is named at start-up."""
    n = 30 if not ARGS.quick else 12
    e = Env(n, target={"status_via": VIA})
    try:
        rng = random.Random(5)
        for k in e.keys():
            e.set(k, SRST=rng.choice(["AP", "RJ", "CL", "CL"]))
        e.jira.faults(slow_ms=40)
        killed = kill_loop(e, "transition_do", 6 if not ARGS.quick else 3, "walks")
        e.jira.faults(slow_ms=0)
        e.settle("after kills during the walks")
        check_all(e, "after kills during the walks")
        expect(killed >= 3 if not ARGS.quick else killed >= 1, f"only {killed} kills hit a running agent")
        want = wanted(e, e.jde.ctl("/_sim/rows"))
        steps = sum({"Approved": 2, "Rejected": 2, "Closed": 3}[st] for st, _ids in want.values())
        print(f"#   {killed} kills; {e.requests('transition_do')} transitions for {steps} steps")
        expect(e.requests("transition_do") <= steps + killed,
               f"{e.requests('transition_do')} transitions for {steps} steps and {killed} kills")
    finally:
        e.close()
    e = Env(2, target={"status_via": {"Closed": ["Awaiting aproval"]}})
    try:
        r = e.agent("sync", FLOW)
        expect(r.returncode != 0 and "status_via" in r.stderr and "'Awaiting aproval'" in r.stderr,
               f"a misspelled status_via: exit {r.returncode}: {r.stderr[-1500:]}")
    finally:
        e.close()


def kill_loop(e, counter, kills, what):
    """Run syncs and SIGKILL each a little after `counter` moves (the kill
    lands while that call is in flight or just after it); returns the kills
    that hit a running agent."""
    rng = random.Random(13)
    killed = 0
    for _ in range(kills):
        start = e.requests(counter)
        p = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "sync", FLOW],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=harness.agent_env())
        try:
            step = rng.randint(1, 4)
            deadline = time.monotonic() + 60
            while p.poll() is None and e.requests(counter) < start + step and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.random() * 0.05)
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed += 1
            p.wait()
        e.db("UPDATE state_outbox SET next_at = 0")
    return killed


@test
def kill_9_while_posting_comments_posts_each_comment_once():
    """40 work orders, each with two notes and a status change, some new (the
    comments follow a create), some already synced; the agent is killed
    repeatedly while it posts comments; every comment is on Jira once."""
    n = 40 if not ARGS.quick else 20
    e = Env(n)
    try:
        keys = e.keys()
        for k in keys[: n // 2]:
            e.set(k, SRST="PA", VR01="A" + k, VR02="B" + k)
        e.jira.faults(slow_ms=80)
        killed = kill_loop(e, "comment_add", 8 if not ARGS.quick else 4, "comments after creates")
        e.jira.faults(slow_ms=0)
        e.settle("after kills during creates")
        reads = e.requests("comment")  # the agent's own reads (check_all reads too)
        check_all(e, "after kills during the first sync")
        for k in keys[n // 2:]:
            e.set(k, SRST="PA", VR01="C" + k, VR02="D" + k)
        for k in keys[: n // 4]:
            e.set(k, SRST="AP", VR02="E" + k)
        r0 = e.requests("comment")
        e.jira.faults(slow_ms=80)
        killed += kill_loop(e, "comment_add", 8 if not ARGS.quick else 4, "comments after updates")
        e.jira.faults(slow_ms=0)
        e.settle("after kills during updates")
        reads += e.requests("comment") - r0
        check_all(e, "after kills during updates")
        expect(killed >= 6 if not ARGS.quick else killed >= 3, f"only {killed} kills hit a running agent")
        expect(reads > 0, "no run read the comments back after a kill")
        print(f"#   {killed} kills; {reads} comment reads; {e.requests('comment_add')} comment posts for "
              f"{sum(len(v[1]) for v in wanted(e, e.jde.ctl('/_sim/rows')).values())} comments")
    finally:
        e.close()


@test
def kill_9_during_transitions_ends_in_the_mapped_status():
    """Status changes for 40 issues, the agent killed repeatedly while it
    moves them; each issue ends in its mapped status, its comments once."""
    n = 40 if not ARGS.quick else 20
    e = Env(n)
    try:
        e.sync(what="first sync")
        keys = e.keys()
        for k in keys:
            e.set(k, SRST="PA", VR01="N" + k)
        e.jira.faults(slow_ms=80)
        killed = kill_loop(e, "transition_do", 8 if not ARGS.quick else 4, "transitions")
        e.jira.faults(slow_ms=0)
        e.settle("after kills during transitions")
        check_all(e, "after kills during transitions")
        rng = random.Random(7)
        for k in keys:
            e.set(k, SRST=rng.choice(["AP", "RJ"]))
        e.jira.faults(slow_ms=80)
        killed += kill_loop(e, "transition_do", 8 if not ARGS.quick else 4, "approvals")
        e.jira.faults(slow_ms=0)
        e.settle("after kills during approvals")
        check_all(e, "after kills during approvals")
        expect(killed >= 6 if not ARGS.quick else killed >= 3, f"only {killed} kills hit a running agent")
    finally:
        e.close()


@test
def lost_answers_to_comment_posts_are_not_repeated():
    """Jira applies a comment post but the answer is lost (502): the next
    try reads the comments back and finds it."""
    e = Env(10)
    try:
        e.sync(what="first sync")
        for k in e.keys():
            e.set(k, VR01="L" + k)
        e.jira.faults(lost_reply_502=6)
        e.settle("with lost answers")
        check_all(e, "after lost answers")
        expect(e.requests("comment") > 0, "the comments were never read back")
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
