#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The whole test suite, as `make check` runs it.

Builds a developer build (-Werror) and an ASan+UBSan build, and runs in each:
the C unit tests, the fuzz-corpus replays and the integration tests (real
mlc-agent and mlc-relay against the simulators, SQLite and a PostgreSQL
server the tests start on 127.0.0.1). The simulator self-test and the check
that the agent's core files name no system (tools/check_core_names.sh) run
once. Every part ends with an "N passed, N failed" line; the totals close the
run.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed")


def run_part(name, cmd, env=None):
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", env=env)
    passed = failed = None
    for line in proc.stdout:
        sys.stdout.write(line)
        m = SUMMARY.match(line.strip())
        if m:
            passed, failed = int(m.group(1)), int(m.group(2))
    rc = proc.wait()
    sys.stdout.flush()
    if passed is None:
        # a part that died before its summary counts as one failure
        passed, failed = 0, 1
    elif rc != 0 and failed == 0:
        failed = 1
    print(f"=== {name}: {passed} passed, {failed} failed, exit {rc}, "
          f"{time.monotonic() - t0:.1f}s", flush=True)
    return passed, failed


def build(make, out, sanitize):
    cmd = make.split() + ["--no-print-directory", "-j2", "DEVELOPER=1", f"O={out}", "check-build"]
    if sanitize:
        cmd.append(f"SANITIZE={sanitize}")
    print(f"\n=== build {out}: {' '.join(cmd)}", flush=True)
    return subprocess.call(cmd, cwd=ROOT) == 0


def suite(out, quick):
    results = []
    tests_dir = os.path.join(ROOT, out, "tests")
    for t in sorted(os.listdir(tests_dir)):
        path = os.path.join(tests_dir, t)
        if t.endswith("_driver"):
            continue  # a helper binary of an integration test, not a unit test
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            results.append(run_part(f"unit {t} [{out}]", [path]))
    fuzz_dir = os.path.join(ROOT, out, "fuzz")
    for f in sorted(os.listdir(fuzz_dir)):
        target = f[len("replay_"):]
        corpus = os.path.join(ROOT, "tests", "fuzz", "corpus", target)
        results.append(run_part(f"fuzz replay {target} [{out}]", [os.path.join(fuzz_dir, f), corpus]))
    agent = os.path.join(out, "mlc-agent")
    relay = os.path.join(out, "mlc-relay")
    q = ["--quick"] if quick else []
    parts = [
        ("integration agent", ["tests/integration/test_agent.py", "--agent", agent] + q),
        ("integration JD Edwards finance tables", ["tests/integration/test_jde_finance.py", "--agent", agent] + q),
        ("integration write-back", ["tests/integration/test_writeback.py", "--agent", agent]),
        ("integration write-back of fields", ["tests/integration/test_writeback_fields.py", "--agent", agent,
                                              "--relay", relay] + q),
        ("integration exactly once", ["tests/integration/test_exactly_once.py", "--agent", agent] + q),
        ("integration PeopleSoft", ["tests/integration/test_psft.py", "--agent", agent] + q),
        ("integration IFS Cloud", ["tests/integration/test_ifs.py", "--agent", agent] + q),
        ("integration IFS Cloud write-back", ["tests/integration/test_ifs_writeback.py", "--agent", agent,
                                              "--relay", relay] + q),
        ("integration pgsql target (warehouse)", ["tests/integration/test_pgsql_target.py", "--agent",
                                                  agent] + q),
        ("integration Looker after_load", ["tests/integration/test_looker.py", "--agent", agent] + q),
        ("integration warehouse end to end (JD Edwards -> PostgreSQL -> Looker)",
         ["tests/integration/test_warehouse.py", "--agent", agent] + q),
        ("integration jira status and comments", ["tests/integration/test_jira_workflow.py", "--agent", agent] + q),
        ("integration jira webhooks", ["tests/integration/test_jira_watch.py", "--driver",
                                       os.path.join(out, "tests", "jira_watch_driver")]),
        ("integration relay store on PostgreSQL", ["tests/integration/test_store_pg.py", "--bin",
                                                   os.path.join(out, "tests", "test_store")]),
        ("integration relay + tunnel", ["tests/integration/test_relay.py", "--agent", agent,
                                        "--relay", relay] + q),
        ("integration tunnel batching (DELIVERS, ACKS)", ["tests/integration/test_tunnel_batch.py",
                                                         "--agent", agent, "--relay", relay] + q),
        ("integration relay edges (listen, hostile HTTP)", ["tests/integration/test_relay_edges.py",
                                                           "--relay", relay]),
        ("status page in Chromium", ["tests/integration/test_status_page.py", "--agent", agent,
                                     "--out", os.path.join(out, "browser-shots")]),
        ("agent on a hostile network", ["tests/integration/test_net_agent.py", "--agent", agent,
                                        "--relay", relay] + q),
    ]
    for name, cmd in parts:
        results.append(run_part(f"{name} [{out}]", [sys.executable] + cmd))
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--make", default="make")
    ap.add_argument("--no-asan", action="store_true", help="skip the sanitizer build")
    args = ap.parse_args()
    t0 = time.monotonic()
    results = []
    if not build(args.make, "build/dev", None):
        print("0 passed, 1 failed")
        return 1
    results.append(run_part("simulator self-test", [sys.executable, "tests/sims/selftest.py"]))
    results.append(run_part("core names no system", ["sh", "tools/check_core_names.sh"]))
    results += suite("build/dev", quick=False)
    if not args.no_asan:
        if build(args.make, "build/asan", "address,undefined"):
            os.environ["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
            os.environ["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
            results += suite("build/asan", quick=True)
        else:
            results.append((0, 1))
    # packages: build both, lintian/rpmlint, install + purge in a fresh chroot
    tools = ["dpkg-buildpackage", "lintian", "rpmbuild", "mmdebstrap"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        print(f"\n=== packages: skipped ({'missing ' + ', '.join(missing) if missing else 'needs root'}; "
              "`make deps` installs the tools)", flush=True)
    else:
        results.append(run_part("packages (.deb, .rpm, chroot install)",
                                args.make.split() + ["--no-print-directory", "package-check"]))
    # the appliance image booted under qemu (about 4 minutes with the build): CI asks for it
    if os.environ.get("MLC_CHECK_IMAGE") == "1":
        results.append(run_part("appliance image under qemu",
                                args.make.split() + ["--no-print-directory", "image-test"]))
    else:
        print("\n=== appliance image: not run (MLC_CHECK_IMAGE=1 make check, or make image-test)", flush=True)
    passed = sum(p for p, _ in results)
    failed = sum(f for _, f in results)
    print(f"\nall parts done in {time.monotonic() - t0:.0f}s")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
