#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The `pgsql` target against a real PostgreSQL (tests/pg.py) with the real
mlc-agent reading JD Edwards work orders (F4801) from the simulator into a
staging table `work_orders`: `warehouse init` (--print, twice, a column
added later), a load equal to the source, a rerun that writes nothing, 50
changes -> 50 updates, values PostgreSQL refuses failing only their record,
the server down (and stopped in the middle of a run) -> rows wait and land
once, and the agent killed with SIGKILL during loads -> every row once.

    python3 tests/integration/test_pgsql_target.py --agent build/dev/mlc-agent [-k name] [--quick]

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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402
import pg  # noqa: E402

ARGS = None
TESTS = []
FLOW = "warehouse_work_orders"
PG_PASSWORD = "loader-pass-7f3a"
COLUMNS = {"doco": "bigint", "order_type": "text", "description": "text", "status": "text",
           "business_unit": "text", "customer": "bigint", "requested": "date",
           "priority": "integer"}
MAPPING = {"doco": "{DOCO}", "order_type": "{DCTO}", "description": "{DL01}",
           "status": "{SRST}", "business_unit": {"from": "MCU"}, "customer": "{AN8}",
           "requested": {"from": "DRQJ", "date": "yyyymmdd"}, "priority": "{PRTS}"}


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Env:
    """A PostgreSQL with a loader and a reader role, the JD Edwards simulator
    with n work orders, and an agent configuration writing into the server."""

    def __init__(self, orders):
        self.dir = tempfile.mkdtemp(prefix="mlc-pgt-")
        self.pg = pg.Server(self.dir)
        self.pg.psql("CREATE ROLE mlc_loader LOGIN PASSWORD '%s'; "
                     "GRANT CREATE ON DATABASE mlc TO mlc_loader; "
                     "CREATE ROLE looker_reader NOLOGIN" % PG_PASSWORD)
        self.jde = harness.Sim("jde_sim.py", ["--seed", str(orders)])
        self.config = None
        self.configure()

    def configure(self, columns=None, reader="looker_reader", page_size=500, mapping=None):
        cfg = {
            "agent": {"state_db": os.path.join(self.dir, "state.db"),
                      "key_file": os.path.join(self.dir, "secret.key"), "log_level": "warn"},
            "systems": {
                "jde": {"type": "jde", "base_url": self.jde.url + "/jderest", "username": "SYNCUSR",
                        "password": "${MLC_JDE_PASSWORD}", "environment": "JDV920",
                        "page_size": page_size},
                "warehouse": {"type": "pgsql",
                              "dsn": f"host=127.0.0.1 port={self.pg.port} dbname=mlc user=mlc_loader",
                              "password": "${MLC_PG_PASSWORD}", "schema": "mlc_staging",
                              "reader_role": reader, "connect_timeout_s": 3},
            },
            "flows": {
                FLOW: {
                    "source": {"system": "jde", "table": "F4801", "key": "DOCO"},
                    "target": {"system": "warehouse", "table": "work_orders", "key": ["doco"],
                               "columns": columns or COLUMNS},
                    "mapping": mapping or MAPPING,
                    "max_attempts": 50,
                }
            },
        }
        self.config = os.path.join(self.dir, "agent.json")
        with open(self.config, "w") as f:
            json.dump(cfg, f, indent=2)

    def agent(self, *args, timeout=600):
        env = harness.agent_env()
        env["MLC_PG_PASSWORD"] = PG_PASSWORD
        return harness.run_agent(ARGS.agent, self.config, *args, timeout=timeout, env=env)

    def popen(self, *args):
        env = harness.agent_env()
        env["MLC_PG_PASSWORD"] = PG_PASSWORD
        return subprocess.Popen([ARGS.agent, "-q", "-c", self.config] + list(args),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def init(self):
        r = self.agent("warehouse", "init")
        expect(r.returncode == 0, f"warehouse init: exit {r.returncode}: {r.stdout} {r.stderr}")
        return r

    def sync(self, want_rc=0, what="sync"):
        r = self.agent("sync", FLOW)
        expect(r.returncode == want_rc,
               f"{what}: exit {r.returncode} (want {want_rc}): {r.stdout} {r.stderr[-2000:]}")
        return summary(r)

    def rows(self):
        q = ("SELECT doco, order_type, description, status, business_unit, customer, "
             "requested, priority, _source_key, _audit_id, _loaded_at FROM mlc_staging.work_orders")
        return {r[0]: r for r in self.pg.psql(q)}

    def count(self, sql):
        return int(self.pg.psql(sql)[0][0])

    def state(self, sql):
        db = sqlite3.connect(os.path.join(self.dir, "state.db"))
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def close(self):
        self.jde.stop()
        self.pg.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def summary(r):
    m = re.search(r"created (\d+), updated (\d+), unchanged (\d+), adopted (\d+), failed (\d+), "
                  r"pending (\d+)", r.stdout)
    expect(m, f"no summary line in: {r.stdout} {r.stderr[-1500:]}")
    return dict(zip(["created", "updated", "unchanged", "adopted", "failed", "pending"],
                    map(int, m.groups())))


def expect_equal_to_source(e, n):
    """Every F4801 row is in the staging table once, with its values."""
    src = {str(r["DOCO"]): r for r in e.jde.ctl("/_sim/rows?table=F4801")}
    got = e.rows()
    expect(len(src) == n, f"the simulator holds {len(src)} work orders, want {n}")
    missing = sorted(set(src) - set(got))
    extra = sorted(set(got) - set(src))
    expect(not missing and not extra,
           f"staging vs source: {len(missing)} missing (e.g. {missing[:5]}), {len(extra)} extra")
    bad = []
    for k, s in src.items():
        g = got[k]
        d = s["DRQJ"]
        # JD Edwards pads text columns with blanks; the mapping drops them
        want = [k, s["DCTO"].strip(), s["DL01"].strip(), s["SRST"].strip(), s["MCU"], str(s["AN8"]),
                f"{d[0:4]}-{d[4:6]}-{d[6:8]}" if d.strip() else "", str(int(s["PRTS"]))]
        # the business unit arrives as the connector reads it (padded or trimmed)
        if g[4] != want[4] and g[4] != want[4].strip():
            bad.append((k, "business_unit", g[4], want[4]))
        for i in (0, 1, 2, 3, 5, 6, 7):
            if g[i] != want[i]:
                bad.append((k, i, g[i], want[i]))
        if g[8] != k or not g[9] or not g[10]:
            bad.append((k, "_source_key/_audit_id/_loaded_at", g[8:11]))
    expect(not bad, f"{len(bad)} wrong values, e.g. {bad[:5]}")


@test
def warehouse_init_print_twice_and_added_column():
    e = Env(5)
    try:
        r = e.agent("warehouse", "init", "--print")
        expect(r.returncode == 0, f"init --print: exit {r.returncode}: {r.stderr}")
        for frag in ('CREATE SCHEMA IF NOT EXISTS "mlc_staging"',
                     'CREATE TABLE IF NOT EXISTS "mlc_staging"."work_orders"',
                     'PRIMARY KEY ("doco")', '"requested" date', '"_loaded_at" timestamptz',
                     'CREATE TABLE IF NOT EXISTS "mlc_staging"."load_log"',
                     'GRANT SELECT ON ALL TABLES IN SCHEMA "mlc_staging" TO "looker_reader"',
                     "ALTER DEFAULT PRIVILEGES"):
            expect(frag in r.stdout, f"init --print lacks {frag!r}:\n{r.stdout}")
        expect(PG_PASSWORD not in r.stdout + r.stderr, "the password shows in init --print")
        expect(e.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'mlc_staging'") == 0,
               "init --print created the schema")
        # a DBA can run what --print shows (psql, as the loader)
        sql_file = os.path.join(e.dir, "init.sql")
        with open(sql_file, "w") as f:
            f.write(r.stdout)
        out = subprocess.run([os.path.join(e.pg.bin, "psql"), "-h", e.pg.base, "-p", str(e.pg.port),
                              "-U", "mlc_loader", "-d", "mlc", "-v", "ON_ERROR_STOP=1", "-q",
                              "-f", sql_file], capture_output=True, text=True, env=e.pg.env)
        expect(out.returncode == 0, f"psql -f (the printed SQL): {out.stderr}")
        e.init()
        e.init()  # twice: no error
        cols = [c[0] for c in e.pg.psql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'mlc_staging' "
            "AND table_name = 'work_orders' ORDER BY ordinal_position")]
        expect(cols == list(COLUMNS) + ["_source_key", "_audit_id", "_loaded_at"], f"columns {cols}")
        expect(e.pg.psql("SELECT has_table_privilege('looker_reader', 'mlc_staging.work_orders', "
                         "'SELECT'), has_table_privilege('looker_reader', 'mlc_staging.load_log', "
                         "'SELECT'), has_table_privilege('looker_reader', 'mlc_staging.work_orders', "
                         "'INSERT')") == [["t", "t", "f"]], "reader grants")
        idx = e.count("SELECT count(*) FROM pg_indexes WHERE schemaname = 'mlc_staging' AND "
                      "tablename = 'work_orders' AND indexdef LIKE '%_loaded_at%'")
        expect(idx == 1, f"{idx} indexes on _loaded_at")
        # a column added to the configuration: init adds it, drops nothing
        e.pg.psql("INSERT INTO mlc_staging.work_orders (doco, _source_key) VALUES (1, 'x')")
        cols2 = dict(COLUMNS, vr01="text")
        e.configure(columns=cols2)
        r = e.agent("sync", FLOW)
        expect(r.returncode != 0 and "warehouse init" in r.stderr,
               f"a sync before init with a new column: {r.returncode} {r.stderr[-1000:]}")
        e.init()
        expect(e.count("SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                       "'mlc_staging' AND table_name = 'work_orders' AND column_name = 'vr01'") == 1,
               "vr01 was not added")
        expect(e.count("SELECT count(*) FROM mlc_staging.work_orders") == 1, "init lost rows")
        # a mapped field that is no column: refused when the configuration is read
        e.configure(mapping=dict(MAPPING, hold_code="{WR10}"))
        r = e.agent("check-config")
        expect(r.returncode == 2 and "hold_code" in r.stderr and "target.columns" in r.stderr,
               f"a mapped field that is no column: {r.returncode} {r.stderr}")
        # a reader role that does not exist: a clear message, nothing half-done
        e.configure(reader="nobody_here")
        r = e.agent("warehouse", "init")
        expect(r.returncode == 1 and "nobody_here" in r.stderr and "CREATE ROLE" in r.stderr,
               f"missing reader role: {r.returncode} {r.stderr}")
    finally:
        e.close()


@test
def password_is_sent_and_never_shown():
    """The server asks the loader for its password (scram-sha-256 over TCP):
    the right one from ${MLC_PG_PASSWORD} works; a wrong one fails with a
    message that says what to check and shows neither password."""
    e = Env(20)
    try:
        hba = os.path.join(e.pg.data, "pg_hba.conf")
        with open(hba) as f:
            rest = f.read()
        with open(hba, "w") as f:
            f.write("host all mlc_loader 127.0.0.1/32 scram-sha-256\n" + rest)
        e.pg.psql("SELECT pg_reload_conf()")
        e.init()
        s = e.sync(what="sync with the password")
        expect(s["created"] == 20, f"sync with the password: {s}")
        e.jde.ctl("/_sim/touch", {"count": 5})
        env = harness.agent_env()
        env["MLC_PG_PASSWORD"] = "wrong-secret-41"
        r = harness.run_agent(ARGS.agent, e.config, "sync", FLOW, env=env)
        out = r.stdout + r.stderr
        expect(r.returncode == 1 and "password" in r.stderr and "check the user in dsn" in r.stderr,
               f"wrong password: exit {r.returncode}: {out[-1500:]}")
        expect("wrong-secret-41" not in out and PG_PASSWORD not in out, "a password in the output")
        r = harness.run_agent(ARGS.agent, e.config, "status", env=env)
        expect("wrong-secret-41" not in r.stdout + r.stderr, "a password in status")
        s = e.sync(what="sync with the right password again")
        expect(s["updated"] == 5 and s["pending"] == 0, f"after the wrong password: {s}")
    finally:
        e.close()


@test
def load_rerun_and_changes():
    n = 2000 if not ARGS.quick else 400
    e = Env(n)
    try:
        r = e.agent("sync", FLOW)
        expect(r.returncode != 0 and "warehouse init" in r.stderr,
               f"sync before init: {r.returncode} {r.stderr[-1000:]}")
        e.init()
        s = e.sync(what="first load")
        expect(s["created"] == n and s["failed"] == 0 and s["pending"] == 0, f"first load {s}")
        expect_equal_to_source(e, n)
        log = e.pg.psql("SELECT flow, table_name, rows_inserted, rows_updated, "
                        "started_at <= finished_at, first_audit_id IS NOT NULL FROM mlc_staging.load_log")
        expect(log == [[FLOW, "work_orders", str(n), "0", "t", "t"]], f"load_log after the load: {log}")
        before = e.pg.psql("SELECT max(_loaded_at) FROM mlc_staging.work_orders")
        s = e.sync(what="rerun")
        expect(s["created"] == 0 and s["updated"] == 0, f"rerun wrote rows: {s}")
        expect(e.count("SELECT count(*) FROM mlc_staging.load_log") == 1, "a rerun wrote a load_log row")
        expect(e.pg.psql("SELECT max(_loaded_at) FROM mlc_staging.work_orders") == before,
               "a rerun touched rows")
        touched = e.jde.ctl("/_sim/touch", {"count": 50})["keys"]
        s = e.sync(what="50 changes")
        expect(s["updated"] == 50 and s["created"] == 0, f"50 changes: {s}")
        expect_equal_to_source(e, n)
        moved = {r[0] for r in e.pg.psql("SELECT doco FROM mlc_staging.work_orders "
                                         "WHERE _loaded_at > '%s'" % before[0][0])}
        expect(moved == {str(k) for k in touched}, f"rows reloaded: {len(moved)}, want the 50 touched")
        log = e.pg.psql("SELECT rows_inserted, rows_updated FROM mlc_staging.load_log ORDER BY id")
        expect(log == [[str(n), "0"], ["0", "50"]], f"load_log after the changes: {log}")
    finally:
        e.close()


@test
def state_lost_the_target_reports_unchanged():
    """The agent's state database lost: every record goes out again as a
    create, and the target, which already holds each row, writes nothing and
    says so (unchanged), with no load_log row."""
    n = 300
    e = Env(n)
    try:
        e.init()
        s = e.sync(what="first load")
        expect(s["created"] == n, f"first load {s}")
        before = e.pg.psql("SELECT max(_loaded_at), count(*) FROM mlc_staging.work_orders")
        os.remove(os.path.join(e.dir, "state.db"))
        s = e.sync(what="sync with a fresh state database")
        expect(s["unchanged"] == n and s["created"] == 0 and s["updated"] == 0,
               f"fresh state: {s}")
        expect(e.pg.psql("SELECT max(_loaded_at), count(*) FROM mlc_staging.work_orders") == before,
               "rows were rewritten")
        expect(e.count("SELECT count(*) FROM mlc_staging.load_log") == 1, "a load_log row for no change")
        audits = e.state("SELECT count(*) FROM state_audit WHERE action = 'unchanged'")[0][0]
        expect(audits == n, f"{audits} 'unchanged' audit rows, want {n}")
    finally:
        e.close()


@test
def refused_values_fail_only_their_record():
    e = Env(30)
    try:
        e.init()
        e.sync(what="first load")
        # a priority that is no number: refused before it is sent
        e.jde.ctl("/_sim/update", {"key": 100003, "set": {"PRTS": "X"}})
        # a value the table itself refuses (a check constraint): the batch is
        # sent again row by row, each in a savepoint
        e.pg.psql("ALTER TABLE mlc_staging.work_orders ADD CONSTRAINT no_zz CHECK (status <> 'ZZ')")
        e.jde.ctl("/_sim/update", {"key": 100007, "set": {"SRST": "ZZ"}})
        for k in (100001, 100010, 100020):
            e.jde.ctl("/_sim/update", {"key": k, "set": {"DL01": f"Changed {k}"}})
        s = e.sync(want_rc=0, what="sync with two bad records")
        expect(s["updated"] == 3 and s["failed"] == 2, f"summary {s}")
        got = e.rows()
        for k in (100001, 100010, 100020):
            expect(got[str(k)][2] == f"Changed {k}", f"{k} not updated: {got[str(k)]}")
        dead = dict(e.state("SELECT source_key, error FROM state_dead"))
        expect("priority" in dead.get("100003", "") and "'X'" in dead.get("100003", ""),
               f"dead letter of 100003: {dead}")
        expect("no_zz" in dead.get("100007", "") or "check" in dead.get("100007", "").lower(),
               f"dead letter of 100007: {dead}")
        expect(got["100007"][3] != "ZZ", "the refused status was stored")
    finally:
        e.close()


@test
def server_down_rows_wait_then_land_once():
    n = 1500 if not ARGS.quick else 400
    e = Env(n)
    try:
        e.init()
        e.pg.halt()
        s = e.sync(want_rc=1, what="sync with the server down")
        # the first page waits in the outbox; reading stops while the target is down
        expect(s["pending"] > 0 and s["created"] == 0, f"server down: {s}")
        expect(len(e.state("SELECT id FROM state_outbox")) == s["pending"], "outbox rows")
        r = e.agent("status")
        expect(PG_PASSWORD not in r.stdout + r.stderr, "the password shows in status")
        e.pg.resume()
        s = e.sync(what="sync after the restart")
        expect_equal_to_source(e, n)
        # stopped in the middle of a run: the JD Edwards side is slowed so the
        # load takes a while, and the server goes down during it
        e.configure(page_size=100)
        e.jde.ctl("/_sim/touch", {"count": n})
        e.jde.faults(slow_ms=300)
        p = e.popen("sync", FLOW)
        # down once the first changed rows have landed, with pages still to come
        deadline = time.monotonic() + 120
        while e.count("SELECT count(*) FROM mlc_staging.work_orders WHERE description LIKE "
                      "'%(rev %'") == 0:
            expect(p.poll() is None and time.monotonic() < deadline,
                   "the run ended (or took 2 minutes) before its first batch landed")
            time.sleep(0.05)
        e.pg.halt()
        out, err = p.communicate(timeout=600)
        e.jde.faults(slow_ms=0)
        expect(p.returncode != 0, f"a run with the server stopped midway succeeded: {out} {err[-500:]}")
        expect(PG_PASSWORD not in out + err, "the password shows in the agent's output")
        waiting = e.state("SELECT count(*) FROM state_outbox")[0][0]
        expect(waiting > 0, "no row waits in the outbox after the server went down mid-run")
        print(f"#   server stopped mid-run: {waiting} rows waited in the outbox", flush=True)
        e.pg.resume()
        s = e.sync(what="sync after the second restart")
        expect(s["pending"] == 0 and s["failed"] == 0, f"after the restart: {s}")
        expect_equal_to_source(e, n)
        expect(e.state("SELECT count(*) FROM state_dead")[0][0] == 0, "dead letters")
    finally:
        e.close()


@test
def kill_9_during_loads_every_row_once():
    n = 3000 if not ARGS.quick else 600
    kills = 6 if not ARGS.quick else 3
    rng = random.Random(int(os.environ.get("MLC_TEST_SEED", "15")))
    e = Env(n)
    try:
        e.init()
        # pages of 100 from a slowed source: each load takes seconds, with a
        # batch written to PostgreSQL after every page
        e.configure(page_size=100)
        e.jde.faults(slow_ms=60 if not ARGS.quick else 200)
        killed = 0
        for i in range(kills):
            if i:
                e.jde.ctl("/_sim/touch", {"count": n // 3})
            p = e.popen("sync", FLOW)
            time.sleep(rng.uniform(0.3, 1.5))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed += 1
            p.communicate()
        e.jde.faults(slow_ms=0)
        s = e.sync(what="final sync")
        expect(s["failed"] == 0 and s["pending"] == 0, f"final sync: {s}")
        expect(killed >= 1, f"no load was still running when killed ({kills} tries)")
        print(f"#   {killed} of {kills} loads killed with SIGKILL", flush=True)
        expect_equal_to_source(e, n)
        expect(e.count("SELECT count(*) FROM mlc_staging.work_orders") == n, "row count")
        # load_log counts exactly what was committed, killed runs included
        logged = e.count("SELECT coalesce(sum(rows_inserted), 0) FROM mlc_staging.load_log")
        expect(logged == n, f"load_log counts {logged} inserted rows for {n} rows in the table")
        s = e.sync(what="rerun after the kills")
        expect(s["created"] + s["updated"] == 0, f"rerun after the kills wrote rows: {s}")
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
