#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests: PeopleSoft purchase orders, requisitions and vouchers
into Jira with the real mlc-agent, against the PeopleSoft Integration Broker
simulator (tests/sims/psft_sim.py) and the Jira simulator on 127.0.0.1.

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
PSFT_PASSWORD = "demo-pass"

# what each record kind is called in the simulator, its flow, its list
# service and key columns, and the Jira marker prefix
KINDS = {
    "po": {"flow": "psft_pos", "op": "MLC_PO_LIST.v1", "path": "purchaseorders", "qas": "MLC_PO_QRY",
           "keys": ("BUSINESS_UNIT", "PO_ID"), "prefix": "psftpo-", "issue_type": "Purchase Order"},
    "voucher": {"flow": "psft_vouchers", "op": "MLC_VCHR_LIST.v1", "path": "vouchers",
                "keys": ("BUSINESS_UNIT", "VOUCHER_ID"), "prefix": "psftvc-",
                "issue_type": "Vendor Invoice"},
    "requisition": {"flow": "psft_reqs", "op": "MLC_REQ_LIST.v1", "path": "requisitions",
                    "keys": ("BUSINESS_UNIT", "REQ_ID"), "prefix": "psftrq-",
                    "issue_type": "Requisition"},
}
SIM_KIND = {"po": "po", "voucher": "voucher", "requisition": "req"}

MAPPINGS = {
    "po": {
        "summary": {"template": "PO {BUSINESS_UNIT}-{PO_ID}: {VENDOR_NAME}", "required": True, "max": 255},
        "description": "Purchase order {PO_ID} of business unit {BUSINESS_UNIT}, status {PO_STATUS}.\n"
                       "Vendor {VENDOR_ID} {VENDOR_NAME} (terms {VENDOR_TERMS}), buyer {BUYER_ID}.\n"
                       "Amount {PO_AMT} {CURRENCY_CD}, {LINE_COUNT} lines:\n{LINES_SUMMARY}",
        "labels": {"list": ["psft", "po", "{BUSINESS_UNIT}"]},
        "customfield_10061": "{VENDOR_NAME}",                  # Vendor
        "customfield_10062": {"from": "PO_AMT"},               # Amount (a number field)
        "customfield_10063": {"from": "PO_STATUS", "map": {"A": "Approved", "D": "Approved", "C": "Approved",
                                                           "DA": "Denied"}, "default": "Pending"},
    },
    "voucher": {
        "summary": {"template": "Invoice {INVOICE_ID} from {VENDOR_NAME}", "required": True, "max": 255},
        "description": "Voucher {VOUCHER_ID} of {BUSINESS_UNIT}: {GROSS_AMT} {TXN_CURRENCY_CD}, due "
                       "{DUE_DT}, approval {APPR_STATUS}.",
        "labels": {"list": ["psft", "voucher", "{BUSINESS_UNIT}"]},
        "duedate": {"from": "DUE_DT"},
        "customfield_10060": "{INVOICE_ID}",                   # Invoice Number
        "customfield_10061": "{VENDOR_NAME}",
        "customfield_10062": {"from": "GROSS_AMT"},
        "customfield_10063": {"from": "APPR_STATUS", "map": {"A": "Approved", "D": "Denied"}, "default": "Pending"},
    },
    "requisition": {
        "summary": {"template": "REQ {BUSINESS_UNIT}-{REQ_ID}: {REQ_NAME}", "required": True, "max": 255},
        "description": "Requisition {REQ_ID} by {REQUESTOR_ID}, status {REQ_STATUS}, {REQ_AMT} "
                       "{CURRENCY_CD}.\n{LINES_SUMMARY}",
        "labels": {"list": ["psft", "requisition", "{BUSINESS_UNIT}"]},
    },
}


# PeopleSoft PO status -> the procurement workflow's Jira status; statuses a
# new issue cannot reach in one step go through status_via
PO_STATUS = {"I": "Open", "O": "Open", "LD": "Open", "PA": "Awaiting approval", "A": "Approved", "D": "Approved",
             "PX": "Approved", "DA": "Rejected", "C": "Closed", "X": "Closed"}
