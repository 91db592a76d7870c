#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The agent on a hostile network (issue 10, agent side): real mlc-agent and
mlc-relay processes, the JD Edwards and Jira simulators, and tests/netproxy.py
between the agent and the relay.

  listening   the status page binds exactly agent.status_listen (read back
              from /proc/net/tcp and tcp6), decides its login by the address
              it bound, and, in a network namespace of the test's own (root
              only), a loopback page is unreachable from the far end of a
              veth pair while a page on the veth's address is reachable
  tunnel      after a blackhole or a half-open spell the tunnel is back within
              one capped backoff step and every webhook sent meanwhile is
              applied exactly once; the page shows the tunnel down meanwhile;
              rtt_ms is a number
  logins      16 parallel wrong-password guessers never slow or cut an
              authenticated client; one address's failures are throttled
              (429, growing Retry-After, counted in /metrics); the password
              works again after the wait
  WebSocket   /ws without a session is refused before 101
  files       state.db, -wal, -shm and the key file are 0600 under umask 022

Everything listens on 127.0.0.1 (and, in the namespace test, on addresses
of the test's own 10.231.0.0/16 veth pair). Prints "ok N name" / "not ok N
name" (or "ok N name # SKIP why") and closes with "N passed, N failed".

    tests/integration/test_net_agent.py --agent build/dev/mlc-agent --relay build/dev/mlc-relay [-k NAME]
"""
import argparse
import collections
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402
import netproxy  # noqa: E402
import relay_harness as rh  # noqa: E402

ARGS = None
TESTS = []
STATUS_MAP = {"To Do": "10", "In Progress": "40", "Done": "95"}
HEARTBEAT_S = 2          # relay.heartbeat in these tests (20 s by default)
# what the agent promises for that heartbeat (agent/tunnel.c): a link silent
# for 3 beats is dead, an attempt gets 3 beats to be answered, and the
# backoff between attempts is capped at 3 beats
DEAD_AFTER_S = 3 * HEARTBEAT_S
ATTEMPT_TIMEOUT_S = 3 * HEARTBEAT_S
BACKOFF_CAP_S = 3 * HEARTBEAT_S


class Skip(Exception):
    """The test cannot run here; printed as skipped, never as passed."""


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def wait_for(pred, timeout, what, step=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port(host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def password_hash(password):
    r = subprocess.run([ARGS.agent, "password-hash"], input=password + "\n", capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0 or not r.stdout.strip():
        raise AssertionError(f"mlc-agent password-hash failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip()


def sanitizer_check(path):
    text = open(path, errors="replace").read() if os.path.exists(path) else ""
    if "Sanitizer" in text or "runtime error:" in text:
        raise AssertionError(f"sanitizer report in {path}:\n" + text[text.find("=="):][:3000])


# ---------------------------------------------------------------------------
# HTTP to the status page, from a chosen source address

def request(base, method, path, body=None, headers=None, source=None, timeout=10):
    """(status, headers dict, body bytes, complete) of one request on a fresh
    connection; complete is False when the body is shorter than Content-Length."""
    host, port = base
    conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        h = {"X-Requested-With": "mlc"} if method == "POST" else {}
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        try:
            raw = r.read()
            complete = True
        except http.client.IncompleteRead as e:
            raw, complete = e.partial, False
        return r.status, {k.lower(): v for k, v in r.getheaders()}, raw, complete
    finally:
        conn.close()


class KeepAlive:
    """One HTTP/1.1 connection reused for every request (a new one only after
    an error), so a flood of requests leaves no pile of TIME-WAIT sockets."""

    def __init__(self, base, source=None, timeout=10):
        self.base, self.source, self.timeout = base, source, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.base[0], self.base[1], timeout=self.timeout,
                                                   source_address=(self.source, 0) if self.source else None)
        data = None if body is None else json.dumps(body).encode()
        h = {"X-Requested-With": "mlc"} if method == "POST" else {}
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        try:
            self.conn.request(method, path, body=data, headers=h)
            r = self.conn.getresponse()
            try:
                raw, complete = r.read(), True
            except http.client.IncompleteRead as e:
                raw, complete = e.partial, False
            hd = {k.lower(): v for k, v in r.getheaders()}
            if not complete or hd.get("connection", "").lower() == "close":
                self.close()
            return r.status, hd, raw, complete
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def login(base, password, source=None):
    st, hd, raw, _ = request(base, "POST", "/login", {"password": password}, source=source)
    if st != 200:
        return st, None, hd
    m = re.search(r"mlc_session=([0-9a-f]{64})", hd.get("set-cookie", ""))
    return st, ("mlc_session=" + m.group(1)) if m else None, hd


def metrics(base, cookie=None):
    st, _, raw, _ = request(base, "GET", "/metrics", headers={"Cookie": cookie} if cookie else None)
    expect(st == 200, f"/metrics: HTTP {st} {raw[:200]!r}")
    out = {}
    for line in raw.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


# ---------------------------------------------------------------------------
# an agent serving its page (no relay), for the listening, login and file tests

class PageAgent:
    def __init__(self, listen, password=None, umask=None, name="page"):
        self.dir = tempfile.mkdtemp(prefix=f"mlc-net-{name}-")
        self.log_path = os.path.join(self.dir, "agent.log")
        agent = {"status_listen": listen, "log_level": "info"}
        if password:
            agent["status_password_hash"] = password_hash(password)
        # no simulators needed: the flow is manual and never runs
        self.config = harness.make_config(self.dir, "http://127.0.0.1:9", "http://127.0.0.1:9",
                                          flow={"schedule": "manual"}, agent=agent)
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen([ARGS.agent, "-c", self.config, "run"], stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=harness.agent_env(),
                                     preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)

    def wait_serving(self, base, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlc-agent exited with {self.proc.returncode}:\n{self.log()}")
            try:
                st, _, _, _ = request(base, "GET", "/api/session", timeout=2)
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the status page on {base} did not answer within {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout=20):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return "(no log)"

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        sanitizer_check(self.log_path)
        shutil.rmtree(self.dir, ignore_errors=True)


def listening_addresses(pid):
    """The local addresses ("1.2.3.4:P", "[::1]:P") of the TCP sockets
    process pid listens on, from /proc/net/tcp and tcp6."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(os.path.join(fd_dir, fd)))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    out = []
    for fname, v6 in ((f"/proc/{pid}/net/tcp", False), (f"/proc/{pid}/net/tcp6", True)):
        try:
            lines = open(fname).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A = LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            if v6:
                # four host-order 32-bit words
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                addr = "[" + socket.inet_ntop(socket.AF_INET6, raw) + "]"
            else:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            out.append(f"{addr}:{int(hexport, 16)}")
    return sorted(out)


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# item 1: listening

@test
def status_page_binds_exactly_the_configured_address():
    cases = [("127.0.0.1", "127.0.0.1", None), ("localhost", None, None), ("0.0.0.0", "0.0.0.0", "pw-" + "x" * 8)]
    if have_ipv6_loopback():
        cases.insert(1, ("[::1]", "[::1]", None))
    for host, want, password in cases:
        port = free_port("::1" if host == "[::1]" else "127.0.0.1")
        a = PageAgent(f"{host}:{port}", password=password, name="listen")
        try:
            reach = ("::1" if host == "[::1]" else "127.0.0.1", port)
            if host == "localhost":
                # a name binds the first address it resolves to, and only that
                fam_addr = socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)[0][4][0]
                want = f"[{fam_addr}]" if ":" in fam_addr else fam_addr
                reach = (fam_addr, port)
            a.wait_serving(reach)
            got = listening_addresses(a.proc.pid)
            expect(got == [f"{want}:{port}"],
                   f"status_listen '{host}:{port}': the agent listens on {got}, expected exactly "
                   f"['{want}:{port}'] (agent/statusd.c statusd_start binds the configured address)")
            st, _, raw, _ = request(reach, "GET", "/api/status")
            if password:
                expect(st == 401, f"page bound to {want} (off loopback) answered /api/status with {st} "
                                  "without a login")
            else:
                expect(st == 200, f"loopback page {want}: /api/status {st} {raw[:200]!r}")
        finally:
            a.close()
    # every interface only when written so: "*" and a bare port are refused
    for bad in ("*", ""):
        a = PageAgent(f"{bad}:{free_port()}", password="pw-" + "x" * 8, name="listen-bad")
        try:
            rc = a.wait_exit()
            expect(rc not in (None, 0), f"status_listen '{bad}:P' was accepted (exit {rc}); it must be refused")
            expect("0.0.0.0" in a.log(), f"the refusal of '{bad}:P' does not say how to listen everywhere:\n"
                                         f"{a.log()}")
        finally:
            a.close()


