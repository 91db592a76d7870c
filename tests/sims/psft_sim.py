#!/usr/bin/env python3
"""PeopleSoft Integration Broker REST simulator (RESTListeningConnector).

Routing on /PSIGW/RESTListeningConnector/<NODE>/<OP>.v<N>/..., Basic (OPRID)
and OAuth 2.0 bearer authentication with a tiny test IdP, the delivered Query
Access Services ExecuteQuery.v1 (JSON rows with attr:rownumber and
alias-prefixed keys), the proposed custom list services and PO status
write-back of docs/api/peoplesoft.md section 9, in-memory purchase orders,
requisitions, vouchers and vendors, and fault injection (IBResponse XML 500,
HTTP 200 carrying an error, 429/503 with Retry-After).  See
tests/sims/README.md.  Standard library only.
"""

import base64
import bisect
import datetime as dt
import hashlib
import hmac
import json
import random
import re
import secrets
import sys
import threading
import time
from urllib.parse import unquote_plus, urlsplit
from xml.sax.saxutils import escape

import simbase
from simbase import Reply, Route, control_json

PREFIX = "/PSIGW/RESTListeningConnector/"
IDP_TOKEN_PATH = "/oauth2/v1/token"
XML_CT = "text/xml; charset=UTF-8"

# ---------------------------------------------------------------------------
# record kinds

KINDS = {
    "po": {"label": "purchase order", "keys": ("BUSINESS_UNIT", "PO_ID"), "stamp": "LAST_DTTM_UPDATE",
           "status": "PO_STATUS", "list": "purchaseOrders", "filter": ("bu", "BUSINESS_UNIT"),
           "op": "MLC_PO_LIST", "path": "purchaseorders", "line_qty": "QTY_PO", "amount": "PO_AMT"},
    "req": {"label": "requisition", "keys": ("BUSINESS_UNIT", "REQ_ID"), "stamp": "LAST_DTTM_UPDATE",
            "status": "REQ_STATUS", "list": "requisitions", "filter": ("bu", "BUSINESS_UNIT"),
            "op": "MLC_REQ_LIST", "path": "requisitions", "line_qty": "QTY_REQ", "amount": "REQ_AMT"},
    "voucher": {"label": "voucher", "keys": ("BUSINESS_UNIT", "VOUCHER_ID"), "stamp": "LAST_DTTM_UPDATE",
                "status": "APPR_STATUS", "list": "vouchers", "filter": ("bu", "BUSINESS_UNIT"),
                "op": "MLC_VCHR_LIST", "path": "vouchers", "line_qty": None, "amount": "GROSS_AMT"},
    "vendor": {"label": "vendor", "keys": ("SETID", "VENDOR_ID"), "stamp": "LASTUPDDTTM",
               "status": "VENDOR_STATUS", "list": "vendors", "filter": ("setid", "SETID"),
               "op": "MLC_VNDR_LIST", "path": "vendors", "line_qty": None, "amount": None},
}
KIND_ALIASES = {"po": "po", "pos": "po", "purchaseorder": "po", "purchaseorders": "po",
                "req": "req", "reqs": "req", "requisition": "req", "requisitions": "req",
                "voucher": "voucher", "vouchers": "voucher", "vchr": "voucher",
                "vendor": "vendor", "vendors": "vendor", "vndr": "vendor"}

# approval-status transitions a person (or the write-back service) may make
TRANSITIONS = {
    "po": {"I": {"O", "PA", "X"}, "O": {"PA", "A", "X"}, "PA": {"A", "DA", "O", "X"},
           "A": {"D", "O", "PX", "X"}, "D": {"C", "PX"}, "PX": {"X", "D"}, "DA": {"O", "X"},
           "LD": {"PA", "X"}, "C": set(), "X": set()},
    "req": {"I": {"O", "X"}, "O": {"P", "A", "X"}, "P": {"A", "D", "X"}, "A": {"C", "X"},
            "D": {"O", "X"}, "C": set(), "X": set()},
    "voucher": {"P": {"A", "D"}, "D": {"P"}, "A": set()},
    "vendor": {"A": {"I"}, "I": {"A"}},
}
# translate long names, for the QAS option that shows them instead of codes
XLAT = {
    "PO_STATUS": {"I": "Initial", "O": "Open", "PA": "Pending Approval", "A": "Approved",
                  "D": "Dispatched", "C": "Complete", "X": "Canceled", "PX": "Pending Cancel",
                  "DA": "Denied", "LD": "Line Denied"},
    "REQ_STATUS": {"I": "Initial", "O": "Open", "P": "Pending", "A": "Approved", "C": "Complete",
                   "X": "Canceled", "D": "Denied"},
    "APPR_STATUS": {"P": "Pending", "A": "Approved", "D": "Denied"},
}
APPROVED = {"po": {"A", "D", "C", "PX"}, "req": {"A", "C"}, "voucher": {"A"}}

HEADER_COLS = {
    "po": ["BUSINESS_UNIT", "PO_ID", "PO_STATUS", "PO_TYPE", "PO_DT", "VENDOR_SETID", "VENDOR_ID",
           "BUYER_ID", "CURRENCY_CD", "PO_AMT", "APPROVAL_DT", "LAST_DTTM_UPDATE"],
    "req": ["BUSINESS_UNIT", "REQ_ID", "REQ_NAME", "REQ_STATUS", "REQUESTOR_ID", "REQ_DT", "VENDOR_SETID",
            "VENDOR_ID", "CURRENCY_CD", "REQ_AMT", "APPROVAL_DT", "LAST_DTTM_UPDATE"],
    "voucher": ["BUSINESS_UNIT", "VOUCHER_ID", "VOUCHER_STYLE", "INVOICE_ID", "INVOICE_DT", "VENDOR_SETID",
                "VENDOR_ID", "GROSS_AMT", "TXN_CURRENCY_CD", "DUE_DT", "PYMNT_TERMS_CD", "ENTRY_STATUS",
                "APPR_STATUS", "POST_STATUS_AP", "LAST_DTTM_UPDATE"],
    "vendor": ["SETID", "VENDOR_ID", "NAME1", "VENDOR_NAME_SHORT", "VENDOR_STATUS", "PYMNT_TERMS_CD",
               "ENTERED_DT", "LASTUPDDTTM"],
}
LINE_COLS = {"po": ["LINE_NBR", "DESCR254_MIXED", "QTY_PO", "PRICE_PO", "MERCHANDISE_AMT"],
             "req": ["LINE_NBR", "DESCR254_MIXED", "QTY_REQ", "PRICE_REQ", "MERCHANDISE_AMT"]}
COMMENT_COLS = ["SEQ_NUM", "OPRID", "COMMENT_DTTM", "COMMENTS"]


