#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests: a flow's "after_load" tells Looker of a load. The real
mlc-agent runs a flow that writes (JD Edwards work orders into the Jira
simulator, as the other tests do) with "after_load" naming the Looker
simulator (tests/sims/looker_sim.py); each test checks the datagroup PATCHes
the simulator recorded:

  - a run that creates -> exactly one PATCH, its triggered_at and
    stale_before from Looker's clock (skewed 10 minutes behind the agent's:
    no 422); a rerun with no changes -> no PATCH
  - every token expired between runs -> the agent logs in again
  - the datagroup re-created with a new id -> found again by model + name
  - the agent killed (SIGKILL) while it calls Looker after a load -> the
    next run, which loads nothing, still refreshes
  - Looker answering 429 with Retry-After -> waited out, then one PATCH
  - Looker failing -> audit entry after_load_failed, `status` shows the call
    owed; the next run refreshes
  - a list of two after_load entries: each told once per load
  - `mlc-agent ping` logs in; a wrong secret is named by its setting, never shown
  - config: an unknown after_load member, a system that cannot be told, a
    missing datagroup

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import json
import os
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
SECRET = "looker-secret"


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Env:
    """JD Edwards, Jira and Looker simulators and a state directory for one test."""

    def __init__(self, orders=30, looker_args=(), after=None):
        self.dir = tempfile.mkdtemp(prefix="mlc-looker-")
        self.jde = harness.Sim("jde_sim.py", ["--seed", str(orders)])
        self.jira = harness.Sim("jira_sim.py", [])
        self.looker = harness.Sim("looker_sim.py", ["--client-secret", SECRET] + list(looker_args))
        path = harness.make_config(self.dir, self.jde.url, self.jira.url)
        with open(path) as f:
            cfg = json.load(f)
        cfg["systems"]["looker"] = {"type": "looker", "base_url": self.looker.url,
                                    "client_id": "mlc-looker", "client_secret": "${MLC_LOOKER_SECRET}"}
        cfg["flows"]["jde_workorders"]["after_load"] = after or {
            "system": "looker", "model": "mlc_finance", "datagroup": "mlc_staging_load"}
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        self.config = path

    def env(self):
        env = harness.agent_env()
        env["MLC_LOOKER_SECRET"] = SECRET
        return env

    def sync(self, what="sync", ok=True):
        r = harness.run_agent(ARGS.agent, self.config, "sync", "jde_workorders", env=self.env())
        if ok:
            expect(r.returncode == 0, f"{what}: exit {r.returncode}\nstdout: {r.stdout}\n"
                                      f"stderr: {r.stderr[-3000:]}")
        return r

    def patches(self):
        return self.looker.ctl("/_sim/patches")

    def db(self, sql, *params):
        con = sqlite3.connect(os.path.join(self.dir, "state.db"))
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def close(self):
        for s in (self.jde, self.jira, self.looker):
            s.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def summary(r):
    for line in r.stdout.splitlines():
        if line.startswith("jde_workorders: created"):
            parts = line.split(":", 1)[1].replace(",", "").split()
            return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
    raise AssertionError(f"no summary line in: {r.stdout!r}")


@test
def test_load_triggers_once_on_lookers_clock():
    # Looker's clock 10 minutes behind the agent's: timestamps from the agent's
    # clock would be "in the future" (422)
    e = Env(looker_args=["--token-ttl", "3600"])
    try:
        e.looker.faults(clock_skew_s=-600)
        r = e.sync("first sync")
        s = summary(r)
        expect(s["created"] == 30, f"first sync: {s}")
        p = e.patches()
        expect(len(p) == 1, f"{len(p)} PATCHes after a load, expected 1: {p}")
        looker_now = e.looker.ctl("/_sim/clock")["now"]
        agent_now = time.time()
        expect(p[0]["name"] == "mlc_staging_load" and p[0]["model"] == "mlc_finance", p)
        expect(p[0]["triggered_at"] == p[0]["stale_before"], p)
        expect(p[0]["triggered_at"] <= looker_now and p[0]["triggered_at"] < agent_now - 500,
               f"triggered_at {p[0]['triggered_at']} not from Looker's clock ({looker_now}, agent {agent_now})")
        expect(p[0]["triggered_at"] >= looker_now - 120, f"triggered_at {p[0]['triggered_at']} too old")
        st = e.looker.stats()
        expect(st["status_counts"].get("422", 0) == 0, f"422s: {st}")
        expect(st["tokens_issued"] == 1, f"{st['tokens_issued']} logins")
        r = e.sync("rerun without changes")
        s = summary(r)
        expect(s["created"] == 0 and s["updated"] == 0, f"rerun: {s}")
        expect(len(e.patches()) == 1, f"a rerun without changes PATCHed: {e.patches()}")
        e.jde.ctl("/_sim/touch", {"count": 4, "table": "F4801"})
        s = summary(e.sync("sync of 4 changes"))
        expect(s["updated"] == 4, f"changes: {s}")
        expect(len(e.patches()) == 2, f"4 updates -> one more PATCH: {e.patches()}")
    finally:
        e.close()


