#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""make bench: sync N work orders (default 50,000) from the JD Edwards
simulator into the Jira simulator with the real agent and print
  BENCH <metric> <value> <unit>
agent CPU (user+sys of the agent process only) per record, API calls per
1,000 new records on each side, and the agent's peak RSS; then the same for a
run at a tenth of the size, to show whether memory grows with the data."""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def one(agent, n, page):
    work = tempfile.mkdtemp(prefix="mlc-bench-")
    jde = harness.Sim("jde_sim.py", ["--seed", str(n)])
    jira = harness.Sim("jira_sim.py", [])
    try:
        config = harness.make_config(work, jde.url, jira.url, jde={"page_size": page},
                                     agent={"log_level": "error"})
        t0 = time.monotonic()
        # wait4() gives this child's own CPU time. Its ru_maxrss would also count
        # the forked Python parent's pages from before exec, so peak RSS comes
        # from VmHWM in /proc, which exec resets, sampled until the agent exits.
        p = subprocess.Popen([agent, "-q", "-c", config, "sync", "jde_workorders"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=harness.agent_env())
        hwm_kb = 0
        status = None
        while status is None:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            hwm_kb = max(hwm_kb, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            pid, st, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                status = st
            else:
                time.sleep(0.05)
        out = ""
        err = p.stderr.read()
        wall = time.monotonic() - t0
        if status != 0:
            sys.stderr.write(out + err)
            raise SystemExit(f"bench: sync failed with status {status}")
        created = len(jira.ctl("/_sim/issues"))
        js = jira.stats()["requests"]
        ds = jde.stats()["requests"]
        return {
            "created": created,
            "cpu_us": (ru.ru_utime + ru.ru_stime) * 1e6 / max(created, 1),
            "jira_calls": sum(js.values()) * 1000.0 / max(created, 1),
            "jde_calls": sum(ds.values()) * 1000.0 / max(created, 1),
            "rss_mb": hwm_kb / 1024.0,
            "wall": wall,
        }
    finally:
        jde.stop()
        jira.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--page-size", type=int, default=500)
    args = ap.parse_args()
    agent = os.path.abspath(args.agent)
    small = max(1000, args.records // 10)
    print(f"bench: syncing {args.records} work orders (page size {args.page_size}); this takes a few minutes",
          flush=True)
    big = one(agent, args.records, args.page_size)
    print(f"bench: {big['created']} issues in {big['wall']:.1f}s wall", flush=True)
    print(f"BENCH agent_cpu_us_per_record {big['cpu_us']:.1f} us")
    print(f"BENCH jira_calls_per_1000_records {big['jira_calls']:.2f} calls")
    print(f"BENCH jde_calls_per_1000_records {big['jde_calls']:.2f} calls")
    print(f"BENCH agent_peak_rss_mb {big['rss_mb']:.1f} MB")
    sm = one(agent, small, args.page_size)
    print(f"BENCH agent_peak_rss_mb_at_{small} {sm['rss_mb']:.1f} MB")
    print(f"BENCH agent_rss_growth_mb {big['rss_mb'] - sm['rss_mb']:.1f} MB")
    if big["created"] != args.records:
        raise SystemExit(f"bench: expected {args.records} issues, got {big['created']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
