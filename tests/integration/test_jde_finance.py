#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests: the real mlc-agent reading the JD Edwards finance tables
(F0411 AP ledger, F4301/F4311 purchase orders, F0901 accounts, F0006 business
units, F0101 suppliers) from the AIS simulator, with composite keys, the
UPMJ/UPMT change pair, implied-decimal amounts and padded codes.

Until the warehouse (pgsql) target exists these tests read through
`mlc-agent sync FLOW --dry-run`, which prints every mapped record
("would create KEY: {...}") and writes nothing, with a Jira simulator as the
flow's target; one small test writes real Jira issues to check that a rerun
and touched rows move exactly the changed ones.

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402

ARGS = None
TESTS = []

# the warehouse_ap_invoices mapping of issue 15, in the names the connector
# gives rows: bare data-dictionary aliases (AIS "F0411_KCO" -> "KCO")
AP_MAPPING = {
    "company": "{KCO}", "doc": "{DOC}", "doc_type": "{DCT}", "pay_item": "{SFX}", "supplier": "{AN8}",
    "invoice_date": {"from": "DIVJ", "date": "yyyymmdd"},
    "gross_amount": {"from": "AG", "decimals": 2}, "open_amount": {"from": "AAP", "decimals": 2},
    "currency": "{CRCD}", "business_unit": "{MCU}", "gl_object": "{OBJ}", "gl_subsidiary": "{SUB}",
    "pay_status": "{PST}",
}
AP_SOURCE = {"system": "jde", "table": "F0411", "key": ["KCO", "DOC", "DCT", "SFX"],
             "changed": {"date": "UPMJ", "time": "UPMT"}}
PO_LINE_MAPPING = {
    "company": "{KCOO}", "order_no": "{DOCO}", "order_type": "{DCTO}", "line": {"from": "LNID", "decimals": 3},
    "item": "{LITM}", "description": "{DSC1}", "quantity": "{UORG}",
    "unit_cost": {"from": "PRRC", "decimals": 4}, "amount": {"from": "AEXP", "decimals": 2},
    "business_unit": "{MCU}", "requested": {"from": "DRQJ", "date": "yyyymmdd"},
}
PO_LINE_SOURCE = {"system": "jde", "table": "F4311", "key": ["KCOO", "DOCO", "DCTO", "SFXO", "LNID"],
                  "changed": {"date": "UPMJ", "time": "UPMT"}}


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Env:
    """Fresh simulators and state directory; one flow "fin" reading a finance table."""

    def __init__(self, jde_args=(), jde=None, source=AP_SOURCE, mapping=AP_MAPPING):
        self.dir = tempfile.mkdtemp(prefix="mlc-fin-")
        self.jde = harness.Sim("jde_sim.py", list(jde_args))
        self.jira = harness.Sim("jira_sim.py", [])
        cfg = harness.make_config(self.dir, self.jde.url, self.jira.url, jde=jde, mapping=mapping,
                                  flow={"source": source})
        with open(cfg) as f:
            c = json.load(f)
        c["flows"]["fin"] = c["flows"].pop("jde_workorders")
        c["flows"]["fin"]["target"]["marker_prefix"] = "fin-"
        with open(cfg, "w") as f:
            json.dump(c, f, indent=2)
        self.config = cfg

    def agent(self, *args, timeout=600):
        return harness.run_agent(ARGS.agent, self.config, *args, timeout=timeout)

    def rows(self, table):
        return self.jde.ctl("/_sim/rows?table=" + table)

    def close(self):
        self.jde.stop()
        self.jira.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def dry_run(e):
    """Run `sync fin --dry-run`: {key: mapped record}, the count of records
    printed, and the summary line."""
    r = e.agent("sync", "fin", "--dry-run")
    expect(r.returncode == 0, f"dry run: exit {r.returncode}\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-3000:]}")
    out, n, summary = {}, 0, ""
    for line in r.stdout.splitlines():
        if line.startswith("would create ") or line.startswith("would update "):
            key, _, payload = line[len("would create "):].partition(": ")
            out[key] = json.loads(payload)
            n += 1
        elif "created" in line and "fin:" in line:
            summary = line
        elif line.startswith("would fail") or line.startswith("cannot check"):
            raise AssertionError(f"dry run refused a record: {line}")
    return out, n, summary


