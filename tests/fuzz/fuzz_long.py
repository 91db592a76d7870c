#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""`make fuzz-long`: run each libFuzzer target for a set time, one after the
other, and report executions per target.

Each target starts from its seeds in tests/fuzz/corpus/<name> (read only) and
grows a working corpus in <build>/fuzz-work/<name>, so the repository's corpus
stays small. A crash stops that target; its input is left in
<build>/fuzz-work/crashes/ and the run ends non-zero: fix the bug, then copy
the input into tests/fuzz/corpus/<name>/ as a regression seed (make check
replays every seed under the sanitizers).

The goal (issue 10) is 10 million executions per parser with no crash; the
last line projects how long that takes at the measured rate.
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOAL = 10_000_000


def run_target(binary, name, seconds, work, rss_mb):
    seeds = os.path.join(ROOT, "tests", "fuzz", "corpus", name)
    corpus = os.path.join(work, name)
    crashes = os.path.join(work, "crashes")
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    log = os.path.join(work, name + ".log")
    cmd = [binary, corpus, seeds, f"-max_total_time={seconds}", "-print_final_stats=1",
           f"-rss_limit_mb={rss_mb}", "-timeout=10", f"-artifact_prefix={crashes}/{name}-"]
    print(f"fuzz-long: {name}: {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    took = time.monotonic() - t0
    with open(log, errors="replace") as f:
        text = f.read()
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
    execs = int(m.group(1)) if m else 0
    crash = re.findall(r"Test unit written to (\S+)", text)
    return execs, took, rc, crash, log


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True, help="directory of the libFuzzer binaries (make fuzz)")
    ap.add_argument("--seconds", type=int, default=600, help="per target")
    ap.add_argument("--work", required=True, help="working corpora, logs and crashes")
    ap.add_argument("--rss-mb", type=int, default=2048)
    ap.add_argument("targets", nargs="*", help="names (default: every fuzz_*.c target)")
    args = ap.parse_args()
    names = args.targets or sorted(f[len("fuzz_"):-2] for f in os.listdir(os.path.join(ROOT, "tests", "fuzz"))
                                   if f.startswith("fuzz_") and f.endswith(".c"))
    rows, bad = [], 0
    for name in names:
        binary = os.path.join(args.bin, "fuzz_" + name)
        if not os.access(binary, os.X_OK):
            print(f"fuzz-long: {name}: no binary {binary}: run `make fuzz` first", flush=True)
            bad += 1
            continue
        execs, took, rc, crash, log = run_target(binary, name, args.seconds, args.work, args.rss_mb)
        rate = execs / took if took > 0 else 0
        verdict = "no crash" if rc == 0 and not crash else f"FAILED (exit {rc}; input {', '.join(crash) or 'none'}; log {log})"
        if verdict != "no crash":
            bad += 1
        print(f"fuzz-long: {name}: {execs} executions in {took:.0f}s ({rate:.0f} exec/s): {verdict}",
              flush=True)
        rows.append((name, execs, took, rate, verdict))
    print("\nfuzz-long summary (goal: %d executions per parser)" % GOAL)
    print(f"{'target':<12} {'executions':>12} {'seconds':>8} {'exec/s':>9} {'time to goal':>13}  result")
    for name, execs, took, rate, verdict in rows:
        goal = f"{GOAL / rate / 60:.0f} min" if rate > 0 else "-"
        print(f"{name:<12} {execs:>12} {took:>8.0f} {rate:>9.0f} {goal:>13}  {verdict}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
