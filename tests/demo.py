#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""make demo: start the JD Edwards and Jira simulators (seeded with a few
hundred realistic work orders), the PeopleSoft and IFS Cloud simulators and
mlc-relay, sync work orders, purchase orders and the rest with the real
agent, start the agent with its relay tunnel and status page, move one Jira
issue to "In Progress" in the simulator and show the status arriving in JD
Edwards (Jira webhook -> relay -> tunnel -> agent -> orchestration), then
move an IFS purchase order's issue to Done and show the status arriving in
the order's custom field in IFS. The warehouse: a throwaway PostgreSQL
server (tests/pg.py) and the Looker simulator; the six warehouse_ flows of
tests/warehouse.py load JD Edwards finance tables into its staging schema,
and the demo shows the row count per staging table and Looker's datagroup
refresh. Then keep everything running until Ctrl-C.
With --once: exit 0 after those round trips."""
import argparse
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import relay_harness as rh  # noqa: E402
import pg  # noqa: E402
import warehouse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import urllib.request  # noqa: E402


PSFT_DEMO_PASSWORD = "demo-pass"
PG_DEMO_PASSWORD = "demo-loader-pass"
LOOKER_DEMO_SECRET = "looker-secret"
PO_STATUS = {"I": "Open", "O": "Open", "LD": "Open", "PA": "Awaiting approval", "A": "Approved", "D": "Approved",
             "PX": "Approved", "DA": "Rejected", "C": "Closed", "X": "Closed"}


def add_psft(cfg, psft):
    """PeopleSoft purchase orders, requisitions and vouchers into the
    Procurement project (PROC), one flow each, every Monday at 06:00."""
    cfg["systems"]["erp"] = {"type": "psft", "base_url": psft.url, "node": "PSFT_EP", "auth": "basic",
                             "user": "MLC_SYNC", "password": "${MLC_PSFT_PASSWORD}"}
    vendors = {"read": "service", "operation": "MLC_VNDR_LIST.v1", "path": "vendors", "params": {"setid": "SHARE"}}
    via = {"Approved": ["Awaiting approval"], "Rejected": ["Awaiting approval"],
           "Closed": ["Awaiting approval", "Approved"]}
    flows = {
        "psft_pos": ("po", "MLC_PO_LIST.v1", "purchaseorders", "Purchase Order", "psftpo-", {
            "summary": {"template": "PO {BUSINESS_UNIT}-{PO_ID}: {VENDOR_NAME}", "required": True, "max": 255},
            "description": "{PO_AMT} {CURRENCY_CD}, vendor terms {VENDOR_TERMS}, buyer {BUYER_ID}.\n{LINES_SUMMARY}",
            "customfield_10061": "{VENDOR_NAME}",
            "customfield_10062": {"from": "PO_AMT"},
            "customfield_10063": {"from": "PO_STATUS", "map": {"A": "Approved", "D": "Approved", "C": "Approved",
                                                               "DA": "Denied"}, "default": "Pending"},
            "status": {"from": "PO_STATUS", "map": PO_STATUS, "default": "Open"},
            "comments": {"items": {"id": "c{SEQ_NUM}", "text": "{OPRID}: {COMMENTS}"}, "each": "comments"},
            "labels": {"list": ["psft", "{BUSINESS_UNIT}"]}}),
        "psft_reqs": ("requisition", "MLC_REQ_LIST.v1", "requisitions", "Requisition", "psftrq-", {
            "summary": {"template": "REQ {BUSINESS_UNIT}-{REQ_ID}: {REQ_NAME}", "required": True, "max": 255},
            "description": "Requested by {REQUESTOR_ID}: {REQ_AMT} {CURRENCY_CD}.\n{LINES_SUMMARY}",
            "customfield_10062": {"from": "REQ_AMT"},
            "labels": {"list": ["psft", "{BUSINESS_UNIT}"]}}),
        "psft_vouchers": ("voucher", "MLC_VCHR_LIST.v1", "vouchers", "Vendor Invoice", "psftvc-", {
            "summary": {"template": "Invoice {INVOICE_ID} from {VENDOR_NAME}", "required": True, "max": 255},
            "description": "Voucher {VOUCHER_ID} of {BUSINESS_UNIT}, due {DUE_DT}.",
            "duedate": {"from": "DUE_DT"},
            "customfield_10060": "{INVOICE_ID}",
            "customfield_10061": "{VENDOR_NAME}",
            "customfield_10062": {"from": "GROSS_AMT"},
            "customfield_10063": {"from": "APPR_STATUS", "map": {"A": "Approved", "D": "Denied"},
                                  "default": "Pending"},
            "labels": {"list": ["psft", "{BUSINESS_UNIT}"]}}),
    }
    for name, (kind, op, path, itype, prefix, mapping) in flows.items():
        cfg["flows"][name] = {
            "source": {"system": "erp", "kind": kind, "read": "service", "operation": op, "path": path,
                       "maxrows": 100, "sorted": True, "vendors": vendors},
            "target": {"system": "jira", "project": "PROC", "issue_type": itype, "marker_prefix": prefix},
            "schedule": "weekly mon 06:00",
            "mapping": mapping,
        }
        if kind == "po":
            cfg["flows"][name]["target"]["status_via"] = via


IFS_DEMO_SECRET = "mlc-secret"
IFS_STATUS_CODES = {"To Do": "Open", "In Progress": "In progress", "Done": "Done"}


def add_ifs(cfg, ifs):
    """IFS Cloud purchase orders (ifs_pos) and work orders (ifs_wos) into the
    Manufacturing or Operations project by IFS project code, every 15
    minutes; a purchase order's Jira status goes back into its custom field
    Cf_Jira_Status (If-Match with the record's ETag)."""
    cfg["systems"]["ifs"] = {"type": "ifs", "base_url": ifs.url, "namespace": "mlc", "client_id": "mlc-client",
                             "client_secret": "${MLC_IFS_SECRET}", "page_size": 100}
    # the Jira project from the IFS project code, the assignee by e-mail or
    # else by IFS user name, GL account and cost centre in custom fields
    project = {"from": "ProjectId", "map": {"PRJ100": "MFG", "PRJ200": "OPS", "PRJ300": "OPS"}, "default": "MFG"}
    people = {"TNOWAK": "tomasz.nowak@example.com"}
    costs = {"customfield_10070": "{GlAccount}", "customfield_10071": "{CostCenter}"}
    flows = {
        "ifs_pos": ("PurchaseOrderHandling", "PurchaseOrderSet", "OrderNo", "ifspo-", {
            "summary": {"template": "PO {OrderNo}: {VendorName}", "required": True, "max": 255},
            "description": "IFS purchase order {OrderNo} ({Objstate}), project {ProjectId}, site {Contract}: "
                           "{TotalAmount} {CurrencyCode}, wanted {WantedDeliveryDate}.\n"
                           "Buyer {BuyerCode} ({BuyerEmail}), GL account {GlAccount}, cost centre {CostCenter}.\n"
                           "{NoteText}",
            "priority": {"from": "SupplierTier", "map": {"A": "High", "B": "Medium", "C": "Low"},
                         "default": "Medium"},
            "duedate": {"from": "WantedDeliveryDate"},
            "project": project,
            "assignee": {"from": ["BuyerEmail", "BuyerCode"], "map": people},
            **costs,
            "labels": {"list": ["ifs", "{ProjectId}"]}}),
        "ifs_wos": ("ActiveWorkOrdersHandling", "ActiveSeparateSet", "WoNo", "ifswo-", {
            "summary": {"template": "WO {WoNo}: {ErrDescr}", "required": True, "max": 255},
            "description": "IFS work order {WoNo} ({Objstate}), work type {WorkTypeId}, object {MchCode}, "
                           "project {ProjectId}.\nWork leader {WorkLeaderSign} ({WorkLeaderEmail}), "
                           "GL account {GlAccount}, cost centre {CostCenter}.",
            "priority": {"from": "PriorityId", "map": {"1": "Highest", "2": "High", "3": "Medium", "4": "Low"},
                         "default": "Medium"},
            "project": project,
            "assignee": {"from": ["WorkLeaderEmail", "WorkLeaderSign"], "map": people},
            **costs,
            "labels": {"list": ["ifs", "{WorkTypeId}"]}}),
    }
    for name, (proj, eset, key, prefix, mapping) in flows.items():
        src = {"system": "ifs", "projection": proj, "entity_set": eset, "key": key, "changed": "ChangedDate"}
        if key == "WoNo":
            src["numeric_keys"] = [key]
        cfg["flows"][name] = {
            "source": src,
            "target": {"system": "jira", "project": "MFG", "issue_type": "Task", "marker_prefix": prefix},
            "schedule": "every 15m",
            "mapping": mapping,
        }
    cfg["flows"]["ifs_pos"]["writeback"] = {
        "custom_field": "Jira_Status", "status_map": IFS_STATUS_CODES,
        "verify": {"Cf_Jira_Status": "{code}"}}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--relay", required=True)
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--orders", type=int, default=400)
    ap.add_argument("--ap-invoices", type=int, default=300, help="F0411 rows for the warehouse flows")
    args = ap.parse_args()
    agent = os.path.abspath(args.agent)
    work = os.path.join(harness.ROOT, "build", "demo")
    os.makedirs(work, exist_ok=True)
    for f in ("state.db", "state.db-wal", "state.db-shm", "relay.db", "relay.db-wal", "relay.db-shm"):
        try:
            os.unlink(os.path.join(work, f))
        except FileNotFoundError:
            pass
    # first, so that a machine without PostgreSQL stops here with nothing else started
    print("demo: starting a local PostgreSQL (the warehouse) and the Looker API simulator")
    # under root the server runs as the postgres user: its files go under /tmp, which that user can reach
    pg_dir = tempfile.mkdtemp(prefix="mlc-demo-pg-")
    try:
        db = pg.Server(pg_dir)
        db.psql(warehouse.roles_sql(PG_DEMO_PASSWORD))
    except RuntimeError as ex:
        print(f"demo: could not start PostgreSQL for the warehouse flows: {ex}\n"
              "demo: `make demo` installs the Debian package postgresql; run it as root or with sudo",
              file=sys.stderr)
        shutil.rmtree(pg_dir, ignore_errors=True)
        return 1
    looker = harness.Sim("looker_sim.py", ["--pg", db.conninfo, "--client-secret", LOOKER_DEMO_SECRET],
                         log=os.path.join(work, "looker-sim.log"))
    print(f"demo: starting the JD Edwards AIS simulator ({args.orders} work orders) and the Jira simulator")
    jde = harness.Sim("jde_sim.py", ["--seed", str(args.orders), "--ap-invoices", str(args.ap_invoices),
                                     "--pos", str(max(10, args.ap_invoices // 5))],
                      log=os.path.join(work, "jde-sim.log"))
    jira = harness.Sim("jira_sim.py", ["--webhook-retry-scale", "0.01", "--projects", "MFG,OPS,PROC",
                                       "--workflow", "PROC=procurement"], log=os.path.join(work, "jira-sim.log"))
    print("demo: starting the PeopleSoft Integration Broker simulator (purchase orders, requisitions, vouchers)")
    psft = harness.Sim("psft_sim.py", ["--auth", "basic", "--pos", "120", "--reqs", "40", "--vouchers", "60",
                                       "--password", PSFT_DEMO_PASSWORD], log=os.path.join(work, "psft-sim.log"))
    print("demo: starting the IFS Cloud simulator (IAM and OData projections: purchase and work orders)")
    ifs = harness.Sim("ifs_sim.py", ["--pos", "150", "--wos", "150", "--client-secret", IFS_DEMO_SECRET],
                      log=os.path.join(work, "ifs-sim.log"))
    relay = rh.Relay(os.path.abspath(args.relay), workdir=work, log=os.path.join(work, "relay.log"))
    tenant = relay.tenant_add("demo")
    relay.start()
    status_port = 8089 if port_free(8089) else rh.free_port()
    status_url = f"http://127.0.0.1:{status_port}/"
    config = harness.make_config(work, jde.url, jira.url, flow={"schedule": "every 1m"},
                                 agent={"log_level": "info", "status_listen": f"127.0.0.1:{status_port}"})
    cfg = json.load(open(config))
    cfg["relay"] = {"url": relay.tunnel_url, "tenant": "demo", "key": "${MLC_RELAY_KEY}",
                    "hook_secret": "${MLC_HOOK_SECRET}", "watch_every": "1m"}
    cfg["flows"]["jde_workorders"]["writeback"] = {
        "orchestration": "MLC_UpdateWOStatus",
        "inputs": {"WorkOrder": "{key}", "Status": "{code}"},
        "verify": {"SRST": "{code}"},
        "status_map": {"To Do": "10", "In Progress": "40", "Done": "95"},
        "hold": {"statuses": ["Blocked"], "orchestration": "MLC_HoldWorkOrder",
                 "inputs": {"WorkOrder": "{key}", "HoldCode": "H1"}, "verify": {"WR10": "H1"}}}
    add_psft(cfg, psft)
    add_ifs(cfg, ifs)
    warehouse.add(cfg, db.port, looker_url=looker.url)
    json.dump(cfg, open(config, "w"), indent=2)
    env = harness.agent_env()
    env["MLC_PSFT_PASSWORD"] = PSFT_DEMO_PASSWORD
    env["MLC_IFS_SECRET"] = IFS_DEMO_SECRET
    env["MLC_RELAY_KEY"] = tenant["agent_key"]
    env["MLC_HOOK_SECRET"] = tenant["jira_webhook_secret"]
    env[warehouse.PASSWORD_ENV] = PG_DEMO_PASSWORD
    env["MLC_LOOKER_SECRET"] = LOOKER_DEMO_SECRET
    print(f"demo: JD Edwards AIS at {jde.url}/jderest, PeopleSoft at {psft.url}, IFS Cloud at {ifs.url}, "
          f"Jira at {jira.url}, relay at {relay.base}, Looker at {looker.url}")
    print(f"demo: PostgreSQL warehouse, schema {warehouse.SCHEMA}: psql \"{db.conninfo}\" (this throwaway "
          f"server trusts loopback, no password; the agent loads as \"{cfg['systems']['warehouse']['dsn']}\" "
          f"with its password from ${warehouse.PASSWORD_ENV})")
    print(f"demo: agent configuration {config}")
    rc = 0
    p = None
    try:
        r = harness.run_agent(agent, config, "ping", env=env)
        sys.stdout.write(r.stdout)
        r = harness.run_agent(agent, config, "warehouse", "init", env=env)
        sys.stdout.write(r.stdout)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            rc = 1
        r = harness.run_agent(agent, config, "sync", "--all", env=env)
        sys.stdout.write(r.stdout)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            rc = 1
        if not show_warehouse(db, looker):
            rc = 1
        issues = jira.ctl("/_sim/issues")
        print(f"demo: Jira now holds {len(issues)} issues, e.g. {issues[0]['key']}: "
              f"{issues[0]['fields']['summary']}" if issues else "demo: Jira holds no issues")
        if not port_free(status_port):
            # taken during the sync (a shared machine): the status page moves
            status_port = rh.free_port()
            status_url = f"http://127.0.0.1:{status_port}/"
            cfg["agent"]["status_listen"] = f"127.0.0.1:{status_port}"
            json.dump(cfg, open(config, "w"), indent=2)
        print("demo: starting the agent with its tunnel to the relay (it registers a Jira webhook)")
        p = subprocess.Popen([agent, "-c", config, "run"], env=env)
        wo, key = round_trip(jde, jira, relay, work)
        if wo is None:
            rc = 1
        if ifs_round_trip(ifs, jira, work) is None:
            rc = 1
        r = harness.run_agent(agent, config, "status", env=env)
        sys.stdout.write(r.stdout)
        try:
            with urllib.request.urlopen(status_url + "api/status", timeout=10) as resp:
                health = json.loads(resp.read())["agent"]["health"]
            print(f"demo: status page: {status_url}  (health: {health}; open it in a browser)")
        except OSError as ex:
            print(f"demo: the status page at {status_url} did not answer: {ex}")
            rc = 1
        if args.once:
            return rc
        print("demo: agent running every minute; change work orders or move issues with\n"
              f"  curl -s -X POST {jde.url}/_sim/touch -d '{{\"count\": 10}}'\n"
              f"  curl -s -X POST {jira.url}/_sim/transition -d '{{\"key\": \"{key}\", \"to\": \"Done\"}}'\n"
              "press Ctrl-C to stop")
        p.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
        relay.stop()
        jde.stop()
        jira.stop()
        psft.stop()
        ifs.stop()
        looker.stop()
        db.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    return rc


def utc(epoch_s):
    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch_s))


def show_warehouse(db, looker):
    """Row counts per staging table (from PostgreSQL) and the refreshes of
    Looker's datagroup (from the simulator's PATCH log); False when a table
    is empty or no refresh was made."""
    ok = True
    counts = []
    for flow, (source, table) in warehouse.FLOWS.items():
        n = int(db.psql(f"SELECT count(*) FROM {warehouse.SCHEMA}.{table}")[0][0])
        counts.append(f"{table} {n} (from {source})")
        ok = ok and n > 0
    print(f"demo: staging tables in {warehouse.SCHEMA}: " + ", ".join(counts))
    runs = db.psql(f"SELECT count(*), coalesce(sum(rows_inserted), 0) FROM {warehouse.SCHEMA}.load_log")[0]
    print(f"demo: {warehouse.SCHEMA}.load_log: {runs[0]} loads, {runs[1]} rows inserted")
    patches = looker.ctl("/_sim/patches")
    # one refresh per pass that changed rows (the six flows share the datagroup)
    if patches:
        last = patches[-1]
        trig = last.get("triggered_at")
        trig_s = f"{trig} ({utc(trig)})" if isinstance(trig, (int, float)) else str(trig)
        print(f"demo: Looker datagroup {last['model']}::{last['name']} (id {last['id']}) refreshed "
              f"{len(patches)} time(s) (once per pass of flows that wrote rows), the last at {utc(last['at'])} "
              f"with triggered_at {trig_s} from Looker's clock (its Date header)")
    if not patches:
        print("demo: Looker's datagroup was not refreshed; see the sync output above and looker-sim.log")
        ok = False
    return ok


def port_free(port):
    import socket
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def round_trip(jde, jira, relay, work):
    """Move one issue in Jira; wait for its work order's status in JD Edwards."""
    import sqlite3
    con = sqlite3.connect(os.path.join(work, "state.db"), timeout=10)
    wo, key = con.execute("SELECT source_key, target_key FROM state_ledger WHERE flow = 'jde_workorders' "
                          "ORDER BY source_key LIMIT 1").fetchone()
    con.close()
    deadline = time.monotonic() + 30
    while relay.metrics().get("mlc_relay_tunnels", 0) < 1 or not jira.ctl("/_sim/webhooks").get("admin"):
        if time.monotonic() > deadline:
            print("demo: the agent did not connect to the relay or register its webhook; see " + relay.log_path)
            return None, key
        time.sleep(0.2)
    print(f"demo: moving Jira issue {key} to In Progress (the Jira simulator sends a signed webhook)")
    jira.ctl("/_sim/transition", {"key": key, "to": "In Progress"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = jde.ctl(f"/_sim/rows?table=F4801&key={wo}")
        if str(row["SRST"]).strip() == "40":
            print(f"demo: JD Edwards work order {wo} now has status 40 (In Progress), written by "
                  f"{str(row['PID']).strip()}: Jira -> relay -> tunnel -> agent -> orchestration")
            return wo, key
        time.sleep(0.2)
    print(f"demo: work order {wo} did not change within 30 s; see {relay.log_path} and the agent log")
    return None, key


def ifs_round_trip(ifs, jira, work):
    """Move one IFS purchase order's issue to Done in Jira; wait for the
    status in the order's custom field Cf_Jira_Status (read from the IFS
    simulator) and show the write: ETag before and after."""
    import sqlite3
    con = sqlite3.connect(os.path.join(work, "state.db"), timeout=10)
    row = con.execute("SELECT source_key, target_key FROM state_ledger WHERE flow = 'ifs_pos' "
                      "ORDER BY source_key LIMIT 1").fetchone()
    con.close()
    if row is None:
        print("demo: no IFS purchase order reached Jira; see the sync output above")
        return None
    order, key = row
    before = ifs.ctl(f"/_sim/rows?kind=po&key={order}")
    was = before.get("Cf_Jira_Status")
    print(f"demo: IFS purchase order {order} ({before['Objstate']}) has Cf_Jira_Status "
          f"{'(empty)' if was is None else repr(was)}; moving its Jira issue {key} to Done "
          "(the Jira simulator sends a signed webhook)")
    jira.ctl("/_sim/transition", {"key": key, "to": "Done"})
    want = IFS_STATUS_CODES["Done"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = ifs.ctl(f"/_sim/rows?kind=po&key={order}")
        if now.get("Cf_Jira_Status") == want:
            writes = ifs.ctl(f"/_sim/writes?kind=po&key={order}&by=api&applied=true")
            w = writes[-1] if writes else {}
            print(f"demo: IFS purchase order {order} now has Cf_Jira_Status {want!r} (PATCH with If-Match, "
                  f"ETag {w.get('etag_before', '?')} -> {w.get('etag_after', '?')}, history log "
                  f"{w.get('log_id', '?')}): Jira -> relay -> tunnel -> agent -> IFS")
            return order
        time.sleep(0.2)
    print(f"demo: purchase order {order} did not change within 30 s; see {os.path.join(work, 'ifs-sim.log')} "
          "and the agent log")
    return None


if __name__ == "__main__":
    sys.exit(main())