def decimal_text(v, places):
    """The expected mapping of an integer with implied decimals."""
    neg = v < 0
    s = str(abs(v)).rjust(places + 1, "0")
    t = s[:len(s) - places] + ("." + s[len(s) - places:] if places else "")
    return ("-" if neg and abs(v) else "") + t


def iso(yyyymmdd):
    return "%s-%s-%s" % (yyyymmdd[:4], yyyymmdd[4:6], yyyymmdd[6:]) if yyyymmdd else None


def ap_key(r):
    return "|".join(str(r[k]).strip() for k in ("KCO", "DOC", "DCT", "SFX"))


def check_ap_values(got, rows):
    """Every row's mapped values equal what the source row says."""
    for r in rows:
        m = got[ap_key(r)]
        want = {"company": r["KCO"], "doc": str(r["DOC"]), "doc_type": r["DCT"], "pay_item": r["SFX"],
                "supplier": str(r["AN8"]), "invoice_date": iso(r["DIVJ"]),
                "gross_amount": decimal_text(r["AG"], 2), "open_amount": decimal_text(r["AAP"], 2),
                "currency": r["CRCD"], "business_unit": r["MCU"].strip(), "gl_object": r["OBJ"].strip(),
                "gl_subsidiary": r["SUB"].strip() or None, "pay_status": r["PST"]}
        for k, v in want.items():
            expect(m.get(k) == v, f"{ap_key(r)}.{k}: mapped {m.get(k)!r}, source says {v!r} (row {r})")


@test
def ap_ledger_read_exactly_once_with_values():
    n = 5000 if ARGS.quick else 50000
    e = Env(["--ap-invoices", str(n), "--pos", "20", "--accounts", "400", "--business-units", "40",
             "--suppliers", "300"], jde={"page_size": 500})
    try:
        got, printed, summary = dry_run(e)
        rows = e.rows("F0411")
        expect(len(rows) == n, f"the simulator holds {len(rows)} F0411 rows, wanted {n}")
        expect(printed == n, f"{printed} records mapped for {n} rows (a row read twice or skipped)")
        expect(set(got) == {ap_key(r) for r in rows}, "the mapped keys are not the F0411 keys")
        expect(f"created {n}," in summary and "failed 0" in summary, f"summary: {summary!r}")
        # every value of every row: amounts with implied decimals (negative
        # debit memos, 1-cent and huge amounts), yyyyMMdd dates, trimmed codes
        check_ap_values(got, rows)
        expect(any(r["AG"] < 0 for r in rows) and any(r["MCU"].startswith(" ") for r in rows),
               "the data has no negative amounts or padded business units to check")
        # joins hold in the source: supplier, business unit, account
        sups = {r["AN8"] for r in e.rows("F0101") if r["AT1"] == "V"}
        bus = {r["MCU"] for r in e.rows("F0006")}
        accts = {(r["MCU"], r["OBJ"], r["SUB"]) for r in e.rows("F0901")}
        bad = [r for r in rows if r["AN8"] not in sups or r["MCU"] not in bus
               or (r["MCU"], r["OBJ"], r["SUB"]) not in accts]
        expect(not bad, f"{len(bad)} vouchers do not join to a supplier, business unit or account: {bad[:2]}")
        st = e.jde.stats()["requests"]
        expect(st.get("next", 0) == n // 500 - 1 and st.get("dataservice", 0) == 1,
               f"one query and its next pages expected: {st}")
    finally:
        e.close()


@test
def basic_mode_keyset_over_batches_sharing_a_stamp():
    # Basic auth has no next links: every page is a new query strictly after
    # the last (UPMJ, UPMT, KCO, DOC, DCT, SFX). Voucher batches of up to 120
    # documents share one stamp, more than a page of 25 holds.
    e = Env(["--allow-basic", "--ap-invoices", "1500"], jde={"auth": "basic", "page_size": 25})
    try:
        rows = e.rows("F0411")
        stamps = {}
        for r in rows:
            stamps[(r["UPMJ"], r["UPMT"])] = stamps.get((r["UPMJ"], r["UPMT"]), 0) + 1
        expect(max(stamps.values()) > 25, f"no stamp is shared by more than a page: {max(stamps.values())}")
        got, printed, _ = dry_run(e)
        expect(printed == len(rows) and set(got) == {ap_key(r) for r in rows},
               f"{printed} records for {len(rows)} rows, {len(set(got))} distinct keys")
        check_ap_values(got, rows)
        st = e.jde.stats()["requests"]
        expect(st.get("next", 0) == 0 and st.get("dataservice", 0) >= len(rows) // 25,
               f"basic mode must page by keyset queries: {st}")
    finally:
        e.close()


