#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A throwaway PostgreSQL server for tests, from Debian's `postgresql` package.

    conninfo, stop = pg.start(tmpdir)   # "host=127.0.0.1 port=N dbname=mlc user=postgres"
    ...
    stop()                              # fast shutdown; removes the data directory

The server listens on 127.0.0.1 (an OS-chosen free port) and on a unix socket
in tmpdir, with fsync on (the relay's durability is what the tests are about).
PostgreSQL refuses to run as root: under euid 0 the server runs as the
`postgres` system user and owns its directories. `python3 tests/pg.py`
starts one and prints its conninfo until Ctrl-C.
"""
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

DBNAME = "mlc"
START_TIMEOUT = 60


def bindir():
    """The newest /usr/lib/postgresql/<major>/bin that has initdb and postgres."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        major = os.path.basename(os.path.dirname(d))
        if major.isdigit() and os.access(os.path.join(d, "initdb"), os.X_OK) \
                and os.access(os.path.join(d, "postgres"), os.X_OK):
            found.append((int(major), d))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: "
                           "install the Debian package 'postgresql' (make deps)")
    return max(found)[1]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user():
    """(run-as kwargs for subprocess, uid, gid): the postgres user under root."""
    if os.geteuid() != 0:
        return {}, os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root, and there is no 'postgres' system user to run "
                           "the server as: install the Debian package 'postgresql'") from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}, pw.pw_uid, pw.pw_gid


def _run(cmd, log, runas, env):
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, **runas)
    if rc != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{os.path.basename(cmd[0])} failed (exit {rc}); log {log}:\n{tail}")


def _launch(bin_, data, base, log, runas, env, port):
    """Start postgres on port; the Popen once it answers, or None (with the log tail)."""
    cmd = [os.path.join(bin_, "postgres"), "-D", data,
           "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
           "-c", f"unix_socket_directories={base}",
           "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on",
           "-c", "max_connections=40", "-c", "shared_buffers=32MB",
           "-c", "logging_collector=off", "-c", "log_min_messages=warning"]
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, **runas)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        rc = subprocess.call([os.path.join(bin_, "pg_isready"), "-q", "-h", base,
                              "-p", str(port), "-U", "postgres", "-d", "postgres"], env=env)
        if rc == 0:
            return proc
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    return None


class Server:
    """A throwaway server that can also be stopped and started again on the
    same port and data (a warehouse that goes down mid-load):

        srv = pg.Server(tmpdir)   # started; srv.conninfo
        srv.halt(); srv.resume()  # down (fast shutdown, data kept), up again
        srv.psql("SELECT 1")      # rows as lists of strings (psql -At)
        srv.stop()                # down for good; removes the data directory
    """

    def __init__(self, tmpdir):
        self.bin = bindir()
        self.runas, uid, gid = _server_user()
        tmpdir = os.path.abspath(tmpdir)
        self.base = os.path.join(tmpdir, "pg")
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "server.log")
        os.makedirs(self.base, exist_ok=True)
        if self.runas:
            # the server user must reach tmpdir (search only) and own its own directory
            os.chmod(tmpdir, os.stat(tmpdir).st_mode | 0o111)
            os.chown(self.base, uid, gid)
            if subprocess.call(["test", "-w", self.base], **self.runas) != 0:
                raise RuntimeError(f"the postgres user cannot write {self.base}: a parent directory "
                                   f"is closed to it; use a tmpdir under /tmp")
        self.env = {"PATH": self.bin + ":/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "TZ": "UTC",
                    "HOME": self.base}
        # initdb's own fsync of the fresh cluster is skipped: a throwaway cluster
        # that dies with the machine is simply made again. The server runs with fsync.
        _run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
              "-E", "UTF8", "--locale=C", "--no-sync"], self.log, self.runas, self.env)
        last_error = None
        for _ in range(5):
            self.port = free_port()
            self.proc = _launch(self.bin, self.data, self.base, self.log, self.runas, self.env,
                                self.port)
            if self.proc is not None:
                break
            with open(self.log) as f:
                last_error = f.read()[-3000:]
            # another process may have taken the port between free_port() and bind()
        else:
            raise RuntimeError(f"PostgreSQL did not start; log {self.log}:\n{last_error}")
        _run([os.path.join(self.bin, "createdb"), "-h", self.base, "-p", str(self.port),
              "-U", "postgres", DBNAME], self.log, {}, self.env)
        self.conninfo = f"host=127.0.0.1 port={self.port} dbname={DBNAME} user=postgres"

    def halt(self):
        """Fast shutdown (roll back, checkpoint, exit); the data stays."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def resume(self):
        """Start again on the same port and data."""
        self.proc = _launch(self.bin, self.data, self.base, self.log, self.runas, self.env,
                            self.port)
        if self.proc is None:
            with open(self.log) as f:
                raise RuntimeError(f"PostgreSQL did not start again on port {self.port}; log "
                                   f"{self.log}:\n{f.read()[-3000:]}")

    def psql(self, sql, user="postgres"):
        """Run sql through psql over the unix socket; rows as lists of strings (NULL = "")."""
        out = subprocess.run([os.path.join(self.bin, "psql"), "-h", self.base, "-p", str(self.port),
                              "-U", user, "-d", DBNAME, "-At", "-F", "\x1f", "-R", "\x1e",
                              "-v", "ON_ERROR_STOP=1",
                              "-c", sql], capture_output=True, text=True, env=self.env)
        if out.returncode != 0:
            raise RuntimeError(f"psql: {sql[:200]}: {out.stderr.strip()}")
        # unit and record separators: values may hold tabs and newlines
        text = out.stdout[:-1] if out.stdout.endswith("\n") else out.stdout
        return [rec.split("\x1f") for rec in text.split("\x1e")] if text else []

    def stop(self):
        self.halt()
        shutil.rmtree(self.base, ignore_errors=True)


def start(tmpdir):
    """Start a server with its files in tmpdir/pg; returns (conninfo, stop_fn)."""
    srv = Server(tmpdir)
    return srv.conninfo, srv.stop


def main():
    tmpdir = tempfile.mkdtemp(prefix="mlc-pg-")
    try:
        conninfo, stop = start(tmpdir)
    except RuntimeError as e:
        shutil.rmtree(tmpdir, ignore_errors=True)
        print(f"pg.py: {e}", file=sys.stderr)
        return 1
    print(conninfo, flush=True)
    print(f"(unix socket in {os.path.join(tmpdir, 'pg')}; Ctrl-C stops the server)",
          file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
