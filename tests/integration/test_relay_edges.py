#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The relay's edges (issue 10): where it listens, and what it does with
hostile requests, spoken over raw sockets.

  * `listen` binds exactly the configured address (read back from
    /proc/net/tcp and tcp6 for the relay's own sockets); as root, a network
    namespace with a veth pair of its own (10.232.x.y/30, no other traffic)
    shows a loopback relay unreachable from the other end and a relay on the
    veth address (TLS) reachable;
  * two different Content-Length headers: 400 and close;
  * WebSocket upgrades without /tunnel + subprotocol mlc-tunnel: refused
    before 101, closed, none left open; a tunnel that never says HELLO is
    closed;
  * request bodies: a trickled body gets 408 within the body deadline, a
    50 MiB chunked body gets 413 within about a second of passing max_body;
  * a tunnel frame longer than the relay's WebSocket receive buffer (a 6 KB
    HELLO) is read in pieces and handled as one frame.

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402
import relay_harness as rh  # noqa: E402

ARGS = None
TESTS = []
UPGRADE = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


# ---------------------------------------------------------------------------
# /proc/net/tcp{,6}: the relay's own sockets


def _addr(hexaddr):
    h, port = hexaddr.split(":")
    raw = bytes.fromhex(h)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, raw), int(port, 16)


