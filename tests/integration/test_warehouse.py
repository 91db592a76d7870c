#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The warehouse end to end (issue 15): the real mlc-agent runs the six
JD Edwards finance flows of tests/warehouse.py from the JD Edwards simulator
into a real PostgreSQL (tests/pg.py), and tells the Looker simulator
(tests/sims/looker_sim.py, answering queries from that PostgreSQL) after
each load:

  - the LookML in packaging/looker/ reads only columns the staging tables
    have after `warehouse init` (views and the explores' joins)
  - 50,000 AP invoices (--quick: 3,000) with POs, lines, GL accounts, cost
    centres and suppliers -> row counts equal the source, every row's values
    equal the source converted (the conversion each flow declares), the
    explores' joins (parsed from the model) find their rows; a rerun writes
    nothing, PATCHes nothing, logs no load; 500 changed invoices -> 500
    updates (summary, _loaded_at, values, load_log), one PATCH
  - the agent killed (SIGKILL) at 20 moments (--quick: 6) of loads slowed at
    both ends (JD Edwards pages, PostgreSQL statements) -> after each kill
    load_log counts exactly the committed rows; in the end every row once
    with its values, a refresh after the last load
  - PostgreSQL stopped in the middle of a load -> rows pending, exit 1,
    `status` shows them; after the restart the next run loads everything
    once
  - a query through the Looker simulator sees changed amounts once the
    agent's PATCH dropped the cache (and before it, the cache served the
    old sum)

    python3 tests/integration/test_warehouse.py --agent build/dev/mlc-agent [-k name] [--quick]

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from decimal import Decimal

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402
import pg  # noqa: E402
import warehouse  # noqa: E402

ARGS = None
TESTS = []
PG_PASSWORD = "loader-pass-e2e-15"
LOOKER_SECRET = "looker-secret-e2e"
LOOKML = os.path.join(harness.ROOT, "packaging", "looker")
SUMMARY = re.compile(r"^(\S+): created (\d+), updated (\d+), unchanged (\d+), adopted (\d+), "
                     r"failed (\d+), pending (\d+)", re.M)
