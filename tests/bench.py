#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""make bench: sync N work orders (default 50,000) from the JD Edwards
simulator into the Jira simulator with the real agent and print
  BENCH <metric> <value> <unit>
agent CPU (user+sys of the agent process only) per record, the same for a
full re-read of those records with nothing changed (`sync --full`), API calls
per 1,000 new records on each side, and the agent's peak RSS; then the same for a
run at a tenth of the size, to show whether memory grows with the data, and
the agent's memory when idle (`run` with a tunnel up, 30 s later): resident
set, and its own (anonymous) part. Then PeopleSoft purchase orders (20,000
when N is 50,000): agent CPU per record and PeopleSoft calls per 1,000. Then
IFS Cloud purchase and work orders (as many): agent CPU per record, IFS
requests per 1,000 (ifs_cpu_us_per_record, ifs_calls_per_1000_records), and
the way back: 1,000 Jira status changes at 100/s as webhooks through mlc-relay
and a running agent's tunnel to the IFS PATCH of a custom field, p50 and p99
from the webhook's send to the PATCH applied at the simulator
(ifs_writeback_p99_ms). --only ifs runs just that part.

The warehouse part (--only warehouse runs just it): N (default 50,000)
JD Edwards AP ledger rows (F0411) loaded by the warehouse_ap_invoices flow of
tests/warehouse.py into a throwaway PostgreSQL server on loopback
(tests/pg.py): rows per second of wall time for the whole `sync` (reading
the simulator included), the agent's CPU per row, and, from load_log, the
rows per second between the first and the last batch's transaction.