@test
def test_token_expiry_relogin():
    e = Env()
    try:
        # the token dies after one call (the datagroup list): the PATCH is
        # refused with 401, the agent logs in again and PATCHes once
        e.looker.faults(token_uses=1)
        e.sync("first sync")
        st = e.looker.stats()
        expect(st["tokens_issued"] == 2, f"{st['tokens_issued']} logins, expected 2: {st}")
        expect(st["status_counts"].get("401") == 1, st)
        expect(len(e.patches()) == 1, f"PATCHes: {e.patches()}")
        # the same in Looker's "not found" style for a dead token (404): the
        # PATCH's 404 sends the agent to the list, whose 404 means a new login
        e.looker.faults(auth_404=True, token_uses=1)
        e.looker.ctl("/_sim/reset_stats", {})
        e.jde.ctl("/_sim/touch", {"count": 2, "table": "F4801"})
        e.sync("sync with 404-style auth")
        st = e.looker.stats()
        expect(len(e.patches()) == 2, f"PATCHes: {e.patches()}")
        expect(st["status_counts"].get("404", 0) >= 1, st)
        # a token that expires between runs: the next run logs in (no 401 reaches the flow)
        e.looker.ctl("/_sim/expire_tokens", {})
        e.jde.ctl("/_sim/touch", {"count": 2, "table": "F4801"})
        e.sync("sync after every token expired")
        expect(len(e.patches()) == 3, f"PATCHes: {e.patches()}")
    finally:
        e.close()


@test
def test_datagroup_redeployed_is_found_again():
    e = Env()
    try:
        e.sync("first sync")
        p = e.patches()
        expect(len(p) == 1 and p[0]["id"] == "1", p)
        moved = e.looker.ctl("/_sim/redeploy", {"model": "mlc_finance", "name": "mlc_staging_load"})
        e.jde.ctl("/_sim/touch", {"count": 3, "table": "F4801"})
        e.sync("sync after the redeploy")
        p = e.patches()
        expect(len(p) == 2 and p[1]["id"] == moved["id"], f"after redeploy to {moved}: {p}")
    finally:
        e.close()