SYSTEM_COLUMNS = ("_source_key", "_audit_id", "_loaded_at")


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Env:
    """PostgreSQL with the loader and reader roles, the JD Edwards simulator
    with the finance tables, the Looker simulator reading that PostgreSQL,
    and an agent configuration with the six warehouse flows."""

    def __init__(self, invoices, pos=None, page_size=None, jde_args=()):
        self.dir = tempfile.mkdtemp(prefix="mlc-wh-")
        self.pg = pg.Server(self.dir)
        self.pg.psql(warehouse.roles_sql(PG_PASSWORD))
        pos = pos if pos is not None else max(10, invoices // 20)
        self.jde = harness.Sim("jde_sim.py", ["--seed", "5", "--ap-invoices", str(invoices),
                                              "--pos", str(pos), "--po-lines-per-po", "3",
                                              "--accounts", "120", "--business-units", "16",
                                              "--suppliers", "60"] + list(jde_args))
        self.looker = harness.Sim("looker_sim.py", ["--client-secret", LOOKER_SECRET,
                                                    "--pg", self.pg.conninfo])
        path = harness.make_config(self.dir, self.jde.url, "http://127.0.0.1:1")
        with open(path) as f:
            cfg = json.load(f)
        del cfg["flows"]["jde_workorders"]
        del cfg["systems"]["jira"]
        warehouse.add(cfg, self.pg.port, looker_url=self.looker.url, page_size=page_size)
        for flow in cfg["flows"].values():
            flow["max_attempts"] = 50
        self.cfg = cfg
        self.config = path
        self.write_config()

    def write_config(self):
        with open(self.config, "w") as f:
            json.dump(self.cfg, f, indent=2)

    def env(self):
        env = harness.agent_env()
        env["MLC_PG_PASSWORD"] = PG_PASSWORD
        env["MLC_LOOKER_SECRET"] = LOOKER_SECRET
        return env

    def agent(self, *args, timeout=600):
        return harness.run_agent(ARGS.agent, self.config, *args, timeout=timeout, env=self.env())

    def popen(self, *args):
        return subprocess.Popen([ARGS.agent, "-q", "-c", self.config] + list(args),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(), errors="replace")

    def init(self):
        r = self.agent("warehouse", "init")
        expect(r.returncode == 0, f"warehouse init: exit {r.returncode}: {r.stdout} {r.stderr[-2000:]}")

    def sync(self, want_rc=0, what="sync"):
        r = self.agent("sync", "--all")
        expect(r.returncode == want_rc,
               f"{what}: exit {r.returncode} (want {want_rc}): {r.stdout} {r.stderr[-2000:]}")
        return summaries(r)

    def count(self, sql):
        return int(self.pg.psql(sql)[0][0])

    def json(self, sql):
        """Rows of sql as dicts, with SQL NULL as None and numerics as Decimal."""
        out = self.pg.psql(f"SELECT coalesce(json_agg(t), '[]') FROM ({sql}) t")
        return json.loads(out[0][0], parse_float=Decimal)

    def source(self, table):
        return self.jde.ctl(f"/_sim/rows?table={table}")

    def patches(self):
        return self.looker.ctl("/_sim/patches")

    def state(self, sql):
        db = sqlite3.connect(os.path.join(self.dir, "state.db"))
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def close(self):
        for s in (self.jde, self.looker):
            s.stop()
        self.pg.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def summaries(r):
    """flow -> {created, updated, ...} from the agent's summary lines."""
    out = {}
    for m in SUMMARY.finditer(r.stdout):
        out[m.group(1)] = dict(zip(["created", "updated", "unchanged", "adopted", "failed", "pending"],
                                   map(int, m.groups()[1:])))
    expect(set(out) == set(warehouse.FLOWS),
           f"summary lines for {sorted(out)}, want all of {sorted(warehouse.FLOWS)}: "
           f"{r.stdout} {r.stderr[-1500:]}")
    return out


def total(s, what):
    return sum(v[what] for v in s.values())


# ---------------------------------------------------------------------------
# the source converted as the flows declare it


def source_rows(e, flow):
    """The rows the flow reads: its JD Edwards table, its filter applied."""
    src = warehouse.DEFS[flow][0]
    rows = e.source(src["table"])
    for f in src.get("filter", []):
        expect(f["op"] == "EQUAL", f"the test knows only EQUAL filters, not {f}")
        rows = [r for r in rows if str(r[f["column"]]).strip() in f["values"]]
    return rows


def convert(spec, sql_type, row):
    """The value a staging column should hold for a JD Edwards row: text is
    trimmed of JD Edwards' padding, blank is NULL, dates come from yyyyMMdd,
    amounts get their implied decimals, numbers are numbers."""
    if isinstance(spec, str):
        m = re.fullmatch(r"\{(\w+)\}", spec)
        expect(m, f"the test knows only single-column templates, not {spec!r}")
        col, places, date = m.group(1), None, False
    else:
        col, places, date = spec["from"], spec.get("decimals"), "date" in spec
    v = str(row[col]).strip()
    if v == "":
        return None
    if date:
        return f"{v[0:4]}-{v[4:6]}-{v[6:8]}"
    if places is not None:
        return Decimal(int(v)).scaleb(-places)
    if sql_type in ("bigint", "integer") or sql_type.startswith("numeric"):
        return Decimal(v) if sql_type.startswith("numeric") else int(v)
    return v


def expected(flow, row):
    _src, _table, key, columns, mapping = warehouse.DEFS[flow]
    return {c: convert(mapping[c], columns[c], row) for c in columns}


def key_of(flow, rec):
    return tuple(str(rec[k]) for k in warehouse.DEFS[flow][2])


def check_values(e, flow):
    """The staging table holds exactly the source's keys, each row with the
    source's values converted (every row is compared: cheap next to the load)."""
    _src, table, key, columns, _m = warehouse.DEFS[flow]
    want = {}
    for r in source_rows(e, flow):
        x = expected(flow, r)
        want[key_of(flow, x)] = x
    cols = ", ".join(list(columns) + list(SYSTEM_COLUMNS))
    got = {}
    dup = []
    for rec in e.json(f"SELECT {cols} FROM mlc_staging.{table}"):
        k = key_of(flow, rec)
        if k in got:
            dup.append(k)
        got[k] = rec
    expect(not dup, f"{table}: keys twice: {dup[:3]}")
    expect(len(got) == len(want),
           f"{table}: {len(got)} rows in PostgreSQL, {len(want)} in {warehouse.FLOWS[flow][0]}")
    missing = sorted(set(want) - set(got))
    expect(not missing, f"{table}: {len(missing)} source rows missing, e.g. {missing[:3]}")
    bad = []
    for k, w in want.items():
        g = got[k]
        for c in columns:
            if g[c] != w[c]:
                bad.append((k, c, g[c], w[c]))
        if not g["_source_key"] or not g["_audit_id"] or not g["_loaded_at"]:
            bad.append((k, "_source_key/_audit_id/_loaded_at", g["_source_key"], g["_audit_id"]))
    expect(not bad, f"{table}: {len(bad)} wrong values in {len(want)} rows, e.g. {bad[:4]}")
    return len(want)


def check_all_tables(e):
    return {warehouse.FLOWS[flow][1]: check_values(e, flow) for flow in warehouse.FLOWS}


def check_load_log_counts(e):
    """Each table's rows were each inserted once, and load_log (written in
    the batches' transactions) says so: its inserted rows per table equal
    the table's count."""
    for flow, (_jt, table) in warehouse.FLOWS.items():
        n = e.count(f"SELECT count(*) FROM mlc_staging.{table}")
        logged = e.count("SELECT coalesce(sum(rows_inserted), 0) FROM mlc_staging.load_log "
                         f"WHERE flow = '{flow}' AND table_name = '{table}'")
        expect(logged == n, f"load_log counts {logged} rows inserted into {table}, the table holds {n}: "
                            "a batch committed without its load_log row, or the reverse")


# ---------------------------------------------------------------------------
# the LookML


def lookml_views():
    """view name -> (sql_table_name, {dimension or measure name: column of
    ${TABLE}.column in it, or None}, [every ${TABLE}.column named])."""
    views = {}
    vdir = os.path.join(LOOKML, "views")
    for fn in sorted(os.listdir(vdir)):
        if not fn.endswith(".view.lkml"):
            continue
        with open(os.path.join(vdir, fn)) as f:
            text = re.sub(r"#[^\n]*", "", f.read())
        m = re.search(r"\bview:\s*(\w+)\s*\{", text)
        expect(m, f"{fn}: no view")
        t = re.search(r"sql_table_name:\s*([\w.]+)\s*;;", text)
        expect(t, f"{fn}: no sql_table_name")
        fields = {}
        for fm in re.finditer(r"\b(?:dimension|dimension_group|measure):\s*(\w+)\s*\{", text):
            # the field's body: up to the next field (blocks do not nest further here)
            rest = text[fm.end():]
            nxt = re.search(r"\b(?:dimension|dimension_group|measure):\s*\w+\s*\{", rest)
            body = rest[:nxt.start()] if nxt else rest
            cols = re.findall(r"\$\{TABLE\}\.(\w+)", body)
            fields[fm.group(1)] = cols[0] if len(cols) == 1 else None
        views[m.group(1)] = (t.group(1), fields, re.findall(r"\$\{TABLE\}\.(\w+)", text), fn)
    return views


def staging_columns(e):
    cols = {}
    for t, c in e.pg.psql("SELECT table_name, column_name FROM information_schema.columns "
                          "WHERE table_schema = 'mlc_staging'"):
        cols.setdefault(t, set()).add(c)
    return cols


def explore_joins(explore):
    """[(joined view, sql_on)] of an explore in the model file."""
    with open(os.path.join(LOOKML, "mlc_finance.model.lkml")) as f:
        text = re.sub(r"#[^\n]*", "", f.read())
    m = re.search(r"\bexplore:\s*%s\s*\{" % explore, text)
    expect(m, f"mlc_finance.model.lkml: no explore {explore}")
    nxt = re.search(r"\bexplore:\s*\w+\s*\{", text[m.end():])
    body = text[m.end():m.end() + nxt.start()] if nxt else text[m.end():]
    return re.findall(r"\bjoin:\s*(\w+)\s*\{.*?sql_on:\s*(.*?);;", body, re.S)


def join_sql(sql_on, views):
    """sql_on with ${view.field} replaced by view.column (fields that are one column)."""
    def sub(m):
        v, fld = m.group(1), m.group(2)
        col = views[v][1].get(fld)
        expect(col, f"the model's join names ${{{v}.{fld}}}, which is not one column of view {v}")
        return f"{v}.{col}"
    return re.sub(r"\$\{(\w+)\.(\w+)\}", sub, sql_on)


@test
def lookml_reads_only_staging_columns():
    """Every ${TABLE}.column and sql_table_name of packaging/looker/views
    exists after `warehouse init`, every staging table has a view, and
    every field the model's joins use is one column."""
    e = Env(5, pos=2)
    try:
        e.init()
        cols = staging_columns(e)
        views = lookml_views()
        bad = []
        for view, (tname, _fields, named, fn) in views.items():
            schema, _, table = tname.partition(".")
            if schema != warehouse.SCHEMA or table not in cols:
                bad.append(f"{fn}: sql_table_name {tname} is no table of {warehouse.SCHEMA}")
                continue
            for c in sorted(set(named) - cols[table]):
                bad.append(f"{fn}: ${{TABLE}}.{c} is no column of {tname}")
        expect(not bad, "the LookML does not match the staging tables that `warehouse init` made "
                        "from tests/warehouse.py (fix packaging/looker/views and README section 3):\n  "
                        + "\n  ".join(bad))
        have = {v[0].partition(".")[2] for v in views.values()}
        expect(have >= set(cols), f"staging tables without a view: {sorted(set(cols) - have)}")
        for explore in ("ap_invoices", "purchase_orders"):
            joins = explore_joins(explore)
            expect(joins, f"explore {explore} has no joins")
            for _v, on in joins:
                join_sql(on, views)
        # Looker's role may read them: each view's columns, and the
        # datagroup's sql_trigger, run as the reader role
        def as_reader(sql, where):
            try:
                e.pg.psql(f"SET ROLE {warehouse.READER}; {sql}")
            except RuntimeError as ex:
                raise AssertionError(f"{where}: Looker's role {warehouse.READER} cannot run it: {ex}") from None

        for view, (tname, _fields, named, fn) in views.items():
            as_reader(f"SELECT {', '.join(sorted(set(named)))} FROM {tname} LIMIT 0", f"views/{fn}")
        with open(os.path.join(LOOKML, "mlc_finance.model.lkml")) as f:
            trig = re.findall(r"sql_trigger:\s*(.*?);;", re.sub(r"#[^\n]*", "", f.read()), re.S)
        expect(len(trig) == 1, f"mlc_finance.model.lkml: {len(trig)} sql_trigger, want 1")
        as_reader(trig[0], "mlc_finance.model.lkml, the datagroup's sql_trigger")
        # and every column of a staging table is read by its view
        unread = []
        for view, (tname, _fields, named, fn) in views.items():
            table = tname.partition(".")[2]
            for c in sorted(cols[table] - set(named) - set(SYSTEM_COLUMNS)):
                unread.append(f"{fn}: no field reads {tname}.{c}")
        expect(not unread, "columns the flows load that no view reads:\n  " + "\n  ".join(unread))
        # README section 3: each table's key and other columns, exactly as made
        with open(os.path.join(LOOKML, "README.md")) as f:
            readme = f.read()
        sec = readme[readme.index("## 3."):]
        tables = {d[1]: (list(d[2]), [c for c in d[3] if c not in d[2]]) for d in warehouse.DEFS.values()}
        log_cols = [r[0] for r in e.pg.psql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'mlc_staging' "
            "AND table_name = 'load_log' ORDER BY ordinal_position")]
        tables["load_log"] = (["id"], [c for c in log_cols if c != "id"])
        for table, (key, other) in tables.items():
            row = re.search(r"^\| `%s` [^\n]*$" % table, sec, re.M)
            expect(row, f"packaging/looker/README.md section 3 has no row for {table}")
            cells = [c.strip() for c in row.group(0).strip().strip("|").split("|")]
            names = [re.findall(r"\b([a-z_][a-z0-9_]*)\b", c) for c in cells[1:3]]
            expect(sorted(names[0]) == sorted(key) and sorted(names[1]) == sorted(other),
                   f"packaging/looker/README.md section 3, {table}: key {names[0]} and columns "
                   f"{names[1]}; the table has key {key} and columns {other}")
    finally:
        e.close()


