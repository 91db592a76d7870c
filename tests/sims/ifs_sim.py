#!/usr/bin/env python3
"""IFS Cloud simulator (IAM token endpoint and OData v4 projections).

A Keycloak-style client-credentials token endpoint under
/auth/realms/<ns>/protocol/openid-connect/token and the projections of
docs/api/ifs-cloud.md section 11: PurchaseOrderHandling,
ActiveWorkOrdersHandling, SuppliersHandling, HistoryLogHandling and one
/int/ entity service, with $metadata (one configurable Cf_ custom field),
$filter/$select/$orderby/$top/$skip/$count, server-driven paging with opaque
skip tokens and Prefer: odata.maxpagesize, ETags that change on every write,
PATCH and bound state actions under If-Match, OData error bodies and fault
injection.  See tests/sims/README.md.  Standard library only.
"""

import base64
import bisect
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import random
import re
import secrets
import sys
import threading
import time
from urllib.parse import quote, unquote, unquote_plus, urlsplit
from xml.sax.saxutils import quoteattr

import simbase
from simbase import Reply, Route, control_json

PROJ_PREFIX = "/main/ifsapplications/projection/v1/"
ENT_PREFIX = "/int/ifsapplications/entity/v1/"
MAX_PAGE = 5000
DECOY_CF = "Cf_Ext_Ref"
OBJID_TAG = {"po": "PO", "wo": "WO", "poline": "PL", "supplier": "SU", "history": "HI", "historyattr": "HA"}

# ---------------------------------------------------------------------------
# entity kinds.  Property types: Edm.String, Edm.Double, Edm.Date,
# Edm.DateTimeOffset, or "enum" (the kind's state enumeration).

KINDS = {
    "po": {
        "label": "purchase order", "type": "PurchaseOrder", "luname": "PurchaseOrder", "table": "PURCHASE_ORDER_TAB",
        "keys": ["OrderNo"],
        "props": [("OrderNo", "Edm.String"), ("Contract", "Edm.String"), ("Company", "Edm.String"),
                  ("ProjectId", "Edm.String"), ("VendorNo", "Edm.String"), ("VendorName", "Edm.String"),
                  ("SupplierTier", "Edm.String"), ("BuyerCode", "Edm.String"), ("BuyerEmail", "Edm.String"),
                  ("Objstate", "enum"), ("OrderDate", "Edm.Date"), ("WantedDeliveryDate", "Edm.Date"),
                  ("CurrencyCode", "Edm.String"), ("TotalAmount", "Edm.Double"), ("GlAccount", "Edm.String"),
                  ("CostCenter", "Edm.String"), ("NoteText", "Edm.String"), ("ChangedDate", "Edm.DateTimeOffset")],
        "updatable": {"WantedDeliveryDate", "NoteText", "BuyerCode"},
        "enum": "PurchaseOrderState",
        "states": ["Planned", "Released", "Confirmed", "Arrived", "Received", "Closed", "Cancelled"],
        "actions": {"Release": ({"Planned"}, "Released"), "Confirm": ({"Released"}, "Confirmed"),
                    "Close": ({"Confirmed", "Arrived", "Received"}, "Closed"),
                    "Cancel": ({"Planned", "Released"}, "Cancelled")},
    },
    "wo": {
        "label": "work order", "type": "ActiveSeparate", "luname": "ActiveSeparate", "table": "ACTIVE_SEPARATE_TAB",
        "keys": ["WoNo"],
        "props": [("WoNo", "Edm.Double"), ("ErrDescr", "Edm.String"), ("WorkTypeId", "Edm.String"),
                  ("Objstate", "enum"), ("PriorityId", "Edm.String"), ("MchCode", "Edm.String"),
                  ("Contract", "Edm.String"), ("Company", "Edm.String"), ("OrgCode", "Edm.String"),
                  ("ProjectId", "Edm.String"), ("WorkLeaderSign", "Edm.String"),
                  ("WorkLeaderEmail", "Edm.String"), ("ReportedBy", "Edm.String"), ("GlAccount", "Edm.String"),
                  ("CostCenter", "Edm.String"), ("PlanSDate", "Edm.DateTimeOffset"),
                  ("PlanFDate", "Edm.DateTimeOffset"), ("RegDate", "Edm.DateTimeOffset"),
                  ("ChangedDate", "Edm.DateTimeOffset")],
        "updatable": {"ErrDescr", "PriorityId", "PlanSDate", "PlanFDate", "WorkLeaderSign"},
        "enum": "WorkOrderState",
        "states": ["Prepared", "Released", "Started", "WorkDone", "Reported", "Finished", "Cancelled"],
        "actions": {"Release": ({"Prepared"}, "Released"), "Start": ({"Released"}, "Started"),
                    "WorkDone": ({"Started"}, "WorkDone"), "Report": ({"WorkDone"}, "Reported"),
                    "Finish": ({"Reported"}, "Finished"), "Cancel": ({"Prepared", "Released"}, "Cancelled")},
    },
    "poline": {
        "label": "purchase order line", "type": "PurchaseOrderLineNopart", "luname": "PurchaseOrderLineNopart",
        "table": "PURCHASE_ORDER_LINE_TAB", "keys": ["OrderNo", "LineNo", "ReleaseNo"],
        "props": [("OrderNo", "Edm.String"), ("LineNo", "Edm.String"), ("ReleaseNo", "Edm.String"),
                  ("Description", "Edm.String"), ("BuyQtyDue", "Edm.Double"), ("BuyUnitPrice", "Edm.Double"),
                  ("ChangedDate", "Edm.DateTimeOffset")],
        "updatable": set(), "enum": None, "states": [], "actions": {},
    },
    "supplier": {
        "label": "supplier", "type": "SupplierInfoGeneral", "luname": "SupplierInfoGeneral",
        "table": "SUPPLIER_INFO_TAB", "keys": ["VendorNo"],
        "props": [("VendorNo", "Edm.String"), ("VendorName", "Edm.String"), ("SupplierTier", "Edm.String"),
                  ("Country", "Edm.String"), ("ChangedDate", "Edm.DateTimeOffset")],
        "updatable": set(), "enum": None, "states": [], "actions": {},
    },
    "history": {
        "label": "history log entry", "type": "HistoryLogOverview", "luname": "HistoryLog", "table": "HISTORY_LOG_TAB",
        "keys": ["LogId"],
        "props": [("LogId", "Edm.Double"), ("LuName", "Edm.String"), ("TableName", "Edm.String"),
                  ("KeyRef", "Edm.String"), ("HistoryType", "Edm.String"), ("Username", "Edm.String"),
                  ("TimeStamp", "Edm.DateTimeOffset")],
        "updatable": set(), "enum": None, "states": [], "actions": {},
    },
    "historyattr": {
        "label": "history log attribute", "type": "HistoryLogAttribute", "luname": "HistoryLogAttribute",
        "table": "HISTORY_LOG_ATTRIBUTE_TAB", "keys": ["LogId", "ColumnName"],
        "props": [("LogId", "Edm.Double"), ("ColumnName", "Edm.String"), ("OldValue", "Edm.String"),
                  ("NewValue", "Edm.String")],
        "updatable": set(), "enum": None, "states": [], "actions": {},
    },
}
KIND_ALIASES = {"po": "po", "pos": "po", "purchaseorder": "po", "wo": "wo", "wos": "wo", "workorder": "wo",
                "poline": "poline", "polines": "poline", "supplier": "supplier", "suppliers": "supplier",
                "history": "history"}

# projection -> entity set -> (kind, server paging allowed)
PROJECTIONS = {
    "PurchaseOrderHandling": {"PurchaseOrderSet": "po", "PurchaseOrderLineNopartSet": "poline"},
    "ActiveWorkOrdersHandling": {"ActiveSeparateSet": "wo"},
    "SuppliersHandling": {"SupplierInfoGeneralSet": "supplier"},
    "HistoryLogHandling": {"HistoryLogOverviewSet": "history", "HistoryLogDetailsSet": "history"},
}
ENTITY_SERVICES = {"PurchaseOrderLineEntity": {"PurchaseOrderLineSet": "poline"}}

# generated data
SITES = ["S1", "S2", "S3"]
PROJECTS = ["PRJ100", "PRJ200", "PRJ300", "PRJ400", None]
# (user id, e-mail): most e-mails are Jira users of jira_sim.py; TNOWAK has no
# e-mail (found by user name through a mapping), raj.iyer's e-mail is hidden
# in Jira, and XTEMP's is nobody's there
USERS = [("MLOPEZ", "maria.lopez@example.com"), ("JCHEN", "james.chen@example.com"),
         ("APATEL", "aisha.patel@example.com"), ("TNOWAK", None), ("RIYER", "raj.iyer@example.com"),
         ("XTEMP", "xtemp@nowhere.example")]
