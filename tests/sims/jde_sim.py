#!/usr/bin/env python3
"""JD Edwards EnterpriseOne AIS server simulator (v2 REST, /jderest).

Token sessions, data-service BROWSE/COUNT/AGGREGATION over in-memory F4801
and F0101, next-page cursors, the MLC_UpdateWOStatus, MLC_HoldWorkOrder,
MLC_UpdateWODates and MLC_UpdateWOPriority orchestrations (every call logged
for /_sim/orchestrations) and fault injection.  Behaviour follows docs/api/jde-ais.md; see tests/sims/README.md.
Standard library only.
"""

import datetime as dt
import random
import re
import secrets
import sys
import threading
import time

import simbase
from simbase import Reply, Route, control_json

# ---------------------------------------------------------------------------
# table catalogue: alias -> (label, type).  Types: num, str, date, mcu
# (mcu = right-justified business unit; compared with blanks stripped)

TABLES = {
    "F4801": {
        "title": "Work Order Master File",
        "key": "DOCO",
        "columns": [
            ("DOCO", "Order Number", "num"),
            ("DCTO", "Order Type", "str"),
            ("TYPS", "Type", "str"),
            ("PRTS", "Priority", "str"),
            ("DL01", "Description", "str"),
            ("SRST", "Status", "str"),
            ("MCU", "Business Unit", "mcu"),
            ("AN8", "Customer Number", "num"),
            ("ANP", "Assigned To", "num"),
            ("TRDJ", "Order Date", "date"),
            ("STRT", "Planned Start", "date"),
            ("DRQJ", "Requested Date", "date"),
            ("UPMJ", "Date Updated", "date"),
            ("TDAY", "Time of Day", "num"),
            ("USER", "User ID", "str"),
            ("PID", "Program ID", "str"),
            # category code 10 (UDC 00/W0): where the sim's MLC_HoldWorkOrder
            # records the hold code (F4801 has no documented hold column)
            ("WR10", "Category Code 10", "str"),
            # free-text references (blank when generated): tests put notes
            # here that a mapping turns into Jira comments
            ("VR01", "Reference", "str"),
            ("VR02", "Reference 2", "str"),
        ],
    },
    "F0101": {
        "title": "Address Book Master",
        "key": "AN8",
        "columns": [
            ("AN8", "Address Number", "num"),
            ("ALPH", "Alpha Name", "str"),
            ("AT1", "Sch Typ", "str"),
        ],
    },
}
for _t in TABLES.values():
    _t["types"] = {a: ty for a, _l, ty in _t["columns"]}
    _t["labels"] = {a: l for a, l, _ty in _t["columns"]}
    _t["order"] = [a for a, _l, _ty in _t["columns"]]

VALID_SRST = {"10", "20", "30", "40", "45", "50", "60", "70", "80", "90", "91", "95", "97", "98", "99"}
VALID_PRTS = {"1", "2", "3", "4", "5"}  # the sim's UDC 00/PR (the priorities it generates)

PEOPLE = [
    (6001, "Lopez, Maria"), (6002, "Chen, James"), (6003, "Patel, Aisha"), (6004, "Nowak, Tomasz"),
    (6005, "Rossi, Sofia"), (6006, "Mensah, Kwame"), (6007, "Fischer, Lena"), (6008, "Iyer, Raj"),
]
CUSTOMERS = [
    (4001, "Acme Fabrication Inc"), (4002, "Northwind Plastics"), (4003, "Globex Motors"),
    (4004, "Initech Tooling"), (4005, "Umbrella Packaging"), (4006, "Stark Hydraulics"),
    (4007, "Wayne Foundry"), (4008, "Cyberdyne Controls"), (4009, "Soylent Foods"),
    (4010, "Tyrell Assemblies"),
]
SERVICE_USER = (4242, "Sync, Service")

VERBS = ["Replace", "Inspect", "Repair", "Calibrate", "Lubricate", "Rebuild", "Align", "Clean",
         "Adjust", "Test", "Overhaul", "Install", "Tighten", "Weld"]
THINGS = ["pump seal", "conveyor belt", "hydraulic hose", "gearbox", "spindle bearing", "servo motor",
          "coolant filter", "press die", "torque sensor", "air compressor", "drive chain", "PLC module",
          "weld tip", "boiler valve", "guard switch"]
PLACES = ["line 3", "cell 7", "press 2", "bay 4", "oven 1", "Line A", "mixer 5", "CNC 12", "dock 2"]
ECO_TEXT = ["ECO revise bracket drawing", "ECO update BOM housing", "ECO change torque spec",
            "ECO new supplier for gasket", "ECO reroute paint step", "ECO remove obsolete part"]
ODD_TEXT = ['Check 3/4" valve & gasket', "Ersatz Dichtung Prüfstand 2", "Fix <guard> / reset E-stop",
            "Réparer pompe ligne 3", "Tab\tin description"]
USERS = ["JDEUSER", "PRODPLN", "MAINT01", "SCHED02"]
BUS = ["M30", "M40", "M10", "D30"]

SIM_START = time.monotonic()


def ts_error():
    """timeStamp of error bodies, e.g. 2025-09-19T20:16:27.934+0000 (UTC)."""
    n = dt.datetime.now(dt.timezone.utc)
    return n.strftime("%Y-%m-%dT%H:%M:%S.") + "%03d+0000" % (n.microsecond // 1000)


def pad(s, n):
    return (s + " " * n)[:n] if len(s) < n else s


def ymd(d):
    return d.strftime("%Y%m%d")


def parse_tz(s):
    m = re.fullmatch(r"([+-])(\d{1,2}):?(\d{2})", s.strip())
    if not m:
        raise ValueError("bad --tz-offset %r (use +HH:MM / -HH:MM)" % s)
    sign = -1 if m.group(1) == "-" else 1
    return dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3))) * sign