# ---------------------------------------------------------------------------
# loads


def join_unmatched(e, explore, views):
    """{joined view: invoices (or orders) the explore's join finds no row for}"""
    out = {}
    for v, on in explore_joins(explore):
        if v == "purchase_order_lines":
            continue  # one_to_many: an order may have no lines
        pk = next(f for f, c in views[v][1].items() if c and f in ("account_id", "business_unit",
                                                                   "address_number"))
        sql = (f"SELECT count(*) FROM mlc_staging.{explore} AS {explore} LEFT JOIN mlc_staging.{v} AS {v} "
               f"ON {join_sql(on, views)} WHERE {v}.{views[v][1][pk]} IS NULL")
        out[v] = e.count(sql)
        fan = e.count(f"SELECT count(*) FROM mlc_staging.{explore} AS {explore} LEFT JOIN "
                      f"mlc_staging.{v} AS {v} ON {join_sql(on, views)}")
        n = e.count(f"SELECT count(*) FROM mlc_staging.{explore}")
        expect(fan == n, f"explore {explore}: the many_to_one join to {v} gives {fan} rows for {n}")
    return out


def source_unmatched(e):
    """What the source data implies the joins of ap_invoices leave unmatched."""
    sups = {r["AN8"] for r in source_rows(e, "warehouse_suppliers")}
    bus = {r["MCU"].strip() for r in e.source("F0006")}
    accts = {(r["MCU"].strip(), r["OBJ"].strip(), r["SUB"].strip()) for r in e.source("F0901")}
    inv = e.source("F0411")
    return {"suppliers": sum(r["AN8"] not in sups for r in inv),
            "cost_centers": sum(r["MCU"].strip() not in bus for r in inv),
            "gl_accounts": sum((r["MCU"].strip(), r["OBJ"].strip(), r["SUB"].strip()) not in accts
                               for r in inv)}