@test
def po_lines_five_column_key_and_four_decimal_costs():
    e = Env(["--pos", "300", "--po-lines-per-po", "3"], source=PO_LINE_SOURCE, mapping=PO_LINE_MAPPING,
            jde={"page_size": 100})
    try:
        got, printed, _ = dry_run(e)
        rows = e.rows("F4311")
        expect(len(rows) == 900 and printed == 900, f"{printed} records for {len(rows)} rows")
        for r in rows:
            k = "|".join(str(r[c]).strip() for c in ("KCOO", "DOCO", "DCTO", "SFXO", "LNID"))
            m = got[k]
            want = {"line": decimal_text(r["LNID"], 3), "unit_cost": decimal_text(r["PRRC"], 4),
                    "amount": decimal_text(r["AEXP"], 2), "item": r["LITM"].strip(),
                    "business_unit": r["MCU"].strip(), "requested": iso(r["DRQJ"]), "quantity": str(r["UORG"])}
            for f, v in want.items():
                expect(m.get(f) == v, f"{k}.{f}: mapped {m.get(f)!r}, source says {v!r}")
        heads = {(h["KCOO"], h["DOCO"]): h for h in e.rows("F4301")}
        for (co, doco), h in heads.items():
            lines = [r for r in rows if r["KCOO"] == co and r["DOCO"] == doco]
            expect(h["OTOT"] == sum(r["AEXP"] for r in lines), f"PO {doco}: OTOT is not the sum of its lines")
    finally:
        e.close()


@test
def rerun_reads_nothing_new_and_touched_rows_are_updated():
    # a real sync into Jira (500 issues), a rerun, then 20 touched vouchers;
    # Jira takes Jira fields: a summary, the open amount and business unit in
    # text fields (a touch pays or reopens a pay item: the open amount changes)
    jira_mapping = {"summary": {"template": "Voucher {KCO} {DOC} {DCT} {SFX}", "required": True},
                    "customfield_10050": {"from": "AAP", "decimals": 2}, "customfield_10051": {"from": "MCU"}}
    e = Env(["--ap-invoices", "500"], jde={"page_size": 200}, mapping=jira_mapping)
    try:
        r = e.agent("sync", "fin")
        expect(r.returncode == 0, f"first sync: exit {r.returncode}: {r.stderr[-2000:]}")
        expect("created 500," in r.stdout, f"first sync: {r.stdout!r}")
        r = e.agent("sync", "fin")
        expect(r.returncode == 0 and "created 0, updated 0," in r.stdout, f"rerun: {r.stdout!r} {r.stderr[-1000:]}")
        t = e.jde.ctl("/_sim/touch", {"table": "F0411", "count": 20})
        expect(len(t["keys"]) == 20 and "UPMT" in t, f"touch: {t}")
        r = e.agent("sync", "fin")
        expect(r.returncode == 0 and "created 0, updated 20," in r.stdout, f"after touch: {r.stdout!r}")
        con = sqlite3.connect(os.path.join(e.dir, "state.db"))
        try:
            cur = con.execute("SELECT value FROM state_cursor WHERE flow = 'fin'").fetchone()
        finally:
            con.close()
        # the watermark: the touched rows' stamp and the last of their composite keys
        expect(cur is not None and cur[0] == "%s|%06d|%s" % (t["UPMJ"], t["UPMT"], max(t["keys"])),
               f"the watermark {cur!r} is not the touched rows' stamp {t['UPMJ']} {t['UPMT']} and last key")
        issues = e.jira.ctl("/_sim/issues")
        expect(len(issues) == 500, f"{len(issues)} Jira issues for 500 vouchers")
    finally:
        e.close()


