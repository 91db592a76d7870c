# SPDX-License-Identifier: Apache-2.0
"""Start mlc-relay processes and talk to them like Jira and Zoho do.

Everything binds to 127.0.0.1. Used by the relay integration tests, the
demo and the benchmark.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid


def self_signed_cert(workdir):
    """A throwaway certificate for localhost / 127.0.0.1 (openssl from Debian)."""
    crt, key = os.path.join(workdir, "relay.crt"), os.path.join(workdir, "relay.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", crt], check=True, capture_output=True)
    return crt, key


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def hub_signature(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt_hs256(secret, claims):
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    pay = _b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), (head + "." + pay).encode(), hashlib.sha256).digest()
    return head + "." + pay + "." + _b64url(sig)


def jira_status_event(issue_key, to_status, labels=(), from_status="To Do", account="5b10human",
                      issue_id="10001", pad_to=0):
    """A jira:issue_updated body with a status changelog, shaped like jira-cloud.md 4.3."""
    ev = {
        "timestamp": int(time.time() * 1000),
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
        "user": {"accountId": account, "displayName": "Mia Krystof"},
        "issue": {"id": issue_id, "key": issue_key,
                  "self": "https://sim.atlassian.net/rest/api/2/issue/" + issue_id,
                  "fields": {"summary": "work order", "labels": list(labels),
                             "status": {"id": "3", "name": to_status,
                                        "statusCategory": {"id": 4, "key": "indeterminate",
                                                           "name": to_status}}}},
        "changelog": {"id": "1" + issue_id,
                      "items": [{"field": "status", "fieldtype": "jira", "from": "10000",
                                 "fromString": from_status, "to": "3", "toString": to_status}]},
    }
    body = json.dumps(ev, separators=(",", ":")).encode()
    if pad_to and len(body) < pad_to:
        ev["issue"]["fields"]["description"] = "x" * (pad_to - len(body) - 20)
        body = json.dumps(ev, separators=(",", ":")).encode()
    return body


class Relay:
    """One mlc-relay process with its own config (and by default its own SQLite store)."""

    def __init__(self, binary, store=None, node=None, workdir=None, extra=None, log=None, env=None):
        self.binary = binary
        self.dir = workdir or tempfile.mkdtemp(prefix="mlc-relay-")
        self.store = store or "sqlite:" + os.path.join(self.dir, "relay.db")
        self.port = free_port()
        self.node = node or "relay-%d" % self.port
        self.cfg = os.path.join(self.dir, "relay-%d.json" % self.port)
        # relays sharing a workdir share the key that seals tenant secrets
        conf = {"listen": "127.0.0.1:%d" % self.port, "store": self.store, "node": self.node,
                "heartbeat": "2s", "lease": "5s", "key_file": os.path.join(self.dir, "relay-secret.key")}
        conf.update(extra or {})
        with open(self.cfg, "w") as f:
            json.dump(conf, f)
        self.tls = bool(conf.get("tls_cert"))
        self.ssl_ctx = ssl.create_default_context(cafile=conf["tls_cert"]) if self.tls else None
        self.log_path = log or os.path.join(self.dir, "relay-%d.log" % self.port)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    @property
    def base(self):
        return ("https://localhost:%d" if self.tls else "http://127.0.0.1:%d") % self.port

    @property
    def tunnel_url(self):
        return ("wss://localhost:%d/tunnel" if self.tls else "ws://127.0.0.1:%d/tunnel") % self.port

    def connection(self, timeout=10):
        if self.tls:
            return http.client.HTTPSConnection("localhost", self.port, timeout=timeout, context=self.ssl_ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def cli(self, *args, stdin=None, check=True):
        p = subprocess.run([self.binary, "-c", self.cfg] + list(args), input=stdin,
                           capture_output=True, text=True, env=self.env, timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError("mlc-relay %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
        return p

    def tenant_add(self, name):
        return json.loads(self.cli("tenant", "add", name, "--json").stdout)

    def start(self, wait=True):
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen([self.binary, "-c", self.cfg, "run"], stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=self.env)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mlc-relay exited with %s; log:\n%s" % (self.proc.returncode, self.log()))
            try:
                st, _ = self.get("/healthz")
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("mlc-relay did not become healthy; log:\n" + self.log())

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def get(self, path):
        c = self.connection()
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def metrics(self):
        st, body = self.get("/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


class HookClient:
    """A keep-alive HTTP/1.1 client posting webhooks to one relay."""

    def __init__(self, port, timeout=10, relay=None):
        self.port = port
        self.timeout = timeout
        self.relay = relay
        self.conn = None

    def post(self, path, body, headers):
        for attempt in range(2):
            if self.conn is None:
                self.conn = (self.relay.connection(self.timeout) if self.relay is not None else
                             http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout))
            try:
                h = {"Content-Type": "application/json"}
                h.update(headers)
                self.conn.request("POST", path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 1:
                    raise
        return None

    def jira(self, tenant, body, secret=None, delivery_id=None, jwt=None, headers=None):
        h = {"X-Atlassian-Webhook-Identifier": delivery_id or str(uuid.uuid4())}
        if secret is not None:
            h["X-Hub-Signature"] = hub_signature(secret, body)
        if jwt is not None:
            h["Authorization"] = "Bearer " + jwt
        h.update(headers or {})
        return self.post("/hooks/jira/" + tenant, body, h)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