VIA = {"Approved": ["Awaiting approval"], "Rejected": ["Awaiting approval"],
       "Closed": ["Awaiting approval", "Approved"]}
WORKFLOW = {"po": {"status": {"from": "PO_STATUS", "map": PO_STATUS, "default": "Open"},
                   "comments": {"items": {"id": "c{SEQ_NUM}", "text": "{OPRID}: {COMMENTS}"}, "each": "comments"}}}
MARK = "mlc-comment:"


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def scaled(full):
    return full if not ARGS.quick else max(60, full // 10)


class Env:
    """Fresh PeopleSoft and Jira simulators and a fresh state directory."""

    def __init__(self, pos=0, vouchers=0, reqs=0, shared=0, max_rows=1000, psft_args=()):
        self.dir = tempfile.mkdtemp(prefix="mlc-psft-")
        self.psft = harness.Sim("psft_sim.py", ["--auth", "both", "--pos", str(pos), "--vouchers", str(vouchers),
                                                "--reqs", str(reqs), "--shared-stamp", str(shared),
                                                "--max-rows", str(max_rows), "--password", PSFT_PASSWORD]
                                + list(psft_args))
        self.jira = harness.Sim("jira_sim.py", ["--project", "PROC", "--workflow", "PROC=procurement"])
        self.config = None
        self.env = harness.agent_env()
        self.env["MLC_PSFT_PASSWORD"] = PSFT_PASSWORD

    def configure(self, kinds=("po",), system=None, source=None, mapping=None, target=None):
        cfg = {
            "agent": {"state_db": os.path.join(self.dir, "state.db"),
                      "key_file": os.path.join(self.dir, "secret.key"), "log_level": "warn"},
            "systems": {
                "erp": {"type": "psft", "base_url": self.psft.url, "node": "PSFT_EP", "auth": "basic",
                        "user": "MLC_SYNC", "password": "${MLC_PSFT_PASSWORD}"},
                "jira": {"type": "jira", "base_url": self.jira.url, "auth": "basic",
                         "email": "sync@example.com", "api_token": "${MLC_JIRA_TOKEN}"},
            },
            "flows": {},
        }
        cfg["systems"]["erp"].update(system or {})
        for k in kinds:
            kd = KINDS[k]
            src = {"system": "erp", "kind": k, "read": "service", "operation": kd["op"], "path": kd["path"],
                   "maxrows": 100}
            src["vendors"] = {"read": "service", "operation": "MLC_VNDR_LIST.v1", "path": "vendors",
                              "params": {"setid": "SHARE"}}
            src.update((source or {}).get(k, {}))
            cfg["flows"][kd["flow"]] = {
                "source": src,
                "target": {"system": "jira", "project": "PROC", "issue_type": kd["issue_type"],
                           "marker_prefix": kd["prefix"]},
                "schedule": "weekly mon 06:00",
                "mapping": dict(MAPPINGS[k], **((mapping or {}).get(k, {}))),
                # the simulators here answer within 200 ms: a killed run's calls
                # have ended 1 s later
                "max_attempts": 20, "settle_after": "1s",
            }
            cfg["flows"][kd["flow"]]["target"].update((target or {}).get(k, {}))
        import json
        self.config = os.path.join(self.dir, "agent.json")
        with open(self.config, "w") as f:
            json.dump(cfg, f, indent=2)
        return self.config

    def agent(self, *args, timeout=600):
        return harness.run_agent(ARGS.agent, self.config, *args, timeout=timeout, env=self.env)

    def sync(self, flow, want_rc=0, what="sync"):
        r = self.agent("sync", flow)
        expect(r.returncode == want_rc,
               f"{what}: exit {r.returncode}, expected {want_rc}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}")
        return r, summary(r, flow)

    def issues(self):
        return self.jira.ctl("/_sim/issues")

    def rows(self, kind):
        return self.psft.ctl(f"/_sim/rows?kind={SIM_KIND[kind]}")

    def db(self, sql, *params):
        con = sqlite3.connect(os.path.join(self.dir, "state.db"))
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def jira_api(self, method, path, body=None):
        import base64
        import json
        import urllib.request
        auth = base64.b64encode(f"sync@example.com:{harness.JIRA_TOKEN}".encode()).decode()
        req = urllib.request.Request(self.jira.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Basic " + auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
            return json.loads(data) if data else None

    def comment_ids(self, key):
        """The source comment ids on issue key, from the agent's markers, in
        order and with any repeats."""
        out, start = [], 0
        while True:
            page = self.jira_api("GET", f"/rest/api/3/issue/{key}/comment?startAt={start}&maxResults=50")
            for c in page["comments"]:
                out += [t[len(MARK):] for t in texts_of(c["body"]) if t.startswith(MARK)]
            start += len(page["comments"])
            if not page["comments"] or start >= page["total"]:
                return out

    def close(self):
        self.psft.stop()
        self.jira.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def summary(r, flow):
    for line in r.stdout.splitlines():
        if line.startswith(flow + ": created"):
            parts = line.split(":", 1)[1].replace(",", "").split()
            return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
    raise AssertionError(f"no summary line for {flow} in: {r.stdout!r}\nstderr: {r.stderr[-2000:]}")


def texts_of(node):
    """The text leaves of an Atlassian Document Format node."""
    if isinstance(node, dict):
        if node.get("type") == "text":
            yield node.get("text", "")
        for ch in node.get("content") or []:
            yield from texts_of(ch)


def want_comments(row):
    return [f"c{c['SEQ_NUM']}" for c in row.get("comments") or []]


def marker(kind, row):
    kd = KINDS[kind]
    return kd["prefix"] + "-".join(str(row[c]) for c in kd["keys"])


def live_rows(e, kind):
    rows = e.rows(kind)
    return [r for r in rows if r.get("VOUCHER_STYLE") != "TMPL"]


def exactly_once(e, kind):
    """Every record of the kind (templates aside) has one issue, no more."""
    want = {marker(kind, r) for r in live_rows(e, kind)}
    counts = collections.Counter(lab for it in e.issues() for lab in it.get("labels", [])
                                 if lab.startswith(KINDS[kind]["prefix"]))
    dup = [k for k, v in counts.items() if v > 1]
    missing = want - set(counts)
    extra = set(counts) - want
    expect(not dup, f"{kind}: {len(dup)} records have more than one issue, e.g. {dup[:5]}")
    expect(not missing, f"{kind}: {len(missing)} records have no issue, e.g. {sorted(missing)[:5]}")
    expect(not extra, f"{kind}: issues for records that do not exist, e.g. {sorted(extra)[:5]}")
    return len(want)


def by_marker(e, prefix):
    return {lab: it for it in e.issues() for lab in it.get("labels", []) if lab.startswith(prefix)}


@test
def capped_windows_and_shared_stamps_give_one_issue_per_record():
    """2,000 POs (400 on one LAST_DTTM_UPDATE), 500 vouchers and 300
    requisitions, answers capped at 100 rows: one issue each, fields mapped;
    100 changed POs are 100 updates; nothing changed costs no Jira write."""
    npo, nv, nr = scaled(2000), scaled(500), scaled(300)
    e = Env(pos=npo, vouchers=nv, reqs=nr, shared=min(400, npo // 5), max_rows=100)
    try:
        e.configure(kinds=("po", "voucher", "requisition"),
                    source={"voucher": {"sorted": True}})
        for k in ("po", "voucher", "requisition"):
            _, s = e.sync(KINDS[k]["flow"], what=f"first {k} sync")
            n = exactly_once(e, k)
            expect(s["created"] == n and s["failed"] == 0, f"first {k} sync: {s}, expected {n} created")
        # the fields, checked against the source rows
        pos = by_marker(e, "psftpo-")
        vendors = {(v["SETID"], v["VENDOR_ID"]): v for v in e.psft.ctl("/_sim/rows?kind=vendor")}
        for row in e.rows("po")[:: max(1, npo // 40)]:
            it = pos[marker("po", row)]
            v = vendors[(row["VENDOR_SETID"], row["VENDOR_ID"])]
            want = f"PO {row['BUSINESS_UNIT']}-{row['PO_ID']}: {v['NAME1'].strip()}"
            expect(it["fields"]["summary"] == want, f"summary {it['fields']['summary']!r}, expected {want!r}")
            expect(row["BUSINESS_UNIT"] in it["labels"], f"labels {it['labels']}")
            f = it["fields"]
            expect(f.get("customfield_10061") == v["NAME1"].strip(), f"vendor field {f.get('customfield_10061')!r}")
            expect(isinstance(f.get("customfield_10062"), (int, float)) and abs(f["customfield_10062"] - row["PO_AMT"]) < 0.005,
                   f"amount field {f.get('customfield_10062')!r}, expected {row['PO_AMT']}")
            expect((f.get("customfield_10063") or {}).get("value") in ("Approved", "Denied", "Pending"),
                   f"approval status field {f.get('customfield_10063')!r}")
            expect(it["fields"]["issuetype"]["name"] == "Purchase Order", f"issue type {it['fields']['issuetype']}")
        vcs = by_marker(e, "psftvc-")
        for row in live_rows(e, "voucher")[:: max(1, nv // 20)]:
            f = vcs[marker("voucher", row)]["fields"]
            expect(f.get("customfield_10060") == row["INVOICE_ID"], f"invoice number {f.get('customfield_10060')!r}")
            expect(f.get("duedate") == row["DUE_DT"], f"due date {f.get('duedate')!r}, expected {row['DUE_DT']}")
        stats = e.psft.stats()["requests"]
        print(f"#   PeopleSoft calls for {npo}+{nv}+{nr} records: {sum(stats.values())}", flush=True)
        # 100 POs edited by buyers: 100 updates, no creates
        k = min(100, npo // 4)
        e.psft.ctl("/_sim/touch", {"kind": "po", "count": k})
        e.jira.ctl("/_sim/reset_stats", {})
        _, s = e.sync("psft_pos", what="sync after edits")
        expect(s["updated"] == k and s["created"] == 0 and s["failed"] == 0, f"after {k} edits: {s}")
        st = e.jira.stats()["requests"]
        expect(st.get("issue_bulk", 0) == 0 and st.get("issue_create", 0) == 0, f"creates: {st}")
        exactly_once(e, "po")
        # nothing changed: no Jira write at all
        e.jira.ctl("/_sim/reset_stats", {})
        for k in ("po", "voucher", "requisition"):
            _, s = e.sync(KINDS[k]["flow"], what=f"{k} sync without changes")
            expect(s["created"] == 0 and s["updated"] == 0, f"{k} without changes: {s}")
        expect(e.jira.stats()["writes"] == 0, f"Jira writes without changes: {e.jira.stats()}")
    finally:
        e.close()


@test
def query_access_services_read_the_same_records():
    """The delivered QAS path (ExecuteQuery, alias-prefixed columns, prompts)
    with lines merged from the line query gives the same one issue per PO."""
    npo = scaled(600)
    e = Env(pos=npo, shared=min(150, npo // 4), max_rows=100)
    try:
        e.configure(kinds=("po",), source={"po": {"read": "qas", "query": "MLC_PO_QRY", "operation": None,
                                                  "path": None, "children": {"lines": "MLC_PO_LINE_QRY"},
                                                  "vendors": {"read": "qas", "query": "MLC_VNDR_QRY"}}})
        import json
        cfg = json.load(open(e.config))
        src = cfg["flows"]["psft_pos"]["source"]
        for k in [k for k, v in list(src.items()) if v is None]:
            del src[k]
        json.dump(cfg, open(e.config, "w"))
        _, s = e.sync("psft_pos", what="QAS sync")
        n = exactly_once(e, "po")
        expect(s["created"] == n, f"QAS sync: {s}")
        q = e.psft.stats().get("queries") or e.psft.ctl("/_sim/queries")
        print(f"#   {n} POs through ExecuteQuery; queries {q}", flush=True)
    finally:
        e.close()


@test
def a_vendor_rename_updates_the_issues_that_show_it():
    e = Env(pos=scaled(300))
    try:
        e.configure(kinds=("po",))
        e.sync("psft_pos", what="first sync")
        row = e.rows("po")[0]
        ren = e.psft.ctl("/_sim/vendor/rename", {"setid": row["VENDOR_SETID"], "vendor_id": row["VENDOR_ID"],
                                                 "name": "Renamed Supplies GmbH"})
        refs = ren["referenced_by"]["po"]
        _, s = e.sync("psft_pos", what="sync after the rename")
        expect(s["updated"] == len(refs) and s["created"] == 0, f"after the rename of a vendor of {len(refs)} POs: {s}")
        pos = by_marker(e, "psftpo-")
        for key in refs:
            it = pos[KINDS["po"]["prefix"] + key.replace("/", "-")]
            expect(it["fields"]["summary"].endswith("Renamed Supplies GmbH"), f"summary {it['fields']['summary']!r}")
        _, s = e.sync("psft_pos", what="sync after that")
        expect(s["updated"] == 0 and s["created"] == 0, f"the rename is carried once: {s}")
    finally:
        e.close()


@test
def approval_status_moves_the_issue_and_each_comment_lands_once():
    """The PO's approval status is the issue's status (through the
    procurement workflow's transitions), and each PeopleSoft comment is one
    Jira comment: on create, after a status change, and never again."""
    e = Env(pos=scaled(60))
    try:
        e.configure(kinds=("po",), mapping=WORKFLOW, target={"po": {"status_via": VIA}})
        e.sync("psft_pos", what="first sync")
        issues = by_marker(e, "psftpo-")
        rows = e.rows("po")
        for row in rows:
            it = issues[marker("po", row)]
            expect(it["status"] == PO_STATUS[row["PO_STATUS"]],
                   f"{marker('po', row)}: status {it['status']!r} for PeopleSoft {row['PO_STATUS']}")
            got = e.comment_ids(it["key"])
            expect(got == want_comments(row), f"{it['key']}: comments {got}, expected {want_comments(row)}")
        # a buyer submits an open PO, then it is approved; a comment comes with it
        row = next(r for r in rows if r["PO_STATUS"] == "O")
        key = {"BUSINESS_UNIT": row["BUSINESS_UNIT"], "PO_ID": row["PO_ID"]}
        it = issues[marker("po", row)]
        e.psft.ctl("/_sim/status", {"kind": "po", "key": key, "status": "PA"})
        e.sync("psft_pos", what="sync after submit")
        expect(by_marker(e, "psftpo-")[marker("po", row)]["status"] == "Awaiting approval", "after PA")
        e.psft.ctl("/_sim/status", {"kind": "po", "key": key, "status": "A"})
        c = e.psft.ctl("/_sim/comment", {"kind": "po", "key": key, "text": "Approved by the plant manager"})
        e.jira.ctl("/_sim/reset_stats", {})
        _, s = e.sync("psft_pos", what="sync after approval")
        expect(s["updated"] == 1, f"after approval: {s}")
        expect(by_marker(e, "psftpo-")[marker("po", row)]["status"] == "Approved", "after A")
        got = e.comment_ids(it["key"])
        expect(got == want_comments(row) + [f"c{c['SEQ_NUM']}"], f"comments after approval: {got}")
        st = e.jira.stats()["requests"]
        expect(st.get("comment_add", 0) == 1, f"one comment posted: {st}")
        # nothing new: no Jira writes, no comment reads
        e.jira.ctl("/_sim/reset_stats", {})
        e.sync("psft_pos", what="sync without changes")
        expect(e.jira.stats()["writes"] == 0, f"writes without changes: {e.jira.stats()}")
    finally:
        e.close()


@test
def comments_land_once_across_kill_9():
    n = scaled(120) if not ARGS.quick else 40
    e = Env(pos=n)
    rng = random.Random(int(os.environ.get("MLC_TEST_SEED", "13")))
    try:
        e.configure(kinds=("po",), mapping=WORKFLOW, target={"po": {"status_via": VIA}})
        e.sync("psft_pos", what="first sync")
        rows = e.rows("po")
        for row in rng.sample(rows, min(30, len(rows))):
            key = {"BUSINESS_UNIT": row["BUSINESS_UNIT"], "PO_ID": row["PO_ID"]}
            for i in range(2):
                e.psft.ctl("/_sim/comment", {"kind": "po", "key": key, "text": f"Note {i} for {row['PO_ID']}"})
        e.jira.faults(slow_ms=120)
        killed = 0
        for _ in range(10):
            p = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "sync", "psft_pos"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e.env)
            time.sleep(rng.uniform(0.2, 2.0))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed += 1
            p.wait()
        e.jira.faults(slow_ms=0)
        for _ in range(5):
            e.db("UPDATE state_outbox SET next_at = 0")
            if e.agent("sync", "psft_pos").returncode == 0:
                break
        expect(killed >= 3, f"only {killed} runs were still going when killed")
        issues = by_marker(e, "psftpo-")
        posted = 0
        for row in e.rows("po"):
            it = issues[marker("po", row)]
            got = e.comment_ids(it["key"])
            expect(got == want_comments(row), f"{it['key']}: comments {got}, expected {want_comments(row)}")
            posted += len(got)
        print(f"#   {killed} kills; {posted} comments on {len(rows)} issues, each once", flush=True)
        exactly_once(e, "po")
    finally:
        e.close()


@test
def kill_9_at_random_moments_loses_and_doubles_nothing():
    npo = 1500 if not ARGS.quick else 400
    kills = 20 if not ARGS.quick else 6
    e = Env(pos=npo, shared=min(300, npo // 5), max_rows=100)
    rng = random.Random(int(os.environ.get("MLC_TEST_SEED", "11")))
    try:
        # sorted keyset reads: about one PeopleSoft call per 100 rows, so runs
        # reach Jira early and the kills land in delivery as well as in reads
        e.configure(kinds=("po",), source={"po": {"sorted": True}})
        e.jira.faults(slow_ms=150 if ARGS.quick else 120)
        e.psft.faults(slow_ms=20)
        killed, progress = 0, []
        for i in range(kills):
            p = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "sync", "psft_pos"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e.env)
            # a run after a kill first waits settle_after (1 s): kills after it
            time.sleep(rng.uniform(0.5, 3.0))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed += 1
            p.wait()
            progress.append(len(e.issues()))
            if i == kills // 2:
                e.psft.ctl("/_sim/touch", {"kind": "po", "count": 40})
        e.jira.faults(slow_ms=0)
        e.psft.faults(slow_ms=0)
        e.sync("psft_pos", what="final sync")
        expect(killed >= kills // 2, f"only {killed} of {kills} runs were still going when killed")
        expect(progress[-1] >= npo // 4, f"killed runs created only {progress[-1]} issues: {progress}")
        print(f"#   issues after each killed run: {progress}", flush=True)
        exactly_once(e, "po")
        expect(e.db("SELECT count(*) FROM state_outbox")[0][0] == 0, "outbox not empty")
    finally:
        e.close()


@test
def wrong_settings_and_error_answers_name_what_to_fix_and_lose_nothing():
    """Each failure is one clear line naming the setting to fix; the cursor
    does not move, so the next good run still creates every record."""
    e = Env(pos=40)
    try:
        cases = [
            ("wrong node", {"system": {"node": "PSFT_HR"}}, None, ["node", "PSFT_HR"]),
            ("wrong operation", {"source": {"po": {"operation": "MLC_PO_LST.v1"}}}, None, ["MLC_PO_LST"]),
            ("wrong password", {"system": {"password": "not-the-password"}}, None, ["password"]),
            ("200 with an error payload", {}, {"error_200": 1000}, ["PeopleSoft"]),
            ("IBResponse 500", {}, {"ib_500": 1000}, ["IBResponse"]),
        ]
        for what, conf, faults, words in cases:
            e.configure(kinds=("po",), system=conf.get("system"), source=conf.get("source"))
            if faults:
                e.psft.faults(**faults)
            r = e.agent("sync", "psft_pos")
            if faults:
                e.psft.faults(**{k: 0 for k in faults})
            expect(r.returncode != 0, f"{what}: the sync succeeded")
            err = [ln for ln in r.stderr.splitlines() if ln.startswith("mlc-agent:")]
            expect(err, f"{what}: no error line in {r.stderr[-1500:]!r}")
            line = err[-1]
            for w in words:
                expect(w.lower() in line.lower(), f"{what}: {w!r} not in {line!r}")
            expect(PSFT_PASSWORD not in r.stderr and "not-the-password" not in r.stderr,
                   f"{what}: a password in the output")
            expect(len(e.issues()) == 0, f"{what}: issues were created")
            print(f"#   {what}: {line[:200]}", flush=True)
        # a fixed bearer token that has expired: the message says to renew it
        tok = e.psft.ctl("/_sim/token", {"ttl": 3600})
        e.psft.ctl("/_sim/expire_tokens", {})
        e.configure(kinds=("po",), system={"auth": "bearer", "token": "${MLC_PSFT_TOKEN}", "user": "",
                                           "password": ""})
        e.env["MLC_PSFT_TOKEN"] = tok.get("access_token") or tok.get("token")
        r = e.agent("sync", "psft_pos")
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("mlc-agent:")]
        expect(r.returncode != 0 and err and "token" in err[-1].lower(),
               f"expired bearer: exit {r.returncode}: {r.stderr[-1500:]}")
        expect(e.env["MLC_PSFT_TOKEN"] not in r.stderr, "the token in the output")
        print(f"#   expired bearer: {err[-1][:200]}", flush=True)
        e.configure(kinds=("po",))
        _, s = e.sync("psft_pos", what="sync with the right settings")
        expect(s["created"] == 40, f"after the errors: {s}")
        exactly_once(e, "po")
    finally:
        e.close()


@test
def an_expired_bearer_is_renewed_once():
    e = Env(pos=30)
    try:
        e.configure(kinds=("po",), system={"auth": "oauth", "token_url": e.psft.url + "/oauth2/v1/token",
                                           "client_id": "mlc-client", "client_secret": "${MLC_PSFT_SECRET}",
                                           "user": "", "password": ""})
        e.env["MLC_PSFT_SECRET"] = "mlc-secret"
        e.sync("psft_pos", what="first sync")
        e.psft.ctl("/_sim/expire_tokens", {})
        e.psft.ctl("/_sim/touch", {"kind": "po", "count": 5})
        _, s = e.sync("psft_pos", what="sync with an expired token")
        expect(s["updated"] == 5, f"after the token expired: {s}")
        exactly_once(e, "po")
    finally:
        e.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("-k", default=None, help="run tests whose name contains this")
    ap.add_argument("--quick", action="store_true", help="smaller data sets")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    passed = failed = 0
    n = 0
    for fn in TESTS:
        if ARGS.k and ARGS.k not in fn.__name__:
            continue
        n += 1
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f"ok {n} {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Exception as ex:  # noqa: BLE001 - a test's failure of any kind is reported
            failed += 1
            print(f"not ok {n} {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
            for line in str(ex).splitlines()[:12]:
                print(f"#   {line}", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
