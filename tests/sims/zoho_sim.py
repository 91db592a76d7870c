#!/usr/bin/env python3
"""Zoho CRM v8 simulator (several data centres, OAuth, records, watch API).

One process serves every configured data centre on one port; a data centre
is told apart by the first path segment:

    accounts server of DC "eu":  http://127.0.0.1:PORT/eu/accounts
    API domain of DC "eu":       http://127.0.0.1:PORT/eu/api

so a client configures only the accounts server URL and follows the
`api_domain` of the token answer.  Each DC has its own org (records,
channels, credits, tokens).  Follows docs/api/zoho-crm.md section 8; see
tests/sims/README.md.  Standard library only.
"""

import base64
import datetime as dt
import hmac
import json
import queue
import random
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlencode, urlsplit

import simbase
from simbase import Reply, Route, control_json

DCS = ["us", "eu", "in", "au", "jp", "ca"]
API = "/crm/v8/"
ALL_SCOPES = ["ZohoCRM.modules.ALL", "ZohoCRM.settings.fields.READ", "ZohoCRM.notifications.ALL",
              "ZohoSearch.securesearch.READ"]
HOUR = 3600.0
WEEK = 7 * 24 * HOUR
TOKENS_PER_WINDOW = 10      # access tokens one refresh token may mint per window
TOKEN_WINDOW_S = 600.0
LIVE_TOKENS_PER_RT = 30     # the 31st access token of a refresh token deletes the oldest
RT_PER_USER = 20            # the 21st refresh token of a user deletes the oldest
MAX_WRITE = 100
MAX_PER_PAGE = 200
MAX_FIELDS = 50
PAGE_CAP = 2000             # page/per_page reach at most this far; beyond: page_token
MAX_CONDITIONS = 10
TOKEN_MAX = 50
SECRET_PARAMS = {"client_secret", "refresh_token", "code", "token", "access_token"}

MODULES = {
    "Accounts": {
        "fields": ["Account_Name", "Account_Number", "Account_Site", "Account_Type", "Phone", "Fax", "Website",
                   "Industry", "Employees", "Annual_Revenue", "Ownership", "Parent_Account", "Billing_Street",
                   "Billing_City", "Billing_State", "Billing_Code", "Billing_Country", "Shipping_Street",
                   "Shipping_City", "Shipping_State", "Shipping_Code", "Shipping_Country", "Description",
                   "Payment_Terms", "Credit_Limit"],
        "mandatory": "Account_Name", "system_dup": "Account_Name", "name_field": "Account_Name",
        "lookups": {"Parent_Account": "Accounts"}, "email_fields": [], "phone_fields": ["Phone", "Fax"],
    },
    "Contacts": {
        "fields": ["First_Name", "Last_Name", "Email", "Secondary_Email", "Phone", "Mobile", "Home_Phone",
                   "Other_Phone", "Fax", "Title", "Department", "Account_Name", "Reporting_To", "Mailing_Street",
                   "Mailing_City", "Mailing_State", "Mailing_Zip", "Mailing_Country", "Other_Street",
                   "Other_City", "Other_State", "Other_Zip", "Other_Country", "Email_Opt_Out", "Lead_Source",
                   "Description"],
        "mandatory": "Last_Name", "system_dup": "Email", "name_field": "Full_Name",
        "lookups": {"Account_Name": "Accounts", "Reporting_To": "Contacts"}, "email_fields": ["Email", "Secondary_Email"],
        "phone_fields": ["Phone", "Mobile", "Home_Phone", "Other_Phone", "Fax"],
    },
}
READ_ONLY = {"id", "Created_Time", "Modified_Time", "Created_By", "Modified_By", "Full_Name"}
OPS = {"create": "insert", "edit": "update", "delete": "delete"}
SEARCH_OPS = {"equals", "not_equal", "starts_with", "in", "greater_than", "greater_equal", "less_than",
              "less_equal", "between"}

