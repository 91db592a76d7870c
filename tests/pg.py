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


def start(tmpdir):
    """Start a server with its files in tmpdir/pg; returns (conninfo, stop_fn)."""
    bin_ = bindir()
    runas, uid, gid = _server_user()
    tmpdir = os.path.abspath(tmpdir)
    base = os.path.join(tmpdir, "pg")
    data = os.path.join(base, "data")
    log = os.path.join(base, "server.log")
    os.makedirs(base, exist_ok=True)
    if runas:
        # the server user must reach tmpdir (search only) and own its own directory
        os.chmod(tmpdir, os.stat(tmpdir).st_mode | 0o111)
        os.chown(base, uid, gid)
        if subprocess.call(["test", "-w", base], **runas) != 0:
            raise RuntimeError(f"the postgres user cannot write {base}: a parent directory "
                               f"is closed to it; use a tmpdir under /tmp")
    env = {"PATH": bin_ + ":/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "TZ": "UTC",
           "HOME": base}
    # initdb's own fsync of the fresh cluster is skipped: a throwaway cluster
    # that dies with the machine is simply made again. The server runs with fsync.
    _run([os.path.join(bin_, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
          "-E", "UTF8", "--locale=C", "--no-sync"], log, runas, env)

    last_error = None
    for _ in range(5):
        port = free_port()
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
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            rc = subprocess.call([os.path.join(bin_, "pg_isready"), "-q", "-h", base,
                                  "-p", str(port), "-U", "postgres", "-d", "postgres"], env=env)
            if rc == 0:
                ready = True
                break
            time.sleep(0.1)
        if ready:
            break
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        with open(log) as f:
            last_error = f.read()[-3000:]
        # another process may have taken the port between free_port() and bind()
    else:
        raise RuntimeError(f"PostgreSQL did not start; log {log}:\n{last_error}")

    _run([os.path.join(bin_, "createdb"), "-h", base, "-p", str(port), "-U", "postgres",
          DBNAME], log, {}, env)

    def stop():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown: roll back, checkpoint, exit
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)

    return f"host=127.0.0.1 port={port} dbname={DBNAME} user=postgres", stop


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