def sockets_of(pid, state):
    """[(family, address, port)] of pid's TCP sockets in state ('0A' LISTEN, '01' ESTABLISHED)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for table, fam in (("/proc/net/tcp", "tcp"), ("/proc/net/tcp6", "tcp6")):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] == state and parts[9] in inodes:
                    out.append((fam,) + _addr(parts[1]))
    return out


def stop_checked(r):
    """Stop a relay; it must exit 0 with no sanitizer report (the ASan build)."""
    rc = r.stop()
    log = r.log()
    expect(rc == 0 and "Sanitizer" not in log and "runtime error" not in log,
           f"mlc-relay (listen {r.port}) exited with {rc} or reported a sanitizer error; log:\n{log}")


def start_relay(extra, workdir=None):
    """A relay on extra['listen'] (or the harness's 127.0.0.1 port); waits for
    its 'listening on' line rather than /healthz (it may not be on loopback)."""
    r = rh.Relay(ARGS.relay, workdir=workdir, extra=extra)
    r.start(wait=False)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if r.proc.poll() is not None:
            raise AssertionError(f"mlc-relay with listen {extra.get('listen')} exited with "
                                 f"{r.proc.returncode}; log:\n{r.log()}")
        if "listening on" in r.log():
            return r
        time.sleep(0.05)
    r.stop()
    raise AssertionError(f"mlc-relay with listen {extra.get('listen')} never said 'listening on'; "
                         f"log:\n{r.log()}")


@test
def listen_binds_exactly_the_configured_address():
    has_v6 = os.path.exists("/proc/net/tcp6") and socket.has_ipv6
    cases = [("127.0.0.1", "tcp", "127.0.0.1"), ("localhost", "tcp", "127.0.0.1")]
    if has_v6:
        cases.append(("[::1]", "tcp6", "::1"))
    for host, fam, addr in cases:
        port = rh.free_port()
        r = start_relay({"listen": f"{host}:{port}"})
        try:
            got = sockets_of(r.proc.pid, "0A")
            expect(got == [(fam, addr, port)],
                   f"listen {host}:{port}: the relay's listening sockets are {got}, expected exactly "
                   f"[({fam!r}, {addr!r}, {port})] (relay/listen.c, relay_run in relay/server.c)")
        finally:
            stop_checked(r)
    # every address only when written so, and then never without TLS
    for spec in ("0.0.0.0:%d", "[::]:%d", "*:%d", ":%d"):
        r = rh.Relay(ARGS.relay, extra={"listen": spec % rh.free_port()})
        p = subprocess.run([ARGS.relay, "-c", r.cfg, "run"], capture_output=True, text=True, timeout=20)
        expect(p.returncode == 2, f"listen {spec} without TLS: exit {p.returncode}, expected 2 "
                                  f"(refused at start); output: {p.stdout + p.stderr}")


def _ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=check)


def _netns_usable():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2 ('ip'); make deps installs it"
    probe = f"mlcp{os.getpid()}"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return "'ip netns add' does not work here (no CAP_SYS_ADMIN in this container?)"
    _ip("netns", "del", probe, check=False)
    return None


def _tls_cert(workdir, ip):
    crt, key = os.path.join(workdir, "veth.crt"), os.path.join(workdir, "veth.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=" + ip, "-addext", "subjectAltName=IP:" + ip,
                    "-keyout", key, "-out", crt], check=True, capture_output=True)
    return crt, key


NS_CLIENT = r"""
import json, socket, ssl, sys
host, plain_port, tls_port, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = {}
try:
    s = socket.create_connection((host, plain_port), timeout=3)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out["plain"] = "connected: " + s.recv(200).decode(errors="replace")[:40]
    s.close()
except OSError as e:
    out["plain"] = "refused: %s" % e
try:
    ctx = ssl.create_default_context(cafile=ca)
    s = ctx.wrap_socket(socket.create_connection((host, tls_port), timeout=5), server_hostname=host)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
    out["tls"] = data.decode(errors="replace").split("\r\n")[0]
except OSError as e:
    out["tls"] = "failed: %s" % e
print(json.dumps(out))
"""


@test
def listen_in_a_network_namespace():
    """From the far end of a veth pair: a loopback relay is unreachable, a relay
    listening on the veth address (TLS) answers."""
    why = _netns_usable()
    if why:
        raise harness.Skip(why)
    tag = os.getpid() % 10000
    net = 4 * (tag % 64)
    third = (tag // 64) % 156  # 10.232.0-155.x/30: one /30 per test process
    host_ip, ns_ip = f"10.232.{third}.{net + 1}", f"10.232.{third}.{net + 2}"
    used = _ip("-o", "-4", "addr", "show").stdout
    expect(f" 10.232.{third}.{net + 1}/" not in used and f" 10.232.{third}.{net + 2}/" not in used,
           f"test addresses {host_ip}/{ns_ip} already in use on this machine: {used}")
    ns, vh, vn = f"mlcr{tag}", f"mlcrh{tag}", f"mlcrn{tag}"
    d = tempfile.mkdtemp(prefix="mlc-relay-netns-")
    relays = []
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", vh, "type", "veth", "peer", "name", vn)
        _ip("link", "set", vn, "netns", ns)
        _ip("addr", "add", host_ip + "/30", "dev", vh)
        _ip("link", "set", vh, "up")
        _ip("-n", ns, "addr", "add", ns_ip + "/30", "dev", vn)
        _ip("-n", ns, "link", "set", vn, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        crt, key = _tls_cert(d, host_ip)
        loop = start_relay({"listen": "127.0.0.1:%d" % rh.free_port()}, workdir=d)
        relays.append(loop)
        tls_port = rh.free_port()
        veth = start_relay({"listen": f"{host_ip}:{tls_port}", "tls_cert": crt, "tls_key": key},
                           workdir=d)
        relays.append(veth)
        expect(sockets_of(veth.proc.pid, "0A") == [("tcp", host_ip, tls_port)],
               f"veth relay sockets: {sockets_of(veth.proc.pid, '0A')}")
        # the address up needs a moment (DAD is IPv6 only; the link itself)
        deadline = time.monotonic() + 10
        while True:
            p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", NS_CLIENT, host_ip,
                                str(loop.port), str(tls_port), crt],
                               capture_output=True, text=True, timeout=30)
            res = json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else {}
            if res.get("tls", "").startswith("HTTP/1.1 200") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        expect(res.get("plain", "").startswith("refused"),
               f"the relay configured for 127.0.0.1:{loop.port} answered from the namespace at "
               f"{host_ip}:{loop.port}: {res} (it must bind loopback only: relay/listen.c)")
        expect(res.get("tls", "").startswith("HTTP/1.1 200"),
               f"the relay configured for {host_ip}:{tls_port} (TLS) did not answer /healthz from the "
               f"namespace: {res}; stderr {p.stderr[-500:]}; log:\n{veth.log()}")
        # and the veth relay is not on loopback either
        try:
            socket.create_connection(("127.0.0.1", tls_port), timeout=2).close()
            raise AssertionError(f"the relay configured for {host_ip}:{tls_port} accepts on 127.0.0.1")
        except ConnectionRefusedError:
            pass
    finally:
        for r in relays:
            r.stop()
        _ip("netns", "del", ns, check=False)  # takes the veth pair with it
        _ip("link", "del", vh, check=False)
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# hostile HTTP


class Edge:
    """One relay on 127.0.0.1 with a tenant; raw-socket helpers."""

    def __init__(self, extra=None):
        self.relay = rh.Relay(ARGS.relay, extra=extra)
        self.secrets = self.relay.tenant_add("acme")
        self.relay.start()

    def conn(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.relay.port), timeout=timeout)
        return s

    def pending(self):
        return self.relay.metrics().get("mlc_relay_deliveries_pending", -1)

    def established(self):
        return sockets_of(self.relay.proc.pid, "01")

    def close(self):
        stop_checked(self.relay)


def read_all(s, limit=10.0):
    """(bytes, closed, seconds): what the peer sent until it closed or limit passed."""
    t0 = time.monotonic()
    s.settimeout(0.2)
    data = b""
    while time.monotonic() - t0 < limit:
        try:
            b = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, True, time.monotonic() - t0
        if not b:
            return data, True, time.monotonic() - t0
        data += b
    return data, False, time.monotonic() - t0


def status_of(data):
    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


@test
def two_content_lengths_get_400_and_close():
    e = Edge()
    try:
        body = b'{"webhookEvent":"jira:issue_updated"}'
        sig = rh.hub_signature(e.secrets["jira_webhook_secret"], body)
        for cls in ((len(body), len(body) + 40), (len(body) + 40, len(body))):
            s = e.conn()
            s.sendall(("POST /hooks/jira/acme HTTP/1.1\r\nHost: x\r\nX-Hub-Signature: %s\r\n"
                       "Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % ((sig,) + cls)).encode() + body)
            data, closed, _ = read_all(s, 5)
            s.close()
            expect(status_of(data) == 400 and closed,
                   f"Content-Length {cls[0]} and {cls[1]}: got {data[:120]!r}, closed={closed}; expected "
                   "400 and the connection closed (cb_http in relay/server.c)")
        # a plain number only, and never with Transfer-Encoding
        for hdrs in ("Content-Length: 7, 70\r\n", "Content-Length: -1\r\n",
                     "Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(body)):
            s = e.conn()
            s.sendall(("POST /hooks/jira/acme HTTP/1.1\r\nHost: x\r\nX-Hub-Signature: %s\r\n%s\r\n"
                       % (sig, hdrs)).encode() + body)
            data, closed, _ = read_all(s, 5)
            s.close()
            expect(status_of(data) == 400 and closed, f"{hdrs!r}: got {data[:120]!r}, closed={closed}")
        expect(e.pending() == 0, f"a refused request was stored: pending {e.pending()}")
        st, _ = rh.HookClient(e.relay.port).jira("acme", body, secret=e.secrets["jira_webhook_secret"])
        expect(st == 200 and e.pending() == 1, f"a normal webhook after them: {st}")
    finally:
        e.close()


@test
def websocket_upgrades_need_tunnel_and_mlc_tunnel():
    e = Edge()
    try:
        bad = [("/tunnel", ""), ("/tunnel", "Sec-WebSocket-Protocol: http\r\n"),
               ("/tunnel", "Sec-WebSocket-Protocol: mlc-wake, mlc-tunnel\r\n"),
               ("/metrics", "Sec-WebSocket-Protocol: mlc-tunnel\r\n"),
               ("/hooks/jira/acme", "")]
        for path, extra in bad:
            s = e.conn()
            s.sendall(UPGRADE.format(path=path, extra=extra).encode())
            data, closed, _ = read_all(s, 5)
            s.close()
            expect(status_of(data) in (400, 403, 404, 426) and closed,
                   f"upgrade of {path} with {extra.strip() or 'no subprotocol'}: got {data[:100]!r}, "
                   f"closed={closed}; expected a 4xx before any 101, and the connection closed")
        # 200 attempts without the subprotocol, left open by the client: none stays open
        socks = []
        for _ in range(200):
            s = e.conn()
            s.sendall(UPGRADE.format(path="/tunnel", extra="").encode())
            socks.append(s)
        statuses = []
        for s in socks:
            data, closed, _ = read_all(s, 5)
            statuses.append((status_of(data), closed))
        expect(all(st == 400 and c for st, c in statuses),
               f"of 200 upgrades without mlc-tunnel: {sorted(set(statuses))} (status, closed)")
        time.sleep(0.5)
        left = e.established()
        expect(left == [], f"{len(left)} connections still open on the relay after 200 refused upgrades")
        for s in socks:
            s.close()
        m = e.relay.metrics()
        expect(m.get('mlc_relay_refused_total{reason="upgrade"}', 0) >= 200, m)
        # a real tunnel upgrade still works, and one that never says HELLO is closed
        s = e.conn()
        s.sendall(UPGRADE.format(path="/tunnel", extra="Sec-WebSocket-Protocol: mlc-tunnel\r\n").encode())
        data, closed, took = read_all(s, 15)
        s.close()
        expect(status_of(data) == 101 and closed and 8 <= took <= 14,
               f"a tunnel without HELLO: got {data[:60]!r}, closed={closed} after {took:.1f}s "
               "(expected 101, then closed after about 10 s)")
    finally:
        e.close()


@test
def trickled_body_gets_408_within_the_deadline():
    e = Edge(extra={"body_timeout": "3s"})
    try:
        s = e.conn()
        s.sendall(b"POST /hooks/jira/acme HTTP/1.1\r\nHost: x\r\nX-Hub-Signature: sha256=00\r\n"
                  b"Content-Length: 100\r\n\r\n")
        t0 = time.monotonic()
        s.settimeout(0.1)
        data, closed = b"", False
        while time.monotonic() - t0 < 20 and not closed:
            try:
                s.send(b"{")
            except OSError:
                pass
            end = time.monotonic() + 2  # one byte every 2 s
            while time.monotonic() < end:
                try:
                    b = s.recv(4096)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    closed = True
                    break
                if not b:
                    closed = True
                    break
                data += b
        took = time.monotonic() - t0
        s.close()
        expect(status_of(data) == 408 and closed and took < 7,
               f"a body trickled one byte every 2 s with body_timeout 3s: got {data[:80]!r}, "
               f"closed={closed} after {took:.1f}s; expected 408 and close within ~3-6 s")
        m = e.relay.metrics()
        expect(m.get('mlc_relay_webhooks_total{source="jira",result="timeout"}') == 1, m)
        expect(e.pending() == 0, "a timed-out body was stored")
    finally:
        e.close()


@test
def oversized_bodies_get_413_promptly():
    e = Edge()
    try:
        # a declared length over max_body: answered before any body byte is sent
        s = e.conn()
        s.sendall(b"POST /hooks/jira/acme HTTP/1.1\r\nHost: x\r\nX-Hub-Signature: sha256=00\r\n"
                  b"Content-Length: 5000000\r\n\r\n")
        t0 = time.monotonic()
        s.settimeout(3)
        try:
            first = s.recv(4096)
        except socket.timeout:
            first = b""
        expect(status_of(first) == 413 and time.monotonic() - t0 < 1.5,
               f"Content-Length 5000000 (max_body 1 MiB): got {first[:80]!r} after "
               f"{time.monotonic() - t0:.1f}s without sending the body; expected 413 at once")
        s.close()
        # 50 MiB chunked: 413 within about a second of passing max_body, then closed
        s = e.conn()
        s.sendall(b"POST /hooks/jira/acme HTTP/1.1\r\nHost: x\r\nX-Hub-Signature: sha256=00\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        state = {"sent": 0, "passed": None, "err": None}
        chunk = b"x" * 65536

        def send():
            try:
                while state["sent"] < 50 << 20:
                    s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    state["sent"] += len(chunk)
                    if state["passed"] is None and state["sent"] > 1 << 20:
                        state["passed"] = time.monotonic()
                s.sendall(b"0\r\n\r\n")
            except OSError as ex:
                state["err"] = ex

        th = threading.Thread(target=send, daemon=True)
        th.start()
        s.settimeout(10)
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                b = s.recv(4096)
                if not b:
                    break
                head += b
        except OSError:
            pass
        answered = time.monotonic()
        expect(status_of(head) == 413, f"50 MiB chunked: got {head[:80]!r} (sender: {state})")
        lag = answered - (state["passed"] or answered)
        expect(lag < 1.5, f"50 MiB chunked: 413 came {lag:.1f}s after the body passed max_body")
        _, closed, took = read_all(s, 30)
        s.close()
        th.join(5)
        expect(closed, "the connection stayed open after the 413")
        expect(e.pending() == 0, "an oversized body was stored")
        expect(e.relay.get("/healthz")[0] == 200, "the relay is unwell after the big bodies")
    finally:
        e.close()


def ws_binary(payload):
    """One masked, final, binary WebSocket frame (the client side of RFC 6455)."""
    n = len(payload)
    head = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else
                            bytes([0x80 | 126]) + n.to_bytes(2, "big") if n < 65536 else
                            bytes([0x80 | 127]) + n.to_bytes(8, "big"))
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@test
def a_tunnel_frame_longer_than_the_receive_buffer_arrives_whole():
    e = Edge()
    try:
        # a HELLO of 6 KB, uncompressed, in one WebSocket message: the relay
        # reads it in pieces and must see one frame
        js = json.dumps({"tenant": "acme", "key": e.secrets["agent_key"], "agent_id": "edge",
                         "version": "v" * 6000, "last_acked": 0}).encode()
        frame = bytes([1, 1, 0, 0]) + (0).to_bytes(8, "big") + len(js).to_bytes(4, "big") + js
        s = e.conn()
        s.sendall(UPGRADE.format(path="/tunnel", extra="Sec-WebSocket-Protocol: mlc-tunnel\r\n").encode())
        s.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        expect(status_of(data) == 101, f"tunnel upgrade: {data[:80]!r}")
        rest = data.split(b"\r\n\r\n", 1)[1]
        s.sendall(ws_binary(frame))
        wait_up = time.monotonic() + 10
        while len(rest) < 4 and time.monotonic() < wait_up:
            rest += s.recv(4096)
        expect(len(rest) >= 4 and rest[0] == 0x82 and rest[2] == 1 and rest[3] == 1,
               f"after a 6 KB HELLO the relay sent {rest[:20]!r}; expected its HELLO (binary frame, type 1)")
        expect(e.relay.metrics().get("mlc_relay_tunnels") == 1, "the tunnel is not counted as up")
        s.close()
    finally:
        e.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--relay", required=True)
    ap.add_argument("-k", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    ARGS.relay = os.path.abspath(ARGS.relay)
    return harness.run_tests(TESTS, ARGS.k)


if __name__ == "__main__":
    sys.exit(main())