def _qas_queries():
    """Query name -> definition.  Header queries join the vendor (alias B)
    for NAME1; child queries put the header keys under A and the child
    columns under B."""
    q = {}
    names = {"po": "MLC_PO", "req": "MLC_REQ", "voucher": "MLC_VCHR", "vendor": "MLC_VNDR"}
    for kind, base in names.items():
        k = KINDS[kind]
        cols = [("A", c) for c in HEADER_COLS[kind]]
        if kind != "vendor":
            cols.insert(cols.index(("A", "VENDOR_ID")) + 1, ("B", "NAME1"))
        q[base + "_QRY"] = {"kind": kind, "child": None, "cols": cols}
        head = [("A", c) for c in k["keys"]]
        if kind in LINE_COLS:
            q[base + "_LINE_QRY"] = {"kind": kind, "child": "lines",
                                     "cols": head + [("B", c) for c in LINE_COLS[kind]] + [("A", k["stamp"])]}
        if kind != "vendor":
            q[base + "_CMNT_QRY"] = {"kind": kind, "child": "comments",
                                     "cols": head + [("B", c) for c in COMMENT_COLS] + [("A", k["stamp"])]}
    for d in q.values():
        keys = KINDS[d["kind"]]["keys"]
        d["prompts"] = ["FROM_DTTM", "TO_DTTM"] + ["AFTER_" + c for c in keys]
    return q


QUERIES = _qas_queries()

# operation name -> versions, method, handler, writes
OPS = {
    "ExecuteQuery": {"versions": {1}, "method": "GET", "write": False},
    "MLC_PO_LIST": {"versions": {1}, "method": "GET", "write": False},
    "MLC_REQ_LIST": {"versions": {1}, "method": "GET", "write": False},
    "MLC_VCHR_LIST": {"versions": {1}, "method": "GET", "write": False},
    "MLC_VNDR_LIST": {"versions": {1}, "method": "GET", "write": False},
    "MLC_PO_STATUS": {"versions": {1}, "method": "POST", "write": True},
}
LIST_OPS = {KINDS[k]["op"]: k for k in KINDS}

# ---------------------------------------------------------------------------
# generated data

BUS = ["US001", "US002", "EU001"]
VENDOR_NAMES = ["Acme Industrial Supply", "Northwind Traders", "Globex Components", "Initech Office Products",
                "Umbrella Safety Gear", "Stark Fluid Power", "Wayne Metals", "Cyberdyne Electronics",
                "Soylent Facilities", "Tyrell Lab Equipment", "Müller Präzisionsteile GmbH",
                "Société Générale d'Outillage", "O'Brien & Sons Logistics", "Hooli Cloud Services",
                "Vandelay Imports", "Pied Piper Packaging", "Dunder Mifflin Paper", "Oscorp Chemicals",
                "Gringotts Financial Forms", "Aperture Test Instruments"]
TERMS = ["N30", "N45", "N60", "2/10N30", "DUE"]
BUYERS = ["JSMITH", "MGARCIA", "KCHEN", "ANOWAK", "RIYER"]
REQUESTERS = ["LLOPEZ", "TFISCHER", "KMENSAH", "SROSSI", "APATEL", "JCHEN"]
ITEMS = [("Pump seal kit", 128.0), ("Safety gloves, box of 100", 24.5), ("Hydraulic hose 3/4\"", 61.25),
         ("Spindle bearing", 412.0), ("Printer toner", 89.99), ("Laptop docking station", 249.0),
         ("Coolant filter", 37.8), ("Torque sensor", 730.0), ("Pallet wrap", 18.4), ("Servo motor", 1890.0),
         ("Kaffeebohnen 1 kg", 21.9), ("Réactif de laboratoire", 145.0), ("Forklift battery", 3400.0),
         ("Cable ties <200 mm>", 6.75), ("Weld tips & nozzles", 52.0)]
REQ_NAMES = ["Maintenance spares", "Office restock", "Lab consumables", "Line 3 rebuild", "Safety audit kit",
             "IT refresh Q3", "Warehouse supplies", "Tooling for press 2"]
COMMENT_TEXT = ["Please expedite, line down.", "Vendor confirmed ship date.", "Price checked against contract.",
                "Split delivery OK, per buyer.", "Budget approved by cost center 4100.",
                "Invoice matched to receipt, qty 4 of 4.", "Hold: awaiting corrected invoice, \"net 45\" agreed.",
                "Rückfrage beim Lieferanten, Lieferung verspätet.", "Approved; see attached quote #Q-7781."]


def fmt_stamp(d):
    """Internal and custom-service form: YYYY-MM-DDTHH:MM:SS.ffffff."""
    return d.strftime("%Y-%m-%dT%H:%M:%S.%f")


def qas_stamp(s):
    """QAS form: the first 19 characters (seconds)."""
    return s[:19] if isinstance(s, str) else s


_DTTM_RES = [
    re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"),
    re.compile(r"(\d{4})-(\d{2})-(\d{2})-(\d{2})\.(\d{2})\.(\d{2})(?:\.(\d{1,6}))?"),  # PeopleSoft native
    re.compile(r"(\d{4})-(\d{2})-(\d{2})"),
]


def parse_dttm(s):
    """A date-time parameter in internal form, or None when it is not one."""
    s = (s or "").strip()
    for rx in _DTTM_RES:
        m = rx.fullmatch(s)
        if not m:
            continue
        g = m.groups()
        nums = [int(x) for x in g[:6]]
        try:
            d = dt.datetime(*nums)
        except ValueError:
            return None
        us = g[6].ljust(6, "0") if len(g) > 6 and g[6] else "000000"
        return d.strftime("%Y-%m-%dT%H:%M:%S.") + us
    return None


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def b64url_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def ib_xml(msgid, message, params=()):
    """The Integration Broker framework error document."""
    ps = "".join("<Parameter>%s</Parameter>" % escape(str(p)) for p in params)
    return ('<?xml version="1.0"?>\n<IBResponse type="error">\n'
            "<DefaultTitle>Integration Broker Response</DefaultTitle>\n"
            "<StatusCode>20</StatusCode>\n<MessageSet>158</MessageSet>\n"
            "<MessageID>%d</MessageID>\n<DefaultMessage>%s</DefaultMessage>\n%s\n</IBResponse>\n"
            % (msgid, escape(message), "<MessageParameters>%s</MessageParameters>" % ps if ps
               else "<MessageParameters/>")).encode("utf-8")


