#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A TCP proxy for the tests that can break the link in the ways networks do.

It listens on 127.0.0.1 only and forwards to one upstream address (also on
this machine). The mode applies to every connection, now and later:

  pass       forward both ways
  reset      reset every connection (RST), and reset new ones on accept
  blackhole  accept, forward nothing, hold the connections open; bytes are
             read and dropped, as a stalled path loses packets
  halfopen   forward client -> upstream, drop upstream -> client

A connection that lived through a blackhole or a half-open spell stays
broken that way after the mode goes back to "pass" (the path's state for it
is gone, as when a NAT forgets a mapping): only new connections pass. An
upstream close is not passed on to a broken connection either; only the
client closing it ends it.

    p = NetProxy(relay_port); p.set_mode("blackhole"); ...; p.set_mode("pass")

Run on its own (`netproxy.py UPSTREAM_PORT`) it prints its port and reads
modes from standard input, one per line.
"""
import selectors
import socket
import struct
import sys
import threading
import time

MODES = ("pass", "reset", "blackhole", "halfopen")


class _Conn:
    def __init__(self, client, upstream, state):
        self.client = client
        self.upstream = upstream
        self.state = state  # pass | blackhole | halfopen


class NetProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.lock = threading.Lock()
        self.sel = selectors.DefaultSelector()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.conns = []
        self.accepted = []  # (monotonic time, mode at accept)
        self.wake_r, self.wake_w = socket.socketpair()
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.pending = []
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="netproxy", daemon=True)
        self.thread.start()

    # -- control (any thread) --

    def set_mode(self, mode):
        if mode not in MODES:
            raise ValueError(f"netproxy: unknown mode {mode!r} (one of {', '.join(MODES)})")
        done = threading.Event()
        with self.lock:
            self.pending.append((mode, done))
        self.wake_w.send(b"x")
        # return once the loop applied it, so the caller's clock starts now
        if not done.wait(5):
            raise RuntimeError("netproxy: the proxy thread did not apply the mode change within 5 s")

    def accepts_since(self, t0):
        """How many connections were accepted at or after monotonic time t0."""
        with self.lock:
            return sum(1 for t, _ in self.accepted if t >= t0)

    def open_connections(self):
        with self.lock:
            return len(self.conns)

    def close(self):
        self.stopping = True
        self.wake_w.send(b"x")
        self.thread.join(timeout=5)
        for c in list(self.conns):
            self._drop(c)
        self.lsock.close()
        self.wake_r.close()
        self.wake_w.close()

    # -- the loop (proxy thread) --

    @staticmethod
    def _rst(sock):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()

    def _unregister(self, sock):
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _drop(self, c, rst=False):
        for s in (c.client, c.upstream):
            if s is not None:
                self._unregister(s)
                if rst:
                    self._rst(s)
                else:
                    s.close()
        with self.lock:
            if c in self.conns:
                self.conns.remove(c)

    def _apply(self, mode):
        self.mode = mode
        if mode == "reset":
            for c in list(self.conns):
                self._drop(c, rst=True)
        elif mode in ("blackhole", "halfopen"):
            for c in self.conns:
                if c.state == "pass" or mode == "blackhole":
                    c.state = mode

    def _accept(self):
        try:
            client, _ = self.lsock.accept()
        except OSError:
            return
        with self.lock:
            self.accepted.append((time.monotonic(), self.mode))
        if self.mode == "reset":
            self._rst(client)
            return
        upstream = None
        if self.mode != "blackhole":
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                self._rst(client)
                return
            upstream.settimeout(5)
        client.settimeout(5)
        c = _Conn(client, upstream, self.mode)
        with self.lock:
            self.conns.append(c)
        self.sel.register(client, selectors.EVENT_READ, (c, "client"))
        if upstream is not None:
            self.sel.register(upstream, selectors.EVENT_READ, (c, "upstream"))

    def _pump(self, c, side):
        src = c.client if side == "client" else c.upstream
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if not data:
            if side == "client" or c.state == "pass":
                self._drop(c)
            else:
                # the far end gave up; a broken path never tells the client
                self._unregister(c.upstream)
                c.upstream.close()
                c.upstream = None
            return
        if side == "client":
            forward = c.state in ("pass", "halfopen") and c.upstream is not None
            dst = c.upstream
        else:
            forward = c.state == "pass"
            dst = c.client
        if forward:
            try:
                dst.sendall(data)
            except OSError:
                self._drop(c)

    def _loop(self):
        while not self.stopping:
            for key, _ in self.sel.select(timeout=0.5):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    self.wake_r.recv(4096)
                    with self.lock:
                        modes, self.pending = self.pending, []
                    for m, done in modes:
                        self._apply(m)
                        done.set()
                else:
                    c, side = key.data
                    if c in self.conns:
                        self._pump(c, side)


def main():
    if len(sys.argv) != 2:
        print("usage: netproxy.py UPSTREAM_PORT (then type a mode per line: " + ", ".join(MODES) + ")",
              file=sys.stderr)
        return 2
    p = NetProxy(int(sys.argv[1]))
    print(p.port, flush=True)
    for line in sys.stdin:
        line = line.strip()
        if line:
            try:
                p.set_mode(line)
                print(f"mode {line}", flush=True)
            except ValueError as e:
                print(e, flush=True)
    p.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