FIRST = ["Anna", "Ben", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kofi", "Lena"]
LAST = ["Müller", "Smith", "Okafor", "Tanaka", "García", "Novak", "O'Neil", "Rossi", "Chen", "Dubois"]
COMPANY = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell", "Hooli", "Vandelay", "Oscorp"]
SUFFIX = ["GmbH", "Inc", "Ltd", "S.A.", "KK", "Pty Ltd"]
CITIES = ["Berlin", "Austin", "Pune", "Sydney", "Osaka", "Toronto", "Lyon", "Leeds"]


def iso(t):
    """Zoho's date-time form: seconds and a numeric offset (UTC here)."""
    return dt.datetime.fromtimestamp(int(t), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def parse_iso(s):
    """Epoch seconds of an ISO-8601 date-time with offset (Z allowed), or None."""
    if not isinstance(s, str) or not s.strip():
        return None
    s = s.strip().replace(" ", "+") if "T" in s else s.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        d = dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if d.tzinfo is None:
        return None
    return d.timestamp()


def err(code, message, details=None, status="error"):
    return {"code": code, "details": details if details is not None else {}, "message": message, "status": status}


class Org:
    """One data centre's org: records, channels, credits, write log."""

    def __init__(self, dc, args):
        self.dc = dc
        self.records = {"Accounts": {}, "Contacts": {}}   # id -> stored record (lookups as ids)
        self.deleted = {"Accounts": {}, "Contacts": {}}   # id -> (record, deleted_at)
        self.order = {"Accounts": [], "Contacts": []}     # ids in creation order
        self.index = {"Accounts": {}, "Contacts": {}}     # unique field -> normalised value -> [ids]
        self.channels = {}                                 # channel_id (str) -> channel
        self.credit_log = []                               # epoch times of charged calls
        self.credit_limit = args.credits
        self.inflight = 0
        self.writes = []


class ZohoSim(simbase.Sim):
    """Zoho CRM v8 simulator"""

    name = "zoho"

    @staticmethod
    def add_args(p):
        p.add_argument("--dcs", default=",".join(DCS), help="data centres served, comma separated")
        p.add_argument("--home-dc", default="us", help="DC holding the initial refresh token")
        p.add_argument("--client-id", default="1000.MLCSIMCLIENT", help="OAuth client id")
        p.add_argument("--client-secret", default="mlc-zoho-secret", help="OAuth client secret")
        p.add_argument("--refresh-token", default="1000.rt-initial",
                       help="an initially valid refresh token (home DC, every scope)")
        p.add_argument("--user", default="sync@example.com", help="the integration user (owner of the tokens)")
        p.add_argument("--token-ttl", type=float, default=3600.0, help="access-token lifetime, seconds")
        p.add_argument("--tax-id-field", default="Tax_ID", help="API name of the custom unique tax-id field")
        p.add_argument("--no-tax-id-unique", action="store_true",
                       help="the tax-id field is not flagged unique (may not be a duplicate_check_field)")
        p.add_argument("--jde-field", default="JDE_Address_Number",
                       help="API name of the custom field holding the JD Edwards address number (both modules)")
        p.add_argument("--accounts", type=int, default=0, help="accounts to generate at start (home DC)")
        p.add_argument("--contacts", type=int, default=0, help="contacts to generate at start (home DC)")
        p.add_argument("--credits", type=int, default=50000, help="API credits per rolling 24 h per org")
        p.add_argument("--concurrency", type=int, default=10, help="simultaneous calls per org before 429")
        p.add_argument("--rng-seed", type=int, default=16)
        p.add_argument("--callback-timeout", type=float, default=5.0, help="seconds to wait for a notify_url")

    def __init__(self, args):
        super().__init__(args)
        self.dcs = [d.strip() for d in args.dcs.split(",") if d.strip()]
        if args.home_dc not in self.dcs:
            raise SystemExit("zoho_sim: --home-dc %s is not among --dcs %s" % (args.home_dc, args.dcs))
        self.lock = threading.RLock()
        self.cb_queue = queue.Queue()
        self.cb_busy = 0
        self.cb_cond = threading.Condition()
        self.concurrency = args.concurrency
        self.release_evt = threading.Event()
        threading.Thread(target=self._cb_worker, name="callbacks", daemon=True).start()
        self.reset_all()

    def reset_all(self):
        with self.lock:
            self.concurrency = self.args.concurrency
            self.offset = 0.0                 # /_sim/clock moves this
            self.orgs = {dc: Org(dc, self.args) for dc in self.dcs}
            self.rts = {}                     # refresh token -> {dc, user, scopes, issued, mints[], live[]}
            self.ats = {}                     # access token -> {dc, rt, scopes, exp}
            self.codes = {}                   # grant code -> {dc, scopes, redirect_uri}
            self.next_id = 4150868000000376000
            self.callbacks = []               # delivered or attempted callbacks, in order
            self.held = []                    # callbacks held back ("late")
            self.rng = random.Random(self.args.rng_seed)
            self.add_rt(self.args.refresh_token, self.args.home_dc, self.args.user, ALL_SCOPES)
            home = self.orgs[self.args.home_dc]
            self.seed(home, "Accounts", self.args.accounts, [])
            self.seed(home, "Contacts", self.args.contacts, [])

    # ------------------------------------------------------------------
    # clock and stats

    def now(self):
        return time.time() + self.offset

    def http_time(self):
        return self.now()

    def _zero_stats(self):
        super()._zero_stats()
        with self.stats_lock:
            self.token_counts = {}

    def stats_snapshot(self):
        s = super().stats_snapshot()
        with self.stats_lock:
            s["token_answers"] = dict(self.token_counts)
        with self.lock:
            s["credits_used"] = {dc: len(o.credit_log) for dc, o in self.orgs.items()}
            s["callbacks"] = len(self.callbacks)
        return s

    def count_token(self, what):
        with self.stats_lock:
            self.token_counts[what] = self.token_counts.get(what, 0) + 1

    def log_path(self, path):
        """Token calls may carry secrets in the query string: log their names only."""
        u = urlsplit(path)
        if not u.query:
            return path
        q = parse_qs(u.query, keep_blank_values=True)
        return u.path + "?" + "&".join("%s=%s" % (k, "***" if k in SECRET_PARAMS else v[0]) for k, v in q.items())

    def error_body(self, status, message):
        code = {400: "INVALID_DATA", 401: "INVALID_TOKEN", 403: "NO_PERMISSION", 404: "INVALID_URL_PATTERN",
                405: "INVALID_REQUEST_METHOD", 429: "TOO_MANY_REQUESTS"}.get(status, "INTERNAL_ERROR")
        return err(code, message)

    def base_url(self):
        return "http://127.0.0.1:%d" % self.port

    def accounts_url(self, dc):
        return "%s/%s/accounts" % (self.base_url(), dc)

    def api_domain(self, dc):
        return "%s/%s/api" % (self.base_url(), dc)

    # ------------------------------------------------------------------
    # OAuth

    def add_rt(self, rt, dc, user, scopes):
        """Register a refresh token; a user's 21st deletes the oldest."""
        mine = sorted((r["issued"], t) for t, r in self.rts.items() if r["user"] == user)
        while len(mine) >= RT_PER_USER:
            _, old = mine.pop(0)
            self.drop_rt(old)
        self.rts[rt] = {"dc": dc, "user": user, "scopes": list(scopes), "issued": self.now() + len(self.rts) * 1e-6,
                        "mints": [], "live": []}

    def drop_rt(self, rt):
        r = self.rts.pop(rt, None)
        if r:
            for at in r["live"]:
                self.ats.pop(at, None)

    def mint_at(self, rt):
        r = self.rts[rt]
        at = "1000.%s.%s" % (secrets.token_hex(16), secrets.token_hex(16))
        ttl = self.fault_num("token_ttl", self.args.token_ttl)
        self.ats[at] = {"dc": r["dc"], "rt": rt, "scopes": r["scopes"], "exp": self.now() + ttl}
        r["live"].append(at)
        while len(r["live"]) > LIVE_TOKENS_PER_RT:
            self.ats.pop(r["live"].pop(0), None)
        return at, ttl

    def form(self, h):
        """Token-endpoint parameters: query string and form body, body wins."""
        f = {k: v[0] for k, v in h.query.items()}
        if h.body and (h.media_type() or "application/x-www-form-urlencoded") == "application/x-www-form-urlencoded":
            for k, v in parse_qs(h.body.decode("utf-8", "replace"), keep_blank_values=True).items():
                f[k] = v[0]
        return f

    def h_token(self, h, dc):
        f = self.form(h)
        if self.take("token_error_500"):
            return Reply(500, {"error": "internal_error"})
        cid, csec = f.get("client_id"), f.get("client_secret") or ""
        if cid != self.args.client_id or not hmac.compare_digest(csec.encode(), self.args.client_secret.encode()):
            self.count_token("invalid_client")
            return Reply(200, {"error": "invalid_client"})  # Zoho answers errors in a 200 body too
        grant = f.get("grant_type")
        with self.lock:
            if grant == "refresh_token":
                rt = f.get("refresh_token") or ""
                r = self.rts.get(rt)
                if r is None or r["dc"] != dc:
                    # unknown here: revoked, evicted, or issued by another DC's accounts server
                    self.count_token("invalid_code")
                    return Reply(200, {"error": "invalid_code"})
                now = self.now()
                r["mints"] = [t for t in r["mints"] if t > now - TOKEN_WINDOW_S]
                if len(r["mints"]) >= TOKENS_PER_WINDOW:
                    self.count_token("access_denied")
                    return Reply(400, {"error": "Access Denied", "error_description":
                                       "You have made too many requests continuously. Please try again after some time.",
                                       "status": "failure"})
                r["mints"].append(now)
                at, ttl = self.mint_at(rt)
                self.count_token("refresh")
                return Reply(200, {"access_token": at, "scope": " ".join(r["scopes"]), "api_domain": self.api_domain(dc),
                                   "token_type": "Bearer", "expires_in": int(ttl)})
            if grant == "authorization_code":
                c = self.codes.pop(f.get("code") or "", None)
                if c is None or c["dc"] != dc or c["redirect_uri"] != f.get("redirect_uri"):
                    self.count_token("invalid_code")
                    return Reply(200, {"error": "invalid_code"})
                rt = "1000.%s.%s" % (secrets.token_hex(16), secrets.token_hex(16))
                self.add_rt(rt, dc, self.args.user, c["scopes"])
                self.rts[rt]["mints"].append(self.now())
                at, ttl = self.mint_at(rt)
                self.count_token("code")
                return Reply(200, {"access_token": at, "refresh_token": rt, "scope": " ".join(c["scopes"]),
                                   "api_domain": self.api_domain(dc), "token_type": "Bearer", "expires_in": int(ttl)})
        self.count_token("unsupported_grant_type")
        return Reply(200, {"error": "unsupported_grant_type"})

    def h_revoke(self, h, dc):
        t = self.form(h).get("token") or ""
        with self.lock:
            if t in self.rts and self.rts[t]["dc"] == dc:
                self.drop_rt(t)
                return Reply(200, {"status": "success"})
        return Reply(200, {"error": "invalid_token"})

    def h_auth(self, h, dc):
        """The consent page, approved at once: redirect with code, location, accounts-server."""
        q = {k: v[0] for k, v in h.query.items()}
        if q.get("client_id") != self.args.client_id or not q.get("redirect_uri"):
            return Reply(400, {"error": "invalid_client"})
        code = "1000.%s" % secrets.token_hex(16)
        scopes = [s for s in (q.get("scope") or "").replace(" ", ",").split(",") if s] or ALL_SCOPES
        with self.lock:
            self.codes[code] = {"dc": dc, "scopes": scopes, "redirect_uri": q["redirect_uri"]}
        params = {"code": code, "location": dc, "accounts-server": self.accounts_url(dc)}
        if "state" in q:
            params["state"] = q["state"]
        sep = "&" if "?" in q["redirect_uri"] else "?"
        return Reply(302, None, headers={"Location": q["redirect_uri"] + sep + urlencode(params)})

    def authenticate(self, h, dc, scope_any):
        a = h.header("Authorization") or ""
        if not a.strip():
            raise Reply(401, err("AUTHENTICATION_FAILURE", "Authentication failed"))
        if a[:16].lower() != "zoho-oauthtoken ":
            raise Reply(401, err("INVALID_TOKEN", "invalid oauth token: the Authorization header must be "
                                 "'Zoho-oauthtoken <access token>'"))
        tok = a[16:].strip()
        with self.lock:
            t = self.ats.get(tok)
            if t is None or t["dc"] != dc:
                raise Reply(401, err("INVALID_TOKEN", "invalid oauth token"))
            if self.now() >= t["exp"]:
                raise Reply(401, err("INVALID_TOKEN", "invalid oauth token"))
            scopes = t["scopes"]
        if scope_any and not any(s in scopes for s in scope_any):
            raise Reply(401, err("OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL"))

    # ------------------------------------------------------------------
    # routing

    def route(self, method, path, h):
        parts = path.split("/", 3)  # "", dc, "accounts"|"api", rest
        if len(parts) < 3 or parts[1] not in self.dcs:
            return None
        dc, host = parts[1], parts[2]
        rest = "/" + (parts[3] if len(parts) > 3 else "")
        if host == "accounts":
            if rest == "/oauth/v2/token" and method == "POST":
                return Route("token", lambda: self.h_token(h, dc))
            if rest == "/oauth/v2/token/revoke" and method == "POST":
                return Route("revoke", lambda: self.h_revoke(h, dc))
            if rest == "/oauth/v2/auth" and method == "GET":
                return Route("auth", lambda: self.h_auth(h, dc))
            return None
        if host != "api":
            return None
        if not rest.startswith(API):
            return Route("unknown", lambda: Reply(404, err("INVALID_URL_PATTERN", "Please check if the URL trying to "
                                                           "access is a correct one")))
        seg = [s for s in rest[len(API):].split("/") if s]
        org = self.orgs[dc]

        def api(name, func, scopes, write=False, cost=1):
            return Route(name, lambda: self.api_call(h, dc, org, func, scopes, cost), write=write)

        mod_scopes = ["ZohoCRM.modules.ALL"]
        if seg[:2] == ["actions", "watch"] and len(seg) == 2:
            ns = ["ZohoCRM.notifications.ALL"]
            if method == "POST":
                return api("watch_subscribe", lambda: self.h_watch_write(h, org, "create"), ns, True)
            if method == "PATCH":
                return api("watch_patch", lambda: self.h_watch_write(h, org, "patch"), ns, True)
            if method == "PUT":
                return api("watch_put", lambda: self.h_watch_write(h, org, "put"), ns, True)
            if method == "DELETE":
                return api("watch_delete", lambda: self.h_watch_delete(h, org), ns, True)
            if method == "GET":
                return api("watch_list", lambda: self.h_watch_list(h, org), ns)
        if seg and seg[0] not in MODULES:
            return Route("unknown", lambda: Reply(400, err("INVALID_MODULE", "the module name given seems to be invalid",
                                                           {"resource_path_index": 0})))
        if len(seg) >= 1:
            mod = seg[0]
            mod_scopes = ["ZohoCRM.modules.ALL", "ZohoCRM.modules.%s.ALL" % mod.lower()]
        if len(seg) == 1:
            if method == "GET":
                return api("list", lambda: self.h_list(h, org, mod), mod_scopes)
            if method == "POST":
                return api("insert", lambda: self.h_write(h, org, mod, "insert"), mod_scopes, True)
            if method == "PUT":
                return api("update", lambda: self.h_write(h, org, mod, "update"), mod_scopes, True)
            if method == "DELETE":
                return api("delete", lambda: self.h_delete(h, org, mod, (h.qparam("ids") or "").split(",")),
                           mod_scopes, True)
        if len(seg) == 2 and seg[1] == "upsert" and method == "POST":
            return api("upsert", lambda: self.h_write(h, org, mod, "upsert"), mod_scopes, True)
        if len(seg) == 2 and seg[1] == "search" and method == "GET":
            return api("search", lambda: self.h_search(h, org, mod), ["ZohoSearch.securesearch.READ"])
        if len(seg) == 2 and seg[1] == "deleted" and method == "GET":
            return api("deleted", lambda: self.h_deleted(h, org, mod), mod_scopes)
        if len(seg) == 2:
            rid = seg[1]
            if method == "GET":
                return api("get", lambda: self.h_get(h, org, mod, rid), mod_scopes)
            if method == "PUT":
                return api("update", lambda: self.h_write(h, org, mod, "update", rid), mod_scopes, True)
            if method == "DELETE":
                return api("delete", lambda: self.h_delete(h, org, mod, [rid]), mod_scopes, True)
        return Route("unknown", lambda: Reply(404, err("INVALID_URL_PATTERN", "Please check if the URL trying to "
                                                       "access is a correct one")))

    def api_call(self, h, dc, org, func, scopes, cost):
        """Authentication, credits and concurrency around one API handler."""
        self.authenticate(h, dc, scopes)
        now = self.now()
        with self.lock:
            org.credit_log = [t for t in org.credit_log if t > now - 24 * HOUR]
            if len(org.credit_log) + cost > org.credit_limit:
                raise Reply(429, err("LIMIT_REACHED", "API credits exhausted for the org; the rolling 24-hour "
                                     "window frees credits as older calls age out",
                                     {"credits_limit": org.credit_limit, "credits_used": len(org.credit_log)}),
                            note="credits_exhausted")
            if org.inflight >= self.concurrency or self.take("concurrency_429"):
                raise Reply(429, err("TOO_MANY_REQUESTS", "concurrency limit exceeded for the org",
                                     {"limit": self.concurrency}), note="concurrency")
            org.credit_log.append(now)
            org.inflight += 1
            evt = self.release_evt if self.take("hold_calls") else None
        try:
            if evt is not None:  # a call that stays in flight until /_sim/release_calls
                evt.wait(30)
            return func()
        finally:
            with self.lock:
                org.inflight -= 1

    # ------------------------------------------------------------------
    # records

    def new_id(self):
        self.next_id += 1 + self.rng.randrange(3)
        return str(self.next_id)

    def unique_fields(self, mod):
        """System duplicate-check field first, then user-defined unique fields."""
        out = [MODULES[mod]["system_dup"]]
        if mod == "Accounts" and not self.args.no_tax_id_unique:
            out.append(self.args.tax_id_field)
        return out

    def writable(self, mod):
        return set(MODULES[mod]["fields"]) | {self.args.jde_field} | (
            {self.args.tax_id_field} if mod == "Accounts" else set())

    def person(self, name=None):
        if name is None:
            return {"name": "Sync User", "id": "4150868000000225013", "email": self.args.user}
        return {"name": name, "id": "4150868000000%06d" % (sum(map(ord, name)) % 1000000),
                "email": name.lower().replace(" ", ".") + "@example.com"}

    def render(self, org, mod, r, fields=None):
        """A stored record as the API shows it: lookups as {name,id}."""
        out = {}
        for k, v in r.items():
            if fields is not None and k not in fields and k != "id":
                continue
            target = MODULES[mod]["lookups"].get(k)
            if target and v is not None:
                t = org.records[target].get(v)
                v = {"name": self.display_name(target, t) if t else None, "id": v}
            elif k in ("Created_Time", "Modified_Time"):
                v = iso(v)
            out[k] = v
        return out

    @staticmethod
    def display_name(mod, r):
        if mod == "Accounts":
            return r.get("Account_Name")
        return " ".join(x for x in (r.get("First_Name"), r.get("Last_Name")) if x)

    @staticmethod
    def norm(field, v):
        if isinstance(v, str):
            return v.strip().lower() if "Email" in field else v.strip()
        return v

    def find_by(self, org, mod, field, value, exclude=None):
        """The first-created record (other than exclude) whose field equals value."""
        want = self.norm(field, value)
        idx = org.index[mod].get(field)
        if idx is not None:
            for rid in idx.get(want, ()):
                if rid != exclude:
                    return rid
            return None
        for rid, r in org.records[mod].items():
            if rid != exclude and r.get(field) not in (None, "") and self.norm(field, r.get(field)) == want:
                return rid
        return None

    def dup_error(self, org, mod, field, i, other):
        o = org.records[mod][other]
        return err("DUPLICATE_DATA", "duplicate data",
                   {"api_name": field, "json_path": "$.data[%d].%s" % (i, field), "more_records": False,
                    "duplicate_record": {"id": other, "module": {"api_name": mod, "id": "4150868000000002%03d" % (
                        1 if mod == "Accounts" else 2)}, "Owner": o.get("Owner")}})

    def clean(self, org, mod, i, rec):
        """Validate a record's fields; returns (fields, error-or-None)."""
        if not isinstance(rec, dict):
            return None, err("INVALID_DATA", "invalid data", {"api_name": "data", "json_path": "$.data[%d]" % i})
        ok = self.writable(mod)
        out = {}
        for k, v in rec.items():
            if k in ("id", "Owner", "$append_values") or k in READ_ONLY:
                continue
            if k not in ok:
                return None, err("INVALID_DATA", "the field %s is not available in %s" % (k, mod),
                                 {"api_name": k, "json_path": "$.data[%d].%s" % (i, k)})
            target = MODULES[mod]["lookups"].get(k)
            if target and v is not None:
                lid = v.get("id") if isinstance(v, dict) else None
                if not isinstance(lid, str) or lid not in org.records[target]:
                    return None, err("INVALID_DATA", "the id given seems to be invalid",
                                     {"api_name": k, "json_path": "$.data[%d].%s" % (i, k)})
                v = lid
            out[k] = v
        return out, None

    def h_write(self, h, org, mod, kind, path_id=None):
        b = h.json_body()
        data = b.get("data") if isinstance(b, dict) else None
        if not isinstance(data, list) or not data:
            raise Reply(400, err("MANDATORY_NOT_FOUND", "required field not found",
                                 {"api_name": "data", "json_path": "$.data"}))
        if len(data) > MAX_WRITE:
            raise Reply(400, err("INVALID_DATA", "a single call may write at most %d records" % MAX_WRITE,
                                 {"api_name": "data", "json_path": "$.data", "maximum_length": MAX_WRITE}))
        order = None
        if kind == "upsert":
            dcf = b.get("duplicate_check_fields")
            uniq = self.unique_fields(mod)
            if dcf is None:
                order = uniq
            else:
                if not isinstance(dcf, list) or not dcf:
                    raise Reply(400, err("INVALID_DATA", "duplicate_check_fields must be a non-empty list",
                                         {"api_name": "duplicate_check_fields",
                                          "json_path": "$.duplicate_check_fields"}))
                for j, f in enumerate(dcf):
                    if f not in uniq:
                        raise Reply(400, err("INVALID_DATA", "the field %s is neither the system duplicate check "
                                             "field nor a unique field" % f,
                                             {"api_name": f, "json_path": "$.duplicate_check_fields[%d]" % j}))
                # listed fields first, then the other unique fields; an unlisted system field is ignored
                system = MODULES[mod]["system_dup"]
                order = list(dcf) + [f for f in uniq if f not in dcf and f != system]
        ius = h.header("If-Unmodified-Since")
        ius_t = parse_iso(ius) if ius else None
        if ius and ius_t is None:
            raise Reply(400, err("INVALID_DATA", "If-Unmodified-Since must be an ISO date-time with offset",
                                 {"header": "If-Unmodified-Since"}))
        who = self.person()
        results, events = [], {"insert": [], "update": []}
        changed = {}
        with self.lock:
            for i, rec in enumerate(data):
                if self.take("record_error"):
                    results.append(err("INTERNAL_ERROR", "internal error (simulated, record not written)",
                                       {"json_path": "$.data[%d]" % i}))
                    continue
                fields, e = self.clean(org, mod, i, rec)
                if e:
                    results.append(e)
                    continue
                target, dfield = None, None
                if kind == "update":
                    target = path_id or rec.get("id")
                    if not isinstance(target, str) or target not in org.records[mod]:
                        results.append(err("INVALID_DATA", "the id given seems to be invalid",
                                           {"api_name": "id", "json_path": "$.data[%d].id" % i, "id": target}))
                        continue
                elif kind == "upsert":
                    for f in order:
                        if fields.get(f) not in (None, ""):
                            target = self.find_by(org, mod, f, fields[f])
                            if target:
                                dfield = f
                                break
                if target and ius_t is not None and int(org.records[mod][target]["Modified_Time"]) > ius_t:
                    results.append(err("ALREADY_MODIFIED", "the record was modified after If-Unmodified-Since",
                                       {"id": target, "json_path": "$.data[%d]" % i}))
                    continue
                merged = dict(org.records[mod][target]) if target else {}
                merged.update(fields)
                mf = MODULES[mod]["mandatory"]
                if merged.get(mf) in (None, ""):
                    results.append(err("MANDATORY_NOT_FOUND", "required field not found",
                                       {"api_name": mf, "json_path": "$.data[%d].%s" % (i, mf)}))
                    continue
                clash = None
                for f in self.unique_fields(mod):
                    if merged.get(f) not in (None, ""):
                        other = self.find_by(org, mod, f, merged[f], exclude=target)
                        if other:
                            clash = self.dup_error(org, mod, f, i, other)
                            break
                if clash:
                    results.append(clash)
                    continue
                now = self.now()
                if target:
                    diff = [k for k, v in fields.items() if org.records[mod][target].get(k) != v]
                    merged["Modified_Time"] = now
                    merged["Modified_By"] = who
                    self.store(org, mod, target, merged)
                    events["update"].append(target)
                    changed[target] = diff
                    action, msg, rid = "update", "record updated", target
                else:
                    rid = self.new_id()
                    merged.update({"id": rid, "Owner": who, "Created_By": who, "Modified_By": who,
                                   "Created_Time": now, "Modified_Time": now})
                    self.store(org, mod, rid, merged)
                    org.order[mod].append(rid)
                    events["insert"].append(rid)
                    changed[rid] = sorted(fields)
                    action, msg, rid = "insert", "record added", rid
                org.writes.append({"time": iso(now), "who": "api", "user": who["name"], "op": kind,
                                   "action": action, "module": mod, "id": rid, "fields": fields})
                r = org.records[mod][rid]
                ent = {"code": "SUCCESS", "details": {"Modified_Time": iso(r["Modified_Time"]), "Modified_By": who,
                                                      "Created_Time": iso(r["Created_Time"]), "id": rid,
                                                      "Created_By": r["Created_By"]},
                       "message": msg, "status": "success"}
                if kind == "upsert":
                    ent["action"] = action
                    ent["duplicate_field"] = dfield
                results.append(ent)
            for op, ids in events.items():
                if ids:
                    self.notify(org, mod, op, ids, {i: changed[i] for i in ids})
        ok = any(r["status"] == "success" for r in results)
        status = 200 if ok else (412 if all(r["code"] == "ALREADY_MODIFIED" for r in results) else 400)
        return Reply(status, {"data": results})

    def store(self, org, mod, rid, r):
        """Save a record (a new dict, never the stored one changed in place) and keep the unique-field index."""
        if mod == "Contacts":
            r["Full_Name"] = self.display_name(mod, r)
        self.unindex(org, mod, rid)
        org.records[mod][rid] = r
        for f in self.unique_fields(mod):
            if r.get(f) not in (None, ""):
                org.index[mod].setdefault(f, {}).setdefault(self.norm(f, r[f]), []).append(rid)
                org.index[mod][f][self.norm(f, r[f])].sort(key=int)

    def unindex(self, org, mod, rid):
        old = org.records[mod].get(rid)
        if old is None:
            return
        for f in self.unique_fields(mod):
            ids = org.index[mod].setdefault(f, {}).get(self.norm(f, old.get(f)))
            if ids and rid in ids:
                ids.remove(rid)

    def h_delete(self, h, org, mod, ids):
        ids = [i for i in ids if i]
        if not ids:
            raise Reply(400, err("REQUIRED_PARAM_MISSING", "ids is required", {"param_name": "ids"}))
        out, gone = [], []
        with self.lock:
            for rid in ids:
                if rid not in org.records[mod]:
                    out.append(err("INVALID_DATA", "the id given seems to be invalid", {"id": rid}))
                    continue
                self.remove(org, mod, rid, "api", self.person())
                gone.append(rid)
                out.append({"code": "SUCCESS", "details": {"id": rid}, "message": "record deleted", "status": "success"})
            if gone:
                self.notify(org, mod, "delete", gone, {})
        return Reply(200 if gone else 400, {"data": out})

    def remove(self, org, mod, rid, via, who):
        self.unindex(org, mod, rid)
        r = org.records[mod].pop(rid)
        org.order[mod].remove(rid)
        org.deleted[mod][rid] = (r, self.now(), who)
        org.writes.append({"time": iso(self.now()), "who": via, "user": who["name"], "op": "delete",
                           "action": "delete", "module": mod, "id": rid, "fields": {}})

    def h_get(self, h, org, mod, rid):
        with self.lock:
            r = org.records[mod].get(rid)
            if r is None:
                raise Reply(400, err("INVALID_DATA", "the related id given seems to be invalid", {"id": rid}))
            return Reply(200, {"data": [self.render(org, mod, r)]})

    def fields_param(self, h, required):
        fp = h.qparam("fields")
        if not fp:
            if required:
                raise Reply(400, err("REQUIRED_PARAM_MISSING", "One of the expected parameter is missing",
                                     {"param_name": "fields"}))
            return None
        fl = [f for f in fp.split(",") if f]
        if len(fl) > MAX_FIELDS:
            raise Reply(400, err("LIMIT_EXCEEDED", "at most %d fields may be requested" % MAX_FIELDS,
                                 {"param_name": "fields", "limit": MAX_FIELDS}))
        return set(fl)

    def int_param(self, h, name, default, lo, hi):
        v = h.qparam(name)
        if v is None:
            return default
        try:
            n = int(v)
        except ValueError:
            n = None
        if n is None or n < lo or n > hi:
            raise Reply(400, err("INVALID_DATA", "%s must be an integer from %d to %d" % (name, lo, hi),
                                 {"param_name": name}))
        return n

    def h_list(self, h, org, mod):
        fields = self.fields_param(h, h.qparam("ids") is None)
        per = self.int_param(h, "per_page", MAX_PER_PAGE, 1, MAX_PER_PAGE)
        tok = h.qparam("page_token")
        if tok is not None and h.qparam("page") is not None:
            raise Reply(400, err("INVALID_DATA", "page_token cannot be combined with page", {"param_name": "page"}))
        sort_by = h.qparam("sort_by") or "id"
        order = h.qparam("sort_order") or "asc"
        if sort_by not in ("id", "Created_Time", "Modified_Time") or order not in ("asc", "desc"):
            raise Reply(400, err("INVALID_DATA", "sort_by is id, Created_Time or Modified_Time; sort_order asc or "
                                 "desc", {"param_name": "sort_by"}))
        ims_h = h.header("If-Modified-Since")
        ims = parse_iso(ims_h) if ims_h else None
        if ims_h and ims is None:
            raise Reply(400, err("INVALID_DATA", "If-Modified-Since must be an ISO date-time with offset",
                                 {"header": "If-Modified-Since"}))
        if tok is not None:
            try:
                st = json.loads(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
                offset, sort_by, order, ims = int(st["o"]), st["s"], st["d"], st["m"]
            except (ValueError, KeyError, TypeError):
                raise Reply(400, err("INVALID_DATA", "invalid page_token", {"param_name": "page_token"}))
            page = None
        else:
            page = self.int_param(h, "page", 1, 1, 10 ** 6)
            offset = (page - 1) * per
            if offset + per > PAGE_CAP:
                raise Reply(400, err("DISCRETE_PAGINATION_LIMIT_EXCEEDED", "page and per_page reach at most %d "
                                     "records; use page_token from info.next_page_token" % PAGE_CAP,
                                     {"limit": PAGE_CAP}))
        with self.lock:
            rows = list(org.records[mod].values())
            ids = h.qparam("ids")
            if ids:
                want = set(ids.split(","))
                rows = [r for r in rows if r["id"] in want]
            if ims is not None:
                rows = [r for r in rows if int(r["Modified_Time"]) > ims]
                if not rows:
                    return Reply(304)
            key = (lambda r: int(r["id"])) if sort_by == "id" else (lambda r: (r[sort_by], int(r["id"])))
            rows.sort(key=key, reverse=(order == "desc"))
            chunk = rows[offset:offset + per]
            more = offset + per < len(rows)
            if not chunk:
                return Reply(204)
            out = [self.render(org, mod, r, fields) for r in chunk]
        info = {"per_page": per, "count": len(out), "more_records": more, "sort_by": sort_by, "sort_order": order,
                "page": page if page is not None else 1 + offset // per, "next_page_token": None,
                "previous_page_token": None, "page_token_expiry": None}
        if more:
            info["next_page_token"] = base64.urlsafe_b64encode(json.dumps(
                {"o": offset + per, "s": sort_by, "d": order, "m": ims}).encode()).decode().rstrip("=")
            info["page_token_expiry"] = iso(self.now() + 86400)
        return Reply(200, {"data": out, "info": info})

    def h_deleted(self, h, org, mod):
        with self.lock:
            out = [{"id": rid, "deleted_time": iso(t), "deleted_by": who, "type": "recycle",
                    "display_name": self.display_name(mod, r), "created_by": r.get("Created_By")}
                   for rid, (r, t, who) in org.deleted[mod].items()]
        ims_h = h.header("If-Modified-Since")
        ims = parse_iso(ims_h) if ims_h else None
        if ims is not None:
            out = [d for d in out if parse_iso(d["deleted_time"]) > ims]
        if not out:
            return Reply(204)
        return Reply(200, {"data": out, "info": {"per_page": 200, "count": len(out), "page": 1,
                                                 "more_records": False}})

    # ------------------------------------------------------------------
    # search

    def parse_criteria(self, s):
        """((F:op:v)and(F:op:v)...) -> nested ("and"|"or", [...]) / ("cond", F, op, [values])."""
        pos = [0]
        n = [0]

        def fail(why):
            raise Reply(400, err("INVALID_QUERY", "Invalid query formed", {"param_name": "criteria", "reason": why}))

        def expr():
            items, ops = [term()], []
            while s.startswith("and", pos[0]) or s.startswith("or", pos[0]):
                op = "and" if s.startswith("and", pos[0]) else "or"
                pos[0] += len(op)
                ops.append(op)
                items.append(term())
            if not ops:
                return items[0]
            if len(set(ops)) > 1:
                fail("mixing and/or needs parentheses")
            return (ops[0], items)

        def term():
            if pos[0] >= len(s) or s[pos[0]] != "(":
                fail("expected '(' at %d" % pos[0])
            pos[0] += 1
            if s[pos[0]:pos[0] + 1] == "(":
                e = expr()
            else:
                buf, parts = [], []
                while pos[0] < len(s):
                    c = s[pos[0]]
                    if c == "\\" and pos[0] + 1 < len(s):
                        buf.append(s[pos[0] + 1])
                        pos[0] += 2
                        continue
                    if c == ")":
                        break
                    if c == "(":
                        fail("unescaped '(' in a value")
                    if c == ":" and len(parts) < 2:
                        parts.append("".join(buf))
                        buf = []
                    else:
                        buf.append(("\x00" if c == "," else c))
                    pos[0] += 1
                parts.append("".join(buf))
                if len(parts) != 3:
                    fail("a condition is (field:operator:value)")
                n[0] += 1
                e = ("cond", parts[0], parts[1], parts[2].split("\x00"))
            if pos[0] >= len(s) or s[pos[0]] != ")":
                fail("expected ')' at %d" % pos[0])
            pos[0] += 1
            return e

        e = expr()
        if pos[0] != len(s):
            fail("trailing text at %d" % pos[0])
        if n[0] > MAX_CONDITIONS:
            raise Reply(400, err("CRITERIA_LIMIT_EXCEEDED", "no of criterium that can be given exceed the limit %d"
                                 % MAX_CONDITIONS, {}))
        return e

    def match(self, org, mod, r, e):
        if e[0] in ("and", "or"):
            f = all if e[0] == "and" else any
            return f(self.match(org, mod, r, x) for x in e[1])
        _, field, op, vals = e
        if op not in SEARCH_OPS:
            raise Reply(400, err("INVALID_QUERY", "Invalid query formed", {"api_name": field, "operator": op}))
        v = r.get(field)
        if field in ("Created_Time", "Modified_Time"):
            v = int(v)
            vals = [parse_iso(x) for x in vals]
            if None in vals:
                raise Reply(400, err("INVALID_QUERY", "Invalid query formed", {"api_name": field,
                                                                              "reason": "ISO date-time with offset expected"}))
        elif field in MODULES[mod]["lookups"] and v is not None:
            t = org.records[MODULES[mod]["lookups"][field]].get(v)
            v = self.display_name(MODULES[mod]["lookups"][field], t) if t else None
        if v is None:
            return op == "not_equal"
        sv = str(v).lower() if not isinstance(v, (int, float)) else v
        lv = [x.lower() if isinstance(x, str) else x for x in vals]
        if op == "equals":  # v8: behaves like "contains" for text
            return any((x in sv) if isinstance(sv, str) else sv == x for x in lv)
        if op == "not_equal":
            return all(sv != x for x in lv)
        if op == "starts_with":
            return isinstance(sv, str) and sv.startswith(lv[0])
        if op == "in":
            return sv in lv
        try:
            if op == "between":
                return lv[0] <= sv <= lv[1]
            x = lv[0]
            return {"greater_than": sv > x, "greater_equal": sv >= x, "less_than": sv < x,
                    "less_equal": sv <= x}[op]
        except (TypeError, IndexError):
            return False

    def h_search(self, h, org, mod):
        crit, email, phone, word = (h.qparam(k) for k in ("criteria", "email", "phone", "word"))
        given = [x for x in (crit, email, phone, word) if x is not None]
        if len(given) != 1:
            raise Reply(400, err("EXPECTED_PARAM_MISSING", "exactly one of criteria, email, phone, word is "
                                 "expected", {"param_names": ["criteria", "email", "phone", "word"]}))
        per = self.int_param(h, "per_page", MAX_PER_PAGE, 1, MAX_PER_PAGE)
        page = self.int_param(h, "page", 1, 1, 10 ** 6)
        if (page - 1) * per + per > PAGE_CAP:
            raise Reply(400, err("LIMIT_REACHED", "maximum response iteration limit reached", {"limit": str(PAGE_CAP)}))
        fields = self.fields_param(h, False)
        e = self.parse_criteria(crit) if crit is not None else None
        with self.lock:
            rows = [org.records[mod][i] for i in org.order[mod]]
            if e is not None:
                rows = [r for r in rows if self.match(org, mod, r, e)]
            elif email is not None:
                rows = [r for r in rows if any(self.norm("Email", r.get(f) or "") == email.strip().lower()
                                               for f in MODULES[mod]["email_fields"])]
            elif phone is not None:
                rows = [r for r in rows if any((r.get(f) or "") == phone for f in MODULES[mod]["phone_fields"])]
            else:
                w = word.lower()
                rows = [r for r in rows if any(isinstance(v, str) and w in v.lower() for k, v in r.items()
                                               if k not in MODULES[mod]["lookups"])]
            chunk = rows[(page - 1) * per:page * per]
            if not chunk:
                return Reply(204)
            out = [self.render(org, mod, r, fields) for r in chunk]
        return Reply(200, {"data": out, "info": {"per_page": per, "count": len(out), "page": page,
                                                 "more_records": page * per < len(rows)}})

    # ------------------------------------------------------------------
    # watch API

    def prune(self, org):
        now = self.now()
        for cid in [c for c, ch in org.channels.items() if ch["expiry"] <= now]:
            del org.channels[cid]

    def expiry_of(self, v):
        now = self.now()
        t = parse_iso(v) if v is not None else None
        if t is None or t > now + WEEK or t <= now:
            return now + HOUR
        return t

    def h_watch_write(self, h, org, mode):
        b = h.json_body()
        items = b.get("watch") if isinstance(b, dict) else None
        if not isinstance(items, list) or not items:
            raise Reply(400, err("MANDATORY_NOT_FOUND", "required field not found",
                                 {"api_name": "watch", "json_path": "$.watch"}))
        out, bad = [], False
        with self.lock:
            self.prune(org)
            for i, w in enumerate(items):
                e = self.watch_one(org, mode, i, w)
                out.append(e)
                bad = bad or e["status"] == "error"
        # OpenAPI: per-channel errors come wrapped with 202; success is 201 for POST, 200 otherwise
        return Reply(202 if bad else (201 if mode == "create" else 200), {"watch": out})

    def watch_one(self, org, mode, i, w):
        jp = "$.watch[%d]." % i
        if not isinstance(w, dict):
            return err("INVALID_DATA", "invalid data", {"api_name": "watch", "json_path": "$.watch[%d]" % i})
        cid = w.get("channel_id")
        if cid is None:
            return err("MANDATORY_NOT_FOUND", "required field not found",
                       {"api_name": "channel_id", "json_path": jp + "channel_id"})
        cid = str(cid)
        if not cid.isdigit():
            return err("INVALID_DATA", "channel_id must be a number", {"api_name": "channel_id",
                                                                       "json_path": jp + "channel_id"})
        old = org.channels.get(cid)
        if mode != "create" and old is None:
            return err("NOT_SUBSCRIBED", "the channel is not subscribed", {"channel_id": cid})
        if mode == "create" or mode == "put":
            for f in ("notify_url", "events"):
                if not w.get(f):
                    return err("MANDATORY_NOT_FOUND", "required field not found", {"api_name": f, "json_path": jp + f})
        if "token" in w and w["token"] is not None and (not isinstance(w["token"], str) or len(w["token"]) > TOKEN_MAX):
            return err("INVALID_DATA", "token may hold at most %d characters" % TOKEN_MAX,
                       {"api_name": "token", "json_path": jp + "token", "maximum_length": TOKEN_MAX})
        if "notify_url" in w:
            u = urlsplit(str(w["notify_url"]))
            if u.scheme not in ("http", "https") or not u.netloc:
                return err("INVALID_DATA", "notify_url is not a valid URL", {"api_name": "notify_url",
                                                                              "json_path": jp + "notify_url"})
        events = w.get("events")
        if events is not None:
            if not isinstance(events, list):
                return err("INVALID_DATA", "events must be a list", {"api_name": "events", "json_path": jp + "events"})
            for j, ev in enumerate(events):
                m, _, op = str(ev).partition(".")
                if m not in MODULES or op not in ("create", "edit", "delete", "all"):
                    return err("INVALID_DATA", "invalid event %s" % ev,
                               {"api_name": "events", "json_path": "%sevents[%d]" % (jp, j)})
        if mode == "patch":
            ch = old
            if w.get("_delete_events") is True:
                ch["events"] = [e for e in ch["events"] if e not in (events or [])]
                if not ch["events"]:
                    del org.channels[cid]
                msg = "Successfully removed the subscribe details"
            else:
                for k in ("notify_url", "token", "return_affected_field_values", "notify_on_related_action"):
                    if k in w:
                        ch[k] = w[k]
                if events:
                    ch["events"] = sorted(set(ch["events"]) | set(events))
                if "channel_expiry" in w:
                    ch["expiry"] = self.expiry_of(w["channel_expiry"])
                msg = "Successfully updated the subscribe details"
        else:
            ch = {"channel_id": cid, "events": list(events), "notify_url": w["notify_url"], "token": w.get("token"),
                  "return_affected_field_values": bool(w.get("return_affected_field_values", False)),
                  "notify_on_related_action": w.get("notify_on_related_action", True) is not False,
                  "expiry": self.expiry_of(w.get("channel_expiry")),
                  "created": old["created"] if old else self.now()}
            org.channels[cid] = ch
            msg = ("Successfully subscribed for actions-watch of the given module" if mode == "create"
                   else "Successfully updated the subscribe details")
        org.writes.append({"time": iso(self.now()), "who": "api", "user": "Sync User", "op": "watch_" + mode,
                           "action": mode, "module": "watch", "id": cid, "fields": {"events": ch["events"]}})
        evs = [{"channel_expiry": iso(ch["expiry"]), "resource_uri": "%s/crm/v8/%s" % (self.api_domain(org.dc), m),
                "resource_id": "4150868000000002%03d" % (1 if m == "Accounts" else 2), "resource_name": m,
                "channel_id": cid} for m in sorted({e.split(".")[0] for e in ch["events"]})]
        return {"code": "SUCCESS", "status": "success", "message": msg, "details": {"events": evs}}

    def channel_view(self, org, ch):
        return {"channel_id": ch["channel_id"], "events": list(ch["events"]), "notify_url": ch["notify_url"],
                "token": ch["token"], "channel_expiry": iso(ch["expiry"]),
                "return_affected_field_values": ch["return_affected_field_values"],
                "notify_on_related_action": ch["notify_on_related_action"],
                "resource_name": sorted({e.split(".")[0] for e in ch["events"]})[0] if ch["events"] else None}

    def h_watch_list(self, h, org):
        cid, module = h.qparam("channel_id"), h.qparam("module")
        with self.lock:
            self.prune(org)
            chs = [c for c in org.channels.values() if (cid is None or c["channel_id"] == cid) and
                   (module is None or any(e.startswith(module + ".") for e in c["events"]))]
            out = [self.channel_view(org, c) for c in sorted(chs, key=lambda c: c["channel_id"])]
        if not out:
            return Reply(204)
        return Reply(200, {"watch": out, "info": {"per_page": 200, "page": 1, "count": len(out),
                                                  "more_records": False}})

    def h_watch_delete(self, h, org):
        ids = [x for x in (h.qparam("channel_ids") or "").split(",") if x]
        if not ids:
            raise Reply(400, err("REQUIRED_PARAM_MISSING", "channel_ids is required", {"param_name": "channel_ids"}))
        out = []
        with self.lock:
            self.prune(org)
            for cid in ids:
                if org.channels.pop(cid, None) is None:
                    out.append(err("NOT_SUBSCRIBED", "the channel is not subscribed", {"channel_id": cid}))
                else:
                    out.append({"code": "SUCCESS", "status": "success",
                                "message": "Successfully un-subscribed from actions-watch",
                                "details": {"channel_id": cid}})
        bad = any(o["status"] == "error" for o in out)
        return Reply(202 if bad else 200, {"watch": out})

    # ------------------------------------------------------------------
    # callbacks

    def notify(self, org, mod, op, ids, changed):
        """Queue one callback per live channel watching mod.op (and related Accounts for Contacts)."""
        self.prune(org)
        ev = {"insert": "create", "update": "edit", "delete": "delete"}[op]
        for ch in sorted(org.channels.values(), key=lambda c: c["channel_id"]):
            if "%s.%s" % (mod, ev) in ch["events"] or "%s.all" % mod in ch["events"]:
                self.queue_cb(org, ch, mod, op, ids, changed)
            elif mod == "Contacts" and ch["notify_on_related_action"] and (
                    "Accounts.edit" in ch["events"] or "Accounts.all" in ch["events"]):
                accts = []
                for i in ids:
                    r = org.records["Contacts"].get(i) or org.deleted["Contacts"].get(i, ({},))[0]
                    if r.get("Account_Name") and r["Account_Name"] not in accts:
                        accts.append(r["Account_Name"])
                if accts:
                    self.queue_cb(org, ch, "Accounts", "update", accts, {})

    def queue_cb(self, org, ch, mod, op, ids, changed):
        u = urlsplit(ch["notify_url"])
        qp = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        aff = []
        if op == "update":
            for i in ids:
                fl = changed.get(i, [])
                if ch["return_affected_field_values"]:
                    r = org.records[mod].get(i, {})
                    aff.append({"id": i, "fields": {f: self.render(org, mod, r, {f}).get(f) for f in fl}})
                else:
                    aff.append({"id": i, "fields": list(fl)})
        body = {"server_time": int(self.now() * 1000), "query_params": qp, "module": mod,
                "resource_uri": "%s/crm/v8/%s" % (self.api_domain(org.dc), mod), "ids": list(ids),
                "affected_fields": aff, "operation": op, "channel_id": ch["channel_id"], "token": ch["token"]}
        item = {"url": ch["notify_url"], "body": body, "dc": org.dc}
        if self.take("callback_lost"):
            self.callbacks.append(dict(item, fate="lost", status=None))
            return
        copies = 2 if self.take("callback_duplicate") else 1
        for _ in range(copies):
            if self.take("callback_late"):
                self.held.append(item)
                continue
            with self.cb_cond:
                self.cb_busy += 1
            self.cb_queue.put(item)

    def _cb_worker(self):
        while True:
            item = self.cb_queue.get()
            status, note = None, None
            try:
                data = simbase.json_bytes(item["body"])
                req = urllib.request.Request(item["url"], data=data, method="POST",
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=self.args.callback_timeout) as r:
                    r.read()
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            except (OSError, ValueError) as e:
                note = "%s: %s" % (type(e).__name__, e)
            with self.lock:
                self.callbacks.append(dict(item, fate="sent", status=status, error=note))
            with self.cb_cond:
                self.cb_busy -= 1
                self.cb_cond.notify_all()

    def cb_idle(self, timeout=10.0):
        end = time.monotonic() + timeout
        with self.cb_cond:
            while self.cb_busy > 0:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cb_cond.wait(left)
        return True

    # ------------------------------------------------------------------
    # generated data and control

    def gen_record(self, mod, k):
        r = self.rng
        if mod == "Accounts":
            name = "%s %s %d" % (r.choice(COMPANY), r.choice(SUFFIX), k)
            return {"Account_Name": name, "Phone": "+1 555 %04d" % k, "Billing_City": r.choice(CITIES),
                    "Industry": r.choice(["Manufacturing", "Retail", "Energy"]), self.args.tax_id_field:
                    "TX%08d" % (r.randrange(10 ** 8)), "Payment_Terms": r.choice(["N30", "N45", "N60"])}
        fn, ln = r.choice(FIRST), r.choice(LAST)
        return {"First_Name": fn, "Last_Name": ln, "Email": "%s.%s.%d@example.net" % (
            fn.lower(), ln.lower().replace("'", ""), k), "Phone": "+1 555 %04d" % k, "Mailing_City": r.choice(CITIES)}

    def seed(self, org, mod, n, shared):
        """n generated records; the first len(shared) take the given values."""
        ids = []
        who = self.person("Seed Import")
        for k in range(n):
            rec = self.gen_record(mod, len(org.order[mod]) + 1)
            if k < len(shared) and isinstance(shared[k], dict):
                rec.update(shared[k])
            now = self.now()
            rid = self.new_id()
            rec.update({"id": rid, "Owner": who, "Created_By": who, "Modified_By": who, "Created_Time": now,
                        "Modified_Time": now})
            self.store(org, mod, rid, rec)
            org.order[mod].append(rid)
            ids.append(rid)
        return ids

    def ctl_org(self, h, b=None):
        dc = (b or {}).get("dc") or h.qparam("dc") or self.args.home_dc
        if dc not in self.orgs:
            raise Reply(400, {"error": "unknown dc %r; served: %s" % (dc, ",".join(self.dcs))})
        return self.orgs[dc]

    @staticmethod
    def ctl_mod(m):
        if m not in MODULES:
            raise Reply(400, {"error": "module must be Accounts or Contacts, not %r" % m})
        return m

    def control(self, method, p, h):
        if p == "/_sim/dcs" and method == "GET":
            return Reply(200, {dc: {"accounts_server": self.accounts_url(dc), "api_domain": self.api_domain(dc)}
                               for dc in self.dcs})
        if p == "/_sim/reset" and method == "POST":
            with self.lock:
                self.reset_all()
            self.merge_faults({k: None for k in list(self.faults)})
            self._zero_stats()
            return Reply(200, {"ok": True})
        if p == "/_sim/clock":
            if method == "POST":
                b = control_json(h)
                try:
                    adv = float(b.get("advance_s", 0))
                except (TypeError, ValueError):
                    return Reply(400, {"error": "advance_s must be a number of seconds"})
                if adv < 0:
                    return Reply(400, {"error": "the clock only moves forward"})
                with self.lock:
                    self.offset += adv
            return Reply(200, {"now": iso(self.now()), "epoch": self.now(), "offset_s": self.offset})
        if p == "/_sim/seed" and method == "POST":
            b = control_json(h)
            org, mod = self.ctl_org(h, b), self.ctl_mod(b.get("module"))
            try:
                n = int(b.get("n", 0))
            except (TypeError, ValueError):
                return Reply(400, {"error": "n must be a count"})
            shared = b.get("shared") or []
            with self.lock:
                ids = self.seed(org, mod, max(n, len(shared)), shared)
            return Reply(200, {"ids": ids})
        if p == "/_sim/edit" and method == "POST":
            return self.ctl_edit(h)
        if p == "/_sim/records" and method == "GET":
            org, mod = self.ctl_org(h), self.ctl_mod(h.qparam("module"))
            with self.lock:
                return Reply(200, [self.render(org, mod, org.records[mod][i]) for i in org.order[mod]])
        if p == "/_sim/writes" and method == "GET":
            org = self.ctl_org(h)
            with self.lock:
                return Reply(200, [dict(w) for w in org.writes])
        if p == "/_sim/channels" and method == "GET":
            org = self.ctl_org(h)
            with self.lock:
                self.prune(org)
                return Reply(200, [self.channel_view(org, c) for c in org.channels.values()])
        if p == "/_sim/callbacks" and method == "GET":
            idle = self.cb_idle()
            with self.lock:
                return Reply(200, {"idle": idle, "held": len(self.held), "callbacks": [dict(c) for c in self.callbacks]})
        if p == "/_sim/callbacks/release" and method == "POST":
            with self.lock:
                held, self.held = self.held, []
            for item in held:
                with self.cb_cond:
                    self.cb_busy += 1
                self.cb_queue.put(item)
            self.cb_idle()
            return Reply(200, {"released": len(held)})
        if p == "/_sim/refresh_token" and method == "POST":
            b = control_json(h)
            org = self.ctl_org(h, b)
            rt = "1000.%s.%s" % (secrets.token_hex(16), secrets.token_hex(16))
            with self.lock:
                self.add_rt(rt, org.dc, str(b.get("user") or self.args.user), b.get("scopes") or ALL_SCOPES)
            return Reply(200, {"refresh_token": rt, "accounts_server": self.accounts_url(org.dc)})
        if p == "/_sim/tokens" and method == "GET":
            now = self.now()
            with self.lock:
                return Reply(200, {"refresh_tokens": [{"dc": r["dc"], "user": r["user"], "live_access_tokens":
                                                       len(r["live"]), "minted_last_10_min":
                                                       len([t for t in r["mints"] if t > now - TOKEN_WINDOW_S]),
                                                       "token": t[:9] + "..."} for t, r in self.rts.items()],
                                   "access_tokens": len(self.ats)})
        if p == "/_sim/expire_tokens" and method == "POST":
            with self.lock:
                for t in self.ats.values():
                    t["exp"] = min(t["exp"], self.now())
                return Reply(200, {"expired": len(self.ats)})
        if p == "/_sim/credits" and method in ("GET", "POST"):
            b = control_json(h) if method == "POST" else {}
            org = self.ctl_org(h, b)
            with self.lock:
                if "limit" in b:
                    org.credit_limit = int(b["limit"])
                if b.get("exhaust"):
                    # the rest of today's credits spent now: they free up 24 h later
                    now = self.now()
                    org.credit_log = [t for t in org.credit_log if t > now - 24 * HOUR]
                    org.credit_log += [now] * max(0, org.credit_limit - len(org.credit_log))
                return Reply(200, {"dc": org.dc, "limit": org.credit_limit, "used": len(org.credit_log),
                                   "in_flight": org.inflight, "concurrency": self.concurrency})
        if p == "/_sim/concurrency" and method == "POST":
            b = control_json(h)
            try:
                self.concurrency = int(b.get("limit", self.concurrency))
            except (TypeError, ValueError):
                return Reply(400, {"error": "limit must be a count"})
            return Reply(200, {"concurrency": self.concurrency})
        if p == "/_sim/release_calls" and method == "POST":
            with self.lock:
                evt, self.release_evt = self.release_evt, threading.Event()
            evt.set()
            return Reply(200, {"released": True})
        return None

    def ctl_edit(self, h):
        """A person's change in the CRM UI: create, edit or delete; notifies channels."""
        b = control_json(h)
        org, mod = self.ctl_org(h, b), self.ctl_mod(b.get("module"))
        op = b.get("op", "edit")
        who = self.person(str(b.get("user") or "Dana Sales"))
        fields = b.get("fields") or {}
        with self.lock:
            if op == "create":
                ids = self.seed(org, mod, 1, [fields])
                r = org.records[mod][ids[0]]
                r.update({"Owner": who, "Created_By": who, "Modified_By": who})
                org.writes.append({"time": iso(self.now()), "who": "person", "user": who["name"], "op": "create",
                                   "action": "insert", "module": mod, "id": ids[0], "fields": fields})
                self.notify(org, mod, "insert", ids, {ids[0]: sorted(r)})
                return Reply(200, self.render(org, mod, r))
            rid = b.get("id")
            if rid not in org.records[mod]:
                return Reply(404, {"error": "no %s record %r" % (mod, rid)})
            if op == "delete":
                self.remove(org, mod, rid, "person", who)
                self.notify(org, mod, "delete", [rid], {})
                return Reply(200, {"deleted": rid})
            if op != "edit":
                return Reply(400, {"error": "op is create, edit or delete"})
            r = dict(org.records[mod][rid])
            r.update(fields)
            r["Modified_Time"] = self.now()
            r["Modified_By"] = who
            self.store(org, mod, rid, r)
            org.writes.append({"time": iso(self.now()), "who": "person", "user": who["name"], "op": "edit",
                               "action": "update", "module": mod, "id": rid, "fields": fields})
            self.notify(org, mod, "update", [rid], {rid: sorted(fields)})
            return Reply(200, self.render(org, mod, r))


if __name__ == "__main__":
    sys.exit(simbase.main(ZohoSim))