class JdeSim(simbase.Sim):
    """JD Edwards AIS v2 simulator"""

    name = "jde"

    @staticmethod
    def add_args(p):
        p.add_argument("--seed", type=int, default=300, help="number of F4801 work orders to generate")
        p.add_argument("--rng-seed", type=int, default=42, help="random seed for data generation and touch")
        p.add_argument("--user", default="SYNCUSR")
        p.add_argument("--password", default="demo-pass")
        p.add_argument("--environment", default="JDV920", help="the only valid environment")
        p.add_argument("--role", default="*ALL")
        p.add_argument("--token-ttl", type=float, default=1500.0, help="token lifetime in seconds")
        p.add_argument("--allow-basic", action="store_true",
                       help="accept per-request Basic auth on dataservice/orchestrator")
        p.add_argument("--tz-offset", default="+00:00",
                       help="server-local time offset used for UPMJ/TDAY and timeZoneOffset")

    def __init__(self, args):
        super().__init__(args)
        self.tz = parse_tz(args.tz_offset)
        self.lock = threading.RLock()
        self.tokens = {}
        self.tables = {}
        self.index = {}
        self.orch_log = []  # one entry per orchestration call that passed auth
        self.generate(args.seed, args.rng_seed)

    # ------------------------------------------------------------------
    # data

    def local_now(self):
        return (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + self.tz).replace(microsecond=0)

    def generate(self, count, rng_seed):
        rng = random.Random(rng_seed)
        today = self.local_now().date()
        people = [p[0] for p in PEOPLE]
        custs = [c[0] for c in CUSTOMERS]
        # busy days share many UPMJ values; batch stamps share (UPMJ, TDAY)
        busy_days = rng.sample(range(1, 61), 8)
        stamp_count = max(3, count // 25)
        stamps = []
        for _ in range(stamp_count):
            day = rng.choice(busy_days) if rng.random() < 0.7 else rng.randint(1, 60)
            hh = rng.choice([0, 2, 5, 9, 12, 17, 23])
            stamps.append((day, hh * 10000 + rng.choice([0, 15, 30, 45]) * 100 + rng.choice([0, 15, 30])))
        rows = []
        for i in range(count):
            doco = 100001 + i
            r = rng.random()
            dcto = "EN" if r < 0.10 else ("WM" if r < 0.25 else "WO")
            if dcto == "EN":
                dl01 = rng.choice(ECO_TEXT)
            elif rng.random() < 0.03:
                dl01 = rng.choice(ODD_TEXT)
            else:
                dl01 = "%s %s %s" % (rng.choice(VERBS), rng.choice(THINGS), rng.choice(PLACES))
            dl01 = dl01[:30]
            x = rng.random()
            if x < 0.30:
                days_ago, tday = rng.choice(stamps)
            else:
                days_ago = rng.choice(busy_days) if x < 0.65 else rng.randint(1, 60)
                tday = rng.randint(0, 23) * 10000 + rng.randint(0, 59) * 100 + rng.randint(0, 59)
            upmj = today - dt.timedelta(days=days_ago)
            trdj = upmj - dt.timedelta(days=rng.randint(0, 30))
            strt = trdj + dt.timedelta(days=rng.randint(0, 10))
            drqj = strt + dt.timedelta(days=rng.randint(1, 20))
            rows.append({
                "DOCO": doco,
                "DCTO": dcto,
                "TYPS": rng.choice("12345"),
                "PRTS": rng.choice("12345"),
                "DL01": dl01,
                "SRST": rng.choices(["10", "30", "40", "45", "90"], [3, 3, 4, 2, 2])[0],
                "MCU": rng.choice(BUS).rjust(12),
                "AN8": rng.choice(custs),
                "ANP": rng.choice(people),
                "TRDJ": ymd(trdj),
                "STRT": ymd(strt),
                "DRQJ": ymd(drqj),
                "UPMJ": ymd(upmj),
                "TDAY": tday,
                "USER": pad(rng.choice(USERS), 10),
                "PID": "P48013",
                "WR10": "   ",
                "VR01": "",
                "VR02": "",
            })
        ab = [{"AN8": a, "ALPH": n, "AT1": "E"} for a, n in PEOPLE]
        ab += [{"AN8": a, "ALPH": n, "AT1": "C"} for a, n in CUSTOMERS]
        ab.append({"AN8": SERVICE_USER[0], "ALPH": SERVICE_USER[1], "AT1": "E"})
        ab.sort(key=lambda r: r["AN8"])
        with self.lock:
            self.tables = {"F4801": rows, "F0101": ab}
            self.index = {t: {r[TABLES[t]["key"]]: r for r in rs} for t, rs in self.tables.items()}
            self.touch_rng = random.Random(rng_seed + 1)
            self.revs = {}
            last = None
            for r in rows:
                k = (r["UPMJ"], r["TDAY"])
                if last is None or k > last:
                    last = k
            self.clock_last = self.stamp_to_dt(last) if last else None

    @staticmethod
    def stamp_to_dt(k):
        upmj, tday = k
        d = dt.datetime.strptime(upmj, "%Y%m%d")
        return d + dt.timedelta(hours=tday // 10000, minutes=(tday // 100) % 100, seconds=tday % 100)

    def tick(self):
        """Next modification stamp: strictly after every stamp handed out or
        present in the table (caller holds self.lock)."""
        now = self.local_now()
        if self.clock_last is not None and now <= self.clock_last:
            now = self.clock_last + dt.timedelta(seconds=1)
        self.clock_last = now
        return ymd(now), now.hour * 10000 + now.minute * 100 + now.second

    # ------------------------------------------------------------------
    # error shapes

    def error_body(self, status, message):
        return {"message": message, "exception": "JDERestServiceException",
                "timeStamp": ts_error(), "status": "ERROR"}

    def svc_error(self, status, message, **extra):
        body = self.error_body(status, message)
        body.update(extra)
        return Reply(status, body)

    def auth_failure(self, detail):
        return Reply(403, {"message": "Authorization Failure", "exception": detail,
                           "timeStamp": ts_error()})

    def invalid_token(self):
        status = int(self.fault_num("expired_status", 444))
        return Reply(status, {"message": "Invalid Token", "exception": "Exception",
                              "timeStamp": ts_error()})

    def require_json(self, h, optional):
        """415 unless the body is declared JSON.  With optional=True an empty
        body without Content-Type is accepted."""
        if h.header("Content-Type") is not None:
            if not h.is_json_ct():
                raise self.svc_error(415, "Unsupported Media Type: Content-Type must be application/json")
            return
        if optional and not h.body.strip():
            return
        raise self.svc_error(415, "Unsupported Media Type: Content-Type must be application/json")

    def body_obj(self, h, optional):
        b = h.json_body(optional=optional)
        if not isinstance(b, dict):
            raise self.svc_error(400, "Request body must be a JSON object")
        return b

    # ------------------------------------------------------------------
    # auth

    def check_creds(self, user, pw):
        return (isinstance(user, str) and isinstance(pw, str)
                and user.upper() == self.args.user.upper() and pw == self.args.password)

    def token_ttl(self):
        return self.fault_num("token_ttl", self.args.token_ttl)

    def lookup_token(self, token, device, h, consume_fault=True):
        """Return the live session for token, or raise the invalid-token reply."""
        with self.lock:
            if consume_fault and self.take("force_444"):
                self.tokens.pop(token, None)
                r = self.invalid_token()
                r.note = "fault=force_444"
                raise r
            rec = self.tokens.get(token)
            if rec is None:
                raise self.invalid_token()
            if time.monotonic() >= rec["base"] + self.token_ttl():
                del self.tokens[token]
                raise self.invalid_token()
            if rec["device"] is not None:
                if device != rec["device"]:
                    raise self.invalid_token()
            elif rec["ip"] != h.client_ip:
                raise self.invalid_token()
            return rec

    def session(self, h, body):
        """('token', rec) or ('basic', None); raises 403/444 replies."""
        token = h.header("jde-AIS-Auth") or body.get("token")
        if token:
            device = h.header("jde-AIS-Auth-Device") or body.get("deviceName")
            return "token", self.lookup_token(token, device, h)
        ba = h.basic_auth()
        if ba is not None:
            if not self.args.allow_basic:
                raise self.auth_failure("Basic authentication is not enabled on this AIS server")
            if not self.check_creds(*ba):
                raise self.auth_failure("Invalid user name or password")
            env = h.header("jde-AIS-Auth-Environment") or self.args.environment
            if env.upper() != self.args.environment.upper():
                raise Reply(403, {"message": "Invalid environment %s" % env,
                                  "exception": "JDERestServiceException", "timeStamp": ts_error()})
            return "basic", None
        raise self.auth_failure("No token or credentials supplied")

    # ------------------------------------------------------------------
    # routing

    def route(self, method, path, h):
        p = path.rstrip("/")
        if method == "POST":
            if p in ("/jderest/v2/tokenrequest", "/jderest/tokenrequest"):
                return Route("tokenrequest", lambda: self.h_tokenrequest(h))
            if p in ("/jderest/v2/tokenrequest/validate", "/jderest/tokenrequest/validate"):
                return Route("validate", lambda: self.h_validate(h))
            if p in ("/jderest/v2/tokenrequest/logout", "/jderest/tokenrequest/logout"):
                return Route("logout", lambda: self.h_logout(h))
            if p == "/jderest/v2/dataservice":
                return Route("dataservice", lambda: self.h_dataservice(h, True))
            if p == "/jderest/dataservice":
                return Route("dataservice", lambda: self.h_dataservice(h, False))
            if p == "/jderest/v2/dataservice/next":
                return Route("next", lambda: self.h_next(h))
            m = re.fullmatch(r"/jderest/(?:v[23]/)?orchestrator/([^/]+)", p)
            if m:
                name = m.group(1)
                if name == "jde-validate-session":
                    return Route("validate", lambda: self.h_validate(h))
                return Route("orchestrator", lambda: self.h_orchestrator(h, name), write=True)
        if method == "GET" and p in ("/jderest/defaultconfig", "/jderest/v2/defaultconfig"):
            return Route("defaultconfig", lambda: self.h_defaultconfig())
        return None

    # ------------------------------------------------------------------
    # token service

    def h_defaultconfig(self):
        return Reply(200, {
            "jasHost": "127.0.0.1", "jasPort": str(self.port), "jasProtocol": "http",
            "defaultEnvironment": self.args.environment, "defaultRole": self.args.role,
            "aisVersion": "simulated", "keepJasSessionOpen": True,
            "capabilityList": [
                {"name": "nextPage", "shortDescription": "Next Page", "asOfRelease": "9.2.1.2", "sinceVersion": "v2"},
                {"name": "dataServiceAggregation", "shortDescription": "Aggregation", "asOfRelease": "9.2.1.0",
                 "sinceVersion": "v1"},
                {"name": "orchestrator", "shortDescription": "Orchestrator", "asOfRelease": "9.2.0.0",
                 "sinceVersion": "v1"},
            ]})

    def h_tokenrequest(self, h):
        self.require_json(h, optional=True)
        body = self.body_obj(h, optional=True)
        user, pw = body.get("username"), body.get("password")
        if user is None and pw is None:
            ba = h.basic_auth()
            if ba is not None:
                user, pw = ba
        env = body.get("environment") or h.header("jde-AIS-Auth-Environment") or self.args.environment
        role = body.get("role") or h.header("jde-AIS-Auth-Role") or self.args.role
        device = body.get("deviceName") or h.header("jde-AIS-Auth-Device")
        if not self.check_creds(user, pw):
            raise self.auth_failure("Invalid user name or password")
        if not isinstance(env, str) or env.upper() != self.args.environment.upper():
            raise Reply(403, {"message": "Invalid environment %s" % env,
                              "exception": "JDERestServiceException", "timeStamp": ts_error()})
        if not isinstance(role, str) or role.upper() != self.args.role.upper():
            raise Reply(403, {"message": "Invalid role %s" % role,
                              "exception": "JDERestServiceException", "timeStamp": ts_error()})
        token = "044" + secrets.token_urlsafe(48)
        with self.lock:
            self.tokens[token] = {"token": token, "device": device if device else None,
                                  "ip": h.client_ip, "base": time.monotonic(),
                                  "issued": time.time(), "cursor": None,
                                  "user": self.args.user.upper()}
        off = self.tz
        sign = "-" if off < dt.timedelta(0) else "+"
        mins = abs(int(off.total_seconds())) // 60
        return Reply(200, {
            "username": self.args.user.upper(),
            "environment": self.args.environment,
            "role": self.args.role,
            "jasserver": "http://127.0.0.1:%d" % self.port,
            "userInfo": {
                "token": token, "langPref": "  ", "locale": "en",
                "dateFormat": "MDE", "dateSeperator": "/", "simpleDateFormat": "MM/dd/yyyy",
                "decimalFormat": ".", "addressNumber": SERVICE_USER[0], "alphaName": SERVICE_USER[1],
                "appsRelease": "E920", "country": " ",
                "timeZoneOffset": "UTC%s%02d:%02d" % (sign, mins // 60, mins % 60),
            },
            "userAuthorized": False,
            "aisSessionCookie": "%s!%d" % (secrets.token_urlsafe(24), int(time.time() * 1000)),
            "adminAuthorized": False,
        })

    def h_validate(self, h):
        self.require_json(h, optional=True)
        body = self.body_obj(h, optional=True)
        token = body.get("token") or h.header("jde-AIS-Auth")
        device = body.get("deviceName") or h.header("jde-AIS-Auth-Device")
        if not token:
            raise self.invalid_token()
        rec = self.lookup_token(token, device, h)
        if body.get("touch") in (True, "true", "TRUE"):
            with self.lock:
                rec["base"] = time.monotonic()
        return Reply(200, {"isValidSession": True})

    def h_logout(self, h):
        self.require_json(h, optional=True)
        body = self.body_obj(h, optional=True)
        token = body.get("token") or h.header("jde-AIS-Auth")
        device = body.get("deviceName") or h.header("jde-AIS-Auth-Device")
        if not token:
            raise self.invalid_token()
        self.lookup_token(token, device, h, consume_fault=False)
        with self.lock:
            self.tokens.pop(token, None)
        return Reply(200, {})

    # ------------------------------------------------------------------
    # query compilation

    def resolve_col(self, tname, cid, what):
        t = TABLES[tname]
        s = str(cid or "").strip()
        if "." in s:
            pre, _, alias = s.partition(".")
            ok = pre.upper() == tname
        else:
            alias, ok = s, True
        alias = alias.upper()
        if not ok or alias not in t["types"]:
            raise self.svc_error(400, "Invalid column %s in %s: not a column of table %s" % (s, what, tname))
        return alias, t["types"][alias]

    def literal(self, tname, alias, ctype, v, login_user):
        if not isinstance(v, dict):
            raise self.svc_error(400, "Invalid condition value for %s.%s: expected an object" % (tname, alias))
        sid = str(v.get("specialValueId") or "LITERAL").upper()
        content = v.get("content")
        if sid == "LITERAL":
            s = "" if content is None else str(content)
        elif sid == "LOGIN_USER":
            s = login_user
        elif sid == "TODAY" or sid.startswith("TODAY_"):
            if ctype != "date":
                raise self.svc_error(400, "Special value %s is only valid for date columns (%s.%s)"
                                     % (sid, tname, alias))
            base = self.local_now().date()
            m = re.fullmatch(r"TODAY(?:_(MINUS|PLUS)_(DAY|MONTH|YEAR))?", sid)
            if not m:
                raise self.svc_error(400, "Unknown specialValueId %s" % sid)
            if m.group(1):
                try:
                    n = int(str(content or "0").strip() or "0")
                except ValueError:
                    raise self.svc_error(400, "Invalid offset '%s' for %s" % (content, sid))
                if m.group(1) == "MINUS":
                    n = -n
                if m.group(2) == "DAY":
                    base = base + dt.timedelta(days=n)
                else:
                    months = n * (12 if m.group(2) == "YEAR" else 1)
                    y, mo = divmod(base.month - 1 + months, 12)
                    year = base.year + y
                    month = mo + 1
                    day = base.day
                    while True:
                        try:
                            base = dt.date(year, month, day)
                            break
                        except ValueError:
                            day -= 1
            return ymd(base)
        else:
            raise self.svc_error(400, "Unknown specialValueId %s" % sid)
        if ctype == "date":
            m = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", s.strip())
            d = None
            if m:
                try:
                    d = dt.date(int(m.group(3)), int(m.group(1)), int(m.group(2)))
                except ValueError:
                    d = None
            if d is None:
                raise self.svc_error(400, "Invalid date literal '%s' for %s.%s, expected MM/dd/yyyy"
                                     % (s, tname, alias))
            return ymd(d)
        if ctype == "num":
            try:
                f = float(s.strip())
            except ValueError:
                raise self.svc_error(400, "Invalid numeric literal '%s' for %s.%s" % (s, tname, alias))
            return int(f) if f == int(f) else f
        if ctype == "mcu":
            return s.strip()
        return s.rstrip()

    @staticmethod
    def getter(alias, ctype):
        if ctype == "str":
            return lambda r: r[alias].rstrip()
        if ctype == "mcu":
            return lambda r: r[alias].strip()
        return lambda r: r[alias]

    def compile_cond(self, tname, c, login_user):
        if not isinstance(c, dict):
            raise self.svc_error(400, "Invalid condition: expected an object")
        alias, ctype = self.resolve_col(tname, c.get("controlId"), "condition")
        op = str(c.get("operator") or "").upper()
        raw_vals = c.get("value") or []
        if not isinstance(raw_vals, list):
            raise self.svc_error(400, "Condition value for %s.%s must be a list" % (tname, alias))
        g = self.getter(alias, ctype)
        if op in ("STR_BLANK", "STR_NOT_BLANK"):
            blank = (lambda r: str(r[alias]).strip() == "") if ctype != "num" else (lambda r: False)
            if op == "STR_BLANK":
                return blank
            return lambda r: not blank(r)
        if op in ("STR_START_WITH", "STR_END_WITH", "STR_CONTAIN"):
            if len(raw_vals) < 1:
                raise self.svc_error(400, "Operator %s on %s.%s needs a value" % (op, tname, alias))
            v0 = raw_vals[0]
            s = str(v0.get("content") if isinstance(v0, dict) and v0.get("content") is not None else "")
            sg = g if ctype in ("str", "mcu") else (lambda r: str(r[alias]))
            if op == "STR_START_WITH":
                return lambda r: sg(r).startswith(s)
            if op == "STR_END_WITH":
                return lambda r: sg(r).endswith(s)
            return lambda r: s in sg(r)
        vals = [self.literal(tname, alias, ctype, v, login_user) for v in raw_vals]
        if op in ("EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL"):
            if len(vals) < 1:
                raise self.svc_error(400, "Operator %s on %s.%s needs a value" % (op, tname, alias))
            v = vals[0]
            if op == "EQUAL":
                return lambda r: g(r) == v
            if op == "NOT_EQUAL":
                return lambda r: g(r) != v
            if op == "LESS":
                return lambda r: g(r) < v
            if op == "LESS_EQUAL":
                return lambda r: g(r) <= v
            if op == "GREATER":
                return lambda r: g(r) > v
            return lambda r: g(r) >= v
        if op == "BETWEEN":
            if len(vals) < 2:
                raise self.svc_error(400, "Operator BETWEEN on %s.%s needs two values" % (tname, alias))
            lo, hi = vals[0], vals[1]
            return lambda r: lo <= g(r) <= hi
        if op == "LIST":
            if len(vals) < 1:
                raise self.svc_error(400, "Operator LIST on %s.%s needs at least one value" % (tname, alias))
            vs = set(vals)
            return lambda r: g(r) in vs
        raise self.svc_error(400, "Unknown operator '%s'" % op)

    def compile_query(self, tname, q, login_user, depth=0):
        """Predicate for a query object, or None when it matches everything."""
        if q is None:
            return None
        if depth > 20:
            raise self.svc_error(400, "complexQuery nested too deeply")
        if not isinstance(q, dict):
            raise self.svc_error(400, "query must be an object")
        match = str(q.get("matchType") or "MATCH_ALL").upper()
        if match not in ("MATCH_ALL", "MATCH_ANY"):
            raise self.svc_error(400, "Invalid matchType '%s'" % match)
        conds = q.get("condition") or []
        if not isinstance(conds, list):
            raise self.svc_error(400, "query.condition must be a list")
        preds = [self.compile_cond(tname, c, login_user) for c in conds]
        acc = None
        if len(preds) == 1:
            acc = preds[0]
        elif preds:
            ps = tuple(preds)
            if match == "MATCH_ALL":
                acc = lambda r: all(p(r) for p in ps)
            else:
                acc = lambda r: any(p(r) for p in ps)
        cq = q.get("complexQuery") or []
        if not isinstance(cq, list):
            raise self.svc_error(400, "query.complexQuery must be a list")
        for entry in cq:
            if not isinstance(entry, dict):
                raise self.svc_error(400, "complexQuery entries must be objects")
            andor = str(entry.get("andOr") or "AND").upper()
            if andor not in ("AND", "OR"):
                raise self.svc_error(400, "Invalid andOr '%s'" % andor)
            sub = self.compile_query(tname, entry.get("query"), login_user, depth + 1)
            if sub is None:
                sub = lambda r: True
            if acc is None:
                acc = sub
            elif andor == "AND":
                acc = (lambda a, b: (lambda r: a(r) and b(r)))(acc, sub)
            else:
                acc = (lambda a, b: (lambda r: a(r) or b(r)))(acc, sub)
        return acc

    # ------------------------------------------------------------------
    # data service

    def parse_page_size(self, v):
        cap = self.fault("max_page_size")
        if v is None or (isinstance(v, str) and not v.strip()):
            ps = 100
        elif isinstance(v, str) and v.strip().lower() == "no max":
            ps = None
        else:
            try:
                ps = int(str(v).strip())
            except ValueError:
                raise self.svc_error(400, "Invalid maxPageSize '%s'" % v)
            if ps <= 0:
                raise self.svc_error(400, "Invalid maxPageSize '%s'" % v)
        if cap is not None:
            try:
                cap = int(cap)
            except (TypeError, ValueError):
                cap = None
            if cap and cap > 0:
                ps = cap if ps is None else min(ps, cap)
        return ps

    def grid(self, tname, colmap, page, more, link, v2=True):
        t = TABLES[tname]
        out = {
            "fs_DATABROWSE_%s" % tname: {
                "title": "Data Browser - %s [%s]" % (tname, t["title"]),
                "data": {"gridData": {
                    "id": 1, "fullGridId": "1", "columns": colmap, "rowset": page,
                    "summary": {"records": len(page), "moreRecords": bool(more)}}},
                "errors": [], "warnings": []},
            "currentApp": "DATABROWSE_%s" % tname,
            "timeStamp": self.local_now().strftime("%Y-%m-%d:%H.%M.%S"),
            "sysErrors": [],
        }
        if link:
            out["links"] = [{"rel": "next", "href": "http://127.0.0.1:%d/jderest/v2/dataservice/next" % self.port}]
        return out

    def page_faults(self, tname, page, colkeys, out_builder):
        """Apply bad_row / malformed faults to one page answer."""
        note = None
        if self.take("bad_row"):
            key = "%s_%s" % (tname, TABLES[tname]["key"])
            junk = dict(page[-1]) if page else {k: "" for k in colkeys}
            junk[key] = "GARBAGE"
            page = page + [junk]
            note = "fault=bad_row"
        out = out_builder(page)
        if self.take("malformed"):
            raw = simbase.json_bytes(out)
            return Reply(200, raw=raw[:max(1, len(raw) // 2)], note="fault=malformed")
        return Reply(200, out, note=note)

    def exception_200(self):
        return Reply(200, {"message": "Simulated JDERestServiceException: the AIS server could not complete the "
                                      "request", "exception": "JDERestServiceException",
                           "timeStamp": ts_error()}, note="fault=exception_200")

    def h_dataservice(self, h, v2):
        self.require_json(h, optional=False)
        body = self.body_obj(h, optional=False)
        kind, rec = self.session(h, body)
        login_user = self.args.user.upper()
        with self.lock:
            if rec is not None:
                rec["cursor"] = None  # a new request replaces the open cursor
            if self.take("exception_200"):
                return self.exception_200()
            if self.take("error_500"):
                return self.svc_error(500, "Simulated server failure", exception="JDERestServiceException")
            target = str(body.get("targetName") or "").strip()
            tname = target.upper()
            ttype = str(body.get("targetType") or "table").lower()
            if tname not in TABLES or ttype != "table":
                return self.svc_error(500, "Table %s is not a valid data source" % (target or "(none)"))
            tdef = TABLES[tname]
            dstype = str(body.get("dataServiceType") or "BROWSE").upper()
            if dstype not in ("BROWSE", "COUNT", "AGGREGATION"):
                return self.svc_error(400, "Invalid dataServiceType '%s'" % dstype)
            pred = self.compile_query(tname, body.get("query"), login_user)
            agg = body.get("aggregation") or {}
            if not isinstance(agg, dict):
                return self.svc_error(400, "aggregation must be an object")
            order = agg.get("orderBy") or []
            if not isinstance(order, list):
                return self.svc_error(400, "aggregation.orderBy must be a list")
            sorts = []
            for ob in order:
                if not isinstance(ob, dict):
                    return self.svc_error(400, "orderBy entries must be objects")
                alias, ctype = self.resolve_col(tname, ob.get("column"), "orderBy")
                d = str(ob.get("direction") or "ASC").upper()
                if d not in ("ASC", "DESC"):
                    return self.svc_error(400, "Invalid orderBy direction '%s'" % d)
                sorts.append((alias, ctype, d == "DESC"))
            rids = body.get("returnControlIDs")
            if rids is None or (isinstance(rids, str) and not rids.strip()):
                cols = list(tdef["order"])
            else:
                cols = []
                for part in str(rids).split("|"):
                    if part.strip():
                        alias, _ = self.resolve_col(tname, part, "returnControlIDs")
                        if alias not in cols:
                            cols.append(alias)
            ps = self.parse_page_size(body.get("maxPageSize"))
            src = self.tables[tname]
            rows = [r for r in src if pred(r)] if pred is not None else list(src)
            if dstype == "COUNT":
                return Reply(200, {"ds_%s" % tname: {"output": [{"count": len(rows)}]}})
            if dstype == "AGGREGATION":
                return self.aggregate(tname, rows, agg)
            for alias, ctype, desc in reversed(sorts):
                rows.sort(key=self.getter(alias, ctype), reverse=desc)
            keys = [("%s_%s" % (tname, a), a) for a in cols]
            proj = [{k: r[a] for k, a in keys} for r in rows]
            colmap = {k: tdef["labels"][a] for k, a in keys}
            paging = v2 and kind == "token" and body.get("enableNextPageProcessing") in (True, "true", "TRUE", "True")
            first = proj if ps is None else proj[:ps]
            more = ps is not None and len(proj) > ps
            if paging and more:
                rec["cursor"] = {"table": tname, "rows": proj, "pos": ps, "ps": ps, "colmap": colmap,
                                 "used": time.monotonic()}
            link = paging and more
            return self.page_faults(tname, first, [k for k, _ in keys],
                                    lambda page: self.grid(tname, colmap, page, more, link))

    def aggregate(self, tname, rows, agg):
        aggs = agg.get("aggregations") or []
        groups = agg.get("groupBy") or []
        if not isinstance(aggs, list) or not isinstance(groups, list):
            raise self.svc_error(400, "aggregation.aggregations and groupBy must be lists")
        specs = []
        for a in aggs:
            if not isinstance(a, dict):
                raise self.svc_error(400, "aggregation entries must be objects")
            fn = str(a.get("aggregation") or "").upper()
            col = str(a.get("column") or "*")
            if fn not in ("COUNT", "COUNT_DISTINCT", "SUM", "AVG", "MIN", "MAX"):
                raise self.svc_error(400, "Unsupported aggregation '%s'" % fn)
            if col == "*":
                if fn != "COUNT":
                    raise self.svc_error(400, "Only COUNT accepts column '*'")
                specs.append(("COUNT", None, None, "COUNT"))
            else:
                alias, ctype = self.resolve_col(tname, col, "aggregation")
                specs.append((fn, alias, ctype, "%s.%s_%s" % (tname, alias, fn)))
        if not specs:
            specs.append(("COUNT", None, None, "COUNT"))
        gcols = []
        for g in groups:
            c = g.get("column") if isinstance(g, dict) else g
            gcols.append(self.resolve_col(tname, c, "groupBy"))
        buckets = {}
        for r in rows:
            k = tuple(self.getter(a, t)(r) for a, t in gcols)
            buckets.setdefault(k, []).append(r)
        if not gcols and not buckets:
            buckets[()] = []
        out = []
        for k in sorted(buckets):
            rs = buckets[k]
            item = {}
            if gcols:
                item["groupBy"] = {"%s.%s" % (tname, a): v for (a, _t), v in zip(gcols, k)}
            for fn, alias, ctype, key in specs:
                if alias is None:
                    item[key] = len(rs)
                    continue
                vals = [self.getter(alias, ctype)(r) for r in rs]
                if fn == "COUNT":
                    item[key] = len(vals)
                elif fn == "COUNT_DISTINCT":
                    item[key] = len(set(vals))
                elif fn == "MIN":
                    item[key] = min(vals) if vals else None
                elif fn == "MAX":
                    item[key] = max(vals) if vals else None
                elif ctype != "num":
                    raise self.svc_error(400, "%s needs a numeric column" % fn)
                elif fn == "SUM":
                    item[key] = sum(vals)
                else:
                    item[key] = (sum(vals) / len(vals)) if vals else None
            out.append(item)
        return Reply(200, {"ds_%s" % tname: {"output": out}})

    def h_next(self, h):
        self.require_json(h, optional=True)
        body = self.body_obj(h, optional=True)
        kind, rec = self.session(h, body)
        if kind != "token":
            return self.svc_error(400, "No next page available (stateless requests have no cursor)")
        with self.lock:
            if self.take("drop_cursor"):
                rec["cursor"] = None
                r = self.svc_error(400, "No next page available")
                r.note = "fault=drop_cursor"
                return r
            cur = rec.get("cursor")
            idle = self.fault("cursor_idle_s")
            if cur is not None and idle is not None and time.monotonic() - cur["used"] > float(idle):
                rec["cursor"] = cur = None
            if cur is None:
                return self.svc_error(400, "No next page available")
            if self.take("exception_200"):
                return self.exception_200()
            if self.take("error_500"):
                return self.svc_error(500, "Simulated server failure")
            start = cur["pos"]
            page = cur["rows"][start:start + cur["ps"]]
            cur["pos"] = start + cur["ps"]
            cur["used"] = time.monotonic()
            more = cur["pos"] < len(cur["rows"])
            if not more:
                rec["cursor"] = None
            tname = cur["table"]
            colmap = cur["colmap"]
            return self.page_faults(tname, page, list(colmap),
                                    lambda pg: self.grid(tname, colmap, pg, more, more))

    # ------------------------------------------------------------------
    # orchestrations

    ORCHESTRATIONS = {
        # name -> (required inputs, handler name)
        "MLC_UpdateWOStatus": (("WorkOrder", "Status"), "orch_update_status"),
        "MLC_HoldWorkOrder": (("WorkOrder", "HoldCode"), "orch_hold"),
        "MLC_UpdateWODates": (("WorkOrder", "RequestedDate"), "orch_update_dates"),
        "MLC_UpdateWOPriority": (("WorkOrder", "Priority"), "orch_update_priority"),
    }

    def h_orchestrator(self, h, name):
        self.require_json(h, optional=True)
        body = self.body_obj(h, optional=True)
        kind, rec = self.session(h, body)
        inputs = {}
        if isinstance(body.get("inputs"), list):
            for it in body["inputs"]:
                if isinstance(it, dict) and "name" in it:
                    inputs[str(it["name"])] = it.get("value")
        else:
            for k, v in body.items():
                if k not in ("token", "deviceName", "outputType"):
                    inputs[k] = v
        try:
            reply = self.run_orchestration(name, inputs)
        except Reply as r:
            reply = r
        obj = reply.obj if isinstance(reply.obj, dict) else {}
        with self.lock:
            self.orch_log.append({
                "seq": len(self.orch_log) + 1, "name": name, "inputs": inputs, "auth": kind,
                "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                "status": reply.status, "outcome": "ok" if reply.status < 300 else "error",
                "message": obj.get("jde__simpleMessage") or obj.get("userDefinedErrorText") or obj.get("message"),
            })
        return reply

    def run_orchestration(self, name, inputs):
        if self.take("error_500"):
            r = self.svc_error(500, "Simulated orchestration failure", userDefinedErrorText="")
            r.note = "fault=error_500"
            return r
        spec = self.ORCHESTRATIONS.get(name)
        if spec is None:
            return self.svc_error(404, "Orchestration %s not found" % name,
                                  userDefinedErrorText="Orchestration %s is not defined" % name)
        required, handler = spec
        for k in required:
            if inputs.get(k) is None:
                return self.svc_error(400, "Missing orchestration input %s" % k,
                                      userDefinedErrorText="Input %s is required" % k)
        started = ts_error()
        t0 = time.monotonic()
        wo = str(inputs["WorkOrder"]).strip()
        with self.lock:
            try:
                doco = int(wo)
            except ValueError:
                doco = None
            row = self.index["F4801"].get(doco)
            if row is None:
                return self.svc_error(500, "Orchestration %s failed" % name,
                                      userDefinedErrorText="Work order %s does not exist" % wo,
                                      jde__status="ERROR")
            out = getattr(self, handler)(name, wo, row, inputs)
            if isinstance(out, Reply):
                return out
            row["UPMJ"], row["TDAY"] = self.tick()
            row["USER"] = pad(self.args.user.upper(), 10)
            row["PID"] = "P48013"
        out.update({
            "jde__status": "SUCCESS",
            "jde__startTimestamp": started, "jde__endTimestamp": ts_error(),
            "jde__serverExecutionSeconds": round(time.monotonic() - t0, 3),
        })
        return Reply(200, out)

    def orch_update_status(self, name, wo, row, inputs):
        """MLC_UpdateWOStatus: SRST = Status (UDC 00/SS). Caller holds the lock."""
        st = str(inputs["Status"]).strip()
        if st not in VALID_SRST:
            return self.svc_error(500, "Orchestration %s failed" % name,
                                  userDefinedErrorText="Status '%s' is not a valid work order status "
                                                       "(UDC 00/SS)" % st, jde__status="ERROR")
        old = row["SRST"]
        row["SRST"] = st
        return {"WorkOrder": wo, "Status": st,
                "jde__simpleMessage": "Work order %s status changed from %s to %s" % (wo, old, st)}

    def orch_hold(self, name, wo, row, inputs):
        """MLC_HoldWorkOrder: WR10 = HoldCode (1-3 characters, blank releases). Caller holds the lock."""
        code = str(inputs["HoldCode"]).strip()
        if len(code) > 3:
            return self.svc_error(500, "Orchestration %s failed" % name,
                                  userDefinedErrorText="Hold code '%s' is longer than 3 characters "
                                                       "(UDC 00/W0)" % code, jde__status="ERROR")
        old = row["WR10"].strip()
        row["WR10"] = code.ljust(3)
        msg = ("Work order %s released from hold %s" % (wo, old or "(none)") if not code else
               "Work order %s put on hold %s" % (wo, code))
        return {"WorkOrder": wo, "HoldCode": code, "jde__simpleMessage": msg}

    def orch_update_dates(self, name, wo, row, inputs):
        """MLC_UpdateWODates: DRQJ = RequestedDate, given as YYYYMMDD (8 digits, a
        real date; the form F4801 rows show dates in). Caller holds the lock."""
        val = str(inputs["RequestedDate"]).strip()
        ok = re.fullmatch(r"\d{8}", val) is not None
        if ok:
            try:
                dt.datetime.strptime(val, "%Y%m%d")
            except ValueError:
                ok = False
        if not ok:
            return self.svc_error(500, "Orchestration %s failed" % name,
                                  userDefinedErrorText="Requested date '%s' is not a valid date "
                                                       "(expected YYYYMMDD)" % val, jde__status="ERROR")
        old = row["DRQJ"]
        row["DRQJ"] = val
        return {"WorkOrder": wo, "RequestedDate": val,
                "jde__simpleMessage": "Work order %s requested date changed from %s to %s" % (wo, old, val)}

    def orch_update_priority(self, name, wo, row, inputs):
        """MLC_UpdateWOPriority: PRTS = Priority (UDC 00/PR, 1-5). Caller holds the lock."""
        val = str(inputs["Priority"]).strip()
        if val not in VALID_PRTS:
            return self.svc_error(500, "Orchestration %s failed" % name,
                                  userDefinedErrorText="Priority '%s' is not a valid work order priority "
                                                       "(UDC 00/PR: 1-5)" % val, jde__status="ERROR")
        old = row["PRTS"]
        row["PRTS"] = val
        return {"WorkOrder": wo, "Priority": val,
                "jde__simpleMessage": "Work order %s priority changed from %s to %s" % (wo, old, val)}

    # ------------------------------------------------------------------
    # control endpoints

    def control(self, method, p, h):
        if p == "/_sim/expire_tokens" and method == "POST":
            with self.lock:
                n = len(self.tokens)
                self.tokens.clear()
            return Reply(200, {"killed": n})
        if p == "/_sim/tokens" and method == "GET":
            now = time.monotonic()
            ttl = self.token_ttl()
            with self.lock:
                out = [{"token": r["token"], "deviceName": r["device"],
                        "expires_in_s": round(r["base"] + ttl - now, 3),
                        "cursor": (None if not r["cursor"] else
                                   {"pos": r["cursor"]["pos"], "rows": len(r["cursor"]["rows"])})}
                       for r in self.tokens.values()]
            return Reply(200, out)
        if p == "/_sim/touch" and method == "POST":
            b = control_json(h)
            tname = str(b.get("table") or "F4801").upper()
            if tname != "F4801":
                return Reply(400, {"error": "touch supports table F4801 only"})
            try:
                n = int(b.get("count", 1))
            except (TypeError, ValueError):
                return Reply(400, {"error": "count must be an integer"})
            with self.lock:
                rows = self.tables["F4801"]
                n = max(0, min(n, len(rows)))
                picked = self.touch_rng.sample(rows, n)
                upmj, tday = self.tick()
                for r in picked:
                    k = self.revs.get(r["DOCO"], 0) + 1
                    self.revs[r["DOCO"]] = k
                    base = re.sub(r" \(rev \d+\)$", "", r["DL01"].rstrip())
                    suffix = " (rev %d)" % k
                    r["DL01"] = base[:30 - len(suffix)] + suffix
                    r["UPMJ"], r["TDAY"] = upmj, tday
            return Reply(200, {"keys": sorted(r["DOCO"] for r in picked), "UPMJ": upmj, "TDAY": tday})
        if p == "/_sim/update" and method == "POST":
            # set columns of one F4801 row, as a person editing it in JD Edwards would
            # (UPMJ/TDAY move, so a poller sees the change)
            b = control_json(h)
            sets = b.get("set")
            if not isinstance(sets, dict) or not sets:
                return Reply(400, {"error": "set must be an object of column -> value"})
            with self.lock:
                rows = [r for r in self.tables["F4801"] if str(r["DOCO"]) == str(b.get("key"))]
                if not rows:
                    return Reply(404, {"error": "no F4801 row with DOCO %s" % b.get("key")})
                bad = [c for c in sets if c not in rows[0]]
                if bad:
                    return Reply(400, {"error": "unknown columns %s" % bad})
                rows[0].update(sets)
                if not b.get("keep_stamp"):
                    upmj, tday = self.tick()
                    rows[0]["UPMJ"], rows[0]["TDAY"] = upmj, tday
                # keep_stamp: a fix-up written straight to the table, which
                # leaves the audit columns alone (no poller sees it)
                return Reply(200, dict(rows[0]))
        if p == "/_sim/seed" and method == "POST":
            b = control_json(h)
            try:
                n = int(b.get("count", self.args.seed))
                rs = int(b.get("rng_seed", self.args.rng_seed))
            except (TypeError, ValueError):
                return Reply(400, {"error": "count and rng_seed must be integers"})
            if n < 0 or n > 1000000:
                return Reply(400, {"error": "count out of range"})
            self.generate(n, rs)
            return Reply(200, {"rows": n})
        if p == "/_sim/rows" and method == "GET":
            tname = str(h.qparam("table", "F4801")).upper()
            if tname not in TABLES:
                return Reply(404, {"error": "unknown table %s" % tname})
            key = h.qparam("key")
            with self.lock:
                if key is None:
                    return Reply(200, [dict(r) for r in self.tables[tname]])
                try:
                    k = int(key)
                except ValueError:
                    k = key
                r = self.index[tname].get(k)
                if r is None:
                    return Reply(404, {"error": "no row %s in %s" % (key, tname)})
                return Reply(200, dict(r))
        if p == "/_sim/orchestrations" and method == "GET":
            name = h.qparam("name")
            with self.lock:
                return Reply(200, [dict(e) for e in self.orch_log if name is None or e["name"] == name])
        if p == "/_sim/orchestrations/clear" and method == "POST":
            with self.lock:
                n = len(self.orch_log)
                self.orch_log = []
            return Reply(200, {"cleared": n})
        if p == "/_sim/clock" and method == "GET":
            with self.lock:
                c = self.clock_last
            return Reply(200, {"last_UPMJ": ymd(c) if c else None,
                               "last_TDAY": (c.hour * 10000 + c.minute * 100 + c.second) if c else None,
                               "local_now": self.local_now().isoformat()})
        return None


if __name__ == "__main__":
    sys.exit(simbase.main(JdeSim))