@test
def load_50000_invoices_rerun_and_500_changes():
    n = 50000 if not ARGS.quick else 3000
    e = Env(n, page_size=1000)
    try:
        e.init()
        t0 = time.monotonic()
        s = e.sync(what="first load")
        took = time.monotonic() - t0
        expect(total(s, "failed") == 0 and total(s, "pending") == 0, f"first load: {s}")
        expect(s["warehouse_ap_invoices"]["created"] == n, f"first load: {s['warehouse_ap_invoices']}")
        rows = sum(v["created"] for v in s.values())
        print(f"#   first load: {rows} rows in {took:.1f}s", flush=True)
        compared = check_all_tables(e)
        print(f"#   values compared per table: {compared}", flush=True)
        check_load_log_counts(e)
        views = lookml_views()
        got = join_unmatched(e, "ap_invoices", views)
        want = source_unmatched(e)
        expect(got == want, f"invoices the ap_invoices explore's joins find no row for: {got}, "
                            f"the source implies {want}")
        got = join_unmatched(e, "purchase_orders", views)
        expect(got == {"suppliers": 0, "cost_centers": 0}, f"purchase orders unmatched: {got}")
        # the six flows name the same datagroup: `sync --all` triggers it once,
        # after the last of their loads
        patches = len(e.patches())
        expect(patches == 1, f"{patches} datagroup PATCHes after the first load of the six flows, "
                             f"want one for the pass: {e.patches()}")
        check_refreshed_after_last_load(e, "after the first load")
        logs = e.count("SELECT count(*) FROM mlc_staging.load_log")
        stamp = e.pg.psql("SELECT max(_loaded_at) FROM mlc_staging.ap_invoices")[0][0]
        # a rerun: nothing changed in JD Edwards
        s = e.sync(what="rerun")
        expect(total(s, "created") + total(s, "updated") + total(s, "failed") == 0, f"rerun wrote rows: {s}")
        expect(len(e.patches()) == patches, f"a rerun without changes PATCHed: {e.patches()[patches:]}")
        expect(e.count("SELECT count(*) FROM mlc_staging.load_log") == logs, "a rerun wrote a load_log row")
        # a full reread: every row goes out again, PostgreSQL holds each
        # already, nothing is written, no refresh
        r = e.agent("sync", "--all", "--full")
        expect(r.returncode == 0, f"sync --full: exit {r.returncode}: {r.stdout} {r.stderr[-1500:]}")
        s = summaries(r)
        expect(total(s, "created") + total(s, "updated") + total(s, "failed") == 0,
               f"a full reread of unchanged tables wrote rows: {s}")
        expect(len(e.patches()) == patches, f"a full reread without changes PATCHed: {e.patches()[patches:]}")
        expect(e.count("SELECT count(*) FROM mlc_staging.load_log") == logs,
               "a full reread without changes wrote a load_log row")
        expect(e.pg.psql("SELECT max(_loaded_at) FROM mlc_staging.ap_invoices")[0][0] == stamp,
               "a full reread without changes rewrote rows")
        # 500 invoices changed (paid, or a voided payment reopened)
        touched = e.jde.ctl("/_sim/touch", {"table": "F0411", "count": 500})["keys"]
        s = e.sync(what="sync of 500 changes")
        inv = s.pop("warehouse_ap_invoices")
        expect(inv["updated"] == 500 and inv["created"] == 0 and inv["failed"] == 0,
               f"500 changed invoices: {inv}")
        expect(total(s, "created") + total(s, "updated") == 0, f"other flows wrote rows: {s}")
        expect(len(e.patches()) == patches + 1, f"500 changes -> one PATCH: {e.patches()[patches:]}")
        moved = {"|".join(r) for r in e.pg.psql(
            "SELECT company, doc, doc_type, pay_item FROM mlc_staging.ap_invoices "
            f"WHERE _loaded_at > '{stamp}'")}
        expect(moved == set(touched), f"{len(moved)} rows got a new _loaded_at, want the 500 touched "
                                      f"({len(moved - set(touched))} others)")
        log = e.pg.psql("SELECT flow, rows_inserted, rows_updated FROM mlc_staging.load_log "
                        f"ORDER BY id OFFSET {logs}")
        expect(log == [["warehouse_ap_invoices", "0", "500"]], f"load_log rows of the 500 changes: {log}")
        check_values(e, "warehouse_ap_invoices")
        # the touched rows themselves, each compared
        src = {"|".join(str(r[k]).strip() for k in ("KCO", "DOC", "DCT", "SFX")): r
               for r in e.source("F0411")}
        got = {f"{r['company']}|{r['doc']}|{r['doc_type']}|{r['pay_item']}": r for r in e.json(
            "SELECT company, doc, doc_type, pay_item, pay_status, open_amount FROM mlc_staging.ap_invoices "
            f"WHERE _loaded_at > '{stamp}'")}
        bad = [k for k in touched if got[k]["pay_status"] != src[k]["PST"]
               or got[k]["open_amount"] != Decimal(src[k]["AAP"]).scaleb(-2)]
        expect(not bad, f"touched invoices with old values: {bad[:5]}")
    finally:
        e.close()