SUPPLIER_NAMES = ["Acme Industrial Supply", "Northwind Traders", "Globex Components", "Initech Office Products",
                  "Umbrella Safety Gear", "Stark Fluid Power", "Wayne Metals", "Cyberdyne Electronics",
                  "Müller Präzisionsteile GmbH", "O'Brien & Sons Logistics", "Société d'Outillage",
                  "Vandelay Imports"]
ITEMS = [("Pump seal kit", 128.0), ("Safety gloves", 24.5), ("Hydraulic hose", 61.25), ("Spindle bearing", 412.0),
         ("Coolant filter", 37.8), ("Torque sensor", 730.0), ("Servo motor", 1890.0), ("Forklift battery", 3400.0)]
FAULTS = ["Replace pump seal", "Conveyor belt misaligned", "Hydraulic leak at press 2", "Annual boiler inspection",
          "Lubricate spindle", "Calibrate torque tool", "Replace HVAC filter", "Motor overheating, line 3"]
WORK_TYPES = ["CM", "PM", "INSP", "EMRG"]
GL = ["4000", "4100", "4200", "5300", "6100"]
COST_CENTERS = ["CC100", "CC200", "CC300", "CC410"]
PO_STATE_W = [2, 4, 3, 2, 2, 2, 1]
WO_STATE_W = [3, 4, 3, 2, 2, 1, 1]
TS_FMT = "%Y-%m-%dT%H:%M:%SZ"


class ODataError(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def odata_error(status, code, message, headers=None, note=None):
    return Reply(status, {"error": {"code": code, "message": message}}, headers=headers, note=note)


def bad_query(message):
    return ODataError(400, "ODP_INVALID_QUERY", message)


def now_ms():
    """The wall clock in ms since the epoch (write log times, for latency
    measures that start in another process on this machine)."""
    return round(time.time() * 1000.0, 3)


def fmt_ts(d):
    return d.strftime(TS_FMT)


_EPOCH_CACHE = {}


def epoch(s):
    """Seconds since the epoch of an Edm.DateTimeOffset text (cached)."""
    v = _EPOCH_CACHE.get(s)
    if v is None:
        d = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.timezone.utc)
        v = d.timestamp()
        if len(_EPOCH_CACHE) < 200000:
            _EPOCH_CACHE[s] = v
    return v


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def b64u_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# ---------------------------------------------------------------------------
# $filter: tokenizer and recursive-descent parser producing closures

TOKEN_RE = re.compile(r"""\s*(?:
 (?P<str>'(?:[^']|'')*')
|(?P<dto>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
|(?P<date>\d{4}-\d{2}-\d{2})
|(?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
|(?P<enum>[A-Za-z_][\w.]*'(?:[^']|'')*')
|(?P<id>[A-Za-z_]\w*)
|(?P<lp>\()|(?P<rp>\))|(?P<comma>,)|(?P<eqs>=)
)""", re.X)
CMP_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}


def tokenize(text):
    out, i = [], 0
    text = text.rstrip()
    while i < len(text):
        m = TOKEN_RE.match(text, i)
        if not m or m.end() == i:
            raise bad_query("$filter: cannot read '%s' at position %d" % (text[i:i + 20].strip(), i))
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        i = m.end()
    return out


def str_lit(tok):
    return tok[1:-1].replace("''", "'")


class FilterParser:
    """Compiles a $filter into f(row) -> bool with OData's type rules:
    strings quoted, dates and date-times unquoted, enum members as plain
    strings or Namespace.Enum'Member'."""

    def __init__(self, text, kind_def, types):
        self.toks = tokenize(text)
        self.i = 0
        self.kd = kind_def
        self.types = types

    def peek(self, off=0):
        j = self.i + off
        return self.toks[j] if j < len(self.toks) else (None, None)

    def next(self):
        t = self.peek()
        self.i += 1
        return t

    def parse(self):
        if not self.toks:
            raise bad_query("$filter is empty")
        f = self.p_or()
        if self.i != len(self.toks):
            raise bad_query("$filter: unexpected '%s'" % self.peek()[1])
        if f[1] != "bool":
            raise bad_query("$filter must be a Boolean expression")
        return f[0]

    def p_or(self):
        a = self.p_and()
        while self.peek() == ("id", "or"):
            self.next()
            b = self.p_and()
            self.need_bool(a, b)
            fa, fb = a[0], b[0]
            a = (lambda r, fa=fa, fb=fb: fa(r) or fb(r), "bool")
        return a

    def p_and(self):
        a = self.p_not()
        while self.peek() == ("id", "and"):
            self.next()
            b = self.p_not()
            self.need_bool(a, b)
            fa, fb = a[0], b[0]
            a = (lambda r, fa=fa, fb=fb: fa(r) and fb(r), "bool")
        return a

    def p_not(self):
        if self.peek() == ("id", "not"):
            self.next()
            a = self.p_not()
            self.need_bool(a)
            fa = a[0]
            return (lambda r, fa=fa: not fa(r), "bool")
        return self.p_cmp()

    @staticmethod
    def need_bool(*xs):
        for x in xs:
            if x[1] != "bool":
                raise bad_query("$filter: 'and', 'or' and 'not' need Boolean operands")

    def p_cmp(self):
        a = self.p_primary()
        t = self.peek()
        if t[0] == "id" and t[1] in CMP_OPS:
            self.next()
            b = self.p_primary()
            return self.compare(t[1], a, b)
        if t == ("id", "in"):
            self.next()
            if self.next()[0] != "lp":
                raise bad_query("$filter: 'in' needs a parenthesised list")
            items = []
            while True:
                items.append(self.p_primary())
                t2 = self.next()
                if t2[0] == "rp":
                    break
                if t2[0] != "comma":
                    raise bad_query("$filter: bad list after 'in'")
            tests = [self.compare("eq", a, b)[0] for b in items]
            return (lambda r, tests=tests: any(f(r) for f in tests), "bool")
        return a

    def p_primary(self):
        kind, v = self.next()
        if kind == "lp":
            e = self.p_or()
            if self.next()[0] != "rp":
                raise bad_query("$filter: missing ')'")
            return e
        if kind == "str":
            s = str_lit(v)
            return (lambda r, s=s: s, "lit:str")
        if kind == "enum":
            ns, _, rest = v.partition("'")
            s = rest[:-1].replace("''", "'")
            return (lambda r, s=s: s, "lit:enum:" + ns)
        if kind == "dto":
            try:
                e = epoch(v)
            except ValueError:
                raise bad_query("$filter: '%s' is not a valid Edm.DateTimeOffset" % v)
            return (lambda r, e=e: e, "lit:dto")
        if kind == "date":
            try:
                dt.date.fromisoformat(v)
            except ValueError:
                raise bad_query("$filter: '%s' is not a valid Edm.Date" % v)
            return (lambda r, v=v: v, "lit:date")
        if kind == "num":
            n = float(v)
            return (lambda r, n=n: n, "lit:num")
        if kind == "id":
            if v in ("true", "false"):
                b = v == "true"
                return (lambda r, b=b: b, "bool")
            if v == "null":
                return (lambda r: None, "lit:null")
            if v in ("contains", "startswith", "endswith") and self.peek()[0] == "lp":
                self.next()
                a = self.p_or()
                if self.next()[0] != "comma":
                    raise bad_query("$filter: %s needs two arguments" % v)
                b = self.p_or()
                if self.next()[0] != "rp":
                    raise bad_query("$filter: missing ')' after %s" % v)
                if a[1] not in ("Edm.String",) or b[1] != "lit:str":
                    raise bad_query("$filter: %s(property, 'text') works on string properties" % v)
                fa, s = a[0], b[0](None)
                op = {"contains": lambda x: s in x, "startswith": lambda x: x.startswith(s),
                      "endswith": lambda x: x.endswith(s)}[v]
                return (lambda r, fa=fa, op=op: (lambda x: x is not None and op(x))(fa(r)), "bool")
            t = self.types.get(v)
            if t is None:
                raise ODataError(400, "ODP_INVALID_QUERY", "$filter: property '%s' does not exist on %s"
                                 % (v, self.kd["type"]))
            if t == "Edm.DateTimeOffset":
                return (lambda r, v=v: None if r.get(v) is None else epoch(r[v]), t)
            return (lambda r, v=v: r.get(v), t)
        raise bad_query("$filter: unexpected '%s'" % v)

    def compare(self, op, a, b):
        ta, tb = a[1], b[1]
        if ta.startswith("lit:") and not tb.startswith("lit:"):
            a, b, ta, tb = b, a, tb, ta
            op = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(op, op)
        if not ta.startswith("lit:") and tb.startswith("lit:") and tb != "lit:null":
            want = {"Edm.String": ("lit:str",), "enum": ("lit:str", "lit:enum"), "Edm.Double": ("lit:num",),
                    "Edm.Date": ("lit:date",), "Edm.DateTimeOffset": ("lit:dto",)}.get(ta, ())
            if not any(tb.startswith(w) for w in want):
                hint = {"Edm.Date": "an unquoted date like 2026-01-15",
                        "Edm.DateTimeOffset": "an unquoted date-time like 2026-01-15T00:00:00Z",
                        "Edm.String": "a quoted string like 'P1001'", "Edm.Double": "an unquoted number",
                        "enum": "a quoted state like 'Released'"}.get(ta, ta)
                raise bad_query("$filter: %s is compared with a value of the wrong type; write %s"
                                % (ta if ta != "enum" else "the state enumeration", hint))
            if tb.startswith("lit:enum:") and ta == "enum":
                ns = tb[len("lit:enum:"):]
                full = "IfsApp.%s.%s" % (self.kd["projection"], self.kd["enum"])
                if ns not in (full, self.kd["enum"]):
                    raise bad_query("$filter: enumeration type '%s' is not %s" % (ns, full))
            if ta == "enum":
                val = b[0](None)
                if val not in self.kd["states"]:
                    raise bad_query("$filter: '%s' is not a member of %s (%s)"
                                    % (val, self.kd["enum"], ", ".join(self.kd["states"])))
        fa, fb = a[0], b[0]
        if op == "eq":
            return (lambda r: fa(r) == fb(r), "bool")
        if op == "ne":
            return (lambda r: fa(r) != fb(r), "bool")
        pyop = {"gt": lambda x, y: x > y, "ge": lambda x, y: x >= y,
                "lt": lambda x, y: x < y, "le": lambda x, y: x <= y}[op]

        def f(r):
            x, y = fa(r), fb(r)
            if x is None or y is None:
                return False
            return pyop(x, y)
        return (f, "bool")