@test
def test_kill_between_load_and_refresh():
    e = Env()
    try:
        # Looker answers slowly: the agent is inside the after_load call when killed
        e.looker.faults(slow_ms=60000)
        p = subprocess.Popen([ARGS.agent, "-q", "-c", e.config, "sync", "jde_workorders"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e.env())
        try:
            while e.looker.stats()["total"] == 0:
                expect(p.poll() is None, f"the agent exited ({p.returncode}) before calling Looker")
                time.sleep(0.05)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        expect(len(e.jira.ctl("/_sim/issues")) == 30, "the load did not finish before Looker was called")
        expect(e.patches() == [], f"a PATCH landed: {e.patches()}")
        e.looker.faults(slow_ms=0)
        r = e.sync("sync after the kill")
        s = summary(r)
        expect(s["created"] == 0 and s["updated"] == 0, f"the rerun loaded: {s}")
        expect(len(e.patches()) == 1, f"the owed refresh was not made: {e.patches()}")
        e.sync("one more sync")
        expect(len(e.patches()) == 1, f"a refresh was made twice: {e.patches()}")
    finally:
        e.close()


@test
def test_429_retry_after_waited_out():
    e = Env()
    try:
        e.looker.faults(rate_429=2, retry_after=1)
        e.sync("sync with Looker throttling")
        st = e.looker.stats()
        expect(st["status_counts"].get("429") == 2, st)
        expect(st["retry_after_violations"] == 0, f"a call came before Retry-After ended: {st}")
        expect(len(e.patches()) == 1, e.patches())
    finally:
        e.close()


@test
def test_failure_audited_and_retried():
    e = Env()
    try:
        # a datagroup name Looker does not have: the refresh fails, the load stands
        with open(e.config) as f:
            cfg = json.load(f)
        cfg["flows"]["jde_workorders"]["after_load"]["datagroup"] = "no_such_group"
        with open(e.config, "w") as f:
            json.dump(cfg, f)
        r = e.sync("sync with a bad datagroup")
        expect(summary(r)["created"] == 30, r.stdout)
        expect("no_such_group" in r.stderr, f"no warning naming the datagroup: {r.stderr[-2000:]}")
        rows = e.db("SELECT detail FROM state_audit WHERE action = 'after_load_failed'")
        expect(len(rows) == 1 and "no_such_group" in rows[0][0], rows)
        st = harness.run_agent(ARGS.agent, e.config, "status", env=e.env())
        expect("after_load call to looker" in st.stdout, f"status does not show the owed call:\n{st.stdout}")
        cfg["flows"]["jde_workorders"]["after_load"]["datagroup"] = "mlc_staging_load"
        with open(e.config, "w") as f:
            json.dump(cfg, f)
        r = e.sync("sync after the fix")
        expect(summary(r)["created"] == 0, r.stdout)
        expect(len(e.patches()) == 1, f"the failed refresh was not made good: {e.patches()}")
        st = harness.run_agent(ARGS.agent, e.config, "status", env=e.env())
        expect("after_load call to looker" not in st.stdout, f"status still shows the call owed:\n{st.stdout}")
    finally:
        e.close()


@test
def test_list_of_entries_each_told_once():
    e = Env(after=[{"system": "looker", "model": "mlc_finance", "datagroup": "mlc_staging_load"},
                   {"system": "looker", "model": "mlc_finance", "datagroup": "nightly"}])
    try:
        e.sync("first sync")
        names = sorted(p["name"] for p in e.patches())
        expect(names == ["mlc_staging_load", "nightly"], f"PATCHes: {e.patches()}")
        e.sync("rerun without changes")
        expect(len(e.patches()) == 2, f"a rerun without changes PATCHed: {e.patches()}")
    finally:
        e.close()


@test
def test_ping_logs_in():
    e = Env()
    try:
        r = harness.run_agent(ARGS.agent, e.config, "ping", env=e.env())
        line = [x for x in r.stdout.splitlines() if x.startswith("looker")]
        expect(r.returncode == 0 and line and line[0].split()[-1] == "ok", r.stdout + r.stderr)
        expect(e.looker.stats()["tokens_issued"] == 1, e.looker.stats())
        env = e.env()
        env["MLC_LOOKER_SECRET"] = "wrong-secret-value"
        r = harness.run_agent(ARGS.agent, e.config, "ping", env=env)
        line = [x for x in r.stdout.splitlines() if x.startswith("looker")]
        expect(r.returncode != 0 and line and "FAILED" in line[0] and "systems.looker.client_secret" in line[0],
               r.stdout + r.stderr)
        expect("wrong-secret-value" not in r.stdout + r.stderr, "the secret is in the output")
    finally:
        e.close()


@test
def test_config_checks():
    e = Env(after={"system": "looker", "model": "mlc_finance", "datagroup": "x", "dashboard": 1})
    try:
        with open(e.config) as f:
            cfg = json.load(f)
        cfg["flows"]["jde_workorders"]["after_load"].pop("dashboard")
        with open(e.config, "w") as f:
            json.dump(cfg, f)
        r = harness.run_agent(ARGS.agent, e.config, "check-config", env=e.env())
        expect(r.returncode == 0 and "after a load: looker" in r.stdout, r.stdout + r.stderr)
        cfg["flows"]["jde_workorders"]["after_load"]["dashboard"] = 1
        with open(e.config, "w") as f:
            json.dump(cfg, f)
        r = e.sync("unknown member", ok=False)
        expect(r.returncode != 0 and "after_load.dashboard" in r.stderr, r.stderr[-2000:])
        with open(e.config) as f:
            cfg = json.load(f)
        cfg["flows"]["jde_workorders"]["after_load"] = [{"system": "jde"}]
        with open(e.config, "w") as f:
            json.dump(cfg, f)
        r = e.sync("a system that cannot be told", ok=False)
        expect(r.returncode != 0 and "after_load[0].system" in r.stderr, r.stderr[-2000:])
        cfg["flows"]["jde_workorders"]["after_load"] = [{"system": "looker", "model": "mlc_finance"}]
        with open(e.config, "w") as f:
            json.dump(cfg, f)
        r = e.sync("no datagroup", ok=False)
        expect(r.returncode != 0 and "after_load[0].datagroup: required" in r.stderr, r.stderr[-2000:])
        expect(e.looker.stats()["total"] == 0, "Looker was called with a bad configuration")
    finally:
        e.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("-k", default=None)
    ap.add_argument("--quick", action="store_true", help="accepted for run_checks (the tests are small)")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    return harness.run_tests(TESTS, ARGS.k)


if __name__ == "__main__":
    sys.exit(main())