def _netns_available():
    if os.geteuid() != 0:
        return "needs root (creates a network namespace and a veth pair)"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed; `make deps` installs it"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns` is unavailable: {r.stderr.strip()}"
    return None


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")
    return r


NS_PROBE = r"""
import http.client, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    c = http.client.HTTPConnection(host, port, timeout=3)
    c.request("GET", sys.argv[3])
    print(c.getresponse().status)
except OSError as e:
    print("unreachable", e.__class__.__name__)
"""


@test
def loopback_page_is_unreachable_from_a_veth_peer():
    why = _netns_available()
    if why:
        raise Skip(why)
    tag = os.getpid() % 250 + 1
    ns, host_if, ns_if = f"mlct{os.getpid()}", f"mlcv{os.getpid()}a", f"mlcv{os.getpid()}b"
    host_ip, ns_ip = f"10.231.{tag}.1", f"10.231.{tag}.2"
    agents = []
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_if[:15], "type", "veth", "peer", "name", ns_if[:15])
        _ip("link", "set", ns_if[:15], "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if[:15])
        _ip("link", "set", host_if[:15], "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if[:15])
        _ip("netns", "exec", ns, "ip", "link", "set", ns_if[:15], "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        loop_port, veth_port = free_port(), free_port()
        loop = PageAgent(f"127.0.0.1:{loop_port}", name="ns-loop")
        agents.append(loop)
        veth = PageAgent(f"{host_ip}:{veth_port}", password="pw-" + "y" * 8, name="ns-veth")
        agents.append(veth)
        loop.wait_serving(("127.0.0.1", loop_port))
        veth.wait_serving((host_ip, veth_port))

        def probe(port, path):
            r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", NS_PROBE, host_ip, str(port), path],
                               capture_output=True, text=True, timeout=30)
            return (r.stdout.strip() or r.stderr.strip())

        got = probe(loop_port, "/api/status")
        expect(got.startswith("unreachable"),
               f"a page configured for 127.0.0.1:{loop_port} answered {got!r} from {ns_ip} (namespace {ns}) "
               f"via {host_ip}: it must listen on loopback only (agent/statusd.c)")
        got = probe(veth_port, "/api/session")
        expect(got == "200", f"the page configured for {host_ip}:{veth_port} is not reachable from {ns_ip}: {got!r}")
        got = probe(veth_port, "/api/status")
        expect(got == "401", f"the page on {host_ip} (off loopback) answered /api/status with {got!r} "
                             "without a login")
    finally:
        for a in agents:
            a.close()
        _ip("link", "del", host_if[:15], check=False)
        _ip("netns", "del", ns, check=False)


# ---------------------------------------------------------------------------
# item 2: the tunnel through a broken network

class TunnelWorld:
    """Simulators, a relay, a proxy in front of it, a synced agent whose
    tunnel goes through the proxy and whose page is on 127.0.0.1."""

    def __init__(self, orders):
        self.dir = tempfile.mkdtemp(prefix="mlc-net-tunnel-")
        self.jde = harness.Sim("jde_sim.py", ["--seed", str(orders)])
        self.jira = harness.Sim("jira_sim.py")
        self.relay = rh.Relay(ARGS.relay, workdir=self.dir)
        self.tenant = "acme"
        self.secrets = self.relay.tenant_add(self.tenant)
        self.relay.start()
        self.proxy = netproxy.NetProxy(self.relay.port)
        self.page_port = free_port()
        path = harness.make_config(self.dir, self.jde.url, self.jira.url,
                                   agent={"log_level": "info", "status_listen": f"127.0.0.1:{self.page_port}"})
        with open(path) as f:
            cfg = json.load(f)
        cfg["relay"] = {"url": f"ws://127.0.0.1:{self.proxy.port}/tunnel", "tenant": self.tenant,
                        "key": "${MLC_RELAY_KEY}", "heartbeat": f"{HEARTBEAT_S}s", "watch_every": "1h",
                        "hook_secret": "${MLC_HOOK_SECRET}"}
        cfg["flows"]["jde_workorders"]["schedule"] = "manual"
        cfg["flows"]["jde_workorders"]["writeback"] = {
            "orchestration": "MLC_UpdateWOStatus",
            "inputs": {"WorkOrder": "{key}", "Status": "{code}"},
            "status_map": STATUS_MAP,
        }
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        self.config = path
        self.agent_log = os.path.join(self.dir, "agent.log")
        self.agent_proc = None
        r = harness.run_agent(ARGS.agent, self.config, "sync", "jde_workorders", env=self.env())
        expect(r.returncode == 0, f"initial sync failed: {r.stderr[-2000:]}")

    def env(self):
        env = harness.agent_env()
        env["MLC_RELAY_KEY"] = self.secrets["agent_key"]
        env["MLC_HOOK_SECRET"] = self.secrets["jira_webhook_secret"]
        return env

    def start_agent(self):
        self.agent_logf = open(self.agent_log, "a")
        self.agent_proc = subprocess.Popen([ARGS.agent, "-c", self.config, "run"], stdout=self.agent_logf,
                                           stderr=subprocess.STDOUT, env=self.env())

    def agent_log_text(self, n=3000):
        try:
            with open(self.agent_log, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def tunnel(self):
        """The page's tunnel object, or None while the page does not answer."""
        try:
            st, _, raw, _ = request(("127.0.0.1", self.page_port), "GET", "/api/status", timeout=5)
        except OSError:
            return None
        return json.loads(raw)["tunnel"] if st == 200 else None

    def ledger(self):
        import sqlite3
        con = sqlite3.connect(os.path.join(self.dir, "state.db"), timeout=10)
        try:
            return dict(con.execute("SELECT source_key, target_key FROM state_ledger").fetchall())
        finally:
            con.close()

    def status_calls(self):
        c = collections.Counter()
        for o in self.jde.ctl("/_sim/orchestrations"):
            if o.get("name") == "MLC_UpdateWOStatus" and str(o.get("outcome", "")).lower() in ("ok", "success"):
                c[str(o["inputs"]["WorkOrder"]).strip()] += 1
        return c

    def post(self, events):
        hc = rh.HookClient(self.relay.port, timeout=10)
        try:
            for wo, body in events:
                st, raw = hc.jira(self.tenant, body, secret=self.secrets["jira_webhook_secret"],
                                  delivery_id="wo-" + wo)
                expect(st == 200, f"the relay refused the webhook for {wo}: {st} {raw[:200]!r}")
        finally:
            hc.close()

    def close(self):
        if self.agent_proc and self.agent_proc.poll() is None:
            self.agent_proc.send_signal(signal.SIGTERM)
            try:
                self.agent_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.agent_proc.kill()
                self.agent_proc.wait()
        self.proxy.close()
        self.relay.stop()
        self.jde.stop()
        self.jira.stop()
        sanitizer_check(self.agent_log)
        sanitizer_check(self.relay.log_path)


def events_for(items, status="In Progress"):
    return [(wo, rh.jira_status_event(key, status, labels=["jdewo-" + wo], issue_id=str(10000 + i)))
            for i, (wo, key) in enumerate(items)]


def _stall_and_heal(mode, stall_s):
    """The shared shape of the blackhole and half-open tests; returns the
    recovery time (heal -> tunnel connected again) in seconds."""
    orders = 24
    w = TunnelWorld(orders)
    try:
        items = sorted(w.ledger().items())
        expect(len(items) == orders, f"ledger has {len(items)} of {orders} work orders after the first sync")
        before, during = items[:4], items[4:]
        w.start_agent()
        t = wait_for(lambda: (lambda x: x if x and x.get("connected") else None)(w.tunnel()), 30,
                     "the tunnel to connect through the proxy")
        w.post(events_for(before))
        wait_for(lambda: len(w.status_calls()) == len(before), 30, "the first webhooks to reach JD Edwards")
        t = wait_for(lambda: (lambda x: x if x and isinstance(x.get("rtt_ms"), (int, float)) else None)(w.tunnel()),
                     4 * HEARTBEAT_S + 5, "rtt_ms on the page to become a number")
        expect(0 <= t["rtt_ms"] < 5000, f"rtt_ms {t['rtt_ms']} is not a plausible round trip on loopback")

        w.proxy.set_mode(mode)
        t_stall = time.monotonic()
        # the agent must notice: the page shows the tunnel down within 3 silent beats (+ a beat of slack)
        wait_for(lambda: (lambda x: x is not None and x.get("connected") is False)(w.tunnel()),
                 DEAD_AFTER_S + 2 * HEARTBEAT_S + 2, f"the page to show the tunnel down during the {mode}")
        w.post(events_for(during[:len(during) // 2]))
        # the rest arrives late in the stall, while attempts keep failing
        while time.monotonic() - t_stall < stall_s:
            t = w.tunnel()
            expect(t is not None and t.get("connected") is False,
                   f"{time.monotonic() - t_stall:.0f}s into the {mode} the page says the tunnel is {t}")
            time.sleep(1)
        w.post(events_for(during[len(during) // 2:]))
        attempts = w.proxy.accepts_since(t_stall)
        expect(attempts >= 2, f"only {attempts} connection attempts reached the proxy in {stall_s}s of {mode}: "
                              "the agent stopped retrying (agent/tunnel.c schedule_reconnect)")
        w.proxy.set_mode("pass")
        t_heal = time.monotonic()
        bound = ATTEMPT_TIMEOUT_S + BACKOFF_CAP_S + 3
        wait_for(lambda: (lambda x: x if x and x.get("connected") else None)(w.tunnel()), bound,
                 f"the tunnel to come back after the {mode} healed (bound: an attempt's "
                 f"{ATTEMPT_TIMEOUT_S}s timeout + one capped backoff step of {BACKOFF_CAP_S}s + 3s); "
                 f"agent log:\n{w.agent_log_text(1500)}", step=0.05)
        recovery = time.monotonic() - t_heal
        wait_for(lambda: len(w.status_calls()) == orders, 60,
                 f"all {orders} work orders to be written after the {mode} healed")
        time.sleep(2 * HEARTBEAT_S)  # anything doubled shows up now
        calls = w.status_calls()
        expect(set(calls) == {wo for wo, _ in items}, f"work orders written: {sorted(calls)}")
        doubled = [k for k, v in calls.items() if v > 1]
        expect(not doubled, f"applied more than once after the {mode}: {doubled}")
        # the connections it gave up on are closed, not leaked (only the live one stays)
        wait_for(lambda: w.proxy.open_connections() <= 1, ATTEMPT_TIMEOUT_S + 5,
                 "the agent to close the connections it gave up on (open through the proxy)")
        pending = w.relay.metrics().get("mlc_relay_deliveries_pending")
        expect(not pending, f"the relay still has {pending} deliveries pending")
        print(f"# {mode} for {stall_s}s: tunnel back {recovery:.1f}s after the link healed "
              f"(bound {bound}s); {attempts} attempts during the stall", flush=True)
        return recovery
    finally:
        w.close()


@test
def tunnel_comes_back_after_a_blackhole_and_nothing_is_lost_or_doubled():
    _stall_and_heal("blackhole", 40 if not ARGS.quick else 30)


@test
def tunnel_comes_back_after_a_half_open_link_and_nothing_is_lost_or_doubled():
    _stall_and_heal("halfopen", 30)


# ---------------------------------------------------------------------------
# item 3: logins

@test
def login_flood_neither_slows_nor_cuts_other_answers_and_is_throttled():
    password = "plant-" + os.urandom(6).hex()
    port = free_port()
    a = PageAgent(f"127.0.0.1:{port}", password=password, name="logins")
    base = ("127.0.0.1", port)
    try:
        a.wait_serving(base)
        st, cookie, _ = login(base, password)
        expect(st == 200 and cookie, f"the right password was refused: HTTP {st}")
        stop = threading.Event()
        guesses = collections.Counter()
        errors = []

        def guesser(i):
            # each guesser has an address of its own (all of 127/8 is this machine)
            src = f"127.0.0.{10 + i}"
            c = KeepAlive(base, source=src)
            while not stop.is_set():
                try:
                    st, _, raw, complete = c.request("POST", "/login", {"password": f"wrong-{i}"})
                    guesses[st] += 1
                    if not complete:
                        errors.append(f"guesser {src}: truncated {st} answer")
                except (OSError, http.client.HTTPException) as e:
                    errors.append(f"guesser {src}: {e!r}")
            c.close()

        threads = [threading.Thread(target=guesser, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        slow, cut, lat, polls = [], [], [], 0
        t_end = time.monotonic() + 12
        poller = KeepAlive(base)
        try:
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                st, hd, raw, complete = poller.request("GET", "/api/status", headers={"Cookie": cookie})
                dt = time.monotonic() - t0
                polls += 1
                expect(st == 200, f"authenticated GET /api/status during the login flood: HTTP {st}")
                if not complete or len(raw) != int(hd.get("content-length", -1)):
                    cut.append(f"{len(raw)} of {hd.get('content-length')} bytes")
                else:
                    json.loads(raw)
                lat.append(dt)
                if dt > 0.5:
                    slow.append(round(dt, 2))
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join()
            poller.close()
        print(f"# login flood: guessers got {dict(guesses)}; {polls} authenticated polls, slowest "
              f"{max(lat) if lat else 0:.3f}s", flush=True)
        expect(not cut, f"answers cut short during the login flood: {cut}")
        expect(not slow, f"{len(slow)} of {polls} GET /api/status took over 0.5 s during 16 parallel wrong-password "
                         f"guessers: {slow[:10]} (PBKDF2 must not run on the page's event loop)")
        expect(not errors, f"guessers saw broken answers: {errors[:5]}")
        expect(guesses[401] >= 16, f"the guessers' answers: {dict(guesses)}")
        expect(guesses[429] > 0, f"16 guessers for 12 s were never throttled: {dict(guesses)}")
        expect(guesses[200] == 0, f"a wrong password logged in: {dict(guesses)}")

        # one address: growing delays, 429 meanwhile, counted in /metrics
        src = "127.0.0.99"
        m0 = metrics(base, cookie)
        waits, statuses = [], []
        one = KeepAlive(base, source=src)
        for _ in range(6):
            while True:
                st, hd, raw, _ = one.request("POST", "/login", {"password": "nope-nope"})
                statuses.append(st)
                if st != 429:
                    break
                ra = int(hd.get("retry-after", "0"))
                expect(ra >= 1, f"429 without a usable Retry-After: {hd}")
                waits.append(ra)
                time.sleep(ra)
            expect(st == 401, f"wrong password from {src}: HTTP {st} {raw[:200]!r}")
        expect(statuses.count(429) >= 2, f"6 wrong passwords in a row from one address were not throttled: "
                                         f"{statuses}")
        expect(waits == sorted(waits) and waits[-1] > waits[0],
               f"the delays after repeated failures do not grow: Retry-After {waits}")
        st, hd, _, _ = one.request("POST", "/login", {"password": password})
        one.close()
        expect(st == 429, f"during the throttle window even the right password must wait: HTTP {st}")
        m1 = metrics(base, cookie)
        fails = m1.get("mlc_agent_status_login_failures_total", 0) - m0.get("mlc_agent_status_login_failures_total", 0)
        thr = m1.get("mlc_agent_status_logins_throttled_total", 0) - m0.get("mlc_agent_status_logins_throttled_total", 0)
        expect(fails >= 6, f"/metrics counted {fails} failed logins for 6 wrong passwords")
        expect(thr >= statuses.count(429) + 1, f"/metrics counted {thr} throttled logins, the test saw "
                                               f"{statuses.count(429) + 1}")
        time.sleep(int(hd.get("retry-after", "1")))
        st, cookie2, _ = login(base, password, source=src)
        expect(st == 200 and cookie2, f"the right password after the throttle window: HTTP {st}")
        expect("failed login from 127.0.0.99" in a.log(), "failed logins are not logged with their address")
        expect(password not in a.log() and "nope-nope" not in a.log(), "a password appears in the agent log")
    finally:
        a.close()


# ---------------------------------------------------------------------------
# item 5 (status page part): /ws needs a session before 101

def ws_handshake(base, path="/ws", protocol="mlc-status", cookie=None):
    s = socket.create_connection(base, timeout=10)
    try:
        req = (f"GET {path} HTTP/1.1\r\nHost: {base[0]}:{base[1]}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
        if protocol:
            req += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        if cookie:
            req += f"Cookie: {cookie}\r\n"
        s.sendall((req + "\r\n").encode())
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        return got
    except OSError as e:
        return f"(connection error {e})".encode()
    finally:
        s.close()


@test
def websocket_without_a_session_is_refused_before_101():
    password = "plant-" + os.urandom(6).hex()
    port = free_port()
    a = PageAgent(f"127.0.0.1:{port}", password=password, name="ws")
    base = ("127.0.0.1", port)
    try:
        a.wait_serving(base)
        for proto in ("mlc-status", None, "http"):
            got = ws_handshake(base, protocol=proto)
            line = got.split(b"\r\n", 1)[0]
            expect(re.match(rb"HTTP/1\.[01] 40[013] ", line),
                   f"/ws without a session (subprotocol {proto}) got {line!r}: expected 401/403 before any 101")
        st, cookie, _ = login(base, password)
        expect(st == 200, f"login: HTTP {st}")
        got = ws_handshake(base, cookie=cookie)
        expect(got.startswith(b"HTTP/1.1 101"), f"/ws with a session: {got[:80]!r}")
    finally:
        a.close()


# ---------------------------------------------------------------------------
# item 4 (agent part): files 0600 whatever the umask

@test
def state_files_and_key_are_0600_under_umask_022():
    port = free_port()
    a = PageAgent(f"127.0.0.1:{port}", umask=0o022, name="files")
    try:
        a.wait_serving(("127.0.0.1", port))
        names = ["state.db", "state.db-wal", "state.db-shm", "secret.key"]
        wait_for(lambda: all(os.path.exists(os.path.join(a.dir, n)) for n in names), 10,
                 f"{names} to exist in {a.dir}")
        modes = {n: oct(os.stat(os.path.join(a.dir, n)).st_mode & 0o777) for n in names}
        bad = {n: m for n, m in modes.items() if m != "0o600"}
        expect(not bad, f"files the agent created under umask 022 are not 0600: {bad} "
                        "(agent/state.c state_open, agent/secrets.c)")
    finally:
        a.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--relay", required=True)
    ap.add_argument("--quick", action="store_true", help="shorter stalls (sanitizer builds)")
    ap.add_argument("-k", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    ARGS.relay = os.path.abspath(ARGS.relay)
    passed = failed = skipped = 0
    import traceback
    for i, fn in enumerate([t for t in TESTS if not ARGS.k or ARGS.k in t.__name__], 1):
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f"ok {i} {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Skip as s:
            skipped += 1
            print(f"ok {i} {fn.__name__} # SKIP {s}", flush=True)
        except Exception as ex:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"not ok {i} {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
            for line in (str(ex) if isinstance(ex, AssertionError) else traceback.format_exc()).splitlines()[:40]:
                print(f"#   {line}", flush=True)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