@test
def julian_dates_as_the_tables_store_them():
    # the simulator sends dates as CYYDDD numbers: a mapping's "date":
    # "julian" gives ISO dates, 0 (no date) gives nothing; the Julian change
    # date orders, pages and resumes (the watermark holds it as yyyyMMdd, a
    # second run reads nothing new)
    mapping = {"summary": {"template": "PO {KCOO} {DOCO} {DCTO}", "required": True},
               "customfield_10050": {"from": "TRDJ", "date": "julian"},
               "customfield_10051": {"from": "PDDJ", "date": "julian"}}
    source = {"system": "jde", "table": "F4301", "key": ["KCOO", "DOCO", "DCTO", "SFXO"],
              "changed": {"date": "UPMJ", "time": "UPMT"}}
    e = Env(["--dates", "julian", "--pos", "200"], source=source, mapping=mapping, jde={"page_size": 30})
    try:
        got, printed, _ = dry_run(e)
        heads = e.rows("F4301")
        expect(printed == 200 and len(got) == 200, f"{printed} records for {len(heads)} rows")
        for h in heads:
            m = got["|".join(str(h[c]).strip() for c in ("KCOO", "DOCO", "DCTO", "SFXO"))]
            expect(m["customfield_10050"] == iso(h["TRDJ"]) and m.get("customfield_10051") == iso(h["PDDJ"]),
                   (m, h))
        expect(any(h["PDDJ"] == "" for h in heads), "no blank pick date in the data")
        r = e.agent("sync", "fin")
        expect(r.returncode == 0 and "created 200," in r.stdout, f"sync: {r.stdout!r} {r.stderr[-2000:]}")
        r = e.agent("sync", "fin")
        expect(r.returncode == 0 and "created 0, updated 0," in r.stdout, f"rerun: {r.stdout!r}")
        con = sqlite3.connect(os.path.join(e.dir, "state.db"))
        try:
            cur = con.execute("SELECT value FROM state_cursor WHERE flow = 'fin'").fetchone()[0]
        finally:
            con.close()
        last = max((h["UPMJ"], h["UPMT"]) for h in heads)
        expect(cur.startswith("%s|%06d|" % last), f"watermark {cur!r}, newest row stamp {last}")
    finally:
        e.close()


@test
def a_row_without_a_key_is_refused_and_the_rest_read():
    # the simulator's bad_row fault: one extra row whose KCO is null
    e = Env(["--ap-invoices", "300"], jde={"page_size": 100})
    try:
        e.jde.faults(bad_row=1)
        got, printed, summary = dry_run(e)
        rows = e.rows("F0411")
        expect(printed == 300 and set(got) == {ap_key(r) for r in rows}, f"{printed} records for 300 rows")
        expect("failed 1," in summary, f"the keyless row is not counted as failed: {summary!r}")
    finally:
        e.close()


@test
def master_tables_by_one_column_keys():
    # F0006 by business unit (padded, a text key), F0901 by account id
    # (text with leading zeros), F0101 suppliers by address number
    cases = [("F0006", {"system": "jde", "table": "F0006", "key": ["MCU"]},
              {"business_unit": "{MCU}", "type": "{STYL}", "name": "{DL01}", "company": "{CO}"},
              lambda r: r["MCU"].strip()),
             ("F0901", {"system": "jde", "table": "F0901", "key": "AID", "key_type": "string",
                        "changed": {"date": "UPMJ", "time": "UPMT"}},
              {"account_id": "{AID}", "business_unit": "{MCU}", "object": "{OBJ}", "subsidiary": "{SUB}",
               "name": "{DL01}"}, lambda r: r["AID"]),
             ("F0101", {"system": "jde", "table": "F0101", "key": "AN8",
                        "filter": [{"column": "AT1", "op": "EQUAL", "values": ["V"]}]},
              {"supplier": "{AN8}", "name": "{ALPH}"}, lambda r: str(r["AN8"]))]
    for table, source, mapping, key in cases:
        e = Env(["--business-units", "40", "--accounts", "400", "--suppliers", "300"], source=source,
                mapping=mapping, jde={"page_size": 50})
        try:
            got, printed, _ = dry_run(e)
            rows = [r for r in e.rows(table) if table != "F0101" or r["AT1"] == "V"]
            expect(printed == len(rows) and set(got) == {key(r) for r in rows},
                   f"{table}: {printed} records for {len(rows)} rows")
            for r in rows:
                m = got[key(r)]
                if table == "F0006":
                    expect(m["business_unit"] == r["MCU"].strip() and m["name"] == r["DL01"].strip(), (m, r))
                elif table == "F0901":
                    expect(m["account_id"] == r["AID"] and m["object"] == r["OBJ"].strip()
                           and m.get("subsidiary") == (r["SUB"].strip() or None), (m, r))
                else:
                    expect(m["name"] == r["ALPH"].strip(), (m, r))
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
