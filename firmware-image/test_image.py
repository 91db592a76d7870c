#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Boot the appliance image under qemu and prove it works.

The JD Edwards and Jira simulators run on this host on 127.0.0.1; qemu's
user-mode network shows the host's loopback to the guest as 10.0.2.2, so the
seed's configuration names the systems http://10.0.2.2:<port>. A copy of the
image gets the seed (status-page password, agent.json, secrets) on its
MLCCONFIG partition; the built image stays pristine. The guest's status page
(port 8089) is forwarded to 127.0.0.1:<free port> on the host.

Prints "ok N name" / "FAIL N name: why" lines, the boot-to-status-page time,
the image size and "N passed, N failed"; exit 1 on a failure. The serial
console is saved as build/image/console.log.

    python3 firmware-image/test_image.py [--image build/image/ml-connector-appliance.img]
        [--accel tcg|kvm] [--timeout 900] [--keep]
"""
import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import harness  # noqa: E402

FLOW = "jde_workorders"
ARGS = None
RESULTS = []


def report(name, ok, why=""):
    RESULTS.append(ok)
    n = len(RESULTS)
    print(f"ok {n} {name}" if ok else f"FAIL {n} {name}: {why}", flush=True)


def check(name, fn):
    try:
        extra = fn()
        report(name + (f" ({extra})" if extra else ""), True)
        return True
    except Exception as e:  # noqa: BLE001 - every failure is a test result
        report(name, False, f"{e}" if isinstance(e, AssertionError) else traceback.format_exc().strip())
        return False


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def req(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hd = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hd["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=hd)
        r = c.getresponse()
        raw = r.read()
        try:
            js = json.loads(raw) if raw else None
        except ValueError:
            js = raw
        return r.status, r.headers, js
    finally:
        c.close()


# --- the image's partitions (no mounts: mtools on byte offsets) -------------

def partitions(img):
    out = subprocess.run(["sfdisk", "-J", img], capture_output=True, text=True, check=True).stdout
    pt = json.loads(out)["partitiontable"]
    sector = pt.get("sectorsize", 512)
    return [(p["start"] * sector, p["size"] * sector, p.get("type", "")) for p in pt["partitions"]]


def fat_with_label(img, label):
    for off, _size, typ in partitions(img):
        if typ.lower() not in ("b", "c", "e", "ef", "6"):
            continue
        r = subprocess.run(["mlabel", "-s", "-i", f"{img}@@{off}", "::"], capture_output=True, text=True)
        if label in r.stdout:
            return off
    raise RuntimeError(f"{img}: no FAT partition labelled {label}")


def mcopy_in(img, off, src, name):
    subprocess.run(["mcopy", "-o", "-i", f"{img}@@{off}", src, "::/" + name], check=True)


def mcat(img, off, name):
    r = subprocess.run(["mtype", "-i", f"{img}@@{off}", "::/" + name], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def mdir(img, off):
    r = subprocess.run(["mdir", "-b", "-i", f"{img}@@{off}", "::/"], capture_output=True, text=True)
    return r.stdout


# --- qemu ---------------------------------------------------------------------

class VM:
    def __init__(self, img, port, console, workdir):
        self.monitor = os.path.join(workdir, "monitor.sock")
        self.console = console
        cmd = ["qemu-system-x86_64", "-accel", ARGS.accel, "-m", "1024", "-smp", "2", "-nographic",
               "-drive", f"file={img},format=raw,if=virtio",
               "-netdev", f"user,id=n,hostfwd=tcp:127.0.0.1:{port}-:8089",
               "-device", "virtio-net-pci,netdev=n",
               "-serial", f"file:{console}",
               "-monitor", f"unix:{self.monitor},server,nowait"]
        self.qlog = open(os.path.join(workdir, "qemu.log"), "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.qlog, stderr=subprocess.STDOUT)
        print("# " + " ".join(cmd), flush=True)

    def console_text(self):
        try:
            with open(self.console, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def monitor_cmd(self, line):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.monitor)
        try:
            s.recv(4096)  # banner
            s.sendall((line + "\n").encode())
            time.sleep(0.5)
        finally:
            s.close()

    def powerdown(self, timeout):
        """ACPI power button; True if the guest shut down by itself in time."""
        if self.proc.poll() is not None:
            return False
        self.monitor_cmd("system_powerdown")
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.qlog.close()


def make_seed(jde, jira, password):
    cfg = {
        "agent": {"state_db": "/var/lib/ml-connector/state.db",
                  "key_file": "/var/lib/ml-connector/secret.key", "log_level": "info",
                  "status_listen": "0.0.0.0:8089"},
        "systems": {
            "jde": {"type": "jde", "base_url": f"http://10.0.2.2:{jde.port}/jderest", "username": "SYNCUSR",
                    "password": "secret:jde_password", "environment": "JDV920", "page_size": 200},
            "jira": {"type": "jira", "base_url": f"http://10.0.2.2:{jira.port}", "auth": "basic",
                     "email": "sync@example.com", "api_token": "secret:jira_token"},
        },
        "flows": {
            FLOW: {
                "source": {"system": "jde", "table": "F4801", "key": "DOCO"},
                "target": {"system": "jira", "project": "MFG", "issue_type": "Task", "marker_prefix": "jdewo-"},
                "schedule": "every 15m",
                "mapping": harness.WORK_ORDER_MAPPING,
            }
        },
    }
    return {"status_password": password,
            "secrets": {"jde_password": harness.JDE_PASSWORD, "jira_token": harness.JIRA_TOKEN},
            "agent_json": cfg}


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default=os.path.join(ROOT, "build", "image", "ml-connector-appliance.img"))
    p.add_argument("--accel", default=os.environ.get("MLC_QEMU_ACCEL", "tcg"),
                   help="qemu accelerator (default tcg; kvm where /dev/kvm really works)")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the status page")
    p.add_argument("--orders", type=int, default=40, help="work orders in the JD Edwards simulator")
    p.add_argument("--keep", action="store_true", help="keep the booted copy of the image")
    ARGS = p.parse_args()

    img = os.path.abspath(ARGS.image)
    if not os.path.exists(img):
        print(f"test_image: {img} does not exist: run 'make image' first", file=sys.stderr)
        return 2
    outdir = os.path.dirname(img)
    console = os.path.join(outdir, "console.log")
    work = tempfile.mkdtemp(prefix="mlc-image-test-", dir=outdir)
    copy = os.path.join(work, "appliance-under-test.img")
    size = os.path.getsize(img)
    alloc = os.stat(img).st_blocks * 512

    jde = jira = vm = None
    password = "mlc-" + secrets.token_urlsafe(12)
    boot_s = None
    try:
        jde = harness.Sim("jde_sim.py", ["--seed", str(ARGS.orders)])
        jira = harness.Sim("jira_sim.py")
        print(f"# simulators: JD Edwards 127.0.0.1:{jde.port}, Jira 127.0.0.1:{jira.port} "
              f"(the guest sees them at 10.0.2.2)", flush=True)

        subprocess.run(["cp", "--sparse=always", img, copy], check=True)
        cfg_off = fat_with_label(copy, "MLCCONFIG")
        seed_path = os.path.join(work, "mlc-seed.json")
        with open(seed_path, "w") as f:
            json.dump(make_seed(jde, jira, password), f, indent=2)
        mcopy_in(copy, cfg_off, seed_path, "mlc-seed.json")

        port = free_port()
        if os.path.exists(console):
            os.unlink(console)
        vm = VM(copy, port, console, work)

        # --- boot until the status page answers
        def boots():
            nonlocal boot_s
            deadline = vm.started + ARGS.timeout
            while time.monotonic() < deadline:
                expect(vm.proc.poll() is None, f"qemu exited with {vm.proc.returncode}")
                try:
                    st, _, _ = req(port, "GET", "/api/session", timeout=5)
                    if st in (200, 401):
                        boot_s = time.monotonic() - vm.started
                        return f"{boot_s:.1f} s from qemu start, accel {ARGS.accel}"
                except (OSError, http.client.HTTPException):
                    pass
                time.sleep(1)
            raise AssertionError(f"no status page on 127.0.0.1:{port} after {ARGS.timeout:.0f} s; "
                                 f"console tail:\n{vm.console_text()[-3000:]}")
        if not check("boots; the status page answers on the forwarded port 8089", boots):
            return finish(vm, work, size, alloc, boot_s, console)

        cookie = {}

        def needs_login():
            st, _, body = req(port, "GET", "/api/status")
            expect(st == 401, f"/api/status without a session: HTTP {st} {body}")
            st, _, body = req(port, "POST", "/login", {"password": "wrong-password"}, {"X-Requested-With": "mlc"})
            expect(st in (401, 403), f"wrong password: HTTP {st} {body}")
        check("off loopback the page needs a login; a wrong password is refused", needs_login)

        def login():
            st, hd, body = req(port, "POST", "/login", {"password": password}, {"X-Requested-With": "mlc"})
            expect(st == 200, f"POST /login with the seed's password: HTTP {st} {body}")
            m = re.search(r"mlc_session=([^;]+)", hd.get("Set-Cookie", ""))
            expect(m, f"no mlc_session cookie: {hd.get('Set-Cookie')}")
            cookie["Cookie"] = "mlc_session=" + m.group(1)
        check("login with the seed's status_password (mlc_session cookie)", login)

        def status():
            st, _, body = req(port, "GET", "/api/status", headers=cookie)
            expect(st == 200, f"/api/status: HTTP {st} {body}")
            return body

        def flow_listed():
            names = [f.get("name") for f in status().get("flows", [])]
            expect(FLOW in names, f"flows {names}, want {FLOW}")
            return "flows: " + ", ".join(names)
        check(f"/api/status lists the seeded flow {FLOW}", flow_listed)

        def systems_reachable():
            deadline = time.monotonic() + 120
            while True:
                syss = {s["name"]: s for s in status().get("systems", [])}
                if all(syss.get(n, {}).get("reachable") is True for n in ("jde", "jira")):
                    return ", ".join(f"{n} auth {syss[n].get('auth')}" for n in ("jde", "jira"))
                if time.monotonic() > deadline:
                    raise AssertionError(f"systems not reachable from the guest: {syss}")
                time.sleep(2)
        check("the guest reaches the simulators at 10.0.2.2 (systems reachable)", systems_reachable)

        def syncs():
            st, _, body = req(port, "POST", f"/api/flows/{FLOW}/sync", {},
                               {"X-Requested-With": "mlc", **cookie})
            expect(st in (200, 202), f"POST /api/flows/{FLOW}/sync: HTTP {st} {body}")
            deadline = time.monotonic() + 300
            while True:
                f = next(x for x in status()["flows"] if x["name"] == FLOW)
                lr = f.get("last_run") or {}
                issues = jira.ctl("/_sim/issues")
                if len(issues) >= ARGS.orders and not f.get("running") and lr.get("finished_ms"):
                    expect(lr.get("status") != "failed", f"last run failed: {lr}")
                    return f"{len(issues)} Jira issues from {ARGS.orders} work orders, last run {lr.get('status')}"
                if time.monotonic() > deadline:
                    raise AssertionError(f"after 300 s: {len(issues)} issues, flow {f}")
                time.sleep(2)
        check("a sync from the page creates the Jira issues (agent in the guest, simulators on the host)", syncs)

        def firstboot_console():
            txt = vm.console_text()
            for want in ("status-page password set from the seed", "configuration /etc/ml-connector/agent.json "
                         "written from the seed", "secret 'jde_password' stored"):
                expect(want in txt, f"console has no '{want}'")
            expect(password not in txt, "the password itself is on the console")
        check("mlc-firstboot applied the seed (console), without echoing the password", firstboot_console)

        def powers_down():
            t0 = time.monotonic()
            ok = vm.powerdown(180)
            expect(ok, "the guest did not power off within 180 s of system_powerdown")
            expect(vm.proc.returncode == 0, f"qemu exit status {vm.proc.returncode}")
            expect("reboot: Power down" in vm.console_text(), "the console has no 'reboot: Power down'")
            return f"{time.monotonic() - t0:.1f} s"
        check("clean shutdown on the ACPI power button (qemu system_powerdown)", powers_down)

        def seed_consumed():
            listing = mdir(copy, cfg_off)
            expect("mlc-seed.json" not in listing.split(), f"mlc-seed.json still on MLCCONFIG: {listing}")
            applied = mcat(copy, cfg_off, "mlc-seed.applied.json")
            expect(applied is not None, f"no mlc-seed.applied.json on MLCCONFIG: {listing}")
            expect(password not in applied and harness.JDE_PASSWORD not in applied,
                   "mlc-seed.applied.json still holds a password")
        check("the seed was renamed mlc-seed.applied.json with its passwords blanked", seed_consumed)

        vm.kill()
        vm = None
        noseed(img, work, outdir)
    except Exception:  # noqa: BLE001
        report("test harness", False, traceback.format_exc().strip())
    finally:
        for s in (jde, jira):
            if s is not None:
                s.stop()
    return finish(vm, work, size, alloc, boot_s, console)


def noseed(img, work, outdir):
    """Second boot, of a pristine copy without a seed: mlc-firstboot makes a
    random password and prints it on the console; it logs in."""
    copy = os.path.join(work, "appliance-no-seed.img")
    subprocess.run(["cp", "--sparse=always", img, copy], check=True)
    console = os.path.join(outdir, "console-noseed.log")
    if os.path.exists(console):
        os.unlink(console)
    port = free_port()
    vm = VM(copy, port, console, work)
    try:
        found = {}

        def printed():
            deadline = vm.started + ARGS.timeout
            while time.monotonic() < deadline:
                expect(vm.proc.poll() is None, f"qemu exited with {vm.proc.returncode}")
                m = re.search(r"login password: (\S+)", vm.console_text())
                if m:
                    found["pw"] = m.group(1)
                    return f"{time.monotonic() - vm.started:.1f} s after qemu start"
                time.sleep(1)
            raise AssertionError(f"no password on the console; tail:\n{vm.console_text()[-2000:]}")
        if not check("without a seed, first boot prints a random status-page password on the console", printed):
            return

        def logs_in():
            deadline = time.monotonic() + 300
            while True:
                try:
                    st, hd, body = req(port, "POST", "/login", {"password": found["pw"]}, {"X-Requested-With": "mlc"})
                    break
                except (OSError, http.client.HTTPException):
                    expect(time.monotonic() < deadline, "no status page")
                    time.sleep(1)
            expect(st == 200 and "mlc_session=" in hd.get("Set-Cookie", ""), f"login: HTTP {st} {body}")
            ok = vm.powerdown(180)
            expect(ok and "reboot: Power down" in vm.console_text(), "no clean power-off")
        check("that password logs in to the status page; clean power-off", logs_in)
    finally:
        vm.kill()


def finish(vm, work, size, alloc, boot_s, console):
    if vm is not None:
        vm.kill()
    if not ARGS.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"# kept {work}")
    print(f"# console log: {console}")
    if boot_s is not None:
        print(f"BOOT boot-to-status-page {boot_s:.1f} s (qemu -accel {ARGS.accel}, 1024 MiB)")
    print(f"IMAGE size {size} bytes ({size // 1048576} MiB), {alloc // 1048576} MiB allocated (sparse)")
    passed = sum(1 for r in RESULTS if r)
    failed = len(RESULTS) - passed
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
