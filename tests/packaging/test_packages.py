#!/usr/bin/env python3
"""Static checks of the built packages: lintian on the .debs (errors fail),
rpmlint on the .rpms when it is installed, and the package contents (conffiles,
unit hardening, file modes).

    test_packages.py --debs DIR [--rpms DIR]
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import Reporter, die  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HARDENING = ["User=ml-connector", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
             "PrivateTmp=yes", "StateDirectory=ml-connector",
             "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "Restart=on-failure",
             "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes", "LockPersonality=yes"]


def sh(*cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout


def debs_in(d):
    return sorted(f for f in glob.glob(os.path.join(d, "ml-connector-*.deb")) if "-dbgsym_" not in f)


def lintian(deb):
    def t():
        rc, out = sh("lintian", "--pedantic", "--allow-root", deb)
        errs = [l for l in out.splitlines() if l.startswith("E:")]
        warns = [l for l in out.splitlines() if l.startswith("W:")]
        for w in warns:
            print(f"# lintian {w}")
        if errs:
            return "\n".join(errs)
        return None
    return t


def deb_contents(deb, name):
    def t():
        rc, conff = sh("dpkg-deb", "--info", deb, "conffiles")
        want = f"/etc/ml-connector/{'agent' if name == 'agent' else 'relay'}.json"
        if want not in conff.split():
            return f"{want} is not a conffile: {conff!r}"
        rc, listing = sh("dpkg-deb", "--contents", deb)
        binary = f"./usr/bin/mlc-{name}"
        unit = f"./lib/systemd/system/mlc-{name}.service"
        for path in (binary, unit, f"./usr/share/man/man1/mlc-{name}.1.gz"):
            if path not in listing:
                return f"{path} missing from the package:\n{listing}"
        rc, deps = sh("dpkg-deb", "--field", deb, "Depends")
        if "adduser" not in deps:
            return f"Depends lacks adduser: {deps}"
        return None
    return t


def unit_hardening(name):
    def t():
        with open(os.path.join(ROOT, "packaging", "systemd", f"mlc-{name}.service")) as f:
            lines = [l.strip() for l in f]
        missing = [h for h in HARDENING if h not in lines]
        if name == "relay":
            if "AmbientCapabilities=CAP_NET_BIND_SERVICE" not in lines:
                missing.append("AmbientCapabilities=CAP_NET_BIND_SERVICE")
        elif "CapabilityBoundingSet=" not in lines:
            missing.append("CapabilityBoundingSet= (empty)")
        return f"missing: {missing}" if missing else None
    return t


def rpm_check(rpm):
    def t():
        rc, out = sh("rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]", rpm)
        want = [l for l in out.splitlines() if l.endswith(".json")]
        if not want or not want[0].startswith("-rw-r----- root:ml-connector /etc/ml-connector/"):
            return f"config file mode/owner: {want}"
        rc, out = sh("rpm", "-qp", "--configfiles", rpm)
        if "/etc/ml-connector/" not in out:
            return "no %config file"
        if shutil.which("rpmlint"):
            rc, out = sh("rpmlint", "-r", os.path.join(ROOT, "packaging", "rpm", "ml-connector.rpmlintrc"), rpm)
            errs = [l for l in out.splitlines() if ": E: " in l]
            if errs:
                return "\n".join(errs)
        return None
    return t


def main(argv=None, rep=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--debs", required=True, help="directory with the built .deb files")
    ap.add_argument("--rpms", help="directory with the built .rpm files")
    a = ap.parse_args(argv)
    own = rep is None
    rep = rep or Reporter()
    debs = debs_in(a.debs)
    if not debs:
        die(f"no ml-connector .deb in {a.debs}: run 'make deb'")
    if not shutil.which("lintian"):
        die("lintian is not installed: run 'make pkg-deps'")
    for deb in debs:
        base = os.path.basename(deb)
        name = "agent" if base.startswith("ml-connector-agent_") else "relay"
        rep.run(f"lintian reports no errors: {base}", lintian(deb))
        rep.run(f"package contents: {base}", deb_contents(deb, name))
    for name in ("agent", "relay"):
        rep.run(f"mlc-{name}.service carries the hardening settings", unit_hardening(name))
    if a.rpms:
        rpms = sorted(glob.glob(os.path.join(a.rpms, "ml-connector-*.rpm")))
        if not shutil.which("rpmlint"):
            print("# rpmlint is not installed: only the RPM contents are checked")
        for rpm in rpms:
            rep.run(f"rpm contents and rpmlint: {os.path.basename(rpm)}", rpm_check(rpm))
    return rep.summary() if own else 0


if __name__ == "__main__":
    sys.exit(main())
