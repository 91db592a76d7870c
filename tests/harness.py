# SPDX-License-Identifier: Apache-2.0
"""Test, demo and benchmark plumbing: start the simulators on 127.0.0.1 with
OS-chosen ports, write an agent configuration, run the real mlc-agent."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMS = os.path.join(ROOT, "tests", "sims")

JDE_PASSWORD = "demo-pass"
JIRA_TOKEN = "demo-token"

# ANP (assigned-to address numbers in the JDE simulator) -> Jira user e-mail
ASSIGNEES = {
    "6001": "maria.lopez@example.com", "6002": "james.chen@example.com",
    "6003": "aisha.patel@example.com", "6004": "tomasz.nowak@example.com",
    "6005": "sofia.rossi@example.com", "6006": "kwame.mensah@example.com",
    "6007": "lena.fischer@example.com", "6008": "raj.iyer@example.com",
}

WORK_ORDER_MAPPING = {
    "summary": {"template": "WO {DOCO}: {DL01}", "required": True, "max": 255},
    "description": "Work order {DOCO} (type {DCTO}) for branch/plant {MCU}.\n"
                   "Status {SRST}, priority {PRTS}, requested by {DRQJ}.\n\n"
                   "Last changed in JD Edwards on {UPMJ} by {USER}.",
    "priority": {"from": "PRTS", "map": {"1": "Highest", "2": "High", "3": "Medium",
                                          "4": "Low", "5": "Lowest"}, "default": "Medium"},
    "duedate": {"from": "DRQJ", "date": "yyyymmdd"},
    "assignee": {"from": "ANP", "map": ASSIGNEES},
    "labels": {"list": ["jde", "{DCTO}"]},
    "customfield_10050": "{DOCO}",
    "customfield_10051": {"from": "MCU"},
    "customfield_10052": {"from": "DCTO"},
}


class Sim:
    """One simulator process."""

    def __init__(self, script, args=(), quiet=True, log=None):
        self.tmp = tempfile.mkdtemp(prefix="mlc-sim-")
        port_file = os.path.join(self.tmp, "port")
        cmd = [sys.executable, os.path.join(SIMS, script), "--port", "0", "--port-file", port_file]
        if quiet:
            cmd.append("--quiet")
        cmd += list(args)
        self.log = open(log or os.path.join(self.tmp, "sim.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"simulator {script} did not start (see {self.log.name})")
            time.sleep(0.05)
        with open(port_file) as f:
            self.port = int(f.read().strip())
        self.url = f"http://127.0.0.1:{self.port}"

    def ctl(self, path, body=None, method=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def faults(self, **kw):
        return self.ctl("/_sim/faults", kw)

    def stats(self):
        return self.ctl("/_sim/stats")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def make_config(workdir, jde_url, jira_url, jde=None, jira=None, flow=None, mapping=None,
                agent=None):
    cfg = {
        "agent": {"state_db": os.path.join(workdir, "state.db"),
                  "key_file": os.path.join(workdir, "secret.key"), "log_level": "warn"},
        "systems": {
            "jde": {"type": "jde", "base_url": jde_url + "/jderest", "username": "SYNCUSR",
                    "password": "${MLC_JDE_PASSWORD}", "environment": "JDV920", "page_size": 200},
            "jira": {"type": "jira", "base_url": jira_url, "auth": "basic",
                     "email": "sync@example.com", "api_token": "${MLC_JIRA_TOKEN}"},
        },
        "flows": {
            "jde_workorders": {
                "source": {"system": "jde", "table": "F4801", "key": "DOCO"},
                "target": {"system": "jira", "project": "MFG", "issue_type": "Task",
                           "marker_prefix": "jdewo-"},
                "schedule": "every 15m",
                # tests kill the agent and run it again at once; their simulators
                # answer within 2 s, so calls of a killed run have ended by then
                "settle_after": "2s",
                "mapping": mapping or WORK_ORDER_MAPPING,
            }
        },
    }
    cfg["systems"]["jde"].update(jde or {})
    cfg["systems"]["jira"].update(jira or {})
    cfg["flows"]["jde_workorders"].update(flow or {})
    cfg["agent"].update(agent or {})
    path = os.path.join(workdir, "agent.json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return path


def agent_env():
    env = dict(os.environ)
    env["MLC_JDE_PASSWORD"] = JDE_PASSWORD
    env["MLC_JIRA_TOKEN"] = JIRA_TOKEN
    return env


def run_agent(agent, config, *args, timeout=600, env=None):
    cmd = [agent, "-q", "-c", config] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env or agent_env(), errors="replace")


# Jira accounts of the Jira simulator: the sync user the agent writes as
# (/myself), and a person who moves issues.
JIRA_SYNC_ACCOUNT = "712020:aaaa0000-5c2e-4b7a-9d3f-000000000000"
JIRA_USER_ACCOUNT = "712020:aaaa0001-5c2e-4b7a-9d3f-000000000001"
_JIRA_STATUS_IDS = {"To Do": "10000", "In Progress": "3", "Done": "10001"}


def jira_status_event(issue, to_status, from_status=None, account=JIRA_USER_ACCOUNT, timestamp_ms=None,
                      site="https://mlc-test.atlassian.net", extra=None):
    """A jira:issue_updated webhook body for a status change, shaped as Jira
    sends it (docs/api/jira-cloud.md §4.3). issue is an item of the Jira
    simulator's /_sim/issues (or any dict with "key", optionally "id",
    "labels" and "fields"); statuses outside the simulator's workflow get
    made-up ids. extra: members merged into the top level."""
    from_status = from_status or issue.get("status") or "To Do"
    if isinstance(from_status, dict):
        from_status = from_status.get("name", "To Do")
    fields = dict(issue.get("fields") or {})
    fields["labels"] = list(issue.get("labels", fields.get("labels", [])))
    sid = _JIRA_STATUS_IDS.get(to_status, str(20000 + sum(map(ord, to_status))))
    fields["status"] = {"id": sid, "name": to_status}
    iid = str(issue.get("id", "10000"))
    body = {
        "timestamp": int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms),
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
        "user": {"self": f"{site}/rest/api/2/user?accountId={account}", "accountId": account,
                 "displayName": "ML Connector Sync" if account == JIRA_SYNC_ACCOUNT else "Maria Lopez",
                 "accountType": "atlassian", "active": True},
        "issue": {"id": iid, "self": f"{site}/rest/api/2/issue/{iid}", "key": issue["key"], "fields": fields},
        "changelog": {"id": str(10100 + int(time.time() * 1000) % 100000), "items": [
            {"field": "status", "fieldtype": "jira", "fieldId": "status",
             "from": _JIRA_STATUS_IDS.get(from_status, "0"), "fromString": from_status,
             "to": sid, "toString": to_status}]},
    }
    body.update(extra or {})
    return body


class Skip(Exception):
    """Raised by a test that cannot run here (e.g. needs root): reported as
    skipped, counted neither as passed nor as failed."""


def run_tests(tests, only=None):
    """Run each test function (those whose name contains only, if given);
    print "ok N name" / "not ok N name" with the failure ("ok N name # skip
    why" for a Skip), then "N passed, N failed[, N skipped]". Returns the
    exit status."""
    import traceback
    passed = failed = skipped = 0
    for i, fn in enumerate([t for t in tests if not only or only in t.__name__], 1):
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f"ok {i} {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Skip as why:
            skipped += 1
            print(f"ok {i} {fn.__name__} # skip: {why}", flush=True)
        except Exception as ex:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"not ok {i} {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
            for line in (str(ex) if isinstance(ex, AssertionError) else traceback.format_exc()).splitlines()[:40]:
                print(f"#   {line}", flush=True)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 0 if failed == 0 else 1
