#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Status page tests: real `mlc-agent run` processes serving the page, the
JD Edwards and Jira simulators behind them, and Debian's Chromium driven by
tests/browser/status_page.mjs (playwright-core).

Three agents, each with its own simulators and state:
  main   the demo flow on "every 15m", page on 127.0.0.1 (no login)
  dead   the same flow on "manual", for the dead-letter / Replay test
  login  page on 0.0.0.0 with agent.status_password_hash (login required)

The browser script's "ok N name" lines are passed through; the checks that
need no browser (/metrics, the HTTP contract, the embedded files) follow
with the next numbers. Ends with "N passed, N failed"; exit 1 on failure.

    python3 tests/integration/test_status_page.py --agent build/hD/mlc-agent \
        [--out build/hD/browser-shots] [-k NAME] [--chromium /usr/bin/chromium]
"""
import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402

ROOT = harness.ROOT
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
WEB_DIR = os.path.join(ROOT, "agent", "web")
FLOW = "jde_workorders"
MAIN_ORDERS = 60
DEAD_ORDERS = 30
ARGS = None


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def free_port(host):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def lan_address():
    """This machine's first non-loopback IPv4 address, or None."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for a in out.split():
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", a) and not a.startswith("127."):
            return a
    return None


def http(method, url, body=None, headers=None, timeout=30):
    """(status, headers, bytes) of one request; error statuses are answers too."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def http_json(method, url, body=None, headers=None):
    st, hd, raw = http(method, url, body, headers)
    try:
        return st, json.loads(raw) if raw else None
    except ValueError:
        return st, raw


class Agent:
    """A JD Edwards simulator, a Jira simulator and `mlc-agent run` serving
    the status page on listen_host:<free port>."""

    def __init__(self, name, orders, listen_host="127.0.0.1", flow=None, password_hash=None):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"mlc-status-{name}-")
        self.jde = self.jira = self.proc = None
        self.log = None
        try:
            self.jde = harness.Sim("jde_sim.py", ["--seed", str(orders)])
            self.jira = harness.Sim("jira_sim.py")
            self._start(listen_host, flow, password_hash)
        except BaseException:
            self.close()
            raise

    def _start(self, listen_host, flow, password_hash):
        hosts = [listen_host]
        if listen_host == "0.0.0.0":
            lan = lan_address()
            if lan:
                hosts.append(lan)  # in case the wildcard address is refused
        last = None
        for host in hosts:
            self.port = free_port(host)
            agent = {"status_listen": f"{host}:{self.port}", "log_level": "info"}
            if password_hash:
                agent["status_password_hash"] = password_hash
            self.config = harness.make_config(self.dir, self.jde.url, self.jira.url, flow=flow, agent=agent)
            self.log_path = os.path.join(self.dir, "agent.log")
            self.log = open(self.log_path, "a")
            self.proc = subprocess.Popen([ARGS.agent, "-c", self.config, "run"], stdout=self.log,
                                         stderr=subprocess.STDOUT, env=harness.agent_env())
            reach = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1") else host
            self.base = f"http://{reach}:{self.port}"
            self.url = self.base + "/"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    st, _, _ = http("GET", self.base + "/api/session", timeout=2)
                    if st == 200:
                        return
                except OSError:
                    pass
                time.sleep(0.1)
            last = f"agent {self.name} on {host}:{self.port} did not serve /api/session:\n{self.log_tail()}"
            self.stop_agent()
        raise RuntimeError(last)

    def log_tail(self, n=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def status(self, headers=None):
        st, body = http_json("GET", self.base + "/api/status", headers=headers)
        expect(st == 200, f"/api/status: HTTP {st} {body}")
        return body

    def flow(self):
        return next(f for f in self.status()["flows"] if f["name"] == FLOW)

    def wait_idle(self, what, timeout=60):
        """Until the flow has finished a run and is not running."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.flow()
            lr = f.get("last_run") or {}
            if not f.get("running") and lr.get("finished_ms"):
                return f
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: flow still busy or never ran: {f}")
            time.sleep(0.2)

    def stop_agent(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.log:
            self.log.close()
            self.log = None

    def close(self):
        self.stop_agent()
        for s in (self.jde, self.jira):
            if s is not None:
                s.stop()
        if not ARGS.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Prometheus text format (version 0.0.4), strictly

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_value(s, where):
    if s in ("+Inf", "Inf"):
        return float("inf")
    if s == "-Inf":
        return float("-inf")
    if s == "NaN":
        return float("nan")
    if not re.fullmatch(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)", s):
        raise ValueError(f"{where}: bad value {s!r}")
    return float(s)


def parse_labels(s, i, where):
    """s[i] == '{'; returns (dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if s[i:i + 1] == "}":
            return labels, i + 1
        m = LABEL_NAME.match(s, i)
        if not m:
            raise ValueError(f"{where}: bad label name at {s[i:i + 20]!r}")
        name = m.group(0)
        if name in labels:
            raise ValueError(f"{where}: label {name} twice")
        i = m.end()
        if s[i:i + 2] != '="':
            raise ValueError(f"{where}: expected =\" after label {name}")
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise ValueError(f"{where}: unterminated label value")
            c = s[i]
            if c == "\\":
                nxt = s[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ValueError(f"{where}: bad escape \\{nxt} in a label value")
                val.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ValueError(f"{where}: newline in a label value")
            else:
                val.append(c)
                i += 1
        labels[name] = "".join(val)
        if s[i:i + 1] == ",":
            i += 1
        elif s[i:i + 1] != "}":
            raise ValueError(f"{where}: expected , or }} after label {name}")


def family_of(name, types):
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[:-len(suffix)] if name.endswith(suffix) else None
        if base and types.get(base) in ("histogram", "summary"):
            if suffix == "_bucket" and types[base] != "histogram":
                continue
            return base
    return name


def parse_prometheus(text):
    """{"types": {family: type}, "help": {family: text},
    "samples": [(name, labels, value)]}; raises ValueError on anything the
    text format does not allow."""
    if text and not text.endswith("\n"):
        raise ValueError("the exposition does not end with a newline")
    types, helps, samples = {}, {}, []
    seen_series = set()
    done = set()       # families whose samples are over (no interleaving)
    sampled = set()    # families that have had samples
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {n}"
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                if len(parts) < 3 or not METRIC_NAME.fullmatch(parts[2]):
                    raise ValueError(f"{where}: bad {parts[1]} line {line!r}")
                name = parts[2]
                if name in done or name in sampled:
                    raise ValueError(f"{where}: {parts[1]} for {name} after its samples")
                if parts[1] == "HELP":
                    if name in helps:
                        raise ValueError(f"{where}: second HELP for {name}")
                    helps[name] = parts[3] if len(parts) > 3 else ""
                    if re.search(r"\\[^\\n]", helps[name]):
                        raise ValueError(f"{where}: bad escape in HELP")
                else:
                    if name in types:
                        raise ValueError(f"{where}: second TYPE for {name}")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ValueError(f"{where}: bad TYPE line {line!r}")
                    types[name] = parts[3]
                if current is not None and current != name:
                    done.add(current)
                current = name
            continue  # other comments are allowed
        m = METRIC_NAME.match(line)
        if not m:
            raise ValueError(f"{where}: bad sample line {line!r}")
        name, i = m.group(0), m.end()
        labels = {}
        if line[i:i + 1] == "{":
            labels, i = parse_labels(line, i, where)
        if line[i:i + 1] != " ":
            raise ValueError(f"{where}: expected a space before the value in {line!r}")
        rest = line[i + 1:].split(" ")
        if len(rest) not in (1, 2) or rest[0] == "":
            raise ValueError(f"{where}: expected 'value [timestamp]' in {line!r}")
        value = parse_value(rest[0], where)
        if len(rest) == 2 and not re.fullmatch(r"-?\d+", rest[1]):
            raise ValueError(f"{where}: bad timestamp {rest[1]!r}")
        fam = family_of(name, types)
        if fam in done:
            raise ValueError(f"{where}: samples of {fam} are not together")
        if current is not None and current != fam:
            done.add(current)
        current = fam
        sampled.add(fam)
        key = (name, tuple(sorted(labels.items())))
        if key in seen_series:
            raise ValueError(f"{where}: series {name}{labels} twice")
        seen_series.add(key)
        t = types.get(fam, "untyped")
        if t == "counter" and (value < 0 or value != value):
            raise ValueError(f"{where}: counter {name} is {value}")
        if t == "histogram" and name.endswith("_bucket") and "le" not in labels:
            raise ValueError(f"{where}: bucket without le")
        samples.append((name, labels, value))
    return {"types": types, "help": helps, "samples": samples}


def metrics(agent):
    st, hd, raw = http("GET", agent.base + "/metrics")
    expect(st == 200, f"/metrics: HTTP {st}")
    ctype = hd.get("Content-Type", "")
    expect(ctype.startswith("text/plain"), f"/metrics Content-Type {ctype!r}")
    return parse_prometheus(raw.decode("utf-8"))


def records_total(m):
    got = {}
    for name, labels, value in m["samples"]:
        if name == "mlc_agent_records_total" and labels.get("flow") == FLOW:
            got[tuple(sorted(labels.items()))] = value
    return got


# ---------------------------------------------------------------------------
# checks without a browser

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


@test
def metrics_parse_and_records_counter_moves(env):
    a = env["main"]
    a.wait_idle("start-up sync")
    m = metrics(a)
    expect(m["types"].get("mlc_agent_records_total") == "counter",
           f"mlc_agent_records_total has TYPE {m['types'].get('mlc_agent_records_total')}")
    expect("mlc_agent_records_total" in m["help"], "mlc_agent_records_total has no HELP")
    for fam in m["types"]:
        expect(fam in m["help"], f"{fam} has a TYPE but no HELP")
    before = records_total(m)
    expect(before, f"no mlc_agent_records_total sample for flow {FLOW}")
    expect(sum(before.values()) >= MAIN_ORDERS, f"records before: {before}")
    started = (a.flow().get("last_run") or {}).get("started_ms")
    a.jde.ctl("/_sim/touch", {"count": 3})
    st, body = http_json("POST", a.base + f"/api/flows/{FLOW}/sync", {}, {"X-Requested-With": "mlc"})
    expect(st == 202 and body == {"queued": True}, f"sync: HTTP {st} {body}")
    deadline = time.monotonic() + 60
    while True:
        after = records_total(metrics(a))
        if sum(after.values()) > sum(before.values()):
            break
        expect(time.monotonic() < deadline, f"mlc_agent_records_total did not move: {before} -> {after}")
        time.sleep(0.3)
    for k, v in before.items():
        expect(after.get(k, 0) >= v, f"counter {dict(k)} went down: {v} -> {after.get(k)}")
    f = a.wait_idle("sync now")
    expect(f["last_run"]["started_ms"] != started, "the flow did not run again")
    upd = [v for k, v in after.items() if dict(k).get("outcome") == "updated"]
    if upd:
        expect(upd[0] >= 3, f"updated records: {after}")


@test
def http_contract(env):
    a = env["main"]
    st, body = http_json("GET", a.base + "/api/session")
    expect(st == 200 and body == {"login_required": False, "logged_in": True}, f"/api/session on loopback: {st} {body}")
    snap = a.status()
    for k in ("agent", "systems", "flows", "health", "tunnel", "throughput", "audit", "dead"):
        expect(k in snap, f"/api/status has no {k}")
    expect(len(snap["throughput"]["points"]) == 24 and snap["throughput"]["bucket_s"] == 3600, "throughput shape")
    xrw = {"X-Requested-With": "mlc"}
    st, body = http_json("POST", a.base + f"/api/flows/{FLOW}/sync", {})
    expect(st == 403 and isinstance(body, dict) and body.get("error"), f"POST without X-Requested-With: {st} {body}")
    st, body = http_json("POST", a.base + "/api/flows/nosuchflow/sync", {}, xrw)
    expect(st == 404 and body.get("error"), f"sync of an unknown flow: {st} {body}")
    st, body = http_json("POST", a.base + "/api/dead/abc/replay", {}, xrw)
    expect(st == 400 and body.get("error"), f"replay of a non-numeric id: {st} {body}")
    st, body = http_json("POST", a.base + "/api/dead/987654/replay", {}, xrw)
    expect(st == 404 and body.get("error"), f"replay of an unknown id: {st} {body}")
    st, body = http_json("POST", a.base + f"/api/flows/{FLOW}/replay", {}, xrw)
    expect(st == 200 and body == {"replayed": 0}, f"replay of a flow without dead letters: {st} {body}")
    st, body = http_json("POST", a.base + "/api/ping", {}, xrw)
    expect(st == 200 and sorted(s["name"] for s in body["systems"]) == ["jde", "jira"]
           and all(s["ok"] is True for s in body["systems"]), f"ping: {st} {body}")
    big = json.dumps({"password": "x" * (70 * 1024)}).encode()
    try:
        st, _, _ = http("POST", a.base + "/api/ping", big, {"X-Requested-With": "mlc", "Content-Type": "application/json"})
    except (ConnectionError, http.client.HTTPException) as e:  # the server may close before reading it all
        st = f"connection closed ({e.__class__.__name__})"
    expect(st == 413, f"a 70 KiB body: {st}")
    st, _, _ = http("GET", a.base + "/nothing-here")
    expect(st == 404, f"unknown path: {st}")
    a.wait_idle("after the contract checks")


@test
def audit_api_search(env):
    a = env["main"]
    a.wait_idle("start-up sync")
    order = str(100000 + 17)
    st, body = http_json("GET", a.base + f"/api/audit?q={order}&limit=10")
    expect(st == 200 and isinstance(body, dict), f"/api/audit: {st} {body}")
    es = body["entries"]
    expect(es and all(e["source_key"] == order for e in es), f"q={order}: {[e['source_key'] for e in es]}")
    tkey, aid = es[-1]["target_key"], es[-1]["audit_id"]
    for q in (tkey, aid):
        st, body = http_json("GET", a.base + "/api/audit?" + urllib.parse.urlencode({"q": q}))
        expect(st == 200 and any(e["source_key"] == order for e in body["entries"]), f"q={q}: {body}")
    st, body = http_json("GET", a.base + "/api/audit?limit=5")
    expect(st == 200 and len(body["entries"]) == 5, f"limit=5 without q: {len(body['entries'])} entries")


@test
def health_names_systems_as_configured(env):
    """Health items speak of the systems by their configured names, never by a
    product name the core would have to know (`mlc-agent status`, same text
    as the page)."""
    import sqlite3
    d = tempfile.mkdtemp(prefix="mlc-names-")
    try:
        cfg_path = harness.make_config(d, "http://127.0.0.1:9", "http://127.0.0.1:9", flow={
            "schedule": "manual",
            "writeback": {"orchestration": "MLC_UpdateWOStatus", "inputs": {"WorkOrder": "{key}"},
                          "status_map": {"Done": "95"}}})
        cfg = json.load(open(cfg_path))
        cfg["systems"] = {"erp_east": cfg["systems"]["jde"], "tracker": cfg["systems"]["jira"]}
        fl = cfg["flows"].pop(FLOW)
        fl["source"]["system"], fl["target"]["system"] = "erp_east", "tracker"
        cfg["flows"]["orders"] = fl
        json.dump(cfg, open(cfg_path, "w"))
        r = harness.run_agent(ARGS.agent, cfg_path, "status", timeout=60)
        expect(r.returncode == 0, f"status on a new state database: exit {r.returncode}: {r.stderr}")
        now_ms = int(time.time() * 1000)
        con = sqlite3.connect(os.path.join(d, "state.db"), timeout=10)
        con.execute("INSERT INTO state_kv(key, value, updated_at) VALUES('watch.orders', ?, 0)",
                    (json.dumps({"mode": "dynamic", "expires_ms": now_ms + 86400000}),))
        con.execute("INSERT INTO state_inbox(seq, kind, ext_id, body, received_ms, stored_ms)"
                    " VALUES(1, 'jira', 'e1', '{}', ?, ?)", (now_ms - 3600000, now_ms - 3600000))
        con.commit()
        con.close()
        r = harness.run_agent(ARGS.agent, cfg_path, "status", timeout=60)
        health = [line for line in r.stdout.splitlines() if line.startswith("health ")]
        expect(r.returncode == 0 and health, f"status: exit {r.returncode}: {r.stdout} {r.stderr}")
        text = "\n".join(health)
        for want in ("flow orders: tracker webhook expiry: 1.0 days left",
                     "check that it runs and that tracker accepts its credentials",
                     "Changes from tracker are waiting to be written to erp_east: check erp_east (Ping)"):
            expect(want in text, f"no {want!r} in:\n{text}")
        bad = re.findall(r"(?i)jira|jd edwards|\bjde\b|orchestrat", text)
        expect(not bad, f"health names a product ({bad}):\n{text}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def weekly_schedule_shows_the_local_time_zone(env):
    """A weekly schedule is local wall-clock time: the page says whose (TZ),
    and the next run is that weekday and hour there."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    try:
        a = Agent("tz", 3, flow={"schedule": "weekly mon 06:00"})
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
    try:
        f = a.wait_idle("first run")
        expect(f["schedule"] == "weekly mon 06:00", f"schedule {f['schedule']}")
        zone = f.get("schedule_zone", "")
        expect(zone.startswith("America/New_York (E") and "UTC-0" in zone, f"schedule_zone {zone!r}")
        nxt = f.get("next_run_ms")
        expect(isinstance(nxt, (int, float)), f"next_run_ms {nxt!r}")
        # 06:00 in New York is 10:00 or 11:00 UTC, on a Monday
        t = time.gmtime(nxt / 1000)
        expect(t.tm_wday == 0 and t.tm_hour in (10, 11) and t.tm_min == 0, f"next run {time.asctime(t)} UTC")
        expect(env["main"].flow().get("schedule_zone") is None, "an 'every' schedule shows a zone")
    finally:
        a.close()


@test
def embedded_page_matches_sources(env):
    a = env["main"]
    for path, fname, ctype in (("/", "index.html", "text/html"), ("/app.js", "app.js", "javascript"),
                               ("/style.css", "style.css", "text/css")):
        st, hd, raw = http("GET", a.base + path)
        expect(st == 200, f"GET {path}: HTTP {st}")
        expect(ctype in hd.get("Content-Type", ""), f"GET {path}: Content-Type {hd.get('Content-Type')}")
        with open(os.path.join(WEB_DIR, fname), "rb") as f:
            expect(raw == f.read(), f"GET {path} is not agent/web/{fname} (rebuild the agent)")
        text = raw.decode("utf-8")
        ext = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", text)
        expect(not ext, f"{fname} refers to something outside the agent: {ext}")
    with open(os.path.join(WEB_DIR, "app.js"), encoding="utf-8") as f:
        js = f.read()
    bad = re.findall(r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(", js)
    expect(not bad, f"app.js builds markup from strings: {bad}")


@test
def websocket_needs_session_off_loopback(env):
    a = env["login"]
    st, body = http_json("GET", a.base + "/api/status")
    expect(st == 401, f"/api/status without a session: {st}")
    s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    try:
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Protocol: mlc-status\r\n\r\n").encode())
        got = b""
        while b"\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except OSError:
        got = b"(connection closed)"
    finally:
        s.close()
    expect(not got.startswith(b"HTTP/1.1 101"), f"WebSocket upgrade without a session: {got[:80]!r}")


# ---------------------------------------------------------------------------

def ensure_browser_deps():
    """playwright-core from tests/browser/package-lock.json, Chromium from Debian."""
    if shutil.which("node") is None:
        return "node is not installed (make deps installs nodejs)"
    if not os.path.exists(ARGS.chromium):
        return f"{ARGS.chromium} is missing (make deps installs Debian's chromium)"
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        print("# installing playwright-core (npm ci in tests/browser)", flush=True)
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            return "npm ci failed:\n" + (r.stdout + r.stderr)[-2000:]
    return None


def run_browser(env, password):
    """Runs status_page.mjs; returns (passed, failed, skipped, numbers used)."""
    problem = ensure_browser_deps()
    if problem:
        print("not ok 1 browser_tests")
        for line in problem.splitlines():
            print(f"#   {line}")
        return 0, 1, 0, 1
    main, dead, login = env["main"], env["dead"], env["login"]
    cmd = ["node", os.path.join(BROWSER_DIR, "status_page.mjs"), "--out", ARGS.out, "--chromium", ARGS.chromium,
           "--url", main.url, "--jde", main.jde.url, "--jira", main.jira.url, "--orders", str(MAIN_ORDERS),
           "--dead-url", dead.url, "--dead-jde", dead.jde.url, "--dead-jira", dead.jira.url,
           "--dead-orders", str(DEAD_ORDERS), "--login-url", login.url]
    if ARGS.k:
        cmd += ["--only", ARGS.k]
    penv = dict(os.environ, MLC_STATUS_PASSWORD=password)
    passed = failed = skipped = last = 0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=penv,
                            errors="replace")
    start = time.monotonic()
    for line in proc.stdout:
        line = line.rstrip("\n")
        m = re.match(r"(ok|not ok) (\d+) ", line)
        if m:
            last = max(last, int(m.group(2)))
            if m.group(1) == "not ok":
                failed += 1
            elif "# SKIP" in line:
                skipped += 1
            else:
                passed += 1
        if re.fullmatch(r"\d+ passed, \d+ failed(, \d+ skipped)?", line):
            continue  # the totals are printed once, at the end
        print(line, flush=True)
        if time.monotonic() - start > 1200:
            proc.kill()
    rc = proc.wait()
    if rc != 0 and failed == 0:
        last += 1
        failed += 1
        print(f"not ok {last} browser_tests (node exited {rc})")
    return passed, failed, skipped, last


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--out", help="screenshots (default: browser-shots beside the agent binary)")
    ap.add_argument("--chromium", default=os.environ.get("MLC_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("-k", help="run only tests whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the agents' state directories")
    ap.add_argument("--no-browser", action="store_true", help="only the checks that need no browser")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    ARGS.out = os.path.abspath(ARGS.out or os.path.join(os.path.dirname(ARGS.agent), "browser-shots"))
    shutil.rmtree(ARGS.out, ignore_errors=True)
    os.makedirs(ARGS.out, exist_ok=True)

    password = "plant-" + secrets.token_hex(8)
    r = subprocess.run([ARGS.agent, "password-hash"], input=password + "\n", capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0 or not r.stdout.strip():
        print("not ok 1 password_hash")
        print(f"#   mlc-agent password-hash: exit {r.returncode}: {r.stderr.strip()}")
        print("0 passed, 1 failed")
        return 1
    pw_hash = r.stdout.strip()

    env = {}
    passed = failed = skipped = n = 0
    try:
        try:
            env["main"] = Agent("main", MAIN_ORDERS)
            env["dead"] = Agent("dead", DEAD_ORDERS, flow={"schedule": "manual"})
            env["login"] = Agent("login", 10, listen_host="0.0.0.0", password_hash=pw_hash)
        except Exception:  # noqa: BLE001
            print("not ok 1 start_agents")
            for line in traceback.format_exc().splitlines()[-40:]:
                print(f"#   {line}")
            print("0 passed, 1 failed")
            return 1
        print(f"# screenshots in {ARGS.out}", flush=True)
        if not ARGS.no_browser:
            passed, failed, skipped, n = run_browser(env, password)
        for fn in [t for t in TESTS if not ARGS.k or ARGS.k in t.__name__]:
            n += 1
            t0 = time.monotonic()
            try:
                fn(env)
                passed += 1
                print(f"ok {n} {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
            except Exception as ex:  # noqa: BLE001 - report every failure and go on
                failed += 1
                print(f"not ok {n} {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
                text = str(ex) if isinstance(ex, AssertionError) else traceback.format_exc()
                for line in text.splitlines()[:40]:
                    print(f"#   {line}", flush=True)
        if failed:
            for a in env.values():
                print(f"# --- agent {a.name} log (last lines) ---")
                for line in a.log_tail(25).splitlines():
                    print(f"#   {line}")
    finally:
        for a in env.values():
            a.stop_agent()
            # a sanitizer build reports at exit: that is a failure of this suite
            path = os.path.join(a.dir, "agent.log")
            text = open(path, errors="replace").read() if os.path.exists(path) else ""
            n += 1
            if "Sanitizer" in text or "runtime error:" in text:
                failed += 1
                print(f"not ok {n} agent_{a.name}_exits_clean")
                for line in text[text.find("=="):][:3000].splitlines()[:40]:
                    print(f"#   {line}")
            else:
                passed += 1
                print(f"ok {n} agent_{a.name}_exits_clean")
            a.close()
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