The relay part: signed 2 KB webhooks durably stored per second at 100
connections and the relay's CPU per webhook (load from a second process,
tests/bench/hookload.c, on loopback), a burst of webhooks through the tunnel
into a real agent's inbox (webhooks/s end to end), webhook -> agent inbox latency
at 1,000 webhooks/s (relay's receive time to the agent's durable store time,
both stamped by the real processes), and relay memory per idle tunnel with
5,000 connected agents (tests/bench/tunnelswarm.c), over ws and over wss."""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import pg  # noqa: E402
import relay_harness as rh  # noqa: E402
import warehouse  # noqa: E402
import json  # noqa: E402
import sqlite3  # noqa: E402


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
        # the same records read again, nothing changed: `sync --full`
        p = subprocess.Popen([agent, "-q", "-c", config, "sync", "jde_workorders", "--full"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=harness.agent_env())
        _, st2, ru2 = os.wait4(p.pid, 0)
        out2, err2 = p.stdout.read(), p.stderr.read()
        if st2 != 0 or f"unchanged {created}," not in out2:
            sys.stderr.write(out2 + err2)
            raise SystemExit(f"bench: the full re-read did not find {created} unchanged records")
        return {
            "resync_cpu_us": (ru2.ru_utime + ru2.ru_stime) * 1e6 / max(created, 1),
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


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    """utime + stime of one process, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def start_tunnel_agent(agent_bin, work, relay, tenant, jde, jira):
    """A real agent (its sync flow on a manual schedule) with its tunnel
    up to relay as tenant; returns the process once the relay counts the tunnel."""
    # no status page: port 8089 may be taken on a shared machine
    path = harness.make_config(work, jde.url, jira.url, flow={"schedule": "manual"},
                               agent={"log_level": "warn", "status_listen": "off"})
    cfg = json.load(open(path))
    cfg["relay"] = {"url": relay.tunnel_url, "tenant": tenant["tenant"], "key": tenant["agent_key"]}
    json.dump(cfg, open(path, "w"))
    agent = subprocess.Popen([agent_bin, "-q", "-c", path, "run"], env=harness.agent_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while relay.metrics().get("mlc_relay_tunnels", 0) < 1:
        if time.monotonic() > deadline or agent.poll() is not None:
            agent.terminate()
            agent.wait()
            raise SystemExit("bench: the agent's tunnel did not come up")
        time.sleep(0.1)
    return agent


def inbox_rows(db, n, timeout, sql="SELECT stored_ms, received_ms FROM state_inbox WHERE seq > 0"):
    """The relay deliveries in the agent's inbox, once n are there (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        con = sqlite3.connect(db, timeout=10)
        rows = con.execute(sql).fetchall()
        con.close()
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def relay_bench(build):
    relay_bin = os.path.abspath(os.path.join(build, "mlc-relay"))
    agent_bin = os.path.abspath(os.path.join(build, "mlc-agent"))
    load = os.path.abspath(os.path.join(build, "bench", "hookload"))
    swarm = os.path.abspath(os.path.join(build, "bench", "tunnelswarm"))

    # 1. throughput: closed loop, 100 connections, every webhook durably
    # stored; the relay's own CPU (user + sys) per webhook stored
    r = rh.Relay(relay_bin, extra={"log_level": "warn"})
    sec = r.tenant_add("bench")["jira_webhook_secret"]
    r.start()
    try:
        before = cpu_ticks(r.proc.pid)
        out = subprocess.run([load, "--port", str(r.port), "--tenant", "bench", "--secret", sec,
                              "--count", "50000", "--conns", "100"], capture_output=True, text=True,
                             check=True).stdout
        cpu_s = (cpu_ticks(r.proc.pid) - before) / os.sysconf("SC_CLK_TCK")
        res = json.loads(out)
        stored = r.metrics()['mlc_relay_webhooks_total{source="jira",result="stored"}']
    finally:
        r.stop()
    if stored != res["ok"]:
        raise SystemExit(f"bench: relay answered {res['ok']} x 2xx but stored {stored}")
    print(f"BENCH relay_webhooks_per_s {res['per_s']:.0f} webhooks/s")
    print(f"BENCH relay_cpu_us_per_webhook {cpu_s * 1e6 / max(stored, 1):.1f} us")
    print(f"BENCH relay_http_p99_ms_at_max {res['p99_ms']:.2f} ms")

    # 2. latency: a real agent on the tunnel, webhooks paced at 1,000/s
    work = tempfile.mkdtemp(prefix="mlc-bench-relay-")
    jde = harness.Sim("jde_sim.py", ["--seed", "10"])
    jira = harness.Sim("jira_sim.py", [])
    r = rh.Relay(relay_bin, workdir=work, extra={"log_level": "warn"})
    ten = r.tenant_add("lat")
    r.start()
    agent = None
    try:
        agent = start_tunnel_agent(agent_bin, work, r, ten, jde, jira)
        n = 5000
        out = subprocess.run([load, "--port", str(r.port), "--tenant", "lat", "--secret",
                              ten["jira_webhook_secret"], "--count", str(n), "--conns", "32",
                              "--rate", "1000"], capture_output=True, text=True, check=True).stdout
        rows = inbox_rows(os.path.join(work, "state.db"), n, 60)
        lat = sorted(x[0] - x[1] for x in rows)
        if len(lat) < n:
            raise SystemExit(f"bench: only {len(lat)} of {n} webhooks reached the agent")
        print(f"BENCH webhook_to_agent_p50_ms {lat[len(lat) // 2]:.1f} ms")
        print(f"BENCH webhook_to_agent_p99_ms {lat[int(len(lat) * 0.99)]:.1f} ms")
        print(f"bench: load {json.loads(out)}", flush=True)
    finally:
        if agent:
            agent.terminate()
            agent.wait()
        r.stop()
        jde.stop()
        jira.stop()

    # 3. memory per idle tunnel: 5,000 agents (one process) connected and quiet,
    # over plain ws and over wss (TLS, a self-signed certificate for localhost)
    idle_tunnels(relay_bin, swarm, tls=False)
    idle_tunnels(relay_bin, swarm, tls=True)


def idle_tunnels(relay_bin, swarm, tls, count=5000):
    extra = {"log_level": "warn"}
    work = tempfile.mkdtemp(prefix="mlc-bench-swarm-")
    if tls:
        crt, key = rh.self_signed_cert(work)
        extra.update(tls_cert=crt, tls_key=key)
    r = rh.Relay(relay_bin, workdir=work, extra=extra)
    r.start()
    sw = None
    try:
        base = rss_kb(r.proc.pid)
        sw = subprocess.Popen([swarm, "--store", r.store, "--key-file", os.path.join(r.dir, "relay-secret.key"),
                               "--port", str(r.port), "--count", str(count)] + (["--tls", crt] if tls else []),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = sw.stdout.readline().split()
        if len(line) < 4 or line[0] != "ready" or int(line[3]) != 0:
            raise SystemExit(f"bench: tunnel swarm failed: {line}")
        time.sleep(3)
        tunnels = r.metrics()["mlc_relay_tunnels"]
        after = rss_kb(r.proc.pid)
        name = "relay_kb_per_idle_tls_tunnel" if tls else "relay_kb_per_idle_tunnel"
        print(f"BENCH {name} {(after - base) / max(tunnels, 1):.1f} KB "
              f"({int(tunnels)} {'wss' if tls else 'ws'} tunnels, RSS {base} -> {after} KB)", flush=True)
    finally:
        if sw:
            sw.stdin.close()
            sw.wait()
        r.stop()


def agent_idle(build, settle=30):
    """The agent's resident memory at rest: `mlc-agent run` with the bench's
    relay configuration (simulators, manual schedule, a tunnel to a local
    relay), VmRSS read 30 s after its tunnel is up (the relay counts it)."""
    relay_bin = os.path.abspath(os.path.join(build, "mlc-relay"))
    agent_bin = os.path.abspath(os.path.join(build, "mlc-agent"))
    work = tempfile.mkdtemp(prefix="mlc-bench-idle-")
    jde = harness.Sim("jde_sim.py", ["--seed", "10"])
    jira = harness.Sim("jira_sim.py", [])
    r = rh.Relay(relay_bin, workdir=work, extra={"log_level": "warn"})
    ten = r.tenant_add("idle")
    r.start()
    agent = None
    try:
        # the status page on too, on a port of its own (8089 may be taken)
        path = harness.make_config(work, jde.url, jira.url, flow={"schedule": "manual"},
                                   agent={"log_level": "warn",
                                          "status_listen": "127.0.0.1:%d" % rh.free_port()})
        cfg = json.load(open(path))
        cfg["relay"] = {"url": r.tunnel_url, "tenant": "idle", "key": ten["agent_key"]}
        json.dump(cfg, open(path, "w"))
        agent = subprocess.Popen([agent_bin, "-q", "-c", path, "run"], env=harness.agent_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while r.metrics().get("mlc_relay_tunnels", 0) < 1:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench: the idle agent's tunnel did not come up")
            time.sleep(0.1)
        time.sleep(settle)
        if agent.poll() is not None:
            raise SystemExit(f"bench: the idle agent exited with {agent.returncode}")
        rss = rss_kb(agent.pid)
        with open(f"/proc/{agent.pid}/status") as f:
            anon = next((int(x.split()[1]) for x in f if x.startswith("RssAnon:")), 0)
        print(f"BENCH agent_idle_rss_mb {rss / 1024.0:.1f} MB "
              f"(anonymous {anon / 1024.0:.1f} MB, {settle} s after the tunnel came up)", flush=True)
    finally:
        if agent:
            agent.terminate()
            agent.wait()
        r.stop()
        jde.stop()
        jira.stop()


def psft_bench(agent, n):
    """PeopleSoft purchase orders into Jira: agent CPU per record and
    PeopleSoft calls per 1,000 records (custom list service, keyset reads,
    1,000 rows per answer, the vendor master joined)."""
    work = tempfile.mkdtemp(prefix="mlc-bench-psft-")
    psft = harness.Sim("psft_sim.py", ["--auth", "basic", "--pos", str(n), "--reqs", "0", "--vouchers", "0"])
    jira = harness.Sim("jira_sim.py", [])
    try:
        cfg = {
            "agent": {"state_db": os.path.join(work, "state.db"), "key_file": os.path.join(work, "secret.key"),
                      "log_level": "error"},
            "systems": {
                "erp": {"type": "psft", "base_url": psft.url, "node": "PSFT_EP", "auth": "basic",
                        "user": "MLC_SYNC", "password": "${MLC_PSFT_PASSWORD}"},
                "jira": {"type": "jira", "base_url": jira.url, "auth": "basic", "email": "sync@example.com",
                         "api_token": "${MLC_JIRA_TOKEN}"},
            },
            "flows": {"psft_pos": {
                "source": {"system": "erp", "kind": "po", "read": "service", "operation": "MLC_PO_LIST.v1",
                           "path": "purchaseorders", "maxrows": 1000, "sorted": True,
                           "vendors": {"read": "service", "operation": "MLC_VNDR_LIST.v1", "path": "vendors",
                                       "params": {"setid": "SHARE"}}},
                "target": {"system": "jira", "project": "MFG", "issue_type": "Task", "marker_prefix": "psftpo-"},
                "mapping": {
                    "summary": {"template": "PO {BUSINESS_UNIT}-{PO_ID}: {VENDOR_NAME}", "required": True,
                                "max": 255},
                    "description": "Purchase order {PO_ID}, status {PO_STATUS}, vendor {VENDOR_NAME} "
                                   "(terms {VENDOR_TERMS}), buyer {BUYER_ID}, {PO_AMT} {CURRENCY_CD}.\n"
                                   "{LINES_SUMMARY}",
                    "labels": {"list": ["psft", "{BUSINESS_UNIT}"]},
                },
            }},
        }
        path = os.path.join(work, "agent.json")
        json.dump(cfg, open(path, "w"))
        env = harness.agent_env()
        env["MLC_PSFT_PASSWORD"] = "demo-pass"
        p = subprocess.Popen([agent, "-q", "-c", path, "sync", "psft_pos"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        _, st, ru = os.wait4(p.pid, 0)
        out, err = p.stdout.read(), p.stderr.read()
        created = len(jira.ctl("/_sim/issues"))
        if st != 0 or created != n:
            sys.stderr.write(out + err)
            raise SystemExit(f"bench: the PeopleSoft sync created {created} of {n} issues")
        calls = sum(psft.stats()["requests"].values())
        print(f"BENCH psft_cpu_us_per_record {(ru.ru_utime + ru.ru_stime) * 1e6 / n:.1f} us", flush=True)
        print(f"BENCH psft_calls_per_1000_records {calls * 1000.0 / n:.2f} calls", flush=True)
    finally:
        psft.stop()
        jira.stop()


IFS_SECRET = "mlc-secret"
IFS_STATUS_CODES = {"To Do": "Open", "In Progress": "In progress", "Done": "Done"}


def ifs_config(work, ifs, jira, kinds=("po", "wo"), writeback=False, relay=None):
    """An agent configuration with the IFS Cloud flows ifs_pos (purchase
    orders) and ifs_wos (work orders) into Jira; writeback: Jira status into
    the purchase order's custom field Cf_Jira_Status."""
    flows = {
        "po": ("ifs_pos", "PurchaseOrderHandling", "PurchaseOrderSet", "OrderNo", "ifspo-", {
            "summary": {"template": "PO {OrderNo}: {VendorName}", "required": True, "max": 255},
            "description": "Purchase order {OrderNo} ({Objstate}) for project {ProjectId}: {TotalAmount} "
                           "{CurrencyCode}, GL {GlAccount}, cost centre {CostCenter}, buyer {BuyerCode}.",
            "priority": {"from": "SupplierTier", "map": {"A": "High", "B": "Medium", "C": "Low"},
                         "default": "Medium"},
            "labels": {"list": ["ifs", "{ProjectId}"]}}),
        "wo": ("ifs_wos", "ActiveWorkOrdersHandling", "ActiveSeparateSet", "WoNo", "ifswo-", {
            "summary": {"template": "WO {WoNo}: {ErrDescr}", "required": True, "max": 255},
            "description": "Work order {WoNo} ({Objstate}), work type {WorkTypeId}, object {MchCode}, "
                           "GL {GlAccount}, cost centre {CostCenter}.",
            "priority": {"from": "PriorityId", "map": {"1": "Highest", "2": "High", "3": "Medium", "4": "Low"},
                         "default": "Medium"},
            "labels": {"list": ["ifs", "{WorkTypeId}"]}}),
    }
    cfg = {
        "agent": {"state_db": os.path.join(work, "state.db"), "key_file": os.path.join(work, "secret.key"),
                  "log_level": "error", "status_listen": "off"},
        "systems": {
            "ifs": {"type": "ifs", "base_url": ifs.url, "namespace": "mlc", "client_id": "mlc-client",
                    "client_secret": "${MLC_IFS_SECRET}"},
            "jira": {"type": "jira", "base_url": jira.url, "auth": "basic", "email": "sync@example.com",
                     "api_token": "${MLC_JIRA_TOKEN}"},
        },
        "flows": {},
    }
    for k in kinds:
        name, proj, eset, key, prefix, mapping = flows[k]
        src = {"system": "ifs", "projection": proj, "entity_set": eset, "key": key, "changed": "ChangedDate"}
        if k == "wo":
            src["numeric_keys"] = [key]
        cfg["flows"][name] = {"source": src, "schedule": "manual", "mapping": mapping,
                              "target": {"system": "jira", "project": "MFG", "issue_type": "Task",
                                         "marker_prefix": prefix}}
    if writeback:
        cfg["flows"]["ifs_pos"]["writeback"] = {"custom_field": "Jira_Status", "status_map": IFS_STATUS_CODES,
                                                "agent_account": harness.JIRA_SYNC_ACCOUNT}
    if relay is not None:
        cfg["relay"] = relay
    path = os.path.join(work, "agent.json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    env = harness.agent_env()
    env["MLC_IFS_SECRET"] = IFS_SECRET
    return path, env


def ifs_bench(build, n, changes=1000, rate=100):
    """IFS Cloud: a first sync of n purchase and work orders (half each,
    pages of 5,000 through next links) into Jira: agent CPU per record and
    IFS requests per 1,000 records (token, pages, the page-continuity
    probes). Then the way back: `changes` Jira status changes sent as signed
    webhooks to mlc-relay at `rate` per second, through the tunnel into a
    running agent, which PATCHes the purchase order's custom field with
    If-Match: latency from the moment each webhook was sent (this process's
    clock) to the moment the IFS simulator applied the PATCH (its write log's
    at_ms, the same machine's clock)."""
    relay_bin = os.path.abspath(os.path.join(build, "mlc-relay"))
    agent_bin = os.path.abspath(os.path.join(build, "mlc-agent"))
    pos, wos = n // 2, n - n // 2
    work = tempfile.mkdtemp(prefix="mlc-bench-ifs-")
    ifs = harness.Sim("ifs_sim.py", ["--pos", str(pos), "--wos", str(wos)])
    jira = harness.Sim("jira_sim.py", [])
    try:
        path, env = ifs_config(work, ifs, jira)
        t0 = time.monotonic()
        p = subprocess.Popen([agent_bin, "-q", "-c", path, "sync", "--all"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        _, st, ru = os.wait4(p.pid, 0)
        out, err = p.stdout.read(), p.stderr.read()
        wall = time.monotonic() - t0
        created = len(jira.ctl("/_sim/issues"))
        if st != 0 or created != n:
            sys.stderr.write(out + err)
            raise SystemExit(f"bench: the IFS sync created {created} of {n} issues")
        calls = sum(ifs.stats()["requests"].values())
        print(f"bench: {n} IFS purchase and work orders in {wall:.1f}s wall", flush=True)
        print(f"BENCH ifs_cpu_us_per_record {(ru.ru_utime + ru.ru_stime) * 1e6 / n:.1f} us", flush=True)
        print(f"BENCH ifs_calls_per_1000_records {calls * 1000.0 / n:.2f} calls", flush=True)
    finally:
        ifs.stop()
        jira.stop()

    work = tempfile.mkdtemp(prefix="mlc-bench-ifswb-")
    ifs = harness.Sim("ifs_sim.py", ["--pos", str(changes), "--wos", "0"])
    jira = harness.Sim("jira_sim.py", [])
    r = rh.Relay(relay_bin, workdir=work, extra={"log_level": "warn"})
    ten = r.tenant_add("ifswb")
    r.start()
    agent = None
    hooks = rh.HookClient(r.port, relay=r)
    try:
        path, env = ifs_config(work, ifs, jira, kinds=("po",), writeback=True,
                               relay={"url": r.tunnel_url, "tenant": "ifswb", "key": "${MLC_RELAY_KEY}"})
        env["MLC_RELAY_KEY"] = ten["agent_key"]
        res = harness.run_agent(agent_bin, path, "sync", "ifs_pos", env=env)
        issues = {lab[len("ifspo-"):]: it for it in jira.ctl("/_sim/issues")
                  for lab in it["labels"] if lab.startswith("ifspo-")}
        if res.returncode != 0 or len(issues) != changes:
            sys.stderr.write(res.stdout + res.stderr)
            raise SystemExit(f"bench: the IFS write-back setup synced {len(issues)} of {changes} orders")
        agent = subprocess.Popen([agent_bin, "-q", "-c", path, "run"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while r.metrics().get("mlc_relay_tunnels", 0) < 1:
            if time.monotonic() > deadline or agent.poll() is not None:
                raise SystemExit("bench: the agent's tunnel did not come up")
            time.sleep(0.1)
        bodies = [(order, json.dumps(harness.jira_status_event(issue, "In Progress", "To Do")).encode())
                  for order, issue in sorted(issues.items())]
        sent = {}
        start = time.monotonic()
        for i, (order, body) in enumerate(bodies):
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent[order] = time.time() * 1000.0
            status, _ = hooks.jira("ifswb", body, secret=ten["jira_webhook_secret"])
            if status // 100 != 2:
                raise SystemExit(f"bench: the relay answered {status} to webhook {i + 1}")
        took = time.monotonic() - start
        deadline = time.monotonic() + 60
        while True:
            log = ifs.ctl("/_sim/writes?by=api&applied=true")
            writes = {w["key"]: w for w in log}
            if len(writes) >= changes or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        wrong = [k for k, w in writes.items()
                 if w["changes"].get("Cf_Jira_Status", [None, None])[1] != IFS_STATUS_CODES["In Progress"]]
        if len(writes) < changes or wrong or len(log) != len(writes):
            raise SystemExit(f"bench: {len(writes)} of {changes} status changes reached IFS in {len(log)} "
                             f"PATCHes ({len(wrong)} with a wrong value, e.g. {wrong[:3]}); see {work}")
        lat = sorted(writes[k]["at_ms"] - sent[k] for k in sent)
        print(f"bench: {changes} webhooks sent in {took:.1f}s ({changes / took:.0f}/s), "
              f"{len(log)} PATCHes applied, one per change", flush=True)
        print(f"BENCH ifs_writeback_p50_ms {lat[len(lat) // 2]:.1f} ms", flush=True)
        print(f"BENCH ifs_writeback_p99_ms {lat[int(len(lat) * 0.99)]:.1f} ms "
              f"(Jira webhook sent -> IFS PATCH applied, {changes} changes at {rate}/s)", flush=True)
    finally:
        hooks.close()
        if agent:
            agent.terminate()
            agent.wait()
        r.stop()
        ifs.stop()
        jira.stop()


def tree_cpu_s(pid):
    """CPU seconds of a process, its children that have ended (cutime,
    cstime) and its live children: PostgreSQL's postmaster with its
    backends and background workers."""
    def stat(p):
        with open(f"/proc/{p}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    rest = stat(pid)
    ticks = sum(int(x) for x in rest[11:15])
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = stat(d)
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(st[1]) == pid:
                ticks += int(st[11]) + int(st[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def warehouse_bench(agent, n, page):
    """N F0411 rows into PostgreSQL: rows/s (the whole sync, wall clock),
    agent CPU per row, and the load's own rate from load_log."""
    work = tempfile.mkdtemp(prefix="mlc-bench-wh-")
    db = pg.Server(work)
    jde = None
    try:
        db.psql(warehouse.roles_sql("bench-pass"))
        jde = harness.Sim("jde_sim.py", ["--seed", "10", "--ap-invoices", str(n), "--pos", "10"])
        cfg = json.load(open(harness.make_config(work, jde.url, "http://127.0.0.1:1", jde={"page_size": page},
                                                 agent={"log_level": "error"})))
        del cfg["flows"]["jde_workorders"]
        del cfg["systems"]["jira"]
        warehouse.add(cfg, db.port)
        cfg["flows"] = {"warehouse_ap_invoices": cfg["flows"]["warehouse_ap_invoices"]}
        path = os.path.join(work, "agent.json")
        json.dump(cfg, open(path, "w"))
        env = harness.agent_env()
        env[warehouse.PASSWORD_ENV] = "bench-pass"
        r = harness.run_agent(agent, path, "warehouse", "init", env=env)
        if r.returncode != 0:
            sys.stderr.write(r.stdout + r.stderr)
            raise SystemExit("bench: mlc-agent warehouse init failed")
        print(f"bench: loading {n} F0411 rows into PostgreSQL (page size {page})", flush=True)
        pg0, sim0 = tree_cpu_s(db.proc.pid), cpu_ticks(jde.proc.pid)
        t0 = time.monotonic()
        p = subprocess.Popen([agent, "-q", "-c", path, "sync", "warehouse_ap_invoices"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        _, st, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        pg_s = tree_cpu_s(db.proc.pid) - pg0
        sim_s = (cpu_ticks(jde.proc.pid) - sim0) / os.sysconf("SC_CLK_TCK")
        out, err = p.stdout.read(), p.stderr.read()
        rows = int(db.psql(f"SELECT count(*) FROM {warehouse.SCHEMA}.ap_invoices")[0][0])
        if st != 0 or rows != n:
            sys.stderr.write(out + err)
            raise SystemExit(f"bench: the warehouse sync exited with status {st} and left {rows} of {n} rows")
        span, logged = db.psql("SELECT extract(epoch FROM max(finished_at) - min(started_at)), "
                               f"sum(rows_inserted) FROM {warehouse.SCHEMA}.load_log")[0]
        cpu_us = (ru.ru_utime + ru.ru_stime) * 1e6 / n
        print(f"bench: {n} rows in {wall:.1f}s wall; CPU: agent {ru.ru_utime + ru.ru_stime:.1f}s, "
              f"JD Edwards simulator {sim_s:.1f}s, PostgreSQL {pg_s:.1f}s (2 cores shared); "
              f"load_log: {logged} rows, first to last batch {float(span):.2f}s", flush=True)
        print(f"BENCH warehouse_rows_per_s {n / wall:.0f} rows/s (whole sync: JD Edwards simulator read, "
              f"outbox, COPY + merge)")
        print(f"BENCH warehouse_cpu_us_per_row {cpu_us:.1f} us")
        if float(span) > 0:
            print(f"BENCH warehouse_load_rows_per_s {n / float(span):.0f} rows/s (load_log: first to last "
                  f"batch transaction)", flush=True)
    finally:
        if jde:
            jde.stop()
        db.stop()
        # the agent's state of 50,000 rows: nothing to keep
        shutil.rmtree(work, ignore_errors=True)


def tunnel_bench(build):
    """Tunnel throughput: a burst of webhooks (closed loop, 100 connections)
    through the relay into one real agent's inbox, from the first webhook sent
    to the last one durably stored by the agent (both clocks are this machine's)."""
    relay_bin = os.path.abspath(os.path.join(build, "mlc-relay"))
    agent_bin = os.path.abspath(os.path.join(build, "mlc-agent"))
    load = os.path.abspath(os.path.join(build, "bench", "hookload"))
    work = tempfile.mkdtemp(prefix="mlc-bench-tunnel-")
    jde = harness.Sim("jde_sim.py", ["--seed", "10"])
    jira = harness.Sim("jira_sim.py", [])
    r = rh.Relay(relay_bin, workdir=work, extra={"log_level": "warn"})
    ten = r.tenant_add("burst")
    r.start()
    agent = None
    try:
        agent = start_tunnel_agent(agent_bin, work, r, ten, jde, jira)
        n = 30000
        out = subprocess.run([load, "--port", str(r.port), "--tenant", "burst", "--secret",
                              ten["jira_webhook_secret"], "--count", str(n), "--conns", "100",
                              "--prefix", "burst"], capture_output=True, text=True, check=True).stdout
        res = json.loads(out)
        rows = inbox_rows(os.path.join(work, "state.db"), n, 120)
        if len(rows) < n:
            raise SystemExit(f"bench: only {len(rows)} of {n} webhooks reached the agent")
        seconds = (max(x[0] for x in rows) - res["start_ms"]) / 1000.0
        print(f"BENCH tunnel_webhooks_per_s {n / max(seconds, 0.001):.0f} webhooks/s "
              f"({n} in {seconds:.2f}s; relay took them at {res['per_s']:.0f}/s)", flush=True)
    finally:
        if agent:
            agent.terminate()
            agent.wait()
        r.stop()
        jde.stop()
        jira.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build/bench")
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--page-size", type=int, default=500)
    ap.add_argument("--only", choices=["agent", "relay", "ifs", "warehouse"])
    args = ap.parse_args()
    agent = os.path.abspath(os.path.join(args.build, "mlc-agent"))
    if args.only == "ifs":
        ifs_bench(args.build, max(1000, args.records * 2 // 5))
        return 0
    if args.only == "warehouse":
        warehouse_bench(agent, args.records, args.page_size)
        return 0
    if args.only != "agent":
        relay_bench(args.build)
        tunnel_bench(args.build)
    if args.only == "relay":
        return 0
    agent_idle(args.build)
    small = max(1000, args.records // 10)
    print(f"bench: syncing {args.records} work orders (page size {args.page_size}); this takes a few minutes",
          flush=True)
    big = one(agent, args.records, args.page_size)
    print(f"bench: {big['created']} issues in {big['wall']:.1f}s wall", flush=True)
    print(f"BENCH agent_cpu_us_per_record {big['cpu_us']:.1f} us")
    print(f"BENCH agent_resync_cpu_us_per_record {big['resync_cpu_us']:.1f} us")
    print(f"BENCH jira_calls_per_1000_records {big['jira_calls']:.2f} calls")
    print(f"BENCH jde_calls_per_1000_records {big['jde_calls']:.2f} calls")
    print(f"BENCH agent_peak_rss_mb {big['rss_mb']:.1f} MB")
    sm = one(agent, small, args.page_size)
    print(f"BENCH agent_peak_rss_mb_at_{small} {sm['rss_mb']:.1f} MB")
    print(f"BENCH agent_rss_growth_mb {big['rss_mb'] - sm['rss_mb']:.1f} MB")
    if big["created"] != args.records:
        raise SystemExit(f"bench: expected {args.records} issues, got {big['created']}")
    psft_bench(agent, max(1000, args.records * 2 // 5))
    ifs_bench(args.build, max(1000, args.records * 2 // 5))
    warehouse_bench(agent, args.records, args.page_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