class SortKey:
    """One row's $orderby key; dirs[i] is True for descending.  None sorts
    lowest (before any value) in ascending order."""

    __slots__ = ("v", "dirs")

    def __init__(self, v, dirs):
        self.v = v
        self.dirs = dirs

    def __lt__(self, other):
        for a, b, desc in zip(self.v, other.v, self.dirs):
            if a == b:
                continue
            if a is None:
                lt = True
            elif b is None:
                lt = False
            else:
                lt = a < b
            return (not lt) if desc else lt
        return False

    def __eq__(self, other):
        return self.v == other.v


# ---------------------------------------------------------------------------


class IfsSim(simbase.Sim):
    """IFS Cloud simulator (IAM token endpoint and OData v4 projections)"""

    name = "ifs"

    @staticmethod
    def add_args(p):
        p.add_argument("--namespace", default="mlc", help="IAM realm (the <ns> of /auth/realms/<ns>/...)")
        p.add_argument("--client-id", default="mlc-client", help="IAM client id (client credentials)")
        p.add_argument("--client-secret", default="mlc-secret", help="IAM client secret")
        p.add_argument("--service-user", default="IFSMLC", help="the client's service user (history Username)")
        p.add_argument("--token-ttl", type=float, default=180.0, help="access token expires_in, seconds")
        p.add_argument("--refresh-ttl", type=float, default=1800.0, help="refresh_expires_in, seconds")
        p.add_argument("--pos", type=int, default=200, help="purchase orders to generate")
        p.add_argument("--wos", type=int, default=200, help="work orders to generate")
        p.add_argument("--suppliers", type=int, default=12, help="suppliers to generate")
        p.add_argument("--rng-seed", type=int, default=14)
        p.add_argument("--custom-field", default="Cf_Jira_Status",
                       help="name of the Jira-status custom field on purchase orders and work orders")
        p.add_argument("--po-custom-field", default=None, help="overrides --custom-field on PurchaseOrder")
        p.add_argument("--wo-custom-field", default=None, help="overrides --custom-field on ActiveSeparate")
        p.add_argument("--page-size", type=int, default=5000,
                       help="server-driven page size without Prefer: odata.maxpagesize (0 = no paging)")
        p.add_argument("--max-page-size", type=int, default=MAX_PAGE,
                       help="largest odata.maxpagesize honoured; larger requests are cut to it")
        p.add_argument("--missing-if-match", choices=["error", "upsert"], default="error",
                       help="PATCH without If-Match: ODP_MISSING_PRECONDITION, or IFS's documented upsert")
        p.add_argument("--missing-if-match-status", type=int, default=428, choices=[400, 428],
                       help="HTTP status of ODP_MISSING_PRECONDITION")
        p.add_argument("--expand-status", type=int, default=501, choices=[400, 501],
                       help="status of $expand (ODP_NOT_IMPLEMENTED)")

    def __init__(self, args):
        super().__init__(args)
        self.lock = threading.RLock()
        self.tokens = {}   # access token -> {"exp", "expired", "sub"}
        self.refresh = {}  # refresh token -> exp
        self.cf = {"po": args.po_custom_field or args.custom_field,
                   "wo": args.wo_custom_field or args.custom_field}
        for k, n in self.cf.items():
            if not re.fullmatch(r"Cf_[A-Za-z0-9_]+", n):
                sys.stderr.write("ifs: custom field name %r must look like Cf_Name\n" % n)
                sys.exit(2)
        self.kdefs = {}
        for k, d in KINDS.items():
            kd = dict(d)
            kd["props"] = list(d["props"])
            if k in self.cf:
                kd["props"].append((self.cf[k], "Edm.String"))
                kd["updatable"] = set(d["updatable"]) | {self.cf[k]}
                if self.cf[k] != DECOY_CF:
                    kd["props"].append((DECOY_CF, "Edm.String"))
                    kd["updatable"].add(DECOY_CF)
            kd["types"] = {n: t for n, t in kd["props"]}
            kd["projection"] = {"po": "PurchaseOrderHandling", "poline": "PurchaseOrderHandling",
                                "wo": "ActiveWorkOrdersHandling", "supplier": "SuppliersHandling",
                                "history": "HistoryLogHandling",
                                "historyattr": "HistoryLogHandling"}[k]
            self.kdefs[k] = kd
        self.generate(args.pos, args.wos, args.suppliers, args.rng_seed)

    # ------------------------------------------------------------------
    # stats

    def _zero_stats(self):
        super()._zero_stats()
        with self.stats_lock:
            self.extra = {"nextlink_pages": 0, "tokens_issued": 0, "rows_served": 0}

    def stats_snapshot(self):
        s = super().stats_snapshot()
        with self.stats_lock:
            s.update(self.extra)
        return s

    def bump(self, name, n=1):
        with self.stats_lock:
            self.extra[name] = self.extra.get(name, 0) + n

    # ------------------------------------------------------------------
    # data

    def generate(self, n_po, n_wo, n_sup, seed):
        rng = random.Random(seed)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        busy = [now - dt.timedelta(days=d, hours=rng.randint(0, 20)) for d in rng.sample(range(1, 90), 6)]

        def stamp():
            if rng.random() < 0.2:  # batch jobs: many rows on one second
                return rng.choice(busy)
            return now - dt.timedelta(seconds=rng.randint(3600, 90 * 86400))

        sups = []
        for i in range(max(1, n_sup)):
            name = SUPPLIER_NAMES[i % len(SUPPLIER_NAMES)]
            if i >= len(SUPPLIER_NAMES):
                name = "%s %d" % (name, i // len(SUPPLIER_NAMES) + 1)
            sups.append({"VendorNo": "SUP%03d" % (i + 1), "VendorName": name,
                         "SupplierTier": rng.choice(["A", "B", "C"]), "Country": rng.choice(["SE", "US", "DE", "GB"]),
                         "ChangedDate": fmt_ts(stamp())})
        pos, lines = [], []
        for i in range(n_po):
            sup = rng.choice(sups)
            user, mail = rng.choice(USERS)
            ch = stamp()
            od = (ch - dt.timedelta(days=rng.randint(0, 30))).date()
            nl = rng.randint(1, 3)
            total = 0.0
            ono = "P%06d" % (100001 + i)
            for ln in range(nl):
                item, price = rng.choice(ITEMS)
                q = rng.randint(1, 20)
                total += q * price
                lines.append({"OrderNo": ono, "LineNo": str(ln + 1), "ReleaseNo": "1", "Description": item,
                              "BuyQtyDue": q, "BuyUnitPrice": price, "ChangedDate": fmt_ts(ch)})
            r = {"OrderNo": ono, "Contract": rng.choice(SITES), "Company": "10",
                 "ProjectId": rng.choice(PROJECTS), "VendorNo": sup["VendorNo"], "VendorName": sup["VendorName"],
                 "SupplierTier": sup["SupplierTier"], "BuyerCode": user, "BuyerEmail": mail,
                 "Objstate": rng.choices(KINDS["po"]["states"], PO_STATE_W)[0], "OrderDate": od.isoformat(),
                 "WantedDeliveryDate": (od + dt.timedelta(days=rng.randint(7, 60))).isoformat(),
                 "CurrencyCode": "EUR" if rng.random() < 0.2 else "SEK", "TotalAmount": round(total, 2),
                 "GlAccount": rng.choice(GL), "CostCenter": rng.choice(COST_CENTERS), "NoteText": None,
                 "ChangedDate": fmt_ts(ch), self.cf["po"]: None}
            if self.cf["po"] != DECOY_CF:
                r[DECOY_CF] = "EXT-%d" % rng.randint(1000, 9999) if rng.random() < 0.3 else None
            pos.append(r)
        wos = []
        for i in range(n_wo):
            user, mail = rng.choice(USERS)
            ch = stamp()
            reg = ch - dt.timedelta(days=rng.randint(0, 20), minutes=rng.randint(0, 600))
            ps = reg + dt.timedelta(days=rng.randint(1, 10))
            r = {"WoNo": 10001 + i, "ErrDescr": rng.choice(FAULTS), "WorkTypeId": rng.choice(WORK_TYPES),
                 "Objstate": rng.choices(KINDS["wo"]["states"], WO_STATE_W)[0],
                 "PriorityId": str(rng.randint(1, 4)), "MchCode": "MCH-%03d" % rng.randint(1, 80),
                 "Contract": rng.choice(SITES), "Company": "10", "OrgCode": rng.choice(["MAINT", "ELEC", "FAC"]),
                 "ProjectId": rng.choice(PROJECTS), "WorkLeaderSign": user, "WorkLeaderEmail": mail,
                 "ReportedBy": rng.choice(USERS)[0], "GlAccount": rng.choice(GL),
                 "CostCenter": rng.choice(COST_CENTERS), "PlanSDate": fmt_ts(ps),
                 "PlanFDate": fmt_ts(ps + dt.timedelta(hours=rng.randint(2, 48))), "RegDate": fmt_ts(reg),
                 "ChangedDate": fmt_ts(ch), self.cf["wo"]: None}
            if self.cf["wo"] != DECOY_CF:
                r[DECOY_CF] = None
            wos.append(r)
        with self.lock:
            self.gen = getattr(self, "gen", 0) + 1
            self.cache = {}
            self.data = {"po": pos, "wo": wos, "poline": lines, "supplier": sups, "history": [], "historyattr": []}
            self.meta = {}  # (kind, key) -> {"objid", "ver", "locked"}
            self.index = {}
            for k, rows in self.data.items():
                self.index[k] = {}
                for n, r in enumerate(rows):
                    key = self.key_of(k, r)
                    self.index[k][key] = r
                    self.meta[(k, key)] = {"objid": "AAA%s%06XAAB" % (OBJID_TAG[k], n + 1), "ver": 1,
                                           "locked": False}
            self.write_log = []
            self.touch_rng = random.Random(seed + 1)
            self.last_stamp = now

    def key_of(self, kind, r):
        return tuple(r[c] for c in self.kdefs[kind]["keys"])

    def etag(self, kind, r):
        m = self.meta[(kind, self.key_of(kind, r))]
        objversion = "%s%06d" % (re.sub(r"\D", "", r.get("ChangedDate") or "")[:14], m["ver"])
        return 'W/"%s"' % base64.b64encode(('W/"%s:%s"' % (m["objid"], objversion)).encode()).decode()

    def keyref(self, kind, r):
        return "".join("%s=%s^" % (re.sub(r"(?<!^)(?=[A-Z])", "_", c).upper(), fmt_key(r[c]))
                       for c in self.kdefs[kind]["keys"])

    def stamp_now(self):
        """A change date: now, whole seconds, never earlier than the last one
        (several writes in one second share it).  Caller holds the lock."""
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        if now < self.last_stamp:
            now = self.last_stamp
        self.last_stamp = now
        return fmt_ts(now)

    def apply_change(self, kind, r, changes, by, op, extra=None):
        """Apply {col: new}, move the change date, bump the ETag, log history
        and the write.  Caller holds the lock.  Returns the log entry."""
        old = {c: r.get(c) for c in changes}
        before = self.etag(kind, r)
        r.update(changes)
        if not (extra or {}).get("keep_stamp"):
            r["ChangedDate"] = self.stamp_now()
        self.meta[(kind, self.key_of(kind, r))]["ver"] += 1
        self.gen += 1
        kd = self.kdefs[kind]
        hid = len(self.data["history"]) + 1
        h = {"LogId": hid, "LuName": kd["luname"], "TableName": kd["table"], "KeyRef": self.keyref(kind, r),
             "HistoryType": "Update", "Username": by if by != "api" else self.args.service_user,
             "TimeStamp": r["ChangedDate"]}
        self.data["history"].append(h)
        self.index["history"][(hid,)] = h
        self.meta[("history", (hid,))] = {"objid": "AAAHI%06XAAB" % hid, "ver": 1, "locked": False}
        for c in changes:
            a = {"LogId": hid, "ColumnName": c, "OldValue": None if old[c] is None else str(old[c]),
                 "NewValue": None if changes[c] is None else str(changes[c])}
            self.data["historyattr"].append(a)
            self.index["historyattr"][(hid, c)] = a
            self.meta[("historyattr", (hid, c))] = {"objid": "AAAHA%06XAAB" % len(self.data["historyattr"]),
                                                    "ver": 1, "locked": False}
        e = {"seq": len(self.write_log) + 1, "kind": kind, "key": fmt_keys(self.key_of(kind, r)), "by": by,
             "op": op, "changes": {c: [old[c], changes[c]] for c in changes}, "applied": True, "status": None,
             "etag_before": before, "etag_after": self.etag(kind, r), "ChangedDate": r["ChangedDate"],
             "log_id": hid, "at_ms": now_ms()}
        self.write_log.append(e)
        return e

    def log_refused(self, kind, key, op, status, code, body=None, if_match=None):
        self.write_log.append({"seq": len(self.write_log) + 1, "kind": kind, "key": fmt_keys(key), "by": "api",
                               "op": op, "changes": body, "applied": False, "status": status, "code": code,
                               "if_match": if_match, "at_ms": now_ms()})

    # ------------------------------------------------------------------
    # errors, 429/503

    def error_body(self, status, message):
        code = {400: "ODP_BAD_REQUEST", 404: "ODP_RESOURCE_NOTFOUND", 429: "TOO_MANY_REQUESTS",
                503: "SERVICE_UNAVAILABLE", 502: "BAD_GATEWAY"}.get(status, "ODP_SERVER_ERROR")
        return {"error": {"code": code, "message": message}}

    def retry_after_value(self):
        ra = self.fault_num("retry_after", 1)
        if self.fault_flag("retry_after_date"):
            return email.utils.formatdate(time.time() + ra, usegmt=True), ra
        return str(int(ra)), ra

    def _ra_window(self, ra):
        with self.stats_lock:
            self.ra_until = time.monotonic() + ra

    def reply_429(self):
        v, ra = self.retry_after_value()
        if not v[0].isdigit():
            self._ra_window(ra)
        return Reply(429, self.error_body(429, "Too Many Requests (simulated rate limit)"),
                     headers={"Retry-After": v}, note="fault=rate_429")

    def reply_503(self, retry_after=False):
        headers = {}
        if retry_after:
            v, ra = self.retry_after_value()
            headers["Retry-After"] = v
            if not v[0].isdigit():
                self._ra_window(ra)
        return Reply(503, self.error_body(503, "Service Unavailable (simulated)"), headers=headers,
                     note="fault=fail_5xx")

    # ------------------------------------------------------------------
    # IAM

    def now(self):
        return time.time() + self.fault_num("clock_skew_s", 0)

    def h_token(self, h, realm):
        if realm != self.args.namespace:
            return Reply(404, {"error": "Realm does not exist"})
        if h.media_type() != "application/x-www-form-urlencoded":
            return Reply(400, {"error": "invalid_request",
                               "error_description": "Content-Type must be application/x-www-form-urlencoded"})
        form = {}
        for part in h.body.decode("utf-8", "replace").split("&"):
            if part:
                k, _, v = part.partition("=")
                form[unquote_plus(k)] = unquote_plus(v)
        cid, csec = form.get("client_id"), form.get("client_secret")
        ba = h.basic_auth()
        if ba is not None:
            cid, csec = unquote_plus(ba[0]), unquote_plus(ba[1])
        gt = form.get("grant_type")
        if gt not in ("client_credentials", "refresh_token"):
            return Reply(400, {"error": "unsupported_grant_type",
                               "error_description": "grant_type must be client_credentials or refresh_token"})
        if cid != self.args.client_id:
            return Reply(401, {"error": "invalid_client", "error_description": "Invalid client credentials"})
        if csec is None or not hmac.compare_digest(csec.encode(), self.args.client_secret.encode()) \
                or self.take("token_401"):
            return Reply(401, {"error": "invalid_client", "error_description": "Invalid client credentials"})
        allowed = {"openid", "microprofile-jwt", "audience", "email", "profile"}
        scope = (form.get("scope") or "").split()
        bad = [s for s in scope if s not in allowed]
        if bad:
            return Reply(400, {"error": "invalid_scope", "error_description": "Invalid scopes: %s" % " ".join(bad)})
        if gt == "refresh_token":
            with self.lock:
                exp = self.refresh.pop(form.get("refresh_token") or "", None)
            if exp is None or exp <= self.now():
                return Reply(400, {"error": "invalid_grant", "error_description": "Invalid refresh token"})
        ttl = self.fault_num("token_ttl", self.args.token_ttl)
        tok, rt, sid = self.mint(ttl)
        body = {"access_token": tok, "expires_in": int(ttl), "refresh_expires_in": int(self.args.refresh_ttl),
                "refresh_token": rt, "token_type": "Bearer", "not-before-policy": 0, "session_state": sid,
                "scope": " ".join((["openid"] if "openid" in scope else [])
                                  + ["audience", "microprofile-jwt", "email", "profile"])}
        if "openid" in scope:
            body["id_token"] = self.fake_jwt({"typ": "ID", "sid": sid})
        return Reply(200, body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def fake_jwt(self, claims):
        head = b64u(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        return "%s.%s.%s" % (head, b64u(json.dumps(claims, separators=(",", ":")).encode()),
                             b64u(secrets.token_bytes(32)))

    def mint(self, ttl):
        now = self.now()
        sid = secrets.token_hex(16)
        tok = self.fake_jwt({"exp": int(now + ttl), "iat": int(now), "jti": secrets.token_hex(8),
                             "azp": self.args.client_id, "preferred_username": self.args.service_user.lower(),
                             "typ": "Bearer", "sid": sid})
        rt = self.fake_jwt({"typ": "Refresh", "sid": sid, "jti": secrets.token_hex(8)})
        with self.lock:
            self.tokens[tok] = {"exp": now + ttl, "expired": False, "sid": sid}
            self.refresh[rt] = now + self.args.refresh_ttl
        self.bump("tokens_issued")
        return tok, rt, sid

    def check_auth(self, h):
        tok = h.bearer()
        www = 'Bearer realm="%s", error="invalid_token"' % self.args.namespace
        if tok is None:
            raise odata_error(401, "UNAUTHORIZED", "No bearer token: send Authorization: Bearer <access_token>",
                              headers={"WWW-Authenticate": 'Bearer realm="%s"' % self.args.namespace})
        with self.lock:
            rec = self.tokens.get(tok)
            if rec is not None and h.qparam("$skiptoken") is not None and self.take("expire_on_nextlink"):
                rec["expired"] = True
            if rec is None:
                raise odata_error(401, "UNAUTHORIZED", "The access token is not known to IAM",
                                  headers={"WWW-Authenticate": www})
            if rec["expired"] or self.now() >= rec["exp"]:
                raise odata_error(401, "UNAUTHORIZED", "The access token has expired",
                                  headers={"WWW-Authenticate": www})

    # ------------------------------------------------------------------
    # routing

    def route(self, method, path, h):
        m = re.fullmatch(r"/auth/realms/([^/]+)/protocol/openid-connect/token", path)
        if m:
            if method != "POST":
                return Route("iam_token", lambda: Reply(405, {"error": "invalid_request",
                                                              "error_description": "use POST"}))
            return Route("iam_token", lambda: self.h_token(h, unquote(m.group(1))))
        m = re.fullmatch(r"/auth/realms/([^/]+)/\.well-known/openid-configuration", path)
        if m and method == "GET":
            return Route("iam_discovery", lambda: self.h_discovery(h, unquote(m.group(1))))
        if path.startswith(PROJ_PREFIX):
            catalogue, rest, entity_api = PROJECTIONS, path[len(PROJ_PREFIX):], False
        elif path.startswith(ENT_PREFIX):
            catalogue, rest, entity_api = ENTITY_SERVICES, path[len(ENT_PREFIX):], True
        else:
            return None
        svc, _, tail = rest.partition("/")
        if not svc.endswith(".svc"):
            return Route("unknown_projection", lambda: odata_error(
                404, "ODP_RESOURCE_NOTFOUND", "'%s' is not a projection (names end in .svc)" % svc))
        proj = svc[:-4]
        if proj not in catalogue:
            return Route("unknown_projection", lambda: odata_error(
                404, "ODP_RESOURCE_NOTFOUND", "Projection '%s' does not exist or is not granted" % proj))
        segs = [unquote(s) for s in tail.split("/")] if tail else []
        if segs and segs[-1] == "":
            segs.pop()
        if not segs:
            return Route(proj + "/", lambda: self.guard(h, proj, method, "GET", lambda: self.h_service(h, proj)))
        if segs == ["$metadata"]:
            return Route(proj + "/$metadata",
                         lambda: self.guard(h, proj, method, "GET", lambda: self.h_metadata(proj, catalogue)))
        m = re.fullmatch(r"(\w+)(?:\((.*)\))?", segs[0], re.S)
        if not m or m.group(1) not in catalogue[proj]:
            name = m.group(1) if m else segs[0]
            return Route(proj + "/unknown_set", lambda: self.guard(h, proj, method, method, lambda: odata_error(
                404, "ODP_RESOURCE_NOTFOUND", "Entity set '%s' does not exist in %s" % (name, proj))))
        eset, keytext = m.group(1), m.group(2)
        kind = catalogue[proj][eset]
        base = "%s/%s" % (proj, eset)
        if keytext is None:
            if len(segs) == 2 and segs[1] == "$count":
                return Route(base + "/$count", lambda: self.guard(
                    h, proj, method, "GET", lambda: self.h_list(h, proj, eset, kind, entity_api, count_only=True)))
            if len(segs) > 1:
                return Route(base + "/unknown", lambda: odata_error(
                    404, "ODP_RESOURCE_NOTFOUND", "No resource '%s' under %s" % ("/".join(segs[1:]), eset)))
            return Route(base, lambda: self.guard(h, proj, method, "GET",
                                                  lambda: self.h_list(h, proj, eset, kind, entity_api)))
        if len(segs) == 1:
            if method == "PATCH":
                return Route(base + "(key) PATCH", lambda: self.guard(
                    h, proj, method, "PATCH", lambda: self.h_patch(h, proj, eset, kind, keytext)), write=True)
            return Route(base + "(key)", lambda: self.guard(
                h, proj, method, "GET", lambda: self.h_get(h, proj, eset, kind, keytext)))
        if len(segs) == 2 and eset == "HistoryLogDetailsSet" and segs[1] == "HistoryLogAttributeArray":
            return Route(base + "(key)/HistoryLogAttributeArray", lambda: self.guard(
                h, proj, method, "GET", lambda: self.h_history_attrs(h, proj, keytext)))
        if len(segs) == 2:
            act = segs[1]
            return Route(base + "(key)/" + act.rsplit(".", 1)[-1], lambda: self.guard(
                h, proj, method, "POST", lambda: self.h_action(h, proj, eset, kind, keytext, act)),
                write=True)
        return Route(base + "/unknown", lambda: odata_error(
            404, "ODP_RESOURCE_NOTFOUND", "No resource '%s'" % "/".join(segs)))

    def guard(self, h, proj, method, want, fn):
        """Authentication, grants, verb, MI_MODIFIED_ERROR; then the handler."""
        try:
            self.check_auth(h)
            if proj in (self.fault("no_grant") or []):
                return odata_error(403, "ODP_FORBIDDEN", "The user %s is not granted projection %s"
                                   % (self.args.service_user, proj))
            if method != want:
                return odata_error(405, "ODP_METHOD_NOT_ALLOWED", "%s is not allowed here (use %s)" % (method, want))
            if self.take("mi_modified") or (method in ("PATCH", "POST") and self.take("mi_modified_writes")):
                return odata_error(500, "MI_MODIFIED_ERROR", "The projection metadata was modified; the metadata "
                                   "cache was refreshed. Retry the request.", note="fault=mi_modified")
            return fn()
        except ODataError as e:
            return odata_error(e.status, e.code, e.message, headers=e.headers)

    def h_discovery(self, h, realm):
        if realm != self.args.namespace:
            return Reply(404, {"error": "Realm does not exist"})
        base = "http://%s/auth/realms/%s" % (h.header("Host", "127.0.0.1:%d" % self.port), realm)
        return Reply(200, {"issuer": base, "token_endpoint": base + "/protocol/openid-connect/token",
                           "grant_types_supported": ["client_credentials", "refresh_token"],
                           "scopes_supported": ["openid", "microprofile-jwt", "audience", "email", "profile"]})

    def root(self, h, proj):
        prefix = ENT_PREFIX if proj in ENTITY_SERVICES else PROJ_PREFIX
        return "http://%s%s%s.svc" % (h.header("Host", "127.0.0.1:%d" % self.port), prefix, proj)

    def h_service(self, h, proj):
        cat = ENTITY_SERVICES.get(proj) or PROJECTIONS[proj]
        return Reply(200, {"@odata.context": self.root(h, proj) + "/$metadata",
                           "value": [{"name": s, "kind": "EntitySet", "url": s} for s in cat]})

    # ------------------------------------------------------------------
    # $metadata

    def h_metadata(self, proj, catalogue):
        ns = "IfsApp." + proj
        kinds = []
        for eset, k in catalogue[proj].items():
            if k not in kinds:
                kinds.append(k)
        if proj == "HistoryLogHandling":
            kinds.append("historyattr")
        out = ['<?xml version="1.0" encoding="utf-8"?>',
               '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">',
               '<edmx:DataServices>', '<Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace=%s>'
               % quoteattr(ns)]
        for k in kinds:
            kd = self.kdefs[k]
            if kd["enum"]:
                out.append('<EnumType Name="%s">' % kd["enum"])
                for i, s in enumerate(kd["states"]):
                    out.append('<Member Name="%s" Value="%d"/>' % (s, i))
                out.append("</EnumType>")
        for k in kinds:
            kd = self.kdefs[k]
            out.append('<EntityType Name="%s">' % kd["type"])
            out.append("<Key>%s</Key>" % "".join('<PropertyRef Name="%s"/>' % c for c in kd["keys"]))
            for n, t in kd["props"]:
                typ = "%s.%s" % (ns, kd["enum"]) if t == "enum" else t
                attrs = ' Nullable="false"' if n in kd["keys"] else ""
                if t == "Edm.String":
                    attrs += ' MaxLength="%d"' % (50 if n.startswith("Cf_") else 100)
                out.append('<Property Name="%s" Type="%s"%s/>' % (n, typ, attrs))
            if k == "history":
                out.append('<NavigationProperty Name="HistoryLogAttributeArray" '
                           'Type="Collection(%s.HistoryLogAttribute)"/>' % ns)
            out.append("</EntityType>")
        for k in kinds:
            kd = self.kdefs[k]
            for ev in kd["actions"]:
                out.append('<Action Name="%s_%s" IsBound="true"><Parameter Name="it" Type="%s.%s" '
                           'Nullable="false"/></Action>' % (kd["type"], ev, ns, kd["type"]))
        out.append('<EntityContainer Name="Main">')
        for eset, k in catalogue[proj].items():
            out.append('<EntitySet Name="%s" EntityType="%s.%s"/>' % (eset, ns, self.kdefs[k]["type"]))
        out.append("</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>\n")
        return Reply(200, raw="\n".join(out).encode("utf-8"), headers={"Content-Type": "application/xml",
                                                                         "OData-Version": "4.0"})

    # ------------------------------------------------------------------
    # reading

    def entity(self, kind, r, select=None):
        o = {"@odata.etag": self.etag(kind, r), "luname": self.kdefs[kind]["luname"],
             "keyref": self.keyref(kind, r)}
        if select is None:
            for n, _t in self.kdefs[kind]["props"]:
                o[n] = r.get(n)
        else:
            for n in select:
                o[n] = r.get(n)
        return o

    def parse_select(self, kd, text):
        if text is None or text.strip() in ("", "*"):
            return None
        out = []
        for n in text.split(","):
            n = n.strip()
            if n not in kd["types"]:
                raise ODataError(400, "ODP_INVALID_QUERY", "$select: property '%s' does not exist on %s"
                                 % (n, kd["type"]))
            if n not in out:
                out.append(n)
        return out

    def parse_orderby(self, kd, text):
        order = []
        if text:
            for part in text.split(","):
                bits = part.split()
                if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
                    raise bad_query("$orderby: cannot read '%s'" % part.strip())
                if bits[0] not in kd["types"]:
                    raise ODataError(400, "ODP_INVALID_QUERY", "$orderby: property '%s' does not exist on %s"
                                     % (bits[0], kd["type"]))
                order.append((bits[0], len(bits) == 2 and bits[1].lower() == "desc"))
        for k in kd["keys"]:  # the key makes the order total, so pages cannot overlap
            if k not in [o[0] for o in order]:
                order.append((k, False))
        return order

    def sort_value(self, kd, col, v):
        if v is not None and kd["types"].get(col) == "Edm.DateTimeOffset":
            return epoch(v)
        return v

    def result(self, kind, flt, orderby_text, parent_log=None):
        """Filtered and ordered rows with their sort keys, cached until the
        data changes.  Caller holds the lock."""
        ck = (kind, flt, orderby_text, parent_log)
        c = self.cache.get(ck)
        if c is not None and c[0] == self.gen:
            return c[1], c[2], c[3]
        kd = self.kdefs[kind]
        pred = FilterParser(flt, kd, kd["types"]).parse() if flt else None
        order = self.parse_orderby(kd, orderby_text)
        dirs = tuple(d for _c, d in order)
        rows = self.data[kind]
        if parent_log is not None:
            rows = [r for r in rows if r["LogId"] == parent_log]
        if pred is not None:
            rows = [r for r in rows if pred(r)]
        keyed = sorted(((SortKey(tuple(self.sort_value(kd, col, r.get(col)) for col, _d in order), dirs), r)
                        for r in rows), key=lambda x: x[0])
        keys = [x[0] for x in keyed]
        rows = [x[1] for x in keyed]
        if len(self.cache) > 64:
            self.cache.clear()
        self.cache[ck] = (self.gen, keys, rows, dirs)
        return keys, rows, dirs

    def h_list(self, h, proj, eset, kind, entity_api, count_only=False, parent_log=None):
        kd = self.kdefs[kind]
        known = {"$filter", "$select", "$orderby", "$top", "$skip", "$count", "$skiptoken", "$expand", "$format"}
        bad = sorted(k for k in h.query if k.startswith("$") and k not in known)
        if bad:
            raise bad_query("Unknown system query option(s) %s" % ", ".join(bad))
        if h.qparam("$expand") is not None:
            st = int(self.fault_num("expand_status", self.args.expand_status))
            raise ODataError(st, "ODP_NOT_IMPLEMENTED", "$expand is not implemented for %s" % eset)
        if h.qparam("$format") not in (None, "json", "application/json"):
            raise bad_query("$format '%s' is not supported (json)" % h.qparam("$format"))
        flt = h.qparam("$filter")
        ob = h.qparam("$orderby")
        sel_text = h.qparam("$select")
        select = self.parse_select(kd, sel_text)

        def num(name):
            v = h.qparam(name)
            if v is None:
                return None
            if not re.fullmatch(r"\d+", v.strip()):
                raise bad_query("%s must be a non-negative integer, not '%s'" % (name, v))
            return int(v)
        top, skip = num("$top"), num("$skip")
        cnt = (h.qparam("$count") or "false").lower()
        if cnt not in ("true", "false"):
            raise bad_query("$count must be true or false")
        qsig = hashlib.sha256(json.dumps([proj, eset, flt, ob, sel_text, top, skip, cnt,
                                          parent_log]).encode()).hexdigest()[:16]
        tok = h.qparam("$skiptoken")
        cursor, served, page = None, 0, None
        if tok is not None:
            try:
                t = json.loads(b64u_dec(tok).decode("utf-8"))
                if t["q"] != qsig:
                    raise ValueError
                cursor, served, page = t["c"], int(t["n"]), int(t["p"])
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise bad_query("$skiptoken is not valid for this request; follow @odata.nextLink verbatim")
        with self.lock:
            keys, rows, dirs = self.result(kind, flt, ob, parent_log)
            total = len(rows)
            if count_only:
                return Reply(200, raw=str(total).encode(), headers={"Content-Type": "text/plain"})
            headers = {"OData-Version": "4.0"}
            if cursor is None:
                start = skip or 0
            else:
                start = bisect.bisect_right(keys, SortKey(tuple(cursor), dirs))
            remaining = None if top is None else max(0, top - served)
            if page is None:
                page = int(self.fault_num("page_size", self.args.page_size))
                pref = self.max_page_pref(h)
                if entity_api or self.fault_flag("no_next_link"):
                    page = 0  # this service does not page: Prefer is ignored
                elif pref is not None:
                    page = min(pref, int(self.args.max_page_size))
                    headers["Preference-Applied"] = "odata.maxpagesize=%d" % page
            else:
                pref = self.max_page_pref(h)
                if pref is not None:
                    headers["Preference-Applied"] = "odata.maxpagesize=%d" % page
            n = len(rows) - start
            if remaining is not None:
                n = min(n, remaining)
            more = page > 0 and n > page
            if more:
                n = page
            chunk = rows[start:start + max(0, n)]
            value = [self.entity(kind, r, select) for r in chunk]
            ctx = "%s/$metadata#%s" % (self.root(h, proj), eset)
            if select:
                ctx += "(%s)" % ",".join(select)
            body = {"@odata.context": ctx}
            if cnt == "true":
                body["@odata.count"] = total  # all matching rows, whatever $top/$skip
            body["value"] = value
            if more:
                last = keys[start + n - 1].v
                nt = b64u(json.dumps({"q": qsig, "c": list(last), "n": served + n, "p": page},
                                     separators=(",", ":")).encode())
                body["@odata.nextLink"] = self.next_link(h, nt)
        if tok is not None:
            self.bump("nextlink_pages")
        self.bump("rows_served", len(value))
        return Reply(200, body, headers=headers)

    @staticmethod
    def max_page_pref(h):
        for part in (h.header("Prefer") or "").split(","):
            k, _, v = part.strip().partition("=")
            if k.strip().lower() in ("odata.maxpagesize", "maxpagesize"):
                try:
                    n = int(v.strip())
                except ValueError:
                    return None
                return n if n > 0 else None
        return None

    def next_link(self, h, token):
        parts = urlsplit(h.path)
        q = [p for p in parts.query.split("&") if p and not p.startswith("$skiptoken=")
             and not p.startswith("%24skiptoken=")]
        q.append("$skiptoken=" + quote(token, safe=""))
        return "http://%s%s?%s" % (h.header("Host", "127.0.0.1:%d" % self.port), parts.path, "&".join(q))

    def find(self, kind, keytext):
        """The row a key predicate names.  Caller holds the lock."""
        kd = self.kdefs[kind]
        vals = parse_key(keytext, kd)
        r = self.index[kind].get(vals)
        if r is None:
            raise ODataError(404, "ODP_RESOURCE_NOTFOUND", "No %s with key %s" % (kd["label"], fmt_keys(vals)))
        return r

    def h_get(self, h, proj, eset, kind, keytext):
        kd = self.kdefs[kind]
        if h.qparam("$expand") is not None:
            st = int(self.fault_num("expand_status", self.args.expand_status))
            raise ODataError(st, "ODP_NOT_IMPLEMENTED", "$expand is not implemented for %s" % eset)
        select = self.parse_select(kd, h.qparam("$select"))
        with self.lock:
            r = self.find(kind, keytext)
            body = {"@odata.context": "%s/$metadata#%s/$entity" % (self.root(h, proj), eset)}
            body.update(self.entity(kind, r, select))
            et = self.etag(kind, r)
        return Reply(200, body, headers={"ETag": et, "OData-Version": "4.0"})

    def h_history_attrs(self, h, proj, keytext):
        kd = self.kdefs["history"]
        vals = parse_key(keytext, kd)
        with self.lock:
            if vals not in self.index["history"]:
                raise ODataError(404, "ODP_RESOURCE_NOTFOUND", "No history log entry %s" % fmt_keys(vals))
        rep = self.h_list(h, proj, "HistoryLogDetailsSet(LogId=%s)/HistoryLogAttributeArray" % fmt_key(vals[0]),
                          "historyattr", True, parent_log=vals[0])
        return rep

    # ------------------------------------------------------------------
    # writing

    def person_edit_fault(self, kind, r):
        """Fault edit_before_write: a person edits the record between the
        client's read and its write, so the client's ETag is stale.  Caller
        holds the lock."""
        if kind not in ("po", "wo") or not self.take("edit_before_write"):
            return
        sets = self.fault("edit_before_write_set")
        if not isinstance(sets, dict) or not sets:
            col = "NoteText" if kind == "po" else "ErrDescr"
            sets = {col: "%s (edited by KCHEN)" % (r.get(col) or "")}
        sets = {k: v for k, v in sets.items() if k in self.kdefs[kind]["types"] and k not in self.kdefs[kind]["keys"]}
        if sets:
            self.apply_change(kind, r, sets, "KCHEN", "sim_edit_before_write")

    def write_delay(self):
        """Fault slow_write_ms: a PATCH or action waits that long before it
        is checked and applied, whether or not its client is still there
        (reads are not slowed): a write still running inside IFS when the
        client that sent it dies."""
        ms = self.fault_num("slow_write_ms", 0)
        if ms > 0:
            time.sleep(ms / 1000.0)

    def write_checks(self, h, kind, r, op, body):
        """Lock, If-Match.  Returns None to go on, or an error Reply.
        Caller holds the lock."""
        self.person_edit_fault(kind, r)
        key = self.key_of(kind, r)
        im = h.header("If-Match")
        if self.take("drop_if_match"):
            im = None  # a proxy on the way removed the header
        if self.meta[(kind, key)]["locked"] or self.take("locked"):
            self.log_refused(kind, key, op, 423, "ODP_LOCKED", body, im)
            return odata_error(423, "ODP_LOCKED", "The %s %s is locked by another user; try again later"
                               % (self.kdefs[kind]["label"], fmt_keys(key)))
        if im is None:
            if op == "PATCH" and self.args.missing_if_match == "upsert":
                return None
            st = self.args.missing_if_match_status
            self.log_refused(kind, key, op, st, "ODP_MISSING_PRECONDITION", body, im)
            return odata_error(st, "ODP_MISSING_PRECONDITION", "The If-Match header is required: read the "
                               "record by key and send its ETag")
        tags = [t.strip() for t in im.split(",")]
        if "*" not in tags and self.etag(kind, r) not in tags:
            self.log_refused(kind, key, op, 412, "ODP_PRECONDITION_FAILED", body, im)
            return odata_error(412, "ODP_PRECONDITION_FAILED", "The %s %s was changed by someone else since "
                               "it was read (ETag mismatch); read it again" % (self.kdefs[kind]["label"],
                                                                               fmt_keys(key)))
        return None

    def json_write_body(self, h):
        if not h.is_json_ct():
            raise ODataError(400, "ODP_DESERIALIZATION_ERROR", "Error while de-serializing contents: "
                             "Content-Type must be application/json")
        if not h.body.strip():
            return {}
        try:
            b = json.loads(h.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ODataError(400, "ODP_DESERIALIZATION_ERROR", "Error while de-serializing contents: %s" % e)
        if not isinstance(b, dict):
            raise ODataError(400, "ODP_DESERIALIZATION_ERROR", "Error while de-serializing contents: "
                             "the body must be a JSON object")
        return b

    def h_patch(self, h, proj, eset, kind, keytext):
        kd = self.kdefs[kind]
        body = self.json_write_body(h)
        if not body:
            raise ODataError(400, "ODP_DESERIALIZATION_ERROR", "Error while de-serializing contents: no properties")
        for n, v in body.items():
            if n.startswith("@odata."):
                continue
            if n not in kd["types"]:
                raise ODataError(400, "ODP_INVALID_PROPERTY", "Property '%s' does not exist on %s" % (n, kd["type"]))
            if n not in kd["updatable"]:
                raise ODataError(400, "ODP_READ_ONLY_PROPERTY", "Property '%s' of %s cannot be updated"
                                 % (n, kd["type"]))
            t = kd["types"][n]
            if v is not None and t in ("Edm.String", "Edm.Date", "Edm.DateTimeOffset") and not isinstance(v, str):
                raise ODataError(400, "ODP_DESERIALIZATION_ERROR", "Property '%s' needs a string value" % n)
            if isinstance(v, str) and n.startswith("Cf_") and len(v) > 50:
                raise ODataError(400, "ODP_DESERIALIZATION_ERROR", "Property '%s' is at most 50 characters" % n)
        changes = {n: v for n, v in body.items() if not n.startswith("@odata.")}
        self.write_delay()
        with self.lock:
            r = self.find(kind, keytext)
            err = self.write_checks(h, kind, r, "PATCH", changes)
            if err is not None:
                return err
            e = self.apply_change(kind, r, changes, "api", "PATCH")
            e["status"] = 200
            e["if_match"] = h.header("If-Match")
            et = self.etag(kind, r)
            out = {"@odata.context": "%s/$metadata#%s/$entity" % (self.root(h, proj), eset)}
            out.update(self.entity(kind, r))
        if "return=minimal" in (h.header("Prefer") or ""):
            e["status"] = 204
            return Reply(204, headers={"ETag": et, "Preference-Applied": "return=minimal"})
        return Reply(200, out, headers={"ETag": et, "OData-Version": "4.0"})

    def h_action(self, h, proj, eset, kind, keytext, act):
        kd = self.kdefs[kind]
        ns = "IfsApp." + proj
        name = act[len(ns) + 1:] if act.startswith(ns + ".") else act
        prefix = kd["type"] + "_"
        ev = name[len(prefix):] if name.startswith(prefix) else None
        if ev not in kd["actions"]:
            raise ODataError(404, "ODP_RESOURCE_NOTFOUND", "Bound action '%s' does not exist on %s (actions: %s)"
                             % (act, kd["type"], ", ".join("%s.%s%s" % (ns, prefix, a) for a in kd["actions"])
                                or "none"))
        if h.body.strip():
            self.json_write_body(h)  # parameters are not used, but must be JSON
        frm, to = kd["actions"][ev]
        self.write_delay()
        with self.lock:
            r = self.find(kind, keytext)
            err = self.write_checks(h, kind, r, name, None)
            if err is not None:
                return err
            if r["Objstate"] not in frm:
                self.log_refused(kind, self.key_of(kind, r), name, 400, "DATABASE_ERROR", None, h.header("If-Match"))
                return odata_error(400, "DATABASE_ERROR", "%s %s: event %s is not allowed in state %s"
                                   % (kd["type"], fmt_keys(self.key_of(kind, r)), ev, r["Objstate"]))
            e = self.apply_change(kind, r, {"Objstate": to}, "api", name)
            e["status"] = 204
            e["if_match"] = h.header("If-Match")
            et = self.etag(kind, r)
        return Reply(204, headers={"ETag": et})

    # ------------------------------------------------------------------
    # control endpoints

    def ctl_kind(self, v):
        kind = KIND_ALIASES.get(str(v or "po").lower())
        if kind is None or kind not in ("po", "wo", "poline", "supplier", "history"):
            raise Reply(400, {"error": "kind must be po, wo, poline, supplier or history"})
        return kind

    def ctl_row(self, kind, key):
        kd = self.kdefs[kind]
        if isinstance(key, list):
            t = tuple(key)
        elif isinstance(key, dict):
            t = tuple(key.get(c) for c in kd["keys"])
        else:
            t = tuple(str(key).split("/")) if isinstance(key, str) else (key,)
        t = tuple(int(x) if kd["types"][c] == "Edm.Double" and isinstance(x, str) and x.isdigit() else x
                  for c, x in zip(kd["keys"], t))
        r = self.index[kind].get(t)
        if r is None:
            raise Reply(404, {"error": "no %s with key %s" % (kd["label"], fmt_keys(t))})
        return r

    def ctl_view(self, kind, r):
        o = dict(r)
        o["@odata.etag"] = self.etag(kind, r)
        m = self.meta[(kind, self.key_of(kind, r))]
        o["_locked"] = m["locked"]
        return o

    def control(self, method, p, h):
        if p == "/_sim/rows" and method == "GET":
            kind = self.ctl_kind(h.qparam("kind", "po"))
            with self.lock:
                key = h.qparam("key")
                if key is not None:
                    return Reply(200, self.ctl_view(kind, self.ctl_row(kind, key)))
                return Reply(200, [self.ctl_view(kind, r) for r in self.data[kind]])
        if p == "/_sim/counts" and method == "GET":
            with self.lock:
                d = {k: len(v) for k, v in self.data.items()}
                for k in ("po", "wo"):
                    st = {}
                    for r in self.data[k]:
                        st[r["Objstate"]] = st.get(r["Objstate"], 0) + 1
                    d[k + "_states"] = st
                d["custom_fields"] = dict(self.cf)
            return Reply(200, d)
        if p == "/_sim/seed" and method == "POST":
            b = control_json(h)
            a = self.args
            try:
                n = [int(b.get(k, d)) for k, d in (("pos", a.pos), ("wos", a.wos), ("suppliers", a.suppliers),
                                                   ("rng_seed", a.rng_seed))]
            except (TypeError, ValueError):
                return Reply(400, {"error": "pos, wos, suppliers, rng_seed: integers"})
            if min(n[:3]) < 0 or max(n[:3]) > 1000000:
                return Reply(400, {"error": "counts out of range"})
            self.generate(*n)
            return Reply(200, {"pos": n[0], "wos": n[1], "suppliers": n[2]})
        if p == "/_sim/update" and method == "POST":
            b = control_json(h)
            kind = self.ctl_kind(b.get("kind"))
            sets = b.get("set")
            if not isinstance(sets, dict) or not sets:
                return Reply(400, {"error": "set must be an object of property -> value"})
            kd = self.kdefs[kind]
            bad = [c for c in sets if c not in kd["types"] or c in kd["keys"] or c == "ChangedDate"]
            if bad:
                return Reply(400, {"error": "unknown, key or ChangedDate properties %s" % bad})
            if "Objstate" in sets and sets["Objstate"] not in kd["states"]:
                return Reply(400, {"error": "Objstate must be one of %s" % kd["states"]})
            with self.lock:
                r = self.ctl_row(kind, b.get("key"))
                e = self.apply_change(kind, r, sets, str(b.get("user") or "JSMITH"), "sim_update",
                                      {"keep_stamp": bool(b.get("keep_stamp"))})
                return Reply(200, {"row": self.ctl_view(kind, r), "write": e})
        if p == "/_sim/touch" and method == "POST":
            b = control_json(h)
            kind = self.ctl_kind(b.get("kind"))
            if kind not in ("po", "wo"):
                return Reply(400, {"error": "touch works on po and wo"})
            try:
                n = int(b.get("count", 1))
            except (TypeError, ValueError):
                return Reply(400, {"error": "count must be an integer"})
            with self.lock:
                picked = self.touch_rng.sample(self.data[kind], max(0, min(n, len(self.data[kind]))))
                for r in picked:
                    if kind == "po":
                        r_new = {"NoteText": "Buyer note %d" % self.touch_rng.randint(1, 99999)}
                    else:
                        r_new = {"PriorityId": str(self.touch_rng.randint(1, 4))}
                    self.apply_change(kind, r, r_new, "JSMITH", "sim_touch")
                keys = sorted(fmt_keys(self.key_of(kind, r)) for r in picked)
            return Reply(200, {"kind": kind, "keys": keys})
        if p == "/_sim/lock" and method == "POST":
            b = control_json(h)
            kind = self.ctl_kind(b.get("kind"))
            with self.lock:
                r = self.ctl_row(kind, b.get("key"))
                self.meta[(kind, self.key_of(kind, r))]["locked"] = bool(b.get("locked", True))
                return Reply(200, self.ctl_view(kind, r))
        if p == "/_sim/writes" and method == "GET":
            kind, key = h.qparam("kind"), h.qparam("key")
            with self.lock:
                out = [dict(e) for e in self.write_log]
            if kind is not None:
                kind = self.ctl_kind(kind)
                out = [e for e in out if e["kind"] == kind]
            if key is not None:
                out = [e for e in out if e["key"] == key]
            if h.qparam("by") is not None:
                out = [e for e in out if e["by"] == h.qparam("by")]
            if h.qparam("applied") is not None:
                want = h.qparam("applied") in ("1", "true")
                out = [e for e in out if e["applied"] == want]
            return Reply(200, out)
        if p == "/_sim/expire_tokens" and method == "POST":
            with self.lock:
                n = 0
                for rec in self.tokens.values():
                    if not rec["expired"]:
                        rec["expired"] = True
                        n += 1
            return Reply(200, {"expired": n})
        if p == "/_sim/tokens" and method == "GET":
            now = self.now()
            with self.lock:
                return Reply(200, [{"sid": r["sid"], "expired": r["expired"] or now >= r["exp"],
                                    "expires_in_s": round(r["exp"] - now, 3)} for r in self.tokens.values()])
        return None


# ---------------------------------------------------------------------------
# key predicates

def fmt_key(v):
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def fmt_keys(t):
    return "/".join(fmt_key(v) for v in t)


def parse_key(text, kd):
    """Values of a key predicate: 'P1001', OrderNo='P1001', WoNo=1234,
    OrderNo='P1',LineNo='1',ReleaseNo='1'.  Strings must be quoted and
    numbers must not be."""
    toks = tokenize(text) if text.strip() else []
    keys = kd["keys"]
    vals = {}
    if len(toks) == 1:
        if len(keys) != 1:
            raise bad_query("Key predicate '%s': %s has a composite key (%s)" % (text, kd["type"], ", ".join(keys)))
        named = [(keys[0], toks[0])]
    else:
        named = []
        i = 0
        while i < len(toks):
            part = toks[i:i + 3]
            if len(part) != 3 or part[0][0] != "id" or part[1][0] != "eqs":
                raise bad_query("Key predicate '%s' cannot be read; write Name=value[,Name=value]" % text)
            named.append((part[0][1], part[2]))
            i += 3
            if i < len(toks):
                if toks[i][0] != "comma" or i + 1 == len(toks):
                    raise bad_query("Key predicate '%s' cannot be read" % text)
                i += 1
    for name, (tk, tv) in named:
        if name not in keys:
            raise bad_query("Key predicate: '%s' is not a key of %s (keys: %s)" % (name, kd["type"], ", ".join(keys)))
        t = kd["types"][name]
        if t == "Edm.String":
            if tk != "str":
                raise bad_query("Key predicate: %s is a string; quote it ('...')" % name)
            vals[name] = str_lit(tv)
        else:
            if tk != "num":
                raise bad_query("Key predicate: %s is a number; write it unquoted" % name)
            n = float(tv)
            vals[name] = int(n) if n.is_integer() else n
    if set(vals) != set(keys):
        raise bad_query("Key predicate '%s' must name %s" % (text, ", ".join(keys)))
    return tuple(vals[k] for k in keys)


if __name__ == "__main__":
    sys.exit(simbase.main(IfsSim))