class PsftSim(simbase.Sim):
    """PeopleSoft Integration Broker REST simulator"""

    name = "psft"

    @staticmethod
    def add_args(p):
        p.add_argument("--node", default="PSFT_EP", help="valid node name(s), comma separated")
        p.add_argument("--auth", default="basic", choices=["basic", "oauth", "both", "none"],
                       help="Req Verification of every operation: Basic, OAuth2 bearer, either, or None "
                            "(runs as --anonymous-user)")
        p.add_argument("--user", default="MLC_SYNC", help="OPRID with permission on every operation")
        p.add_argument("--password", default="demo-pass")
        p.add_argument("--noperm-user", default="PSVIEWER",
                       help="a second OPRID (same password) that signs in but has no permission list "
                            "for any operation")
        p.add_argument("--anonymous-user", default="PSANON", help="the ANONYMOUS node's default user")
        p.add_argument("--perm-status", type=int, default=403, choices=[401, 403],
                       help="status for a signed-in user without permission on the operation")
        p.add_argument("--route-error-status", type=int, default=500,
                       help="status for unknown node / operation / version / URI template (IBResponse XML)")
        p.add_argument("--client-id", default="mlc-client", help="test IdP client id")
        p.add_argument("--client-secret", default="mlc-secret", help="test IdP client secret")
        p.add_argument("--oauth-sub", default=None, help="sub claim of IdP tokens (default: --user)")
        p.add_argument("--jwt-secret", default="psft-sim-jwt-key", help="HS256 key of the test IdP")
        p.add_argument("--token-ttl", type=float, default=3600.0, help="bearer token lifetime, seconds")
        p.add_argument("--pos", type=int, default=200, help="purchase orders to generate")
        p.add_argument("--reqs", type=int, default=60, help="requisitions to generate")
        p.add_argument("--vouchers", type=int, default=80, help="vouchers to generate (about 6%% templates)")
        p.add_argument("--vendors", type=int, default=40, help="vendors to generate (SETID SHARE)")
        p.add_argument("--shared-stamp", type=int, default=0,
                       help="this many purchase orders share one LAST_DTTM_UPDATE")
        p.add_argument("--rng-seed", type=int, default=13)
        p.add_argument("--max-rows", type=int, default=1000,
                       help="custom services return at most this many rows, then truncated:true")
        p.add_argument("--qas-queryname-eq", action="store_true",
                       help='QAS JSON carries the query name under "queryname=" instead of "queryname"')

    def __init__(self, args):
        super().__init__(args)
        self.nodes = {n.strip() for n in args.node.split(",") if n.strip()}
        self.users = {args.user: args.password, args.noperm_user: args.password}
        self.lock = threading.RLock()
        self.tokens = {}  # jti -> {"sub","exp","expired"}
        self.write_log = []
        self.generate(args.pos, args.reqs, args.vouchers, args.vendors, args.shared_stamp, args.rng_seed)

    # ------------------------------------------------------------------
    # stats: per-query counts on top of the per-operation ones

    def _zero_stats(self):
        super()._zero_stats()
        with self.stats_lock:
            self.query_counts = {}

    def stats_snapshot(self):
        s = super().stats_snapshot()
        with self.stats_lock:
            s["queries"] = dict(self.query_counts)
        return s

    def count_query(self, name):
        with self.stats_lock:
            self.query_counts[name] = self.query_counts.get(name, 0) + 1

    # ------------------------------------------------------------------
    # data

    def generate(self, n_po, n_req, n_vchr, n_vndr, shared, rng_seed):
        rng = random.Random(rng_seed)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        today = now.date()
        busy_days = rng.sample(range(1, 61), 8)
        batch = [(rng.choice(busy_days), rng.choice([1, 2, 5, 22]), rng.choice([0, 15, 30, 45]))
                 for _ in range(max(3, (n_po + n_req + n_vchr) // 40))]

        def stamp():
            x = rng.random()
            if x < 0.25:  # nightly batch jobs: many rows on one second
                days, hh, mm = rng.choice(batch)
                d = dt.datetime.combine(today - dt.timedelta(days=days), dt.time(hh, mm, 0))
            else:
                days = rng.choice(busy_days) if x < 0.6 else rng.randint(1, 60)
                d = dt.datetime.combine(today - dt.timedelta(days=days),
                                        dt.time(rng.randint(7, 19), rng.randint(0, 59), rng.randint(0, 59)))
            return d

        def comments(upd, n=None):
            out = []
            n = rng.choices([0, 0, 0, 1, 2])[0] if n is None else n
            for i in range(n):
                c = upd - dt.timedelta(hours=rng.randint(1, 72) * (n - i))
                out.append({"SEQ_NUM": i + 1, "OPRID": rng.choice(BUYERS + REQUESTERS),
                            "COMMENT_DTTM": fmt_stamp(c), "COMMENTS": rng.choice(COMMENT_TEXT)})
            return out

        def lines(kind):
            out = []
            for i in range(rng.randint(1, 4)):
                item, price = rng.choice(ITEMS)
                qty = rng.randint(1, 20)
                ln = {"LINE_NBR": i + 1, "DESCR254_MIXED": item}
                if kind == "po":
                    ln.update({"QTY_PO": qty, "PRICE_PO": price, "MERCHANDISE_AMT": round(qty * price, 2)})
                else:
                    ln.update({"QTY_REQ": qty, "PRICE_REQ": price, "MERCHANDISE_AMT": round(qty * price, 2)})
                out.append(ln)
            return out

        vendors = []
        for i in range(n_vndr):
            name = VENDOR_NAMES[i % len(VENDOR_NAMES)]
            if i >= len(VENDOR_NAMES):
                name = "%s %d" % (name, i // len(VENDOR_NAMES) + 1)
            upd = stamp()
            vendors.append({"SETID": "SHARE", "VENDOR_ID": "%010d" % (i + 1), "NAME1": name[:40],
                            "VENDOR_NAME_SHORT": re.sub(r"[^A-Z0-9]", "", name.upper())[:14],
                            "VENDOR_STATUS": "A" if rng.random() < 0.92 else "I",
                            "PYMNT_TERMS_CD": rng.choice(TERMS),
                            "ENTERED_DT": (upd.date() - dt.timedelta(days=rng.randint(30, 900))).isoformat(),
                            "LASTUPDDTTM": fmt_stamp(upd)})
        vids = [v["VENDOR_ID"] for v in vendors] or ["0000000001"]

        pos = []
        for i in range(n_po):
            upd = stamp()
            st = rng.choices(["I", "O", "PA", "A", "D", "C", "X"], [1, 2, 3, 3, 6, 3, 1])[0]
            ls = lines("po")
            pos.append({"BUSINESS_UNIT": rng.choice(BUS), "PO_ID": "%010d" % (10000 + i), "PO_STATUS": st,
                        "PO_TYPE": "KAN" if rng.random() < 0.05 else "GEN",
                        "PO_DT": (upd.date() - dt.timedelta(days=rng.randint(0, 20))).isoformat(),
                        "VENDOR_SETID": "SHARE", "VENDOR_ID": rng.choice(vids), "BUYER_ID": rng.choice(BUYERS),
                        "CURRENCY_CD": "EUR" if rng.random() < 0.15 else "USD",
                        "PO_AMT": round(sum(x["MERCHANDISE_AMT"] for x in ls), 2),
                        "APPROVAL_DT": ((upd.date() - dt.timedelta(days=rng.randint(0, 5))).isoformat()
                                        if st in APPROVED["po"] else None),
                        "LAST_DTTM_UPDATE": fmt_stamp(upd), "lines": ls, "comments": comments(upd)})
        if shared > 0 and pos:
            one = fmt_stamp(dt.datetime.combine(today - dt.timedelta(days=30), dt.time(2, 0, 0)))
            for r in rng.sample(pos, min(shared, len(pos))):
                r["LAST_DTTM_UPDATE"] = one
                for c in r["comments"]:
                    c["COMMENT_DTTM"] = min(c["COMMENT_DTTM"], one)

        reqs = []
        for i in range(n_req):
            upd = stamp()
            st = rng.choices(["I", "O", "P", "A", "C", "X", "D"], [1, 3, 3, 4, 2, 1, 1])[0]
            ls = lines("req")
            reqs.append({"BUSINESS_UNIT": rng.choice(BUS), "REQ_ID": "%010d" % (500 + i),
                         "REQ_NAME": rng.choice(REQ_NAMES), "REQ_STATUS": st,
                         "REQUESTOR_ID": rng.choice(REQUESTERS),
                         "REQ_DT": (upd.date() - dt.timedelta(days=rng.randint(0, 10))).isoformat(),
                         "VENDOR_SETID": "SHARE", "VENDOR_ID": rng.choice(vids),
                         "CURRENCY_CD": "USD", "REQ_AMT": round(sum(x["MERCHANDISE_AMT"] for x in ls), 2),
                         "APPROVAL_DT": (upd.date().isoformat() if st in APPROVED["req"] else None),
                         "LAST_DTTM_UPDATE": fmt_stamp(upd), "lines": ls, "comments": comments(upd)})

        vchrs = []
        for i in range(n_vchr):
            upd = stamp()
            tmpl = rng.random() < 0.06
            style = "TMPL" if tmpl else rng.choices(["REG", "ADJ", "JRNL", "PPAY", "SGLP"], [20, 2, 1, 1, 1])[0]
            inv_dt = upd.date() - dt.timedelta(days=rng.randint(1, 30))
            vid = rng.choice(vids)
            terms = next((v["PYMNT_TERMS_CD"] for v in vendors if v["VENDOR_ID"] == vid), "N30")
            days = {"N30": 30, "N45": 45, "N60": 60, "2/10N30": 30, "DUE": 0}[terms]
            appr = rng.choices(["P", "A", "D"], [4, 5, 1])[0]
            vchrs.append({"BUSINESS_UNIT": rng.choice(BUS), "VOUCHER_ID": "%08d" % (1200 + i),
                          "VOUCHER_STYLE": style,
                          "INVOICE_ID": ("TEMPLATE-%d" % i) if tmpl else "INV-%d/%04d" % (inv_dt.year, i + 1),
                          "INVOICE_DT": inv_dt.isoformat(), "VENDOR_SETID": "SHARE", "VENDOR_ID": vid,
                          "GROSS_AMT": round(rng.uniform(50, 25000), 2),
                          "TXN_CURRENCY_CD": "USD", "DUE_DT": (inv_dt + dt.timedelta(days=days)).isoformat(),
                          "PYMNT_TERMS_CD": terms, "ENTRY_STATUS": "R" if appr != "P" else rng.choice("RP"),
                          "APPR_STATUS": appr, "POST_STATUS_AP": "P" if appr == "A" and rng.random() < 0.5 else "N",
                          "LAST_DTTM_UPDATE": fmt_stamp(upd), "comments": comments(upd)})

        with self.lock:
            self.gen = getattr(self, "gen", 0) + 1
            self.order_cache = {}
            self.data = {"po": pos, "req": reqs, "voucher": vchrs, "vendor": vendors}
            self.index = {k: {self.key_of(k, r): r for r in rows} for k, rows in self.data.items()}
            self.touch_rng = random.Random(rng_seed + 1)
            last = max((r[KINDS[k]["stamp"]] for k, rows in self.data.items() for r in rows), default=None)
            self.clock_last = dt.datetime.strptime(last, "%Y-%m-%dT%H:%M:%S.%f") if last else None

    @staticmethod
    def key_of(kind, r):
        return tuple(r[c] for c in KINDS[kind]["keys"])

    def tick(self):
        """Next modification stamp: now (whole seconds), strictly later than
        every stamp handed out or present in the data (caller holds the lock)."""
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        if self.clock_last is not None and now <= self.clock_last:
            now = self.clock_last + dt.timedelta(seconds=1)
        self.clock_last = now
        self.gen += 1  # a stamp is about to move: the (stamp, key) order is stale
        return fmt_stamp(now)

    def vendor_name(self, setid, vid):
        v = self.index["vendor"].get((setid, vid))
        return v["NAME1"] if v else None

    # ------------------------------------------------------------------
    # error shapes

    def error_body(self, status, message):
        """Handler-chosen error of the custom services (section 9 proposal);
        also used for simbase's 429/503 and malformed-request answers."""
        return {"status": "error", "code": "MLC-%04d" % status, "message": message}

    def svc_error(self, status, code, message):
        return Reply(status, {"status": "error", "code": code, "message": message})

    def qas_error(self, status, message):
        return Reply(status, {"status": "fail", "message": message})

    def ib_error(self, status, msgid, message, params=(), headers=None, note=None):
        hd = {"Content-Type": XML_CT}
        hd.update(headers or {})
        return Reply(status, raw=ib_xml(msgid, message, params), headers=hd, note=note)

    def route_error(self, msgid, message, params):
        return self.ib_error(self.args.route_error_status, msgid, message, params)

    # ------------------------------------------------------------------
    # auth

    def now(self):
        return time.time() + self.fault_num("clock_skew_s", 0)

    def mint(self, sub, ttl):
        now = int(self.now())
        jti = secrets.token_hex(12)
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        claims = {"iss": "http://127.0.0.1:%d%s" % (self.port, IDP_TOKEN_PATH[:-len("/token")]),
                  "sub": sub, "aud": "PeopleSoft", "iat": now, "exp": now + int(ttl), "jti": jti,
                  "client_id": self.args.client_id}
        body = b64url(json.dumps(claims, separators=(",", ":")).encode())
        sig = hmac.new(self.args.jwt_secret.encode(), ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest()
        with self.lock:
            self.tokens[jti] = {"sub": sub, "exp": now + int(ttl), "expired": False}
        return "%s.%s.%s" % (head, body, b64url(sig)), int(ttl)

    def auth_401(self, message, scheme):
        if scheme == "Bearer":
            www = 'Bearer realm="PeopleSoft", error="invalid_token"'
        else:
            www = 'Basic realm="PeopleSoft"'
        return self.ib_error(401, 10301, message, headers={"WWW-Authenticate": www})

    def check_bearer(self, tok):
        """OPRID for a valid bearer token; raises a 401."""
        parts = tok.split(".")
        try:
            if len(parts) != 3:
                raise ValueError
            want = hmac.new(self.args.jwt_secret.encode(), ("%s.%s" % (parts[0], parts[1])).encode(),
                            hashlib.sha256).digest()
            if not hmac.compare_digest(want, b64url_dec(parts[2])):
                raise ValueError
            claims = json.loads(b64url_dec(parts[1]))
            if not isinstance(claims, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise self.auth_401("OAuth2 access token is not a valid JWT from the trusted identity provider",
                                "Bearer")
        with self.lock:
            rec = self.tokens.get(claims.get("jti"))
            if rec is None:
                raise self.auth_401("OAuth2 access token was not issued by the trusted identity provider",
                                    "Bearer")
            if rec["expired"] or self.now() >= rec["exp"]:
                raise self.auth_401("OAuth2 access token has expired", "Bearer")
        sub = claims.get("sub")
        if sub not in self.users:
            raise self.auth_401("OAuth2 token subject does not map to a PeopleSoft user", "Bearer")
        return sub

    def authenticate(self, h):
        mode = self.args.auth
        if mode == "none":
            return self.args.anonymous_user
        tok = h.bearer()
        if tok is not None:
            if mode == "basic":
                raise self.auth_401("Service operation requires Basic authentication; a bearer token "
                                    "was sent", "Basic")
            return self.check_bearer(tok)
        ba = h.basic_auth()
        if ba is not None:
            if mode == "oauth":
                raise self.auth_401("Service operation requires OAuth2 authentication; Basic credentials "
                                    "were sent", "Bearer")
            user, pw = ba
            if self.take("basic_401") or user not in self.users or not hmac.compare_digest(
                    self.users[user].encode(), pw.encode()):
                raise self.auth_401("Authentication failed: invalid user ID or password", "Basic")
            return user
        raise self.auth_401("No credentials: the service operation requires authentication",
                            "Bearer" if mode == "oauth" else "Basic")

    def check_perm(self, user, op):
        if user == self.args.noperm_user:
            raise self.ib_error(int(self.fault_num("perm_status", self.args.perm_status)), 10302,
                                "User %s is not authorized to invoke service operation %s" % (user, op),
                                [user, op])

    def h_idp_token(self, h):
        """The test fixture IdP: client_credentials, client authenticated by
        Basic or by form fields."""
        form = {}
        if h.body:
            for part in h.body.decode("utf-8", "replace").split("&"):
                if part:
                    k, _, v = part.partition("=")
                    form[unquote_plus(k)] = unquote_plus(v)
        cid, csec = form.get("client_id"), form.get("client_secret")
        ba = h.basic_auth()
        if ba is not None:
            cid, csec = unquote_plus(ba[0]), unquote_plus(ba[1])
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type",
                               "error_description": "only client_credentials is supported"})
        if cid != self.args.client_id or csec is None or not hmac.compare_digest(
                csec.encode(), self.args.client_secret.encode()):
            return Reply(401, {"error": "invalid_client", "error_description": "Client authentication failed"})
        tok, ttl = self.mint(self.args.oauth_sub or self.args.user,
                             self.fault_num("token_ttl", self.args.token_ttl))
        return Reply(200, {"access_token": tok, "token_type": "Bearer", "expires_in": ttl})

    # ------------------------------------------------------------------
    # routing

    def route(self, method, path, h):
        if path == IDP_TOKEN_PATH and method == "POST":
            return Route("idp_token", lambda: self.h_idp_token(h))
        if not path.startswith(PREFIX):
            return None
        parts = path[len(PREFIX):].split("/")
        if parts and parts[-1] == "":
            parts.pop()
        node = parts[0] if parts else ""
        if node not in self.nodes:
            return Route("unknown_node", lambda: self.route_error(
                10201, "Integration Gateway: unknown node '%s'; no routing to a target database" % node, [node]))
        opseg = parts[1] if len(parts) > 1 else ""
        m = re.fullmatch(r"([A-Za-z0-9_]+)\.[vV](\d+)", opseg)
        if not m or m.group(1) not in OPS:
            opname = m.group(1) if m else opseg
            return Route("unknown_operation", lambda: self.route_error(
                10202, "No REST service operation '%s' is defined for node %s" % (opseg, node), [opname]))
        op, ver = m.group(1), int(m.group(2))
        spec = OPS[op]
        if ver not in spec["versions"]:
            return Route("unknown_version", lambda: self.route_error(
                10203, "Service operation %s has no version v%d (defined: %s)"
                % (op, ver, ", ".join("v%d" % v for v in sorted(spec["versions"]))), [op, "v%d" % ver]))
        if method != spec["method"]:
            return Route("unknown_operation", lambda: self.route_error(
                10202, "No REST service operation %s_%s is defined (the operation takes %s)"
                % (op, method, spec["method"]), [op, method]))
        tmpl = parts[2:]
        return Route(op, lambda: self.serve(h, op, tmpl), write=spec["write"])

    def serve(self, h, op, tmpl):
        if self.take("ib_500"):
            return self.ib_error(500, 10001, "Integration Gateway failure: the application server did not "
                                             "answer (simulated)", [op], note="fault=ib_500")
        if self.take("ib_200"):
            r = self.ib_error(200, 10001, "Integration Broker error returned with HTTP 200 (simulated)", [op],
                              note="fault=ib_200")
            return r
        user = self.authenticate(h)
        self.check_perm(user, op)
        qas = op == "ExecuteQuery"
        if self.take("error_200"):
            msg = "Simulated handler error returned with HTTP 200"
            r = self.qas_error(200, msg) if qas else self.svc_error(200, "MLC-0001", msg)
            r.note = "fault=error_200"
            return r
        if self.take("error_500"):
            msg = "Simulated handler failure"
            r = self.qas_error(500, msg) if qas else self.svc_error(500, "MLC-0001", msg)
            r.note = "fault=error_500"
            return r
        if qas:
            reply = self.h_qas(h, op, tmpl)
        elif op in LIST_OPS:
            reply = self.h_list(h, op, LIST_OPS[op], tmpl)
        else:
            reply = self.h_po_status(h, op, tmpl, user)
        if reply.status == 200 and reply.raw is None and self.take("malformed"):
            raw = simbase.json_bytes(reply.obj)
            return Reply(200, raw=raw[:max(1, len(raw) // 2)], note="fault=malformed")
        return reply

    def template_error(self, op, tmpl, want):
        return self.route_error(10204, "No URI template of service operation %s matches '%s' (expected %s)"
                                % (op, "/".join(tmpl), want), [op])

    # ------------------------------------------------------------------
    # windows

    def ordered(self, kind):
        """(sort keys, rows) of kind in (stamp, key) order, rebuilt after any
        stamp moved.  Caller holds the lock."""
        c = self.order_cache.get(kind)
        if c is None or c[0] != self.gen:
            sc = KINDS[kind]["stamp"]
            rows = sorted(self.data[kind], key=lambda r: (r[sc],) + self.key_of(kind, r))
            c = (self.gen, [(r[sc],) + self.key_of(kind, r) for r in rows], rows)
            self.order_cache[kind] = c
        return c[1], c[2]

    def window_rows(self, kind, frm, to, after, flt, limit=None):
        """Rows of kind with frm <= stamp < to (either bound may be None),
        minus the rows at stamp == frm whose key is <= after; ordered by
        (stamp, key); at most limit rows.  Caller holds the lock."""
        fcol = KINDS[kind]["filter"][1]
        keys, rows = self.ordered(kind)
        if frm is None:
            i = 0
        elif after is None:
            i = bisect.bisect_left(keys, (frm,))
        else:
            i = bisect.bisect_right(keys, (frm,) + tuple(after))
        out = []
        while i < len(rows) and (limit is None or len(out) < limit):
            if to is not None and keys[i][0] >= to:
                break
            r = rows[i]
            i += 1
            if flt is None or r[fcol] == flt:
                out.append(r)
        return out

    # ------------------------------------------------------------------
    # custom services (section 9)

    def custom_row(self, kind, r):
        o = {c: r[c] for c in HEADER_COLS[kind]}
        if kind in LINE_COLS:
            o["lines"] = [dict(x) for x in r["lines"]]
        if kind != "vendor":
            o["comments"] = [dict(x) for x in r["comments"]]
        return o

    def h_list(self, h, op, kind, tmpl):
        k = KINDS[kind]
        if tmpl != [k["path"]]:
            return self.template_error(op, tmpl, k["path"])
        fname = k["filter"][0]
        allowed = {"fromDttm", "toDttm", "maxRows", "afterKey", fname}
        bad = sorted(set(h.query) - allowed)
        if bad:
            return self.svc_error(400, "MLC-0002", "Unknown parameter(s) %s for %s (accepted: %s)"
                                  % (", ".join(bad), op, ", ".join(sorted(allowed))))
        frm = to = None
        for name in ("fromDttm", "toDttm"):
            v = h.qparam(name)
            if v is None:
                continue
            p = parse_dttm(v)
            if p is None:
                return self.svc_error(400, "MLC-0002", "Parameter %s '%s' is not a date-time "
                                      "(expected YYYY-MM-DDTHH:MM:SS[.ffffff])" % (name, v))
            if name == "fromDttm":
                frm = p
            else:
                to = p
        cap = int(self.fault_num("max_rows", self.args.max_rows))
        mr = h.qparam("maxRows")
        if mr is not None:
            try:
                n = int(mr)
                if n <= 0:
                    raise ValueError
            except ValueError:
                return self.svc_error(400, "MLC-0002", "Parameter maxRows '%s' must be a positive integer" % mr)
            cap = min(cap, n) if cap > 0 else n
        after = None
        ak = h.qparam("afterKey")
        if ak is not None:
            after = tuple(ak.split(","))
            if len(after) != len(k["keys"]):
                return self.svc_error(400, "MLC-0002", "Parameter afterKey '%s' must hold %d comma-separated "
                                      "values (%s)" % (ak, len(k["keys"]), ",".join(k["keys"])))
            if frm is None:
                return self.svc_error(400, "MLC-0002", "Parameter afterKey needs fromDttm")
        with self.lock:
            rows = self.window_rows(kind, frm, to, after, h.qparam(fname), cap + 1 if cap > 0 else None)
            trunc = cap > 0 and len(rows) > cap
            if trunc:
                rows = rows[:cap]
            out = [self.custom_row(kind, r) for r in rows]
        return Reply(200, {"status": "success", "count": len(out), "truncated": trunc, k["list"]: out})

    def h_po_status(self, h, op, tmpl, user):
        if len(tmpl) != 4 or tmpl[0] != "purchaseorders" or tmpl[3] != "status":
            return self.template_error(op, tmpl, "purchaseorders/{BU}/{PO_ID}/status")
        bu, po = unquote_plus(tmpl[1]), unquote_plus(tmpl[2])
        try:
            body = json.loads(h.body.decode("utf-8")) if h.body.strip() else None
        except (UnicodeDecodeError, ValueError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("PO_STATUS"), str):
            return self.svc_error(400, "MLC-0002", 'Body must be a JSON object with "PO_STATUS" (and optional '
                                                   '"COMMENT")')
        new = body["PO_STATUS"].strip()
        cmt = body.get("COMMENT")
        with self.lock:
            r = self.index["po"].get((bu, po))
            entry = {"seq": len(self.write_log) + 1, "op": op, "BUSINESS_UNIT": bu, "PO_ID": po,
                     "PO_STATUS": new, "COMMENT": cmt, "oprid": user}
            if r is None:
                entry["status"] = 404
                self.write_log.append(entry)
                return self.svc_error(404, "MLC-0404", "Purchase order %s/%s does not exist" % (bu, po))
            err = self.transition(kind="po", r=r, new=new)
            if err:
                entry["status"] = 409
                self.write_log.append(entry)
                return self.svc_error(409, "MLC-0409", err)
            if isinstance(cmt, str) and cmt.strip():
                self.add_comment("po", r, cmt, user, bump=False)
            entry["status"] = 200
            self.write_log.append(entry)
        return Reply(200, {"status": "success"})

    def transition(self, kind, r, new, force=False):
        """Apply an approval-status change; an error text when the rules
        forbid it.  Caller holds the lock."""
        col = KINDS[kind]["status"]
        old = r[col]
        rules = TRANSITIONS[kind]
        if new not in rules:
            return "%s '%s' is not a valid %s status (valid: %s)" % (col, new, KINDS[kind]["label"],
                                                                  ", ".join(sorted(rules)))
        if not force and new not in rules.get(old, set()):
            return "%s %s cannot change from %s to %s (allowed from %s: %s)" % (
                KINDS[kind]["label"], "/".join(self.key_of(kind, r)), old, new, old,
                ", ".join(sorted(rules.get(old, ()))) or "none")
        stamp = self.tick()
        r[col] = new
        if kind in APPROVED:
            if new in APPROVED[kind] and not r.get("APPROVAL_DT") and "APPROVAL_DT" in r:
                r["APPROVAL_DT"] = stamp[:10]
            if kind == "voucher" and new == "A":
                r["ENTRY_STATUS"] = "R"
        r[KINDS[kind]["stamp"]] = stamp
        return None

    def add_comment(self, kind, r, text, oprid, bump=True):
        stamp = self.tick() if bump else r[KINDS[kind]["stamp"]]
        c = {"SEQ_NUM": len(r["comments"]) + 1, "OPRID": oprid, "COMMENT_DTTM": stamp, "COMMENTS": text}
        r["comments"].append(c)
        r[KINDS[kind]["stamp"]] = stamp  # the service's row carries its comments: it counts as changed
        return c

    # ------------------------------------------------------------------
    # Query Access Services

    def h_qas(self, h, op, tmpl):
        if len(tmpl) != 4:
            return self.template_error(op, tmpl, "{OwnerType}/{QueryName}/{OutResultType}/{OutResultFormat}")
        owner, qname, rtype, rfmt = (unquote_plus(x) for x in tmpl)
        self.count_query(qname)
        raw = {}
        for part in urlsplit(h.path).query.split("&"):
            if part:
                k, _, v = part.partition("=")
                raw.setdefault(unquote_plus(k).lower(), v)
        if owner.upper() not in ("PUBLIC", "PRIVATE"):
            return self.qas_error(400, "OwnerType '%s' is not valid (PUBLIC or PRIVATE)" % owner)
        q = QUERIES.get(qname) if owner.upper() == "PUBLIC" else None
        if q is None:
            return self.qas_error(404, "Query %s does not exist for owner %s or the user has no access to it"
                                  % (qname, owner.upper()))
        if rtype.upper() not in ("JSON", "XMLP", "WEBROWSET"):
            return self.qas_error(400, "OutResultType '%s' is not supported (JSON, XMLP, WEBROWSET)" % rtype)
        if rfmt.upper() != "NONFILE":
            return self.qas_error(400, "OutResultFormat '%s' is not supported here (NONFILE)" % rfmt)
        if unquote_plus(raw.get("isconnectedquery", "n")).lower() not in ("n", ""):
            return self.qas_error(400, "Connected queries are not served (isconnectedquery=n)")
        mr = raw.get("maxrows")
        if mr is None:
            return self.qas_error(400, "maxrows (MaxRow) is required")
        try:
            maxrows = int(unquote_plus(mr))
            if maxrows < 0:
                raise ValueError
        except ValueError:
            return self.qas_error(400, "maxrows '%s' must be a whole number >= 0" % unquote_plus(mr))
        names_raw, vals_raw = raw.get("prompt_uniquepromptname"), raw.get("prompt_fieldvalue")
        # commas separate prompts only when they travel unencoded (%2C stays
        # inside one value, as a field note warns)
        names = [unquote_plus(x) for x in names_raw.split(",")] if names_raw else []
        vals = [unquote_plus(x) for x in vals_raw.split(",")] if vals_raw is not None else []
        if len(names) != len(vals):
            return self.qas_error(400, "prompt_uniquepromptname has %d name(s) but prompt_fieldvalue has %d "
                                       "value(s); separate both lists with unencoded commas"
                                  % (len(names), len(vals)))
        prompts = {}
        for n, v in zip(names, vals):
            if n not in q["prompts"]:
                return self.qas_error(400, "Prompt %s is not a prompt of query %s (prompts: %s)"
                                      % (n, qname, ", ".join(q["prompts"])))
            prompts[n] = v
        kind = q["kind"]
        keys = KINDS[kind]["keys"]
        win = {}
        for n in ("FROM_DTTM", "TO_DTTM"):
            v = prompts.get(n, "").strip()
            if not v:
                return self.qas_error(400, "Prompt %s of query %s needs a value" % (n, qname))
            p = parse_dttm(v)
            if p is None:
                return self.qas_error(400, "Prompt %s value '%s' is not a date-time (YYYY-MM-DDTHH:MM:SS)" % (n, v))
            win[n] = p
        after = tuple(prompts.get("AFTER_" + c, "") for c in keys)
        if all(after):
            pass
        elif any(after):
            return self.qas_error(400, "Prompts %s must all have values, or none"
                                  % ", ".join("AFTER_" + c for c in keys))
        else:
            after = None
        json_out = unquote_plus(raw.get("json_resp", "")).lower() == "true"
        xlat_long = self.fault_flag("qas_xlat_long")
        with self.lock:
            parents = self.window_rows(kind, win["FROM_DTTM"], win["TO_DTTM"], after, None,
                                       (maxrows or None) if q["child"] is None else None)
            rows = []
            for r in parents:
                if q["child"] is None:
                    rows.append(self.qas_row(q, kind, r, None, xlat_long))
                else:
                    for c in r[q["child"]]:
                        rows.append(self.qas_row(q, kind, r, c, xlat_long))
                if maxrows and len(rows) >= maxrows:
                    break
            if maxrows:
                rows = rows[:maxrows]
        for i, row in enumerate(rows):
            row["attr:rownumber"] = i + 1
        if not json_out:
            return self.qas_xml(qname, q, rows)
        qkey = "queryname=" if (self.args.qas_queryname_eq or self.fault_flag("qas_queryname_eq")) else "queryname"
        return Reply(200, {"status": "success",
                           "data": {"query": {"numrows": len(rows), qkey: qname, "rows": rows}}})

    def qas_row(self, q, kind, r, child, xlat_long):
        out = {"attr:rownumber": 0}
        for alias, col in q["cols"]:
            if alias == "B" and child is None:
                v = self.vendor_name(r["VENDOR_SETID"], r["VENDOR_ID"])
            elif alias == "B":
                v = child[col]
            else:
                v = r[col]
            if v is None:
                v = ""
            elif col in ("LAST_DTTM_UPDATE", "LASTUPDDTTM", "COMMENT_DTTM"):
                v = qas_stamp(v)
            elif xlat_long and col in XLAT:
                v = XLAT[col].get(v, v)
            out["%s.%s" % (alias, col)] = v
        return out

    def qas_xml(self, qname, q, rows):
        parts = ['<?xml version="1.0"?>\n<query numrows="%d" queryname="%s">' % (len(rows), escape(qname))]
        for row in rows:
            parts.append('<row rownumber="%d">' % row["attr:rownumber"])
            for alias, col in q["cols"]:
                parts.append("<%s>%s</%s>" % (col, escape(str(row["%s.%s" % (alias, col)])), col))
            parts.append("</row>")
        parts.append("</query>\n")
        return Reply(200, raw="".join(parts).encode("utf-8"), headers={"Content-Type": XML_CT})

    # ------------------------------------------------------------------
    # control endpoints

    def ctl_kind(self, b):
        kind = KIND_ALIASES.get(str(b.get("kind") or "po").lower())
        if kind is None:
            raise Reply(400, {"error": "kind must be po, req, voucher or vendor"})
        return kind

    def ctl_row(self, kind, key):
        """The row a control request names: key "BU/ID" or a list or an object."""
        cols = KINDS[kind]["keys"]
        if isinstance(key, dict):
            t = tuple(str(key.get(c, "")) for c in cols)
        elif isinstance(key, list):
            t = tuple(str(x) for x in key)
        else:
            t = tuple(str(key or "").split("/", len(cols) - 1))
        r = self.index[kind].get(t)
        if r is None:
            raise Reply(404, {"error": "no %s with key %s" % (KINDS[kind]["label"], "/".join(t))})
        return r

    def control(self, method, p, h):
        if p == "/_sim/rows" and method == "GET":
            kind = self.ctl_kind({"kind": h.qparam("kind", "po")})
            with self.lock:
                key = h.qparam("key")
                if key is not None:
                    return Reply(200, self.custom_row(kind, self.ctl_row(kind, key)))
                rows = self.data[kind]
                if h.qparam("templates") == "0":
                    rows = [r for r in rows if r.get("VOUCHER_STYLE") != "TMPL"]
                return Reply(200, [self.custom_row(kind, r) for r in rows])
        if p == "/_sim/counts" and method == "GET":
            with self.lock:
                d = {k: len(v) for k, v in self.data.items()}
                d["voucher_templates"] = sum(1 for r in self.data["voucher"] if r["VOUCHER_STYLE"] == "TMPL")
                d["comments"] = sum(len(r["comments"]) for k in ("po", "req", "voucher") for r in self.data[k])
                stamps = {}
                for r in self.data["po"]:
                    stamps[r["LAST_DTTM_UPDATE"]] = stamps.get(r["LAST_DTTM_UPDATE"], 0) + 1
                top = max(stamps.items(), key=lambda kv: kv[1]) if stamps else (None, 0)
                d["po_top_stamp"] = {"LAST_DTTM_UPDATE": top[0], "rows": top[1]}
            return Reply(200, d)
        if p == "/_sim/seed" and method == "POST":
            b = control_json(h)
            a = self.args
            try:
                n = [int(b.get(k, d)) for k, d in (("pos", a.pos), ("reqs", a.reqs), ("vouchers", a.vouchers),
                                                   ("vendors", a.vendors), ("shared_stamp", a.shared_stamp),
                                                   ("rng_seed", a.rng_seed))]
            except (TypeError, ValueError):
                return Reply(400, {"error": "pos, reqs, vouchers, vendors, shared_stamp, rng_seed: integers"})
            if min(n[:5]) < 0 or max(n[:4]) > 1000000:
                return Reply(400, {"error": "counts out of range"})
            self.generate(*n)
            return Reply(200, {"pos": n[0], "reqs": n[1], "vouchers": n[2], "vendors": n[3],
                               "shared_stamp": n[4]})
        if p == "/_sim/touch" and method == "POST":
            b = control_json(h)
            kind = self.ctl_kind(b)
            if kind == "vendor":
                return Reply(400, {"error": "touch works on po, req and voucher; use /_sim/vendor/rename"})
            try:
                n = int(b.get("count", 1))
            except (TypeError, ValueError):
                return Reply(400, {"error": "count must be an integer"})
            with self.lock:
                pool = [r for r in self.data[kind] if r.get("VOUCHER_STYLE") != "TMPL"]
                picked = self.touch_rng.sample(pool, max(0, min(n, len(pool))))
                stamp = self.tick()
                for r in picked:
                    self.buyer_edit(kind, r)
                    r[KINDS[kind]["stamp"]] = stamp
                keys = sorted("/".join(self.key_of(kind, r)) for r in picked)
            return Reply(200, {"kind": kind, "keys": keys, "LAST_DTTM_UPDATE": stamp})
        if p == "/_sim/update" and method == "POST":
            b = control_json(h)
            kind = self.ctl_kind(b)
            sets = b.get("set")
            if not isinstance(sets, dict) or not sets:
                return Reply(400, {"error": "set must be an object of column -> value"})
            with self.lock:
                r = self.ctl_row(kind, b.get("key"))
                bad = [c for c in sets if c not in r or c in KINDS[kind]["keys"]]
                if bad:
                    return Reply(400, {"error": "unknown or key columns %s" % bad})
                r.update(sets)
                self.gen += 1  # the stamp may be among the columns set
                if not b.get("keep_stamp"):
                    r[KINDS[kind]["stamp"]] = self.tick()
                return Reply(200, self.custom_row(kind, r))
        if p == "/_sim/status" and method == "POST":
            b = control_json(h)
            kind = self.ctl_kind(b)
            new = str(b.get("status") or "").strip()
            with self.lock:
                r = self.ctl_row(kind, b.get("key"))
                err = self.transition(kind, r, new, force=bool(b.get("force")))
                if err:
                    return Reply(409, {"error": err})
                return Reply(200, self.custom_row(kind, r))
        if p == "/_sim/comment" and method == "POST":
            b = control_json(h)
            kind = self.ctl_kind(b)
            if kind == "vendor":
                return Reply(400, {"error": "vendors have no comments"})
            text = b.get("text")
            if not isinstance(text, str) or not text:
                return Reply(400, {"error": "text must be a non-empty string"})
            with self.lock:
                r = self.ctl_row(kind, b.get("key"))
                c = self.add_comment(kind, r, text, str(b.get("oprid") or "JSMITH"))
                return Reply(200, dict(c, LAST_DTTM_UPDATE=r[KINDS[kind]["stamp"]]))
        if p == "/_sim/vendor/rename" and method == "POST":
            b = control_json(h)
            name = b.get("name")
            if not isinstance(name, str) or not name.strip() or len(name) > 40:
                return Reply(400, {"error": "name must be a non-empty string of at most 40 characters"})
            with self.lock:
                v = self.ctl_row("vendor", {"SETID": b.get("setid", "SHARE"), "VENDOR_ID": b.get("vendor_id")})
                v["NAME1"] = name
                v["VENDOR_NAME_SHORT"] = re.sub(r"[^A-Z0-9]", "", name.upper())[:14]
                v["LASTUPDDTTM"] = self.tick()
                refs = {}
                for kind in ("po", "req", "voucher"):
                    refs[kind] = sorted("/".join(self.key_of(kind, r)) for r in self.data[kind]
                                        if r["VENDOR_SETID"] == v["SETID"] and r["VENDOR_ID"] == v["VENDOR_ID"]
                                        and r.get("VOUCHER_STYLE") != "TMPL")
                return Reply(200, {"vendor": dict(v), "referenced_by": refs})
        if p == "/_sim/expire_tokens" and method == "POST":
            with self.lock:
                n = 0
                for rec in self.tokens.values():
                    if not rec["expired"]:
                        rec["expired"] = True
                        n += 1
            return Reply(200, {"expired": n})
        if p == "/_sim/token" and method == "POST":
            b = control_json(h)
            try:
                ttl = float(b.get("ttl", self.fault_num("token_ttl", self.args.token_ttl)))
            except (TypeError, ValueError):
                return Reply(400, {"error": "ttl must be a number"})
            tok, ttl = self.mint(str(b.get("sub") or self.args.oauth_sub or self.args.user), ttl)
            return Reply(200, {"access_token": tok, "token_type": "Bearer", "expires_in": ttl})
        if p == "/_sim/tokens" and method == "GET":
            now = self.now()
            with self.lock:
                return Reply(200, [{"jti": j, "sub": r["sub"], "expired": r["expired"] or now >= r["exp"],
                                    "expires_in_s": round(r["exp"] - now, 3)} for j, r in self.tokens.items()])
        if p == "/_sim/writes" and method == "GET":
            with self.lock:
                return Reply(200, [dict(e) for e in self.write_log])
        if p == "/_sim/clock" and method == "GET":
            with self.lock:
                c = self.clock_last
            return Reply(200, {"last_stamp": fmt_stamp(c) if c else None,
                               "now": fmt_stamp(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))})
        if p == "/_sim/queries" and method == "GET":
            return Reply(200, {n: {"kind": q["kind"], "prompts": q["prompts"],
                                   "columns": ["%s.%s" % c for c in q["cols"]]} for n, q in QUERIES.items()})
        return None

    def buyer_edit(self, kind, r):
        """What a buyer's change looks like: one more unit on line 1 (POs,
        requisitions), or ten more on the invoice amount (vouchers)."""
        if kind == "voucher":
            r["GROSS_AMT"] = round(r["GROSS_AMT"] + 10.0, 2)
            return
        ln = r["lines"][0]
        q, price = KINDS[kind]["line_qty"], "PRICE_PO" if kind == "po" else "PRICE_REQ"
        ln[q] += 1
        ln["MERCHANDISE_AMT"] = round(ln[q] * ln[price], 2)
        r[KINDS[kind]["amount"]] = round(sum(x["MERCHANDISE_AMT"] for x in r["lines"]), 2)


if __name__ == "__main__":
    sys.exit(simbase.main(PsftSim))
