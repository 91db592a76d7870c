#!/usr/bin/env python3
"""Shared plumbing for the ml-connector HTTP simulators.

Standard library only.  A simulator subclasses `Sim`, implements `route()`
(API endpoints), optionally `control()` (extra /_sim/ endpoints),
`error_body()` (its vendor's error shape) and `add_args()`, and calls
`main(SimClass)`.

Handlers return (or raise) a `Reply`; this module does the HTTP framing,
request counting, fault injection (429 / 503 / slow answers), Retry-After
bookkeeping and the one-line-per-request log.
"""

import argparse
import base64
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 64 * 1024 * 1024
RA_TOLERANCE_S = 0.05


def json_bytes(obj):
    """Compact UTF-8 JSON (non-ASCII characters are kept, not escaped)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Reply(Exception):
    """A complete HTTP answer.  Handlers either return one or raise one."""

    def __init__(self, status, obj=None, headers=None, raw=None, note=None):
        super().__init__(status)
        self.status = int(status)
        self.obj = obj
        self.headers = dict(headers or {})
        self.raw = raw  # bytes sent verbatim instead of obj
        self.note = note  # extra text for the log line

    def body_bytes(self):
        if self.raw is not None:
            return self.raw
        if self.obj is None:
            return b""
        return json_bytes(self.obj)


class Route:
    """One API endpoint match: a stats name, a zero-argument callable, and
    whether a 2xx answer counts as a write."""

    __slots__ = ("name", "func", "write")

    def __init__(self, name, func, write=False):
        self.name = name
        self.func = func
        self.write = write


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, sim):
        self.sim = sim
        super().__init__(addr, handler)


class SimHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mlc-sim/1.0"
    sys_version = ""

    # ---- plumbing -------------------------------------------------------

    def setup(self):
        super().setup()
        # Headers and body leave in two writes; with Nagle's algorithm the
        # body would wait for the client's (delayed, up to 40 ms) ACK of the
        # headers, so every request with a body would take ~40 ms more.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def version_string(self):
        return self.server_version

    def date_time_string(self, timestamp=None):
        """The Date header follows the simulator's clock (see Sim.http_time)."""
        if timestamp is None:
            timestamp = self.server.sim.http_time()
        return super().date_time_string(timestamp)

    def log_message(self, fmt, *args):  # the default access log is replaced
        pass

    def log_request(self, code="-", size="-"):
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def send_error(self, code, message=None, explain=None):
        """JSON instead of the stock HTML page (malformed request lines etc.)."""
        body = json_bytes({"error": message or self.responses.get(code, ("",))[0], "status": code})
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass
        self.close_connection = True

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ValueError("truncated chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ValueError("bad chunk size line")
                if size == 0:
                    while True:  # trailers up to the blank line
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        n = self.headers.get("Content-Length")
        if n is None:
            return b""
        try:
            n = int(n)
        except ValueError:
            raise ValueError("bad Content-Length")
        if n < 0 or n > MAX_BODY:
            raise ValueError("bad Content-Length")
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            raise ValueError("truncated request body")
        return data

    def _dispatch(self, method):
        t0 = time.monotonic()
        sim = self.server.sim
        url = urlsplit(self.path)
        self.path_only = url.path or "/"
        self.query = parse_qs(url.query, keep_blank_values=True)
        try:
            self.body = self._read_body()
        except ValueError as e:
            self.close_connection = True
            self._send(Reply(400, sim.error_body(400, str(e))), t0)
            return
        try:
            if self.path_only == "/_sim" or self.path_only.startswith("/_sim/"):
                reply = sim.handle_control(self, method)
            else:
                reply = sim.handle_api(self, method, t0)
        except Exception as e:  # a simulator bug: say so loudly, answer 500
            traceback.print_exc(file=sys.stderr)
            reply = Reply(500, sim.error_body(500, "simulator internal error: %s" % e))
        self._send(reply, t0)

    def _send(self, reply, t0):
        status = reply.status
        body = reply.body_bytes()
        no_body = status == 204 or status == 304 or status < 200
        if no_body:
            body = b""
        try:
            self.send_response(status)
            # JSON unless the reply names its own type (XML error bodies)
            self.send_header("Content-Type", reply.headers.get("Content-Type", "application/json"))
            if not no_body:  # RFC 9110: no Content-Length on 204/304
                self.send_header("Content-Length", str(len(body)))
            for k, v in reply.headers.items():
                if k != "Content-Type":
                    self.send_header(k, str(v))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        sim = self.server.sim
        if not sim.quiet:
            ms = (time.monotonic() - t0) * 1000.0
            note = (" " + reply.note) if reply.note else ""
            line = "%s %s %s %s %d %dB %.1fms%s\n" % (
                sim.name, self.client_address[0], self.command, sim.log_path(self.path), status, len(body), ms, note)
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except OSError:
                pass

    # ---- helpers for simulator code ------------------------------------

    @property
    def client_ip(self):
        return self.client_address[0]

    def header(self, name, default=None):
        v = self.headers.get(name)
        return default if v is None else v

    def qparam(self, name, default=None):
        v = self.query.get(name)
        return v[0] if v else default

    def media_type(self):
        ct = self.headers.get("Content-Type")
        if ct is None:
            return None
        return ct.split(";", 1)[0].strip().lower()

    def is_json_ct(self):
        mt = self.media_type()
        return mt is not None and (mt == "application/json" or mt.endswith("+json"))

    def json_body(self, optional=False):
        """Parse the body as JSON.  Empty body: {} if optional, else 400."""
        sim = self.server.sim
        if not self.body.strip():
            if optional:
                return {}
            raise Reply(400, sim.error_body(400, "Request body is empty; a JSON document is required"))
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise Reply(400, sim.error_body(400, "Malformed JSON in request body: %s" % e))

    def basic_auth(self):
        """(user, password) from an Authorization: Basic header, else None."""
        a = self.headers.get("Authorization") or ""
        if not a[:6].lower() == "basic ":
            return None
        try:
            raw = base64.b64decode(a[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return ("", "")
        user, sep, pw = raw.partition(":")
        return (user, pw) if sep else (user, "")

    def bearer(self):
        a = self.headers.get("Authorization") or ""
        if a[:7].lower() == "bearer ":
            return a[7:].strip()
        return None


class Sim:
    """State shared by every simulator: fault table, counters, Retry-After
    bookkeeping.  Subclasses add the vendor behaviour."""

    name = "sim"

    def __init__(self, args):
        self.args = args
        self.quiet = bool(getattr(args, "quiet", False))
        self.port = 0
        self.fault_lock = threading.Lock()
        self.faults = {}
        self.stats_lock = threading.Lock()
        self._zero_stats()

    # ---- overridables ---------------------------------------------------

    @staticmethod
    def add_args(parser):
        pass

    def route(self, method, path, h):
        """Return a Route for an API request, or None (answered 404)."""
        return None

    def control(self, method, path, h):
        """Simulator-specific /_sim/ endpoints; return a Reply or None."""
        return None

    def error_body(self, status, message):
        return {"error": message, "status": status}

    def extra_429_headers(self, retry_after):
        return {}

    def http_time(self):
        """Epoch seconds for the HTTP Date header; a simulator with its own
        clock overrides this."""
        return time.time()

    def log_path(self, path):
        """The request target as the log line shows it; a simulator whose
        clients may put secrets in the query string overrides this."""
        return path

    # ---- faults ---------------------------------------------------------

    def fault(self, key, default=None):
        with self.fault_lock:
            v = self.faults.get(key)
        return default if v is None else v

    def fault_num(self, key, default=0):
        v = self.fault(key, default)
        try:
            return float(v)
        except (TypeError, ValueError):
            return float(default)

    def fault_flag(self, key):
        return bool(self.fault(key, False))

    def take(self, key):
        """Consume one unit of a count-based fault ("next N requests").
        true means "always"; a number is decremented."""
        with self.fault_lock:
            v = self.faults.get(key)
            if v is True:
                return True
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1:
                self.faults[key] = int(v) - 1
                return True
            return False

    def take_list(self, key):
        """Pop a one-shot list fault (returns [] when unset)."""
        with self.fault_lock:
            v = self.faults.pop(key, None)
        if isinstance(v, list):
            return v
        return []

    def merge_faults(self, obj):
        with self.fault_lock:
            for k, v in obj.items():
                if v is None:
                    self.faults.pop(k, None)
                else:
                    self.faults[k] = v
            return dict(self.faults)

    # ---- stats ----------------------------------------------------------

    def _zero_stats(self):
        with self.stats_lock:
            self.req_counts = {}
            self.total = 0
            self.writes = 0
            self.status_counts = {}
            self.ra_violations = 0
            self.ra_until = 0.0

    def stats_snapshot(self):
        with self.stats_lock:
            return {
                "requests": dict(self.req_counts),
                "total": self.total,
                "writes": self.writes,
                "status_counts": dict(self.status_counts),
                "retry_after_violations": self.ra_violations,
            }

    # ---- request flow ---------------------------------------------------

    def reply_429(self):
        ra = int(self.fault_num("retry_after", 1))
        headers = {"Retry-After": str(ra)}
        headers.update(self.extra_429_headers(ra))
        return Reply(429, self.error_body(429, "Too Many Requests (simulated rate limit)"),
                     headers=headers, note="fault=rate_429")

    def reply_503(self, retry_after=False):
        headers = {}
        if retry_after:
            headers["Retry-After"] = str(int(self.fault_num("retry_after", 1)))
        return Reply(503, self.error_body(503, "Service Unavailable (simulated)"),
                     headers=headers, note="fault=fail_5xx")

    def handle_api(self, h, method, t0):
        with self.stats_lock:
            if t0 < self.ra_until - RA_TOLERANCE_S:
                self.ra_violations += 1
        route = self.route(method, h.path_only, h)
        name = route.name if route is not None else "unknown"
        with self.stats_lock:
            self.req_counts[name] = self.req_counts.get(name, 0) + 1
            self.total += 1
        slow = self.fault_num("slow_ms", 0)
        if slow > 0:
            time.sleep(slow / 1000.0)
        if self.take("rate_429"):
            reply = self.reply_429()
        elif self.take("fail_5xx"):
            reply = self.reply_503()
        elif self.take("fail_5xx_ra"):
            reply = self.reply_503(retry_after=True)
        elif route is not None and route.write and self.take("fail_writes_5xx"):
            reply = self.reply_503()  # refused before anything was written
        elif route is None:
            reply = Reply(404, self.error_body(404, "No such endpoint: %s %s" % (method, h.path_only)))
        else:
            try:
                reply = route.func()
            except Reply as r:
                reply = r
            if reply is None:
                reply = Reply(204)
            if route.write and 200 <= reply.status < 300 and self.take("lost_reply_502"):
                # the write happened, but a proxy lost the answer: the client
                # cannot tell it from a failure
                with self.stats_lock:
                    self.writes += 1
                reply = Reply(502, self.error_body(502, "Bad Gateway (simulated: the write was applied)"),
                              note="fault=lost_reply_502")
        with self.stats_lock:
            key = str(reply.status)
            self.status_counts[key] = self.status_counts.get(key, 0) + 1
            if route is not None and route.write and 200 <= reply.status < 300:
                self.writes += 1
            ra = reply.headers.get("Retry-After")
            if reply.status in (429, 503) and ra is not None:
                try:
                    self.ra_until = time.monotonic() + float(ra)
                except ValueError:
                    pass
        return reply

    def handle_control(self, h, method):
        p = h.path_only.rstrip("/") or "/"
        try:
            if p == "/_sim/stats" and method == "GET":
                return Reply(200, self.stats_snapshot())
            if p == "/_sim/reset_stats" and method == "POST":
                self._zero_stats()
                return Reply(200, {"ok": True})
            if p == "/_sim/faults" and method == "GET":
                with self.fault_lock:
                    return Reply(200, dict(self.faults))
            if p == "/_sim/faults" and method == "POST":
                obj = control_json(h)
                if not isinstance(obj, dict):
                    return Reply(400, {"error": "fault update must be a JSON object"})
                return Reply(200, self.merge_faults(obj))
            if p == "/_sim/reset_faults" and method == "POST":
                with self.fault_lock:
                    self.faults.clear()
                return Reply(200, {})
            if p == "/_sim/health" and method == "GET":
                return Reply(200, {"ok": True, "sim": self.name, "port": self.port})
            r = self.control(method, p, h)
            if r is None:
                return Reply(404, {"error": "unknown control endpoint %s %s" % (method, p)})
            return r
        except Reply as r:
            return r


def control_json(h, optional=True):
    """JSON body of a /_sim/ request, with control-style errors."""
    if not h.body.strip():
        if optional:
            return {}
        raise Reply(400, {"error": "JSON body required"})
    try:
        return json.loads(h.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Reply(400, {"error": "malformed JSON: %s" % e})


def write_port_file(path, port):
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_port_file(path, port):
    try:
        with open(path) as f:
            if f.read().strip() != str(port):
                return
        os.unlink(path)
    except OSError:
        pass


def common_parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = let the OS pick)")
    p.add_argument("--port-file", default=None,
                   help="after binding, write the port number and a newline to this file (atomically)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines on stderr")
    return p


def main(sim_class, argv=None):
    parser = common_parser(sim_class.__doc__.strip().splitlines()[0] if sim_class.__doc__ else None)
    sim_class.add_args(parser)
    args = parser.parse_args(argv)
    sim = sim_class(args)
    server = SimServer(("127.0.0.1", args.port), SimHandler, sim)
    sim.port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, sim.port)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                         name="serve", daemon=True)
    t.start()
    if not sim.quiet:
        sys.stderr.write("%s listening on http://127.0.0.1:%d\n" % (sim.name, sim.port))
        sys.stderr.flush()
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    if args.port_file:
        remove_port_file(args.port_file, sim.port)
    if not sim.quiet:
        sys.stderr.write("%s stopped\n" % sim.name)
    return 0
