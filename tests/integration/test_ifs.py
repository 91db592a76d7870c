#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests: IFS Cloud purchase orders and work orders into Jira
with the real mlc-agent, against the IFS Cloud simulator
(tests/sims/ifs_sim.py) and the Jira simulator on 127.0.0.1.

Work in progress (issue 14): the reading side. The write-back scenarios
(412, kill -9 during write-back) come with the Jira-side work.

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402

ARGS = None
TESTS = []
SECRET = "mlc-secret"

FLOWS = {
    "po": {"flow": "ifs_pos", "projection": "PurchaseOrderHandling", "entity_set": "PurchaseOrderSet",
           "key": "OrderNo", "prefix": "ifspo-",
           "mapping": {"summary": {"template": "PO {OrderNo}: {VendorName}", "required": True, "max": 255},
                       "description": "Purchase order {OrderNo} ({Objstate}) for project {ProjectId}: {TotalAmount} "
                                      "{CurrencyCode}, wanted {WantedDeliveryDate}. Note: {NoteText}",
                       "labels": {"list": ["ifs", "{ProjectId}"]}}},
    "wo": {"flow": "ifs_wos", "projection": "ActiveWorkOrdersHandling", "entity_set": "ActiveSeparateSet",
           "key": "WoNo", "prefix": "ifswo-",
           "mapping": {"summary": {"template": "WO {WoNo}: {ErrDescr}", "required": True, "max": 255},
                       "description": "Work order {WoNo} ({Objstate}), work type {WorkTypeId}, priority {PriorityId}.",
                       "labels": {"list": ["ifs", "{WorkTypeId}"]}}},
}


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Env:
    def __init__(self, pos, wos, sim_args=(), jira_args=()):
        self.dir = tempfile.mkdtemp(prefix="mlc-ifs-")
        self.ifs = harness.Sim("ifs_sim.py", ["--pos", str(pos), "--wos", str(wos)] + list(sim_args))
        self.jira = harness.Sim("jira_sim.py", list(jira_args))
        self.env = harness.agent_env()
        self.env["MLC_IFS_SECRET"] = SECRET
        self.config = None

    def configure(self, kinds=("po", "wo"), system=None, source=None, mapping=None):
        cfg = {
            "agent": {"state_db": os.path.join(self.dir, "state.db"),
                      "key_file": os.path.join(self.dir, "secret.key"), "log_level": "warn"},
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
            src.update((source or {}).get(k, {}))
            cfg["flows"][fd["flow"]] = {
                "source": src,
                "target": {"system": "jira", "project": "MFG", "issue_type": "Task", "marker_prefix": fd["prefix"]},
                "mapping": dict(fd["mapping"], **(mapping or {}).get(k, {})),
                "settle_after": "2s",
            }
        self.config = os.path.join(self.dir, "agent.json")
        with open(self.config, "w") as f:
            json.dump(cfg, f, indent=2)

    def agent(self, *args):
        return harness.run_agent(ARGS.agent, self.config, *args, env=self.env)

    def sync(self, flow, what="sync"):
        r = self.agent("sync", flow)
        expect(r.returncode == 0, f"{what}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}")
        return summary(r, flow)

    def issues(self):
        return self.jira.ctl("/_sim/issues")

    def db(self, sql, *params):
        con = sqlite3.connect(os.path.join(self.dir, "state.db"))
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def close(self):
        self.ifs.stop()
        self.jira.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def summary(r, flow):
    for line in r.stdout.splitlines():
        if line.startswith(flow + ": created"):
            parts = line.split(":", 1)[1].replace(",", "").split()
            return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
    raise AssertionError(f"no summary line for {flow} in {r.stdout!r}\nstderr: {r.stderr[-2000:]}")


def exactly_once(e, kind):
    fd = FLOWS[kind]
    want = {fd["prefix"] + str(r[fd["key"]]) for r in e.ifs.ctl(f"/_sim/rows?kind={kind}")}
    counts = collections.Counter(lab for it in e.issues() for lab in it.get("labels", [])
                                 if lab.startswith(fd["prefix"]))
    dup = [k for k, v in counts.items() if v > 1]
    expect(not dup, f"{kind}: {len(dup)} records have more than one issue, e.g. {dup[:5]}")
    expect(set(counts) == want, f"{kind}: {len(want - set(counts))} missing, {len(set(counts) - want)} extra")
    return len(want)


@test
def big_pages_and_tiny_pages_give_one_issue_per_record():
    """12,000 purchase and work orders over pages of 5,000, then over pages
    of 7 (next links on every page): one issue each; changes are updates
    only; nothing changed costs no Jira write."""
    n = 6000 if not ARGS.quick else 600
    for page in (5000, 7):
        e = Env(pos=n, wos=n)
        try:
            e.configure(system={"page_size": page})
            for k in ("po", "wo"):
                s = e.sync(FLOWS[k]["flow"], what=f"first {k} sync at page size {page}")
                cnt = exactly_once(e, k)
                expect(s["created"] == cnt, f"{k} at page size {page}: {s}")
            e.ifs.ctl("/_sim/touch", {"kind": "po", "count": 50})
            e.jira.ctl("/_sim/reset_stats", {})
            s = e.sync("ifs_pos", what="sync after changes")
            expect(s["updated"] == 50 and s["created"] == 0, f"after 50 changes: {s}")
            e.jira.ctl("/_sim/reset_stats", {})
            for k in ("po", "wo"):
                s = e.sync(FLOWS[k]["flow"], what="sync without changes")
                expect(s["created"] == 0 and s["updated"] == 0, f"{k} without changes: {s}")
            expect(e.jira.stats()["writes"] == 0, f"Jira writes without changes: {e.jira.stats()}")
            print(f"#   page size {page}: {sum(e.ifs.stats()['requests'].values())} IFS requests", flush=True)
        finally:
            e.close()


PROJECT_MAP = {"from": "ProjectId", "map": {"PRJ100": "MFG", "PRJ200": "OPS", "PRJ300": "OPS"}, "default": "MFG"}
JIRA_SIDE = {
    "po": {"project": PROJECT_MAP,
           "priority": {"from": "SupplierTier", "map": {"A": "High", "B": "Medium", "C": "Low"}},
           "assignee": {"from": ["BuyerEmail", "BuyerCode"], "map": {"TNOWAK": "tomasz.nowak@example.com"}},
           "customfield_10070": "{GlAccount}", "customfield_10071": "{CostCenter}"},
    "wo": {"project": PROJECT_MAP,
           "priority": {"from": "WorkTypeId", "map": {"EMRG": "Highest", "CM": "High", "PM": "Medium",
                                                      "INSP": "Low"}},
           "assignee": {"from": ["WorkLeaderEmail", "WorkLeaderSign"], "map": {"TNOWAK": "tomasz.nowak@example.com"}},
           "customfield_10070": "{GlAccount}", "customfield_10071": "{CostCenter}"},
}


@test
def jira_project_priority_assignee_and_cost_fields_follow_the_mapping():
    """The Jira project comes from the IFS project code (a map with a
    default), priority from supplier tier or work type, the assignee from
    the e-mail or else the user name (unknown users: unassigned, with a
    warning), GL account and cost centre in custom fields; with the state
    database lost, the next run finds every issue in both projects."""
    e = Env(pos=150, wos=100, jira_args=["--projects", "MFG,OPS"])
    try:
        e.configure(mapping=JIRA_SIDE)
        out = {}
        for k in ("po", "wo"):
            r = e.agent("sync", FLOWS[k]["flow"])
            expect(r.returncode == 0, f"{k}: exit {r.returncode}: {r.stderr[-2000:]}")
            out[k] = r.stdout + r.stderr
            s = summary(r, FLOWS[k]["flow"])
            expect(s["created"] == exactly_once(e, k), f"{k}: {s}")
        issues = {lab: it for it in e.issues() for lab in it["labels"] if lab.startswith("ifs")
                  and lab[:6] in ("ifspo-", "ifswo-")}
        by_mail = {}
        for it in e.issues():
            a = it["fields"].get("assignee")
            if a and a.get("emailAddress"):
                by_mail[a["emailAddress"]] = a["accountId"]
        pm = PROJECT_MAP["map"]
        unassigned = collections.Counter()
        for k, mail_col, user_col, prio_col in (("po", "BuyerEmail", "BuyerCode", "SupplierTier"),
                                                ("wo", "WorkLeaderEmail", "WorkLeaderSign", "WorkTypeId")):
            fd = FLOWS[k]
            prio_map = JIRA_SIDE[k]["priority"]["map"]
            for row in e.ifs.ctl(f"/_sim/rows?kind={k}"):
                it = issues[fd["prefix"] + str(row[fd["key"]])]
                f = it["fields"]
                want_proj = pm.get(row.get("ProjectId") or "", "MFG")
                expect(f["project"]["key"] == want_proj, f"{k} {row[fd['key']]}: project {f['project']['key']}, "
                                                         f"want {want_proj} (IFS {row.get('ProjectId')})")
                expect(it["key"].startswith(want_proj + "-"), f"issue key {it['key']} not in {want_proj}")
                expect(f["priority"]["name"] == prio_map[row[prio_col]], f"{k}: priority {f['priority']} for "
                                                                         f"{row[prio_col]}")
                expect(f.get("customfield_10070") == row["GlAccount"] and f.get("customfield_10071") == row["CostCenter"],
                       f"{k}: GL/cost centre {f.get('customfield_10070')}/{f.get('customfield_10071')} != "
                       f"{row['GlAccount']}/{row['CostCenter']}")
                mail = row.get(mail_col) or ("tomasz.nowak@example.com" if row[user_col] == "TNOWAK" else None)
                a = f.get("assignee")
                if mail in ("raj.iyer@example.com", "xtemp@nowhere.example"):
                    expect(a is None, f"{k}: {mail} (hidden or unknown in Jira) assigned to {a}")
                    unassigned[mail] += 1
                    expect(mail in out[k] and "left unassigned" in out[k], f"{k}: no warning naming {mail}")
                else:
                    expect(a is not None and a.get("emailAddress") == mail,
                           f"{k} {row[fd['key']]}: assignee {a}, want {mail} (user {row[user_col]})")
        expect(unassigned["xtemp@nowhere.example"] > 0 and unassigned["raj.iyer@example.com"] > 0,
               f"the data has no unknown users to test with: {unassigned}")
        projects = collections.Counter(it["fields"]["project"]["key"] for it in e.issues())
        expect(projects["MFG"] > 0 and projects["OPS"] > 0, f"projects used: {projects}")
        # the state database is lost: every issue is found again, in either project
        os.remove(os.path.join(e.dir, "state.db"))
        before = len(e.issues())
        for k in ("po", "wo"):
            s = e.sync(FLOWS[k]["flow"], what=f"{k} sync without a state database")
            expect(s["created"] == 0, f"{k} after losing the state database: {s}")
        expect(len(e.issues()) == before, f"issues {before} -> {len(e.issues())}")
        print(f"#   projects {dict(projects)}, unassigned {dict(unassigned)}", flush=True)
    finally:
        e.close()


@test
def token_expiry_in_the_middle_of_paging():
    e = Env(pos=300, wos=0, sim_args=["--token-ttl", "1"])
    try:
        e.configure(kinds=("po",), system={"page_size": 7})
        e.ifs.faults(slow_ms=30)
        s = e.sync("ifs_pos", what="sync with one-second tokens")
        expect(s["created"] == 300, f"with expiring tokens: {s}")
        exactly_once(e, "po")
        expect(e.ifs.stats().get("tokens_issued", 2) >= 2, f"tokens: {e.ifs.stats()}")
    finally:
        e.close()


@test
def rate_limit_storm_while_reading_is_waited_out():
    """429s and 503s with Retry-After in the middle of paging: the agent
    waits as told (the simulator counts requests made too early), and the
    run still gives one issue per record."""
    e = Env(pos=400, wos=0)
    try:
        e.configure(kinds=("po",), system={"page_size": 50})
        e.ifs.faults(rate_429=3, retry_after=1)
        s1 = e.agent("sync", "ifs_pos")
        e.ifs.faults(fail_5xx_ra=2, retry_after=1)
        e.ifs.ctl("/_sim/touch", {"kind": "po", "count": 30})
        s2 = e.agent("sync", "ifs_pos")
        e.ifs.faults(rate_429=2, retry_after=1)
        s3 = e.sync("ifs_pos", what="third sync")
        for r in (s1, s2):
            expect(r.returncode == 0, f"exit {r.returncode}: {r.stderr[-1500:]}")
        exactly_once(e, "po")
        st = e.ifs.stats()
        expect(st["status_counts"].get("429", st["status_counts"].get(429, 0)) >= 5,
               f"the storm did not happen: {st['status_counts']}")
        expect(st["retry_after_violations"] == 0, f"requests before Retry-After ran out: {st}")
        expect(summary(s2, "ifs_pos")["updated"] == 30 and s3["updated"] == 0, f"{summary(s2, 'ifs_pos')} {s3}")
    finally:
        e.close()


@test
def bad_secret_and_unknown_projection_name_the_setting():
    e = Env(pos=20, wos=0)
    try:
        cases = [("bad client secret", {"system": {"client_secret": "wrong"}}, ["client_secret"]),
                 ("unknown projection", {"source": {"po": {"projection": "PurchaseOrdersHandling"}}},
                  ["projection"])]
        for what, conf, words in cases:
            e.configure(kinds=("po",), system=conf.get("system"), source=conf.get("source"))
            r = e.agent("sync", "ifs_pos")
            err = [ln for ln in r.stderr.splitlines() if ln.startswith("mlc-agent:")]
            expect(r.returncode != 0 and err, f"{what}: exit {r.returncode}: {r.stderr[-1500:]}")
            for w in words:
                expect(w in err[-1], f"{what}: {w!r} not in {err[-1]!r}")
            expect(SECRET not in r.stderr and "wrong" not in err[-1].split("client_secret")[0][-20:],
                   f"{what}: a secret in the output")
            print(f"#   {what}: {err[-1][:200]}", flush=True)
        e.configure(kinds=("po",))
        s = e.sync("ifs_pos", what="sync with the right settings")
        expect(s["created"] == 20, f"after the errors: {s}")
    finally:
        e.close()


@test
def kill_9_during_reading_loses_and_doubles_nothing():
    n = 1500 if not ARGS.quick else 600
    kills = 20 if not ARGS.quick else 6
    e = Env(pos=n, wos=0)
    rng = random.Random(int(os.environ.get("MLC_TEST_SEED", "17")))
    try:
        e.configure(kinds=("po",), system={"page_size": 50})
        e.ifs.faults(slow_ms=30)
        e.jira.faults(slow_ms=150)
        killed = 0
        for _ in range(kills):
            p = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "sync", "ifs_pos"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e.env)
            time.sleep(rng.uniform(0.2, 1.5))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed += 1
            p.wait()
        e.ifs.faults(slow_ms=0)
        e.jira.faults(slow_ms=0)
        e.sync("ifs_pos", what="final sync")
        expect(killed >= kills // 2, f"only {killed} of {kills} runs were killed")
        exactly_once(e, "po")
        expect(e.db("SELECT count(*) FROM state_outbox")[0][0] == 0, "outbox not empty")
    finally:
        e.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("-k", default=None)
    ap.add_argument("--quick", action="store_true")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    passed = failed = n = 0
    for fn in TESTS:
        if ARGS.k and ARGS.k not in fn.__name__:
            continue
        n += 1
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f"ok {n} {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Exception as ex:  # noqa: BLE001 - any failure is reported
            failed += 1
            print(f"not ok {n} {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
            for line in str(ex).splitlines()[:12]:
                print(f"#   {line}", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