SLOW_TRIGGER = """
CREATE OR REPLACE FUNCTION public.mlc_test_slow() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_sleep(%s); RETURN NULL; END $$;
"""


def slow_postgres(e, seconds):
    """Every write statement into a staging table takes `seconds` longer (a
    statement trigger that sleeps), so kills land inside open transactions;
    0 removes the triggers."""
    for _flow, (_jt, table) in warehouse.FLOWS.items():
        e.pg.psql(f"DROP TRIGGER IF EXISTS mlc_test_slow ON mlc_staging.{table}")
    if seconds:
        e.pg.psql(SLOW_TRIGGER % seconds)
        for _flow, (_jt, table) in warehouse.FLOWS.items():
            e.pg.psql(f"CREATE TRIGGER mlc_test_slow BEFORE INSERT OR UPDATE ON mlc_staging.{table} "
                      "FOR EACH STATEMENT EXECUTE FUNCTION public.mlc_test_slow()")


def check_refreshed_after_last_load(e, what):
    """The newest datagroup PATCH came after the newest load_log row."""
    last_load = float(e.pg.psql("SELECT extract(epoch FROM max(finished_at)) FROM mlc_staging.load_log")[0][0])
    p = e.patches()
    expect(p and max(x["at"] for x in p) >= last_load,
           f"{what}: no datagroup PATCH after the last load (finished at {last_load}; "
           f"PATCHes at {[x['at'] for x in p][-5:]})")


