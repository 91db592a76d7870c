#!/usr/bin/env python3
"""Install round trip of the built .debs in a fresh Debian 12 chroot.

    test_install.py --debs DIR [--cache build/cache] [--keep]

Builds nothing: it takes the packages in DIR. A minimal bookworm tree
(`mmdebstrap --variant=apt`, from Debian's archive) is cached as
build/cache/bookworm-apt.tar and unpacked afresh for every run. apt installs
the agent package (dependencies from the archive); the test runs the agent
inside, checks modes and owners, upgrades in place, adds the relay package,
then purges both and checks that configuration, state and user are gone.
Needs root (chroot) and network access to deb.debian.org.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import Reporter, die  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SOURCES = ["deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main"]
CACHE_MAX_AGE = 7 * 86400  # older trees are rebuilt (apt still updates them)


def sh(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    return p.returncode, p.stdout


class Chroot:
    def __init__(self, path):
        self.path = path
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                    "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}

    def run(self, cmd, user=None, stdin=None):
        argv = ["chroot"] + ([f"--userspec={user}:{user}"] if user else []) + [self.path, "sh", "-c", cmd]
        p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=self.env)
        return p.returncode, p.stdout

    def p(self, path):
        return os.path.join(self.path, path.lstrip("/"))

    def ids(self, name):
        """uid and gid of NAME in the chroot's own passwd/group (None if absent)."""
        uid = gid = None
        with open(self.p("/etc/passwd")) as f:
            for line in f:
                parts = line.split(":")
                if parts[0] == name:
                    uid = int(parts[2])
        with open(self.p("/etc/group")) as f:
            for line in f:
                parts = line.split(":")
                if parts[0] == name:
                    gid = int(parts[2])
        return uid, gid


def cached_tree(cache_dir):
    tar = os.path.join(cache_dir, "bookworm-apt.tar")
    if os.path.exists(tar) and time.time() - os.path.getmtime(tar) < CACHE_MAX_AGE:
        return tar
    os.makedirs(cache_dir, exist_ok=True)
    print(f"# mmdebstrap --variant=apt bookworm {tar} (once; cached)", flush=True)
    tmp = tar + ".tmp"
    rc, out = sh(["mmdebstrap", "--quiet", "--variant=apt", "--format=tar", "bookworm", tmp] + SOURCES,
                 stdin=subprocess.DEVNULL)
    if rc != 0:
        die(f"mmdebstrap failed:\n{out[-3000:]}")
    os.replace(tmp, tar)
    return tar


def mode_owner(ch, path, mode, user, group):
    def t():
        st = os.lstat(ch.p(path))
        uid = 0 if user == "root" else ch.ids(user)[0]
        gid = 0 if group == "root" else ch.ids(group)[1]
        got = (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid)
        want = (oct(mode), uid, gid)
        return None if got == want else f"{path}: mode/uid/gid {got}, want {want}"
    return t


def expect(ch, cmd, want_rc=0, contains=None, user=None, stdin=None):
    def t():
        rc, out = ch.run(cmd, user=user, stdin=stdin)
        if rc != want_rc:
            return f"'{cmd}' exited {rc}, want {want_rc}:\n{out}"
        if contains and contains not in out:
            return f"'{cmd}' output lacks {contains!r}:\n{out}"
        return None
    return t


def verify_units(ch, names):
    """systemd-analyze verify on the installed unit files, on the host: ExecStart
    pointed at the chroot's binaries, since the host has none installed."""
    def t():
        tmp = tempfile.mkdtemp(prefix="mlc-units-")
        try:
            for n in names:
                src = ch.p(f"/lib/systemd/system/{n}.service")
                with open(src) as f:
                    text = f.read().replace("ExecStart=/usr/bin/", f"ExecStart={ch.p('/usr/bin/')}")
                with open(os.path.join(tmp, f"{n}.service"), "w") as f:
                    f.write(text)
            rc, out = sh(["systemd-analyze", "verify"] + [os.path.join(tmp, f"{n}.service") for n in names])
            return None if rc == 0 and not out.strip() else f"rc {rc}:\n{out}"
        finally:
            shutil.rmtree(tmp)
    return t


def gone(ch, paths):
    def t():
        left = [p for p in paths if os.path.lexists(ch.p(p))]
        return f"still present: {left}" if left else None
    return t


