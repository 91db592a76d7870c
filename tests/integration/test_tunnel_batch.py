#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of batched tunnel frames (DELIVERS, ACKS): a real
mlc-relay, and either a real mlc-agent or a small agent written here that
speaks the tunnel frames byte by byte (shared/mlc_tunnel.h), so the relay's
side can be checked exactly: which frames it sends to whom, and which
deliveries an ACKS range releases.

Prints "ok N name" / "not ok N name" and closes with "N passed, N failed".
"""
import argparse
import base64
import ctypes
import ctypes.util
import json
import os
import signal
import socket
import sqlite3
import struct
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

HELLO, DELIVER, ACK, PING, PONG, DELIVERS, ACKS = 1, 2, 3, 6, 7, 8, 9


def test(fn):
    TESTS.append(fn)
    return fn


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def wait_for(pred, timeout, what, step=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


_zstd = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
_zstd.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
_zstd.ZSTD_getFrameContentSize.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_zstd.ZSTD_decompress.restype = ctypes.c_size_t
_zstd.ZSTD_decompress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]


def unzstd(b):
    n = _zstd.ZSTD_getFrameContentSize(b, len(b))
    expect(n < (1 << 32), "a compressed frame body without its size")
    out = ctypes.create_string_buffer(max(int(n), 1))
    got = _zstd.ZSTD_decompress(out, int(n), b, len(b))
    expect(got == n, f"zstd: {got} of {n} bytes")
    return out.raw[:n]


def delivers_records(body):
    """A DELIVERS body -> [(seq, received_ms, kind, id, body)]."""
    out, off = [], 0
    while off < len(body):
        seq, recv, kl, il, bl = struct.unpack_from(">QQBBI", body, off)
        off += 22
        kind, ident = body[off:off + kl].decode(), body[off + kl:off + kl + il].decode()
        off += kl + il
        out.append((seq, recv, kind, ident, body[off:off + bl]))
        off += bl
    return out


class FakeAgent:
    """One tunnel to the relay, spoken here: WebSocket (client frames masked)
    carrying mlc tunnel frames."""

    def __init__(self, relay, tenant, key, batch):
        self.s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        wskey = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET /tunnel HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {wskey}\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Protocol: mlc-tunnel\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            expect(chunk, "the relay closed during the upgrade")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        expect(head.startswith(b"HTTP/1.1 101"), head[:80])
        hello = {"tenant": tenant, "key": key, "agent_id": "fake", "version": "test", "last_acked": 0}
        if batch:
            hello["batch"] = True
        self.send(HELLO, 0, json.dumps(hello).encode())
        t, _, body = self.recv(lambda t: t == HELLO)
        self.relay_hello = json.loads(body)

    def send(self, ftype, seq, body=b""):
        msg = struct.pack(">BBBBQI", 1, ftype, 0, 0, seq, len(body)) + body
        mask = os.urandom(4)
        n = len(msg)
        if n < 126:
            head = struct.pack(">BB", 0x82, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x82, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x82, 0x80 | 127, n)
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("the relay closed the tunnel")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _message(self):
        data = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            op = b0 & 0x0F
            if op == 0x8:
                raise ConnectionError(f"the relay closed the tunnel: {payload[:2].hex()} {payload[2:]!r}")
            if op in (0x9, 0xA):
                continue  # WebSocket-level ping/pong
            data += payload
            if b0 & 0x80:
                return data

    def recv(self, want=lambda t: t not in (PING, PONG), timeout=10):
        """The next tunnel frame whose type passes want: (type, seq, body)."""
        self.s.settimeout(timeout)
        while True:
            m = self._message()
            _, ftype, flags, _, seq, n = struct.unpack_from(">BBBBQI", m)
            body = m[16:16 + n]
            if flags & 1:
                body = unzstd(body)
            if ftype == PING:
                self.send(PONG, seq)
            if want(ftype):
                return ftype, seq, body

    def deliveries(self, n, timeout=10):
        """Read DELIVER/DELIVERS frames until n deliveries came: (frames, [(seq, kind, id, body)])."""
        frames, got = [], []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            left = deadline - time.monotonic()
            expect(left > 0, f"only {len(got)} of {n} deliveries arrived")
            t, seq, body = self.recv(lambda t: t in (DELIVER, DELIVERS), timeout=left)
            frames.append(t)
            if t == DELIVERS:
                got += [(s, k, i, b) for s, _, k, i, b in delivers_records(body)]
            else:
                o = json.loads(body)
                got.append((seq, o["kind"], o["id"], json.dumps(o["body"]).encode()))
        return frames, got

    def nothing_more(self, wait=1.5):
        try:
            t, seq, _ = self.recv(lambda t: t in (DELIVER, DELIVERS), timeout=wait)
        except socket.timeout:
            return True
        raise AssertionError(f"an unexpected frame {t} (seq {seq}) arrived")

    def close(self):
        self.s.close()


def acks_body(ranges):
    return b"".join(struct.pack(">QQ", a, b) for a, b in ranges)


@test
def acks_ranges_release_exactly_the_acked_deliveries():
    r = rh.Relay(ARGS.relay)
    acme, beta = r.tenant_add("acme"), r.tenant_add("beta")
    r.start()
    try:
        hc = rh.HookClient(r.port)
        seqs = {"acme": [], "beta": []}
        # interleaved: acme, beta, acme, ... so an acme range spans beta's seqs
        for i in range(10):
            name, ten = ("acme", acme) if i % 2 == 0 else ("beta", beta)
            st, body = hc.jira(name, rh.jira_status_event("MFG-%d" % i, "Done"),
                               secret=ten["jira_webhook_secret"], delivery_id=f"{name}-{i}")
            expect(st == 200, (st, body))
            seqs[name].append(int(json.loads(body)["message"].rsplit(" ", 1)[1]))
        hc.close()
        a, b = seqs["acme"], seqs["beta"]

        fa = FakeAgent(r, "acme", acme["agent_key"], batch=True)
        expect(fa.relay_hello.get("batch") is True, fa.relay_hello)
        frames, got = fa.deliveries(5)
        expect(set(frames) == {DELIVERS} and len(frames) < 5, f"acme's frames: {frames}")
        expect([g[0] for g in got] == a, f"acme got seqs {[g[0] for g in got]}, stored as {a}")
        expect([g[2] for g in got] == [f"acme-{i}" for i in range(0, 10, 2)], got)
        fa.nothing_more()
        # acme acks a range over its first three (beta's seqs are inside it)
        # and a range holding only a seq of beta's
        fa.send(ACKS, a[0], acks_body([(a[0], a[2]), (b[4], b[4])]))
        wait_for(lambda: r.metrics().get("mlc_relay_deliveries_acked_total") == 3, 10,
                 "the relay to record acme's 3 acks")
        time.sleep(0.5)
        expect(r.metrics()["mlc_relay_deliveries_acked_total"] == 3, r.metrics())
        fa.close()

        # a new tunnel of acme gets again exactly what it did not ack
        fa = FakeAgent(r, "acme", acme["agent_key"], batch=True)
        frames, got = fa.deliveries(2)
        expect([g[0] for g in got] == a[3:], f"acme got again {[g[0] for g in got]}, expected {a[3:]}")
        fa.nothing_more()

        # beta, an agent without "batch": one DELIVER per delivery, all five
        # (acme's ranges released none of them), acked one by one
        fb = FakeAgent(r, "beta", beta["agent_key"], batch=False)
        expect(fb.relay_hello.get("batch") is True, fb.relay_hello)
        frames, got = fb.deliveries(5)
        expect(frames == [DELIVER] * 5, f"beta's frames: {frames}")
        expect([g[0] for g in got] == b, f"beta got {[g[0] for g in got]}, stored as {b}")
        for s in b:
            fb.send(ACK, s)
        fa.send(ACKS, a[3], acks_body([(a[3], a[4])]))
        wait_for(lambda: r.metrics().get("mlc_relay_deliveries_pending") == 0, 10, "nothing pending")
        expect(r.metrics()["mlc_relay_deliveries_acked_total"] == 10, r.metrics())
        fa.close()
        fb.close()
        # a malformed ACKS frame closes the tunnel
        fa = FakeAgent(r, "acme", acme["agent_key"], batch=True)
        fa.send(ACKS, 1, b"\x00" * 15)
        try:
            fa.recv(timeout=5)
            raise AssertionError("the relay kept a tunnel that sent a malformed ACKS frame")
        except ConnectionError:
            pass
        fa.close()
    finally:
        r.stop()


@test
def big_deliveries_travel_in_frames_under_the_caps():
    r = rh.Relay(ARGS.relay)
    acme = r.tenant_add("acme")
    r.start()
    try:
        hc = rh.HookClient(r.port)
        bodies = []
        # poorly compressible (hex) bodies of 400 KB: two in one frame would pass 512 KB
        for i in range(3):
            b = json.dumps({"webhookEvent": "jira:issue_updated", "pad": os.urandom(200 * 1024).hex()},
                           separators=(",", ":")).encode()
            st, _ = hc.jira("acme", b, secret=acme["jira_webhook_secret"], delivery_id=f"big-{i}")
            expect(st == 200, st)
            bodies.append(b)
        # and small ones after them
        for i in range(5):
            st, _ = hc.jira("acme", b'{"small":%d}' % i, secret=acme["jira_webhook_secret"],
                            delivery_id=f"small-{i}")
            expect(st == 200, st)
        hc.close()
        fa = FakeAgent(r, "acme", acme["agent_key"], batch=True)
        frames, got = fa.deliveries(8, timeout=20)
        # one big delivery per frame; the small ones join the last big one
        expect(frames == [DELIVERS] * 3, f"frames: {frames} (expected 3 DELIVERS)")
        expect([g[2] for g in got] == [f"big-{i}" for i in range(3)] + [f"small-{i}" for i in range(5)],
               [g[2] for g in got])
        expect([g[3] for g in got[:3]] == bodies, "a big body changed on the way")
        fa.close()
    finally:
        r.stop()


def agent_config(work, relay, tenant, jde, jira):
    path = harness.make_config(work, jde.url, jira.url, flow={"schedule": "manual"},
                               agent={"log_level": "info", "status_listen": "off"})
    cfg = json.load(open(path))
    cfg["relay"] = {"url": relay.tunnel_url, "tenant": tenant["tenant"], "key": tenant["agent_key"]}
    json.dump(cfg, open(path, "w"))
    return path


def inbox(db):
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("SELECT id, seq, ext_id FROM state_inbox WHERE seq > 0 ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        con.close()


@test
def batched_deliveries_arrive_once_in_order_and_survive_kill_9_of_the_agent():
    n = 600 if ARGS.quick else 3000
    work = tempfile.mkdtemp(prefix="mlc-batch-it-")
    jde = harness.Sim("jde_sim.py", ["--seed", "5"])
    jira = harness.Sim("jira_sim.py", [])
    r = rh.Relay(ARGS.relay, workdir=work)
    ten = r.tenant_add("acme")
    r.start()
    agent = None
    log = open(os.path.join(work, "agent.log"), "a")
    try:
        # everything is stored before the agent connects: full DELIVERS frames
        ids = [f"wh-{i}" for i in range(n)]
        body = rh.jira_status_event("MFG-1", "In Progress", pad_to=1500)
        results = {}

        def sender(chunk):
            hc = rh.HookClient(r.port)
            for i in chunk:
                st, _ = hc.jira("acme", body, secret=ten["jira_webhook_secret"], delivery_id=i)
                results[i] = st
            hc.close()

        ts = [threading.Thread(target=sender, args=(ids[k::4],)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        expect(all(results[i] == 200 for i in ids), "not every webhook was stored")
        path = agent_config(work, r, ten, jde, jira)
        db = os.path.join(work, "state.db")
        cmd = [ARGS.agent, "-q", "-c", path, "run"]
        agent = subprocess.Popen(cmd, env=harness.agent_env(), stdout=log, stderr=log)
        # kill -9 as soon as the first deliveries are in the inbox: frames
        # are on the way, some stored and not acked, some not stored
        wait_for(lambda: len(inbox(db)) > 0, 30, "the first deliveries in the inbox", step=0.002)
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        at_kill = len(inbox(db))
        expect(at_kill < n, f"all {n} were stored before the kill; nothing was tested")
        agent = subprocess.Popen(cmd, env=harness.agent_env(), stdout=log, stderr=log)
        wait_for(lambda: len(inbox(db)) >= n, 120, f"{n} deliveries in the inbox")
        time.sleep(1)
        rows = inbox(db)
        expect(len(rows) == n, f"{len(rows)} inbox rows for {n} webhooks")
        expect(sorted(x[2] for x in rows) == sorted(ids), "the inbox does not hold each webhook once")
        expect(len({x[1] for x in rows}) == n, "a seq twice in the inbox")
        seqs = [x[1] for x in rows]
        expect(seqs == sorted(seqs), "the inbox's arrival order is not the relay's seq order")
        wait_for(lambda: r.metrics().get("mlc_relay_deliveries_pending") == 0, 30, "every delivery acked")
        m = r.metrics()
        expect(m["mlc_relay_deliver_frames_total"] * 4 < m["mlc_relay_deliveries_sent_total"],
               f"deliveries were not batched: {m['mlc_relay_deliver_frames_total']} frames for "
               f"{m['mlc_relay_deliveries_sent_total']} deliveries")
        print(f"# killed at {at_kill} of {n} stored; {m['mlc_relay_deliveries_sent_total']:.0f} sent in "
              f"{m['mlc_relay_deliver_frames_total']:.0f} frames", flush=True)
    finally:
        if agent and agent.poll() is None:
            agent.terminate()
            agent.wait()
        log.close()
        r.stop()
        jde.stop()
        jira.stop()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--relay", required=True)
    ap.add_argument("--quick", action="store_true", help="smaller data sets (sanitizer builds)")
    ap.add_argument("-k", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    ARGS.agent = os.path.abspath(ARGS.agent)
    ARGS.relay = os.path.abspath(ARGS.relay)
    return harness.run_tests(TESTS, ARGS.k)


if __name__ == "__main__":
    sys.exit(main())