def check_clean_end(e, what):
    """Nothing waits, nothing died, a rerun writes nothing and PATCHes nothing."""
    waiting = e.state("SELECT count(*) FROM state_outbox")[0][0]
    dead = e.state("SELECT source_key, error FROM state_dead")
    expect(waiting == 0 and not dead, f"{what}: {waiting} rows in the outbox, dead letters {dead[:3]}")
    n = len(e.patches())
    s = e.sync(what=f"rerun after {what}")
    expect(total(s, "created") + total(s, "updated") == 0, f"rerun after {what} wrote rows: {s}")
    expect(len(e.patches()) == n, f"rerun after {what} PATCHed: {e.patches()[n:]}")


@test
def kill_9_during_loads_every_row_once():
    n = 6000 if not ARGS.quick else 2000
    kills = 20 if not ARGS.quick else 6
    rng = random.Random(int(os.environ.get("MLC_TEST_SEED", "15")))
    e = Env(n, pos=n // 40, page_size=200)
    try:
        e.init()
        # both ends slowed: JD Edwards pages come slowly and each batch's
        # statement waits in PostgreSQL, so a kill may land while a batch's
        # transaction is open, between batches, or during the Looker call
        e.jde.faults(slow_ms=50)
        slow_postgres(e, 0.15)
        killed = in_batch = 0
        for i in range(kills):
            if i:
                for table, count in (("F0411", n // 4), ("F4311", 40), ("F4301", 10), ("F0901", 5),
                                     ("F0006", 2), ("F0101", 3)):
                    e.jde.ctl("/_sim/touch", {"table": table, "count": count})
            p = e.popen("sync", "--all")
            time.sleep(rng.uniform(0.2, 2.0))
            if p.poll() is None:
                # was a batch's statement running (its transaction open)?
                busy = e.count("SELECT count(*) FROM pg_stat_activity WHERE usename = 'mlc_loader' "
                               "AND state = 'active'")
                p.send_signal(signal.SIGKILL)
                killed += 1
                in_batch += busy > 0
            out, err = p.communicate()
            expect(p.returncode in (-signal.SIGKILL, 0),
                   f"run {i + 1} ended by itself with exit {p.returncode}: {out[-500:]} {err[-1500:]}")
            # after every kill: what is committed is what load_log counts
            check_load_log_counts(e)
        print(f"#   {killed} of {kills} runs killed with SIGKILL, {in_batch} while a batch was being "
              "written", flush=True)
        expect(killed >= kills // 2, f"only {killed} of {kills} runs were still running when killed: "
                                     "the slowed load ended too soon for the test to mean much")
        expect(in_batch >= 1, "no kill landed while a batch was being written (no open transaction "
                              "was cut): slow PostgreSQL more (slow_postgres)")
        e.jde.faults(slow_ms=0)
        slow_postgres(e, 0)
        # the refreshes the killed runs still owe (marked before a run may write)
        owed = {k.split("/")[1] for (k,) in e.state("SELECT key FROM state_kv WHERE key LIKE "
                                                    "'after_load/%' AND value = '1'")}
        before = len(e.patches())
        s = e.sync(what="final sync")
        expect(total(s, "failed") == 0 and total(s, "pending") == 0, f"final sync: {s}")
        # one PATCH for the whole pass when any flow loaded rows now or owed one
        # from a killed run (they all name the same datagroup)
        due = owed | {f for f, v in s.items() if v["created"] + v["updated"] + v["adopted"] > 0}
        made = len(e.patches()) - before
        print(f"#   final sync: {len(owed)} flows owed a refresh, {len(due)} due, {made} PATCHes", flush=True)
        expect(made == (1 if due else 0), f"the final sync made {made} PATCHes; flows owing one or "
                                          f"loading rows: {sorted(due)} (owed by killed runs: {sorted(owed)}), {s}")
        left = e.state("SELECT key FROM state_kv WHERE key LIKE 'after_load/%' AND value = '1'")
        expect(not left, f"refreshes still owed after the final sync: {left}")
        check_all_tables(e)
        check_load_log_counts(e)
        check_refreshed_after_last_load(e, "after the kills")
        check_clean_end(e, "the kills")
    finally:
        e.close()


@test
def postgres_stopped_mid_load_then_everything_once():
    n = 5000 if not ARGS.quick else 2000
    e = Env(n, pos=n // 40, page_size=200)
    try:
        e.init()
        e.jde.faults(slow_ms=80)
        p = e.popen("sync", "--all")
        # down once the first invoices have landed, with pages still to come
        deadline = time.monotonic() + 120
        while e.count("SELECT count(*) FROM mlc_staging.ap_invoices") == 0:
            expect(p.poll() is None and time.monotonic() < deadline,
                   f"the run ended (exit {p.poll()}) or took 2 minutes before its first batch landed")
            time.sleep(0.05)
        e.pg.halt()
        out, err = p.communicate(timeout=600)
        expect("cannot connect to PostgreSQL" in err and "wait in the outbox" in err,
               f"the run's errors do not say the warehouse is down and the rows wait: {err[-1500:]}")
        expect(p.returncode == 1, f"a run with PostgreSQL stopped midway: exit {p.returncode}, want 1: "
                                  f"{out} {err[-1500:]}")
        pend = {m.group(1): int(m.group(7)) for m in SUMMARY.finditer(out)}
        expect(sum(pend.values()) > 0, f"the run with PostgreSQL stopped reports no rows pending: {out}")
        expect(PG_PASSWORD not in out + err, "the password shows in the agent's output")
        waiting = e.state("SELECT count(*) FROM state_outbox")[0][0]
        expect(waiting > 0, "no row waits in the outbox after PostgreSQL stopped mid-run")
        print(f"#   PostgreSQL stopped mid-load: pending {pend}, {waiting} rows in the outbox", flush=True)
        # `status` shows the rows waiting, per flow
        st = e.agent("status")
        for flow, k in pend.items():
            expect(re.search(r"flow %s: .*outbox %d," % (flow, k), st.stdout),
                   f"status does not show {flow}'s {k} rows in the outbox:\n{st.stdout[:3000]}")
        expect(PG_PASSWORD not in st.stdout + st.stderr, "the password shows in status")
        e.pg.resume()
        e.jde.faults(slow_ms=0)
        s = e.sync(what="sync after the restart")
        expect(total(s, "failed") == 0 and total(s, "pending") == 0, f"after the restart: {s}")
        check_all_tables(e)
        check_load_log_counts(e)
        check_refreshed_after_last_load(e, "after the restart")
        check_clean_end(e, "the restart")
    finally:
        e.close()


def looker_query(e, token, fields):
    body = json.dumps({"model": "mlc_finance", "view": "ap_invoices", "fields": fields,
                       "limit": "-1"}).encode()
    req = urllib.request.Request(e.looker.url + "/api/4.0/queries/run/json", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read(), parse_float=Decimal)


@test
def looker_query_sees_new_rows_after_the_refresh():
    e = Env(400, pos=20)
    try:
        e.init()
        s = e.sync(what="first load")
        expect(s["warehouse_ap_invoices"]["created"] == 400, f"first load: {s}")
        form = urllib.parse.urlencode({"client_id": "mlc-looker", "client_secret": LOOKER_SECRET}).encode()
        with urllib.request.urlopen(urllib.request.Request(e.looker.url + "/api/4.0/login", data=form),
                                    timeout=30) as r:
            token = json.loads(r.read())["access_token"]
        fields = ["ap_invoices.business_unit", "ap_invoices.total_gross_amount", "ap_invoices.count"]

        def source_sums():
            out = {}
            for r in e.source("F0411"):
                bu = r["MCU"].strip()
                out[bu] = out.get(bu, Decimal(0)) + Decimal(r["AG"]).scaleb(-2)
            return out

        def sums(rows):
            return {r["ap_invoices.business_unit"]: r["ap_invoices.total_gross_amount"] for r in rows}

        before = looker_query(e, token, fields)
        expect(sums(before) == source_sums(), f"Looker's sums by cost centre {sums(before)} are not the "
                                              f"source's {source_sums()}")
        expect(sum(r["ap_invoices.count"] for r in before) == 400, f"Looker counts {before}")
        # 10 invoices' amounts change in JD Edwards, each by +1,000.00
        inv = e.source("F0411")
        picked = random.Random(10).sample(inv, 10)
        for r in picked:
            key = "|".join(str(r[k]).strip() for k in ("KCO", "DOC", "DCT", "SFX"))
            e.jde.ctl("/_sim/update", {"table": "F0411", "key": key, "set": {"AG": r["AG"] + 100000}})
        want = source_sums()
        expect(want != sums(before), "the changes did not move any sum")
        # not yet loaded: Looker answers from its cache (what it would still
        # serve after the load without the datagroup PATCH)
        again = looker_query(e, token, fields)
        log = e.looker.ctl("/_sim/queries")
        expect(again == before and log[-1]["cache"] == "hit", f"the repeated query: {log[-1]}")
        patches = len(e.patches())
        s = e.sync(what="sync of 10 changed amounts")
        expect(s["warehouse_ap_invoices"]["updated"] == 10, f"10 changed amounts: {s}")
        expect(len(e.patches()) == patches + 1, f"one PATCH after the load: {e.patches()[patches:]}")
        # the data is in PostgreSQL; the cache was dropped by the PATCH
        after = looker_query(e, token, fields)
        log = e.looker.ctl("/_sim/queries")
        expect(log[-1]["cache"] == "miss", f"the query after the PATCH was served from the cache: {log[-1]}")
        expect(sums(after) == want, f"Looker's sums after the load {sums(after)}, want {want}")
        grown = sum(sums(after).values()) - sum(sums(before).values())
        expect(grown == Decimal("10000.00"), f"the total grew by {grown}, want 10000.00")
    finally:
        e.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", required=True, help="the built mlc-agent")
    ap.add_argument("--quick", action="store_true", help="smaller data sets (sanitizer builds)")
    ap.add_argument("-k", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    return harness.run_tests(TESTS, ARGS.k)


if __name__ == "__main__":
    sys.exit(main())