def main(argv=None, rep=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--debs", required=True, help="directory with the built .deb files")
    ap.add_argument("--cache", default=os.path.join(ROOT, "build", "cache"))
    ap.add_argument("--keep", action="store_true", help="keep the chroot (its path is printed)")
    a = ap.parse_args(argv)
    own = rep is None
    rep = rep or Reporter()

    if os.geteuid() != 0:
        die("needs root (chroot, mmdebstrap)")
    for tool in ("mmdebstrap", "chroot"):
        if not shutil.which(tool):
            die(f"{tool} is not installed: run 'make pkg-deps'")
    agent = glob.glob(os.path.join(a.debs, "ml-connector-agent_*.deb"))
    relay = glob.glob(os.path.join(a.debs, "ml-connector-relay_*.deb"))
    if not agent:
        die(f"no ml-connector-agent .deb in {a.debs}: run 'make deb'")

    tar = cached_tree(a.cache)
    workdir = tempfile.mkdtemp(prefix="chroot-", dir=os.path.join(ROOT, "build"))
    ch = Chroot(workdir)
    try:
        rc, out = sh(["tar", "-C", workdir, "--numeric-owner", "-xf", tar])
        if rc != 0:
            die(f"cannot unpack {tar}:\n{out}")
        shutil.copy("/etc/resolv.conf", ch.p("/etc/resolv.conf"))
        with open(ch.p("/usr/sbin/policy-rc.d"), "w") as f:  # no daemons start in the chroot
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(ch.p("/usr/sbin/policy-rc.d"), 0o755)
        for deb in agent + relay:
            shutil.copy(deb, ch.p("/tmp/"))
        adeb = "/tmp/" + os.path.basename(agent[0])

        rep.run("apt-get update in the chroot", expect(ch, "apt-get -q update"))
        rep.run("apt installs the agent package (dependencies from the archive)",
                expect(ch, f"apt-get -y -q install {adeb}"))
        rep.run("mlc-agent version", expect(ch, "mlc-agent version", contains="0.1.0"))
        rep.run("mlc-agent check-config with the default configuration",
                expect(ch, "mlc-agent check-config", contains="is valid"))
        rep.run("system user and group ml-connector exist",
                lambda: None if None not in ch.ids("ml-connector") else f"ids {ch.ids('ml-connector')}")
        rep.run("/etc/ml-connector/agent.json is 0640 root:ml-connector",
                mode_owner(ch, "/etc/ml-connector/agent.json", 0o640, "root", "ml-connector"))
        rep.run("/var/lib/ml-connector is 0750 ml-connector:ml-connector",
                mode_owner(ch, "/var/lib/ml-connector", 0o750, "ml-connector", "ml-connector"))
        rep.run("secret.key is 0600 ml-connector:ml-connector",
                mode_owner(ch, "/var/lib/ml-connector/secret.key", 0o600, "ml-connector", "ml-connector"))
        rep.run("secret.key holds 32 bytes",
                lambda: None if os.path.getsize(ch.p("/var/lib/ml-connector/secret.key")) == 32
                else f"size {os.path.getsize(ch.p('/var/lib/ml-connector/secret.key'))}")
        rep.run("the service user stores a secret with the installed key",
                expect(ch, "mlc-agent -c /etc/ml-connector/agent.json secret set jde_password",
                       user="ml-connector", stdin="not-a-real-password"))
        if shutil.which("systemd-analyze"):
            rep.run("systemd-analyze verify mlc-agent.service", verify_units(ch, ["mlc-agent"]))
        else:
            print("# systemd-analyze is not installed on the host: unit verification skipped")

        # an upgrade (here: reinstall) keeps the edited configuration and the key
        def upgrade_keeps():
            conf = ch.p("/etc/ml-connector/agent.json")
            with open(conf) as f:
                text = f.read()
            with open(conf, "w") as f:
                f.write(text.replace('"log_level": "info"', '"log_level": "debug"'))
            with open(ch.p("/var/lib/ml-connector/secret.key"), "rb") as f:
                key = f.read()
            rc, out = ch.run(f"apt-get -y -q -o Dpkg::Options::=--force-confold install --reinstall {adeb}")
            if rc != 0:
                return out
            with open(conf) as f:
                if '"log_level": "debug"' not in f.read():
                    return "the edited configuration was replaced"
            with open(ch.p("/var/lib/ml-connector/secret.key"), "rb") as f:
                if f.read() != key:
                    return "the key changed"
            st = os.stat(conf)
            if st.st_mode & 0o777 != 0o640:
                return f"mode {oct(st.st_mode)} after the upgrade"
            return None
        rep.run("reinstall keeps the edited configuration, the key and the modes", upgrade_keeps)

        if relay:
            rdeb = "/tmp/" + os.path.basename(relay[0])
            rep.run("apt installs the relay package beside the agent",
                    expect(ch, f"apt-get -y -q install {rdeb}"))
            rep.run("/etc/ml-connector/relay.json is 0640 root:ml-connector",
                    mode_owner(ch, "/etc/ml-connector/relay.json", 0o640, "root", "ml-connector"))
            rep.run("relay-secret.key is 0600 ml-connector:ml-connector",
                    mode_owner(ch, "/var/lib/ml-connector/relay-secret.key", 0o600, "ml-connector", "ml-connector"))
            rep.run("the service user opens the relay store (mlc-relay tenant list)",
                    expect(ch, "mlc-relay -c /etc/ml-connector/relay.json tenant list", user="ml-connector"))
            if shutil.which("systemd-analyze"):
                rep.run("systemd-analyze verify mlc-relay.service", verify_units(ch, ["mlc-relay"]))
            rep.run("purging the agent keeps the relay's state and the user",
                    lambda: expect(ch, "apt-get -y -q purge ml-connector-agent")()
                    or gone(ch, ["/etc/ml-connector/agent.json", "/var/lib/ml-connector/secret.key",
                                 "/var/lib/ml-connector/state.db"])()
                    or (None if os.path.exists(ch.p("/var/lib/ml-connector/relay.db"))
                        and None not in ch.ids("ml-connector") else "relay state or user removed"))
            rep.run("apt-get purge ml-connector-relay", expect(ch, "apt-get -y -q purge ml-connector-relay"))
        else:
            rep.run("apt-get purge ml-connector-agent", expect(ch, "apt-get -y -q purge ml-connector-agent"))
        rep.run("purge removed /etc/ml-connector and /var/lib/ml-connector",
                gone(ch, ["/etc/ml-connector", "/var/lib/ml-connector"]))
        rep.run("purge removed the ml-connector user and group",
                lambda: None if ch.ids("ml-connector") == (None, None) else f"ids {ch.ids('ml-connector')}")
        rep.run("no binaries or units left",
                gone(ch, ["/usr/bin/mlc-agent", "/usr/bin/mlc-relay", "/lib/systemd/system/mlc-agent.service",
                          "/lib/systemd/system/mlc-relay.service"]))
    finally:
        if a.keep:
            print(f"# chroot kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rep.summary() if own else 0


if __name__ == "__main__":
    sys.exit(main())
