#!/usr/bin/env python3
"""Jira Cloud REST API v3 simulator.

Basic auth (email + API token) on /rest/api/3/..., OAuth 2.0 (3LO) bearer
tokens on /ex/jira/{cloudid}/rest/api/3/..., rotating refresh tokens,
issue create/bulk/edit/transition/comment/property endpoints, a JQL subset
with nextPageToken paging and an index-lag knob, a controllable clock, and
webhooks (admin and dynamic registration, signed deliveries with retries).
Behaviour follows docs/api/jira-cloud.md; see tests/sims/README.md.
Standard library only.
"""

import base64
import copy
import datetime as dt
import hashlib
import heapq
import hmac
import http.client
import json
import random
import re
import secrets
import ssl
import sys
import threading
import time
import uuid
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import simbase
from simbase import Reply, Route, control_json

# ---------------------------------------------------------------------------
# catalogue

ISSUE_TYPES = [("10001", "Task", "A small, distinct piece of work."),
               ("10002", "Bug", "A problem or error."),
               ("10003", "Story", "A user story."),
               ("10004", "Purchase Order", "An order placed with a vendor."),
               ("10005", "Requisition", "A request to buy."),
               ("10006", "Vendor Invoice", "An invoice (voucher) from a vendor.")]
PRIORITIES = [("1", "Highest", "#d04437"), ("2", "High", "#f15C75"), ("3", "Medium", "#f79232"),
              ("4", "Low", "#707070"), ("5", "Lowest", "#999999")]
DEFAULT_PRIORITY = "3"
STATUSES = {  # name -> (id, category id, category key, category name, colour)
    "To Do": ("10000", 2, "new", "To Do", "blue-gray"),
    "In Progress": ("3", 4, "indeterminate", "In Progress", "yellow"),
    "Done": ("10001", 3, "done", "Done", "green"),
    # the procurement workflow's
    "Open": ("10100", 2, "new", "To Do", "blue-gray"),
    "Awaiting approval": ("10101", 4, "indeterminate", "In Progress", "yellow"),
    "Approved": ("10102", 4, "indeterminate", "In Progress", "yellow"),
    "Rejected": ("10103", 3, "done", "Done", "green"),
    "Closed": ("10104", 3, "done", "Done", "green"),
}
CATEGORIES = {"new": (2, "To Do", "blue-gray"), "indeterminate": (4, "In Progress", "yellow"),
              "done": (3, "Done", "green")}
# Workflows: the initial status and the transitions (id, name, to, from statuses;
# None = a global transition, open from every other status). A project uses
# "simple" unless --workflow says otherwise.
WORKFLOWS = {
    "simple": {"initial": "To Do",
               "transitions": [("11", "To Do", "To Do", None), ("21", "In Progress", "In Progress", None),
                               ("31", "Done", "Done", None)]},
    "procurement": {"initial": "Open",
                    "transitions": [("111", "Submit for approval", "Awaiting approval", ["Open", "Rejected"]),
                                    ("121", "Approve", "Approved", ["Awaiting approval"]),
                                    ("131", "Reject", "Rejected", ["Awaiting approval"]),
                                    ("141", "Close", "Closed", ["Approved", "Rejected"]),
                                    ("151", "Reopen", "Open", ["Closed"])]},
}
CUSTOM = {  # id -> (name, kind)
    "customfield_10050": ("JDE Work Order", "textfield"),
    "customfield_10051": ("Branch/Plant", "textfield"),
    "customfield_10052": ("Order Type", "select"),
    "customfield_10053": ("Source Key", "textfield"),
    # procurement
    "customfield_10060": ("Invoice Number", "textfield"),
    "customfield_10061": ("Vendor", "textfield"),
    "customfield_10062": ("Amount", "float"),
    "customfield_10063": ("Approval Status", "select"),
    # cost accounting (IFS Cloud orders)
    "customfield_10070": ("GL Account", "textfield"),
    "customfield_10071": ("Cost Center", "textfield"),
}
SELECT_OPTIONS = {"customfield_10052": [("10100", "WO"), ("10101", "WM"), ("10102", "EN")],
                  "customfield_10063": [("10200", "Pending"), ("10201", "Approved"), ("10202", "Denied")]}
SYNC_ACCOUNT = "712020:aaaa0000-5c2e-4b7a-9d3f-000000000000"
USERS = [  # accountId, displayName, email, email hidden by privacy settings
    ("712020:aaaa0001-5c2e-4b7a-9d3f-000000000001", "Maria Lopez", "maria.lopez@example.com", False),
    ("712020:aaaa0002-5c2e-4b7a-9d3f-000000000002", "James Chen", "james.chen@example.com", False),
    ("712020:aaaa0003-5c2e-4b7a-9d3f-000000000003", "Aisha Patel", "aisha.patel@example.com", False),
    ("712020:aaaa0004-5c2e-4b7a-9d3f-000000000004", "Tomasz Nowak", "tomasz.nowak@example.com", False),
    ("712020:aaaa0005-5c2e-4b7a-9d3f-000000000005", "Sofia Rossi", "sofia.rossi@example.com", False),
    ("712020:aaaa0006-5c2e-4b7a-9d3f-000000000006", "Kwame Mensah", "kwame.mensah@example.com", False),
    ("712020:aaaa0007-5c2e-4b7a-9d3f-000000000007", "Lena Fischer", "lena.fischer@example.com", False),
    ("712020:aaaa0008-5c2e-4b7a-9d3f-000000000008", "Raj Iyer", "raj.iyer@example.com", True),
]
PROJECT_NAMES = {"MFG": "Manufacturing", "OPS": "Operations"}
SYSTEM_FIELDS = [  # id, name, schema type, extra schema, orderable, clause names
    ("summary", "Summary", "string", {}, True, ["summary"]),
    ("description", "Description", "string", {}, True, ["description"]),
    ("priority", "Priority", "priority", {}, True, ["priority"]),
    ("assignee", "Assignee", "user", {}, True, ["assignee"]),
    ("reporter", "Reporter", "user", {}, True, ["reporter"]),
    ("duedate", "Due date", "date", {}, True, ["due", "duedate"]),
    ("labels", "Labels", "array", {"items": "string"}, True, ["labels"]),
    ("issuetype", "Issue Type", "issuetype", {}, True, ["issuetype", "type"]),
    ("project", "Project", "project", {}, False, ["project"]),
    ("status", "Status", "status", {}, False, ["status"]),
    ("created", "Created", "datetime", {}, False, ["created", "createdDate"]),
    ("updated", "Updated", "datetime", {}, False, ["updated", "updatedDate"]),
]
ALL_FIELDS = [f[0] for f in SYSTEM_FIELDS] + list(CUSTOM)
SCOPES = ["read:jira-work", "write:jira-work", "read:jira-user", "offline_access"]
DEFAULT_CLOUD = "5e7f2b1a-3c4d-4e5f-8a9b-0c1d2e3f4a5b"

CANNOT_SET = "Field '%s' cannot be set. It is not on the appropriate screen, or unknown."
NOT_ADF = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
NO_ISSUE = "Issue does not exist or you do not have permission to see it."
UNBOUNDED = "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."
LEEWAY_S = 600
IDLE_S = 90 * 86400
ABSOLUTE_S = 365 * 86400

# webhooks (docs/api/jira-cloud.md section 4)
HUMAN_ACCOUNT = USERS[0][0]  # who moves issues through /_sim/transition by default
WEBHOOK_EVENTS = {"jira:issue_created", "jira:issue_updated", "jira:issue_deleted", "comment_created",
                  "comment_updated", "comment_deleted", "issue_property_set", "issue_property_deleted"}
DYN_TTL_S = 30 * 86400
DYN_JQL_FIELDS = {"issuekey", "project", "issuetype", "status", "assignee", "reporter"}
DYN_JQL_OPS = {"=", "!=", "in", "not in"}
ADMIN_HOOK_MAX = 100
RETRY_STATUSES = {408, 409, 425, 429}
MAX_RETRIES = 5
RETRY_GAP_S = (300.0, 900.0)
CONNECT_TIMEOUT_S = 5.0
HISTORY_MAX = 10           # changelog histories kept per issue
DELIVERY_LOG_MAX = 2000    # finished deliveries kept for /_sim/deliveries
DELIVERY_QUEUE_MAX = 10000  # waiting deliveries; more are dropped (and counted)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def errcoll(messages=None, errors=None):
    return {"errorMessages": list(messages or []), "errors": dict(errors or {})}


def fmt_ts(t):
    d = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03d+0000" % (d.microsecond // 1000)


def is_int(v):
    return type(v) is int


# ---------------------------------------------------------------------------
# ADF validation

BLOCKS = {"paragraph", "heading", "bulletList", "orderedList", "codeBlock", "blockquote", "rule"}
NESTED_BLOCKS = {"paragraph", "bulletList", "orderedList", "codeBlock"}
MARKS = {"strong", "em", "code", "strike", "underline", "link", "textColor", "subsup"}


def adf_error(doc):
    """None when doc is an acceptable ADF document, else a message."""
    if not isinstance(doc, dict) or doc.get("type") != "doc" or not (is_int(doc.get("version"))
                                                                      and doc.get("version") == 1):
        return NOT_ADF
    content = doc.get("content")
    if not isinstance(content, list):
        return NOT_ADF
    for i, n in enumerate(content):
        e = _adf_block(n, "content[%d]" % i, BLOCKS)
        if e:
            return e
    return None


def _adf_content(n, path, required):
    c = n.get("content")
    if c is None:
        if required:
            return None, "%s: '%s' needs a non-empty content list" % (path, n.get("type"))
        return [], None
    if not isinstance(c, list):
        return None, "%s.content must be a list" % path
    if required and not c:
        return None, "%s: '%s' needs a non-empty content list" % (path, n.get("type"))
    return c, None


def _adf_block(n, path, allowed):
    if not isinstance(n, dict) or not isinstance(n.get("type"), str):
        return "Invalid ADF at %s: a node must be an object with a 'type'" % path
    t = n["type"]
    if t not in allowed:
        return "Invalid ADF at %s: node type '%s' is not allowed here" % (path, t)
    if t in ("paragraph", "heading"):
        if t == "heading":
            attrs = n.get("attrs")
            lvl = attrs.get("level") if isinstance(attrs, dict) else None
            if not (is_int(lvl) and 1 <= lvl <= 6):
                return "Invalid ADF at %s: heading needs attrs.level 1..6" % path
        c, e = _adf_content(n, path, False)
        if e:
            return "Invalid ADF at " + e
        for i, x in enumerate(c):
            e = _adf_inline(x, "%s.content[%d]" % (path, i), True)
            if e:
                return e
        return None
    if t in ("bulletList", "orderedList"):
        c, e = _adf_content(n, path, True)
        if e:
            return "Invalid ADF at " + e
        for i, x in enumerate(c):
            e = _adf_block(x, "%s.content[%d]" % (path, i), {"listItem"})
            if e:
                return e
        return None
    if t in ("listItem", "blockquote"):
        c, e = _adf_content(n, path, True)
        if e:
            return "Invalid ADF at " + e
        for i, x in enumerate(c):
            e = _adf_block(x, "%s.content[%d]" % (path, i), NESTED_BLOCKS)
            if e:
                return e
        return None
    if t == "codeBlock":
        attrs = n.get("attrs")
        if attrs is not None and (not isinstance(attrs, dict) or
                                  not isinstance(attrs.get("language", ""), str)):
            return "Invalid ADF at %s: codeBlock attrs.language must be a string" % path
        c, e = _adf_content(n, path, False)
        if e:
            return "Invalid ADF at " + e
        for i, x in enumerate(c):
            p = "%s.content[%d]" % (path, i)
            if not isinstance(x, dict) or x.get("type") != "text":
                return "Invalid ADF at %s: codeBlock may only contain text nodes" % p
            if x.get("marks"):
                return "Invalid ADF at %s: text inside codeBlock cannot have marks" % p
            e = _adf_inline(x, p, False)
            if e:
                return e
        return None
    if t == "rule":
        if n.get("content"):
            return "Invalid ADF at %s: rule has no content" % path
        return None
    return "Invalid ADF at %s: node type '%s' is not supported" % (path, t)


def _adf_inline(n, path, marks_ok):
    if not isinstance(n, dict) or not isinstance(n.get("type"), str):
        return "Invalid ADF at %s: a node must be an object with a 'type'" % path
    t = n["type"]
    if t == "text":
        s = n.get("text")
        if not isinstance(s, str) or s == "":
            return "Invalid ADF at %s: text node needs a non-empty 'text' string" % path
        marks = n.get("marks")
        if marks is None:
            return None
        if not isinstance(marks, list):
            return "Invalid ADF at %s: marks must be a list" % path
        for j, m in enumerate(marks):
            mp = "%s.marks[%d]" % (path, j)
            if not isinstance(m, dict) or m.get("type") not in MARKS:
                return "Invalid ADF at %s: unknown mark %r" % (mp, m.get("type") if isinstance(m, dict) else m)
            if m["type"] == "link":
                a = m.get("attrs")
                if not isinstance(a, dict) or not isinstance(a.get("href"), str) or not a.get("href"):
                    return "Invalid ADF at %s: link mark needs attrs.href" % mp
        return None
    if t == "hardBreak":
        a = n.get("attrs")
        if a is not None and (not isinstance(a, dict) or a.get("text", "\n") != "\n"):
            return "Invalid ADF at %s: hardBreak attrs.text must be a newline" % path
        return None
    return "Invalid ADF at %s: inline node type '%s' is not allowed here" % (path, t)


def adf_text(doc):
    """The plain text of an ADF document (changelogs show text, not ADF)."""
    out = []

    def walk(n):
        if isinstance(n, dict):
            if n.get("type") == "text" and isinstance(n.get("text"), str):
                out.append(n["text"])
            elif n.get("type") == "hardBreak":
                out.append("\n")
            for c in n.get("content") or []:
                walk(c)
            if n.get("type") in BLOCKS:
                out.append("\n")
    walk(doc)
    return "".join(out).strip()


def hub_signature(secret, body):
    """X-Hub-Signature of an admin webhook: HMAC-SHA256 of the raw body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class Delivery:
    """One webhook delivery: the same identifier and body on every attempt."""

    __slots__ = ("seq", "ident", "kind", "ids", "url", "event", "issue", "body", "secret", "attempts",
                 "statuses", "state", "dup")

    def __init__(self, kind, ids, url, event, issue, body, secret):
        self.seq = 0
        self.ident = str(uuid.uuid4())
        self.kind, self.ids, self.url, self.event, self.issue = kind, ids, url, event, issue
        self.body, self.secret = body, secret
        self.attempts = 0
        self.statuses = []
        self.state = "pending"
        self.dup = False


# ---------------------------------------------------------------------------
# issues

class Issue:
    __slots__ = ("id", "key", "project", "num", "fields", "labels", "status", "properties",
                 "comments", "created", "updated", "write_count", "changed", "indexed", "history")

    def snapshot(self):
        s = Issue()
        s.id, s.key, s.project, s.num = self.id, self.key, self.project, self.num
        s.fields = copy.deepcopy(self.fields)
        s.labels = list(self.labels)
        s.status = self.status
        s.properties, s.comments = {}, []
        s.created, s.updated = self.created, self.updated
        s.write_count, s.changed, s.indexed = self.write_count, self.changed, None
        s.history = list(self.history) if self.history else None
        return s


# ---------------------------------------------------------------------------
# JQL

class JqlError(Exception):
    pass


TOKEN_RE = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>!=|>=|<=|!~|=|>|<|~)
  | (?P<punct>[(),])
  | (?P<word>[^\s"'(),=!<>~]+)
)""", re.X)
KEYWORDS = {"AND", "OR", "NOT", "IN", "IS", "ORDER", "BY", "ASC", "DESC", "EMPTY", "NULL"}


def tokenize(s):
    out = []
    pos = 0
    s = s.rstrip()
    while pos < len(s):
        m = TOKEN_RE.match(s, pos)
        if not m or m.end() == pos:
            raise JqlError("Error in the JQL Query: unexpected character at position %d (%r)" % (pos, s[pos:pos + 10]))
        pos = m.end()
        if m.group("str") is not None:
            raw = m.group("str")[1:-1]
            out.append(("str", re.sub(r"\\(.)", r"\1", raw)))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        elif m.group("punct") is not None:
            out.append(("p", m.group("punct")))
        else:
            out.append(("word", m.group("word")))
    return out


class JqlParser:
    """query := [or_expr] [ORDER BY field [ASC|DESC] {, ...}]"""

    def __init__(self, text):
        self.t = tokenize(text)
        self.i = 0

    def peek(self, k=0):
        j = self.i + k
        return self.t[j] if j < len(self.t) else (None, None)

    def kw(self, word, k=0):
        kind, v = self.peek(k)
        return kind == "word" and v.upper() == word

    def next(self):
        tok = self.peek()
        if tok[0] is None:
            raise JqlError("Error in the JQL Query: the query ended unexpectedly")
        self.i += 1
        return tok

    def expect_p(self, ch):
        kind, v = self.next()
        if kind != "p" or v != ch:
            raise JqlError("Error in the JQL Query: expecting '%s' but got '%s'" % (ch, v))

    def parse(self):
        expr = None
        if self.peek()[0] is not None and not self.kw("ORDER"):
            expr = self.parse_or()
        order = []
        if self.kw("ORDER"):
            self.next()
            if not self.kw("BY"):
                raise JqlError("Error in the JQL Query: expecting 'by' after 'order'")
            self.next()
            while True:
                kind, v = self.next()
                if kind not in ("word", "str") or (kind == "word" and v.upper() in KEYWORDS):
                    raise JqlError("Error in the JQL Query: expecting a field name in ORDER BY but got '%s'" % v)
                desc = False
                if self.kw("ASC") or self.kw("DESC"):
                    desc = self.next()[1].upper() == "DESC"
                order.append((v, desc))
                if self.peek() == ("p", ","):
                    self.next()
                    continue
                break
            if len(order) > 7:
                raise JqlError("Error in the JQL Query: at most 7 ORDER BY fields are allowed")
        if self.peek()[0] is not None:
            raise JqlError("Error in the JQL Query: unexpected '%s'" % self.peek()[1])
        return expr, order

    def parse_or(self):
        parts = [self.parse_and()]
        while self.kw("OR"):
            self.next()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def parse_and(self):
        parts = [self.parse_unary()]
        while self.kw("AND"):
            self.next()
            parts.append(self.parse_unary())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def parse_unary(self):
        if self.kw("NOT"):
            self.next()
            return ("not", self.parse_unary())
        if self.peek() == ("p", "("):
            self.next()
            e = self.parse_or()
            self.expect_p(")")
            return e
        return self.parse_clause()

    def value(self):
        kind, v = self.next()
        if kind == "str":
            return v
        if kind == "word" and v.upper() not in KEYWORDS:
            if self.peek() == ("p", "("):  # function call
                self.next()
                self.expect_p(")")
                return ("fn", v.lower())
            return v
        raise JqlError("Error in the JQL Query: expecting a value but got '%s'" % v)

    def parse_clause(self):
        kind, field = self.next()
        if kind not in ("word", "str") or (kind == "word" and field.upper() in KEYWORDS):
            raise JqlError("Error in the JQL Query: expecting a field name but got '%s'" % field)
        kind, v = self.peek()
        if kind == "op":
            self.next()
            return ("clause", field, v, [self.value()])
        if self.kw("IN") or (self.kw("NOT") and self.kw("IN", 1)):
            op = "in"
            if self.kw("NOT"):
                self.next()
                op = "not in"
            self.next()
            self.expect_p("(")
            vals = [self.value()]
            while self.peek() == ("p", ","):
                self.next()
                vals.append(self.value())
            self.expect_p(")")
            return ("clause", field, op, vals)
        if self.kw("IS"):
            self.next()
            op = "is"
            if self.kw("NOT"):
                self.next()
                op = "is not"
            if not (self.kw("EMPTY") or self.kw("NULL")):
                raise JqlError("Error in the JQL Query: expecting EMPTY or NULL after '%s'" % op.upper())
            self.next()
            return ("clause", field, op, [])
        raise JqlError("Error in the JQL Query: expecting an operator after '%s' but got '%s'" % (field, v))


FIELD_ALIASES = {
    "project": "project", "labels": "labels", "key": "key", "issuekey": "key", "issue": "id", "id": "id",
    "status": "status", "updated": "updated", "updateddate": "updated", "created": "created",
    "createddate": "created", "assignee": "assignee", "reporter": "reporter", "issuetype": "issuetype",
    "type": "issuetype", "priority": "priority", "summary": "summary", "duedate": "duedate", "due": "duedate",
}
EQ_OPS = {"=", "!=", "in", "not in"}
CMP_OPS = {"=", "!=", ">", ">=", "<", "<="}


class JiraSim(simbase.Sim):
    """Jira Cloud REST v3 simulator"""

    name = "jira"

    @staticmethod
    def add_args(p):
        p.add_argument("--email", default="sync@example.com", help="Basic-auth e-mail of the sync user")
        p.add_argument("--api-token", default="demo-token", help="Basic-auth API token")
        p.add_argument("--project", action="append", default=None,
                       help="project key (repeatable or comma separated); default MFG")
        p.add_argument("--projects", default=None, help="comma separated project keys, e.g. MFG,OPS")
        p.add_argument("--workflow", action="append", default=[],
                       help="KEY=NAME: project KEY uses workflow NAME (%s), or KEY=@FILE: a JSON "
                            "workflow {\"initial\", \"statuses\": {name: new|indeterminate|done}, "
                            "\"transitions\": [{\"id\", \"name\", \"to\", \"from\": [..] or absent}]}"
                            % ", ".join(WORKFLOWS))
        p.add_argument("--cloud-id", default=DEFAULT_CLOUD)
        p.add_argument("--client-id", default="mlc-client")
        p.add_argument("--client-secret", default="mlc-secret")
        p.add_argument("--refresh-token", default="rt-initial", help="initially valid refresh token")
        p.add_argument("--access-ttl", type=float, default=3600.0, help="access-token lifetime, seconds")
        p.add_argument("--no-admin", action="store_true",
                       help="the Basic-auth user is not a Jira administrator (admin webhooks -> 403)")
        p.add_argument("--webhook-retry-scale", type=float, default=1.0,
                       help="factor on the 5-15 minute gaps between delivery retries (tests: 0.001)")
        p.add_argument("--webhook-timeout", type=float, default=20.0,
                       help="seconds to wait for a webhook receiver's answer")
        p.add_argument("--webhook-expiration-string", action="store_true",
                       help="answer PUT /webhook/refresh with the string form of expirationDate")

    def __init__(self, args):
        super().__init__(args)
        self.clock_offset = 0.0  # /_sim/clock: the simulated clock is real time + offset
        keys = []
        for item in (args.project or []) + ([args.projects] if args.projects else []):
            for k in item.split(","):
                k = k.strip().upper()
                if k and k not in keys:
                    keys.append(k)
        if not keys:
            keys = ["MFG"]
        for k in keys:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,9}", k):
                raise SystemExit("invalid project key %r" % k)
        self.projects = {k: {"id": str(10000 + i), "key": k, "name": PROJECT_NAMES.get(k, k + " project")}
                         for i, k in enumerate(keys)}
        self.workflows = {k: WORKFLOWS["simple"] for k in keys}
        for spec in args.workflow:
            k, _, name = spec.partition("=")
            k = k.strip().upper()
            if k not in self.projects:
                raise SystemExit("--workflow %s: no project %s (give it with --project)" % (spec, k))
            self.workflows[k] = self.load_workflow(name.strip())
        self.cloud_id = args.cloud_id
        self.users = {a: {"accountId": a, "displayName": n, "email": e, "hidden": h} for a, n, e, h in USERS}
        self.users[SYNC_ACCOUNT] = {"accountId": SYNC_ACCOUNT, "displayName": "ML Connector Sync",
                                    "email": args.email, "hidden": False}
        self.lock = threading.RLock()
        self.issues = {}
        self.key_index = {}
        self.label_index = {}
        self.project_index = {k: set() for k in self.projects}
        self.recent = {}
        self.next_id = 10000
        self.next_num = {k: 0 for k in self.projects}
        self.next_comment = 10000
        # OAuth state
        self.families = {}
        self.rts = {}
        self.access = {}
        self.codes = {}
        self.next_family = 1
        self.new_family(args.refresh_token)
        self.next_history = 10000
        # webhooks: hook_cv guards the hook tables and the delivery queue;
        # lock order is self.lock, then hook_cv
        self.hook_cv = threading.Condition(threading.Lock())
        self.admin_hooks = {}
        self.dyn_hooks = {}
        self.next_admin_hook = 1
        self.next_dyn_hook = 1000
        self.pending = []  # heap of (due monotonic, order, seq, Delivery)
        self.deliveries = {}  # seq -> Delivery, insertion ordered, bounded
        self.next_delivery = 1
        self.in_flight = 0
        self.dropped = 0
        self.paused = False
        self.deliverer = None

    @staticmethod
    def load_workflow(name):
        if not name.startswith("@"):
            if name not in WORKFLOWS:
                raise SystemExit("unknown workflow %r (known: %s, or @file.json)" % (name, ", ".join(WORKFLOWS)))
            return WORKFLOWS[name]
        with open(name[1:], encoding="utf-8") as fh:
            d = json.load(fh)
        for st, cat in (d.get("statuses") or {}).items():
            if st not in STATUSES:
                cid, cname, colour = CATEGORIES[cat]
                STATUSES[st] = (str(10300 + len(STATUSES)), cid, cat, cname, colour)
        wf = {"initial": d["initial"],
              "transitions": [(str(t["id"]), t.get("name", t["to"]), t["to"], t.get("from"))
                              for t in d["transitions"]]}
        for st in [wf["initial"]] + [t[2] for t in wf["transitions"]]:
            if st not in STATUSES:
                raise SystemExit("workflow %s: status %r is not in its \"statuses\"" % (name, st))
        return wf

    def workflow_statuses(self, project):
        wf = self.workflows[project]
        out = [wf["initial"]]
        for _i, _n, to, frm in wf["transitions"]:
            for st in [to] + list(frm or []):
                if st not in out:
                    out.append(st)
        return out

    # ------------------------------------------------------------------
    # basics

    def now(self):
        return time.time() + self.clock_offset + self.fault_num("clock_skew_s", 0)

    def http_time(self):
        return self.now()

    def error_body(self, status, message):
        return errcoll([message])

    def extra_429_headers(self, ra):
        reset = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=ra)
        return {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%MZ"), "RateLimit-Reason": "jira-burst-based"}

    def site(self):
        return "http://127.0.0.1:%d" % self.port

    def json_obj(self, h, optional=False):
        if h.body.strip() and h.header("Content-Type") is not None and not h.is_json_ct():
            raise Reply(415, errcoll(["Unsupported Media Type: use application/json"]))
        b = h.json_body(optional=optional)
        if not isinstance(b, dict):
            raise Reply(400, errcoll(["Request body must be a JSON object"]))
        return b

    # ------------------------------------------------------------------
    # OAuth

    def new_family(self, rt=None):
        with self.lock:
            fid = self.next_family
            self.next_family += 1
            now = self.now()
            self.families[fid] = {"id": fid, "revoked": False, "created": now}
            rt = rt or ("rt-" + secrets.token_urlsafe(32))
            self.rts[rt] = {"fid": fid, "state": "active", "rotated_at": None, "issued": now}
            return rt

    def revoke_family(self, fid):
        self.families[fid]["revoked"] = True
        for t in [t for t, a in self.access.items() if a["fid"] == fid]:
            del self.access[t]

    def issue_tokens(self, fid, with_refresh=True):
        now = self.now()
        ttl = self.fault_num("access_ttl", self.args.access_ttl)
        at = "at-" + secrets.token_urlsafe(40)
        self.access[at] = {"exp": now + ttl, "fid": fid}
        out = {"access_token": at, "expires_in": int(ttl), "scope": " ".join(SCOPES), "token_type": "Bearer"}
        if with_refresh:
            rt = "rt-" + secrets.token_urlsafe(32)
            self.rts[rt] = {"fid": fid, "state": "active", "rotated_at": None, "issued": now}
            out["refresh_token"] = rt
        return out

    @staticmethod
    def invalid_grant():
        return Reply(403, {"error": "invalid_grant", "error_description": "Unknown or invalid refresh token."})

    def h_oauth_token(self, h):
        mt = h.media_type()
        if mt == "application/x-www-form-urlencoded":
            body = {k: v[0] for k, v in parse_qs(h.body.decode("utf-8", "replace")).items()}
        else:
            try:
                body = json.loads(h.body.decode("utf-8")) if h.body.strip() else {}
            except (UnicodeDecodeError, ValueError):
                return Reply(400, {"error": "invalid_request", "error_description": "Malformed JSON body"})
            if not isinstance(body, dict):
                return Reply(400, {"error": "invalid_request", "error_description": "Body must be an object"})
        grant = body.get("grant_type")
        if grant not in ("refresh_token", "authorization_code"):
            return Reply(400, {"error": "unsupported_grant_type",
                               "error_description": "grant_type must be refresh_token or authorization_code"})
        if body.get("client_id") != self.args.client_id or body.get("client_secret") != self.args.client_secret:
            return Reply(401, {"error": "access_denied", "error_description": "Unauthorized"})
        now = self.now()
        with self.lock:
            if grant == "authorization_code":
                c = self.codes.pop(body.get("code"), None)
                if c is None or now - c["t"] > 600 or c["redirect_uri"] != body.get("redirect_uri"):
                    return Reply(403, {"error": "invalid_grant", "error_description": "Invalid authorization code"})
                fid = self.next_family
                self.next_family += 1
                self.families[fid] = {"id": fid, "revoked": False, "created": now}
                return Reply(200, self.issue_tokens(fid, with_refresh=c["offline"]))
            rt = body.get("refresh_token")
            rec = self.rts.get(rt) if isinstance(rt, str) else None
            if rec is None:
                return self.invalid_grant()
            fam = self.families[rec["fid"]]
            if fam["revoked"]:
                return self.invalid_grant()
            if now - fam["created"] > ABSOLUTE_S or now - rec["issued"] > IDLE_S:
                return self.invalid_grant()
            if rec["state"] == "rotated":
                if now - rec["rotated_at"] > LEEWAY_S:
                    self.revoke_family(rec["fid"])
                    r = self.invalid_grant()
                    r.note = "refresh-token reuse after leeway: family revoked"
                    return r
            else:
                rec["state"] = "rotated"
                rec["rotated_at"] = now
            return Reply(200, self.issue_tokens(rec["fid"]))

    def h_authorize(self, h):
        if h.qparam("client_id") != self.args.client_id:
            return Reply(400, {"error": "invalid_request", "error_description": "unknown client_id"})
        ru = h.qparam("redirect_uri")
        if not ru or h.qparam("response_type", "code") != "code":
            return Reply(400, {"error": "invalid_request", "error_description": "redirect_uri and "
                                                                                 "response_type=code required"})
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = {"t": self.now(), "redirect_uri": ru,
                                "offline": "offline_access" in (h.qparam("scope") or "").split()}
        q = {"code": code}
        if h.qparam("state") is not None:
            q["state"] = h.qparam("state")
        loc = ru + ("&" if "?" in ru else "?") + urlencode(q)
        return Reply(302, {"redirect": loc}, headers={"Location": loc})

    def bearer_ok(self, h):
        t = h.bearer()
        if not t:
            return False
        with self.lock:
            a = self.access.get(t)
            return a is not None and self.now() < a["exp"]

    def h_resources(self, h):
        if not self.bearer_ok(h):
            return Reply(401, {"code": 401, "message": "Unauthorized"})
        return Reply(200, [{"id": self.cloud_id, "name": "sim", "url": self.site(), "scopes": SCOPES,
                            "avatarUrl": ""}])

    # ------------------------------------------------------------------
    # routing and auth

    API = [
        ("GET", r"/myself", "myself", "h_myself", False),
        ("GET", r"/serverInfo", "server_info", "h_server_info", False),
        ("GET", r"/project/([^/]+)/statuses", "project_statuses", "h_project_statuses", False),
        ("GET", r"/project/([^/]+)", "project", "h_project", False),
        ("GET", r"/field", "field", "h_field", False),
        ("GET", r"/priority/search", "priority_search", "h_priority_search", False),
        ("GET", r"/priority", "priority", "h_priority", False),
        ("GET", r"/issuetype", "issuetype", "h_issuetype", False),
        ("GET", r"/user/search", "user_search", "h_user_search", False),
        ("POST", r"/issue", "issue_create", "h_issue_create", True),
        ("POST", r"/issue/bulk", "issue_bulk", "h_issue_bulk", True),
        ("POST", r"/issue/bulkfetch", "issue_bulkfetch", "h_issue_bulkfetch", False),
        ("GET", r"/issue/([^/]+)", "issue_get", "h_issue_get", False),
        ("PUT", r"/issue/([^/]+)", "issue_edit", "h_issue_edit", True),
        ("DELETE", r"/issue/([^/]+)", "issue_delete", "h_issue_delete", True),
        ("GET", r"/issue/([^/]+)/transitions", "transitions", "h_transitions_get", False),
        ("POST", r"/issue/([^/]+)/transitions", "transition_do", "h_transitions_post", True),
        ("GET", r"/issue/([^/]+)/properties", "properties", "h_props_list", False),
        ("GET", r"/issue/([^/]+)/properties/([^/]+)", "properties", "h_prop_get", False),
        ("PUT", r"/issue/([^/]+)/properties/([^/]+)", "properties", "h_prop_put", True),
        ("DELETE", r"/issue/([^/]+)/properties/([^/]+)", "properties", "h_prop_delete", True),
        ("GET", r"/issue/([^/]+)/comment", "comment", "h_comment_get", False),
        ("POST", r"/issue/([^/]+)/comment", "comment_add", "h_comment_post", True),
        ("GET", r"/search/jql", "search_jql", "h_search_jql", False),
        ("POST", r"/search/jql", "search_jql", "h_search_jql", False),
        ("POST", r"/search/approximate-count", "search_count", "h_search_count", False),
        ("GET", r"/search", "search_old", "h_search_old", False),
        ("POST", r"/search", "search_old", "h_search_old", False),
        ("POST", r"/webhook", "webhook_register", "h_dyn_register", True),
        ("GET", r"/webhook", "webhook_list", "h_dyn_list", False),
        ("PUT", r"/webhook/refresh", "webhook_refresh", "h_dyn_refresh", True),
        ("DELETE", r"/webhook", "webhook_delete", "h_dyn_delete", True),
        ("GET", r"/webhook/failed", "webhook_failed", "h_dyn_failed", False),
    ]
    API_RE = [(m, re.compile(rx), n, f, w) for m, rx, n, f, w in API]
    EX_RE = re.compile(r"/ex/jira/([^/]+)(/rest/api/3(?:/.*)?)")
    ADMIN_HOOK_RE = re.compile(r"/rest/webhooks/1\.0/webhook(?:/([^/]+))?")

    def route(self, method, path, h):
        p = path.rstrip("/") or "/"
        if p == "/oauth/token" and method == "POST":
            return Route("oauth_token", lambda: self.h_oauth_token(h))
        if p == "/oauth/token/accessible-resources" and method == "GET":
            return Route("accessible_resources", lambda: self.h_resources(h))
        if p == "/authorize" and method == "GET":
            return Route("authorize", lambda: self.h_authorize(h))
        m = self.ADMIN_HOOK_RE.fullmatch(p)
        if m:
            hid = unquote(m.group(1)) if m.group(1) else None
            if method not in (("GET", "POST") if hid is None else ("GET", "PUT", "DELETE")):
                return None
            return Route("admin_webhook", lambda: self.admin_call(h, method, hid), method != "GET")
        m = self.EX_RE.fullmatch(p)
        if m:
            shape, cloud, rest = "ex", m.group(1), m.group(2)
        elif p == "/rest/api/3" or p.startswith("/rest/api/3/"):
            shape, cloud, rest = "site", None, p
        else:
            return None
        sub = rest[len("/rest/api/3"):]
        for meth, rx, name, fname, write in self.API_RE:
            if meth != method:
                continue
            mm = rx.fullmatch(sub)
            if mm:
                fn = getattr(self, fname)
                groups = [unquote(g) for g in mm.groups()]
                return Route(name, lambda: self.api_call(h, shape, cloud, fn, groups), write)
        return None

    def unauthorized(self, msg="Client must be authenticated to access this resource."):
        return Reply(401, errcoll([msg]))

    def check_basic(self, h):
        ba = h.basic_auth()
        if self.fault_flag("basic_401"):
            return self.unauthorized("Basic authentication failed: the API token has expired or been revoked.")
        if ba[0].lower() != self.args.email.lower() or ba[1] != self.args.api_token:
            return self.unauthorized("Basic authentication with the supplied credentials failed.")
        return None

    def api_call(self, h, shape, cloud, fn, groups):
        if shape == "ex":
            if cloud != self.cloud_id:
                return Reply(404, errcoll(["No Jira site is known for cloud id '%s'." % cloud]))
            base = "%s/ex/jira/%s" % (self.site(), cloud)
            if h.bearer() is not None:
                if not self.bearer_ok(h):
                    return self.unauthorized("The access token is invalid or has expired.")
            elif h.basic_auth() is not None:
                r = self.check_basic(h)
                if r:
                    return r
            else:
                return self.unauthorized()
        else:
            base = self.site()
            if h.bearer() is not None:
                return self.unauthorized("Bearer tokens are only accepted on /ex/jira/{cloudid}/rest/api/3/.")
            if h.basic_auth() is None:
                return self.unauthorized()
            r = self.check_basic(h)
            if r:
                return r
        ctx = {"base": base, "account": SYNC_ACCOUNT, "oauth": h.bearer() is not None}
        return fn(h, ctx, *groups)

    # ------------------------------------------------------------------
    # rendering

    def user_obj(self, account, base):
        u = self.users.get(account)
        if u is None:
            return None
        o = {"self": "%s/rest/api/3/user?accountId=%s" % (base, account), "accountId": account,
             "accountType": "atlassian", "displayName": u["displayName"], "active": True,
             "timeZone": "UTC", "locale": "en_US",
             "avatarUrls": {"48x48": "", "24x24": "", "16x16": "", "32x32": ""}}
        if not u["hidden"]:
            o["emailAddress"] = u["email"]
        return o

    def priority_obj(self, pid, base):
        for i, n, colour in PRIORITIES:
            if i == pid:
                return {"self": "%s/rest/api/3/priority/%s" % (base, i), "iconUrl": "", "name": n, "id": i}
        return None

    def issuetype_obj(self, tid, base):
        for i, n, d in ISSUE_TYPES:
            if i == tid:
                return {"self": "%s/rest/api/3/issuetype/%s" % (base, i), "id": i, "description": d,
                        "iconUrl": "", "name": n, "subtask": False, "hierarchyLevel": 0}
        return None

    def project_obj(self, key, base):
        p = self.projects[key]
        return {"self": "%s/rest/api/3/project/%s" % (base, p["id"]), "id": p["id"], "key": key,
                "name": p["name"], "projectTypeKey": "software", "simplified": False}

    def status_obj(self, name, base):
        sid, cid, ckey, cname, colour = STATUSES[name]
        return {"self": "%s/rest/api/3/status/%s" % (base, sid), "description": "", "iconUrl": "",
                "name": name, "id": sid,
                "statusCategory": {"self": "%s/rest/api/3/statuscategory/%d" % (base, cid), "id": cid,
                                   "key": ckey, "colorName": colour, "name": cname}}

    def option_obj(self, fid, oid, base):
        for i, v in SELECT_OPTIONS.get(fid, []):
            if i == oid:
                return {"self": "%s/rest/api/3/customFieldOption/%s" % (base, i), "value": v, "id": i}
        return None

    def render_fields(self, v, wanted, base):
        f = v.fields
        out = {}

        def put(name, val):
            if wanted is None or name in wanted:
                out[name] = val

        put("summary", f.get("summary"))
        put("description", copy.deepcopy(f.get("description")))
        put("priority", self.priority_obj(f.get("priority"), base))
        put("assignee", self.user_obj(f.get("assignee"), base) if f.get("assignee") else None)
        put("reporter", self.user_obj(f.get("reporter"), base) if f.get("reporter") else None)
        put("duedate", f.get("duedate"))
        put("labels", list(v.labels))
        put("issuetype", self.issuetype_obj(f.get("issuetype"), base))
        put("project", self.project_obj(v.project, base))
        put("status", self.status_obj(v.status, base))
        put("created", fmt_ts(v.created))
        put("updated", fmt_ts(v.updated))
        for cf, (_n, kind) in CUSTOM.items():
            val = f.get(cf)
            if kind == "select":
                val = self.option_obj(cf, val, base) if val else None
            put(cf, val)
        return out

    def issue_self(self, base, iid):
        return "%s/rest/api/3/issue/%d" % (base, iid)

    @staticmethod
    def parse_fields_param(spec):
        """None = every field; otherwise the set of requested field ids."""
        if spec is None:
            return None
        items = spec if isinstance(spec, list) else str(spec).split(",")
        wanted, excl, everything = set(), set(), False
        for it in items:
            it = str(it).strip()
            if it in ("*all", "*navigable"):
                everything = True
            elif it.startswith("-"):
                excl.add(it[1:])
            elif it:
                wanted.add(it)
        if everything:
            wanted |= set(ALL_FIELDS)
        return wanted - excl

    # ------------------------------------------------------------------
    # validation

    def find_project(self, val):
        if isinstance(val, dict):
            k = val.get("key")
            i = val.get("id")
            if isinstance(k, str) and k.upper() in self.projects:
                return k.upper()
            if i is not None:
                for key, p in self.projects.items():
                    if p["id"] == str(i):
                        return key
        return None

    @staticmethod
    def find_in_catalogue(catalogue, val):
        """Id of the catalogue entry (id, name, ...) that {"id"} or {"name"} names."""
        if isinstance(val, dict):
            for entry in catalogue:
                i, n = entry[0], entry[1]
                if (val.get("id") is not None and str(val.get("id")) == i) or \
                        (isinstance(val.get("name"), str) and val["name"].lower() == n.lower()):
                    return i
        return None

    def find_issuetype(self, val):
        return self.find_in_catalogue(ISSUE_TYPES, val)

    def find_priority(self, val):
        return self.find_in_catalogue(PRIORITIES, val)

    @staticmethod
    def label_error(lb):
        if not isinstance(lb, str) or lb == "":
            return "Labels must be non-empty strings."
        if re.search(r"\s", lb):
            return "The label '%s' contains spaces which is invalid." % lb
        if len(lb) > 255:
            return "The label '%s...' exceeds the 255 character limit." % lb[:20]
        return None

    def check_field(self, name, val, errs, creating):
        """Validate one field; return (ok, stored value)."""
        if name == "project":
            if not creating:
                errs[name] = CANNOT_SET % name
                return False, None
            p = self.find_project(val)
            if p is None:
                errs[name] = "Specify a valid project ID or key"
                return False, None
            return True, p
        if name == "issuetype":
            t = self.find_issuetype(val)
            if t is None:
                errs[name] = "Specify an issue type" if not val else "The issue type selected is invalid."
                return False, None
            return True, t
        if name == "summary":
            if not isinstance(val, str) or not val.strip():
                errs[name] = "You must specify a summary of the issue."
            elif len(val) > 255:
                errs[name] = "Summary must be less than 255 characters."
            elif "\n" in val or "\r" in val:
                errs[name] = "The summary is invalid because it contains newline characters."
            else:
                return True, val
            return False, None
        if name == "description":
            if val is None:
                return True, None
            e = adf_error(val)
            if e:
                errs[name] = e
                return False, None
            return True, copy.deepcopy(val)
        if name == "priority":
            if val is None:
                return True, DEFAULT_PRIORITY
            pid = self.find_priority(val)
            if pid is None:
                errs[name] = "The priority selected is invalid."
                return False, None
            return True, pid
        if name == "assignee":
            if val is None:
                return True, None
            acc = None
            if isinstance(val, dict):
                acc = val.get("accountId", val.get("id"))
            if acc == "-1" or (isinstance(val, dict) and "accountId" in val and acc is None):
                return True, None
            if not isinstance(acc, str) or acc not in self.users:
                errs[name] = "User '%s' does not exist." % (acc if isinstance(acc, str) else val)
                return False, None
            return True, acc
        if name == "duedate":
            if val is None:
                return True, None
            ok = isinstance(val, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", val)
            if ok:
                try:
                    dt.date.fromisoformat(val)
                except ValueError:
                    ok = False
            if not ok:
                errs[name] = "Error parsing date string: %s" % val
                return False, None
            return True, val
        if name == "labels":
            if not isinstance(val, list):
                errs[name] = "Field 'labels' must be a list of strings."
                return False, None
            out = []
            for lb in val:
                e = self.label_error(lb)
                if e:
                    errs[name] = e
                    return False, None
                if lb not in out:
                    out.append(lb)
            return True, out
        if name in CUSTOM:
            cname, kind = CUSTOM[name]
            if val is None:
                return True, None
            if kind == "textfield":
                if not isinstance(val, str):
                    errs[name] = "Operation value must be a string"
                elif len(val) > 255:
                    errs[name] = "The entered text is too long. It exceeds the allowed limit of 255 characters."
                else:
                    return True, val
                return False, None
            if kind == "float":
                # a number field takes a JSON number; a string, even "12.50", is refused
                if isinstance(val, bool) or not isinstance(val, (int, float)):
                    errs[name] = "Operation value must be a number"
                    return False, None
                return True, val
            opts = SELECT_OPTIONS[name]
            if isinstance(val, dict):
                for i, v in opts:
                    if val.get("value") == v or (val.get("id") is not None and str(val.get("id")) == i):
                        return True, i
                shown = val.get("value", val.get("id"))
                errs[name] = "Option value '%s' is not valid" % shown
            else:
                errs[name] = "Could not find valid 'id' or 'value' in the Parent Option object."
            return False, None
        errs[name] = CANNOT_SET % name
        return False, None

    def validate_fields(self, fields, errs, creating):
        out = {}
        if not isinstance(fields, dict):
            errs["fields"] = "'fields' must be an object"
            return out
        for name, val in fields.items():
            ok, v = self.check_field(name, val, errs, creating)
            if ok:
                out[name] = v
        if creating:
            for req, msg in (("project", "Specify a valid project ID or key"),
                             ("issuetype", "Specify an issue type"),
                             ("summary", "You must specify a summary of the issue.")):
                if req not in fields:
                    errs[req] = msg
        return out

    def validate_update(self, update, fields, errs, creating):
        """Returns (label ops, set values, comment bodies)."""
        label_ops, sets, comments = [], {}, []
        if not isinstance(update, dict):
            errs["update"] = "'update' must be an object"
            return label_ops, sets, comments
        for name, ops in update.items():
            if isinstance(fields, dict) and name in fields:
                errs[name] = "Field '%s' cannot appear in both 'fields' and 'update'" % name
                continue
            if not isinstance(ops, list):
                errs[name] = "Operations for '%s' must be a list" % name
                continue
            for op in ops:
                if not isinstance(op, dict) or len(op) != 1:
                    errs[name] = "Each update operation must be an object with exactly one verb"
                    break
                verb, val = next(iter(op.items()))
                if name == "labels" and verb in ("add", "remove"):
                    e = self.label_error(val)
                    if e:
                        errs[name] = e
                        break
                    label_ops.append((verb, val))
                elif name == "comment" and verb == "add":
                    body = val.get("body") if isinstance(val, dict) else None
                    e = adf_error(body)
                    if e:
                        errs["comment"] = e
                        break
                    comments.append(copy.deepcopy(body))
                elif verb == "set" and name != "comment":
                    ok, v = self.check_field(name, val, errs, creating)
                    if not ok:
                        break
                    if name == "labels":
                        label_ops.append(("set", v))
                    else:
                        sets[name] = v
                else:
                    errs[name] = "Operation '%s' is not supported for field '%s'" % (verb, name)
                    break
        return label_ops, sets, comments

    # ------------------------------------------------------------------
    # issue store helpers (callers hold self.lock)

    def get_issue(self, id_or_key):
        s = str(id_or_key).strip()
        if s.isdigit():
            return self.issues.get(int(s))
        iid = self.key_index.get(s.upper())
        return self.issues.get(iid) if iid is not None else None

    def need_issue(self, id_or_key):
        iss = self.get_issue(id_or_key)
        if iss is None:
            raise Reply(404, errcoll([NO_ISSUE]))
        return iss

    def set_labels(self, iss, new):
        old = set(iss.labels)
        for lb in old - set(new):
            s = self.label_index.get(lb)
            if s is not None:
                s.discard(iss.id)
                if not s:
                    del self.label_index[lb]
        for lb in set(new) - old:
            self.label_index.setdefault(lb, set()).add(iss.id)
        iss.labels = list(new)

    @staticmethod
    def apply_label_ops(labels, ops):
        out = list(labels)
        for verb, v in ops:
            if verb == "set":
                out = list(v)
            elif verb == "add":
                if v not in out:
                    out.append(v)
            elif verb == "remove":
                out = [x for x in out if x != v]
        return out

    def lag_s(self):
        return self.fault_num("index_lag_ms", 0) / 1000.0

    def before_change(self, iss):
        """Keep the last indexed version before a visible change (index lag)."""
        now = time.monotonic()
        lag = self.lag_s()
        if lag > 0:
            if now - iss.changed >= lag:
                iss.indexed = iss.snapshot()
            self.recent[iss.id] = now
        else:
            iss.indexed = None
        iss.changed = now

    def new_comment(self, iss, body, base):
        cid = self.next_comment
        self.next_comment += 1
        now = self.now()
        c = {"id": str(cid), "author": SYNC_ACCOUNT, "body": body, "created": now, "updated": now}
        iss.comments.append(c)
        return c

    def comment_obj(self, iss, c, base):
        return {"self": "%s/rest/api/3/issue/%d/comment/%s" % (base, iss.id, c["id"]), "id": c["id"],
                "author": self.user_obj(c["author"], base), "updateAuthor": self.user_obj(c["author"], base),
                "body": copy.deepcopy(c["body"]), "created": fmt_ts(c["created"]),
                "updated": fmt_ts(c["updated"]), "jsdPublic": True}

    def open_transitions(self, project, current):
        """The transitions of the project's workflow open from status current."""
        return [(i, n, to) for i, n, to, frm in self.workflows[project]["transitions"]
                if to != current and (frm is None or current in frm)]

    def transition_target(self, tid, current, project):
        for i, _n, to in self.open_transitions(project, current):
            if i == str(tid):
                return to
        return None

    def create_one(self, entry, ctx):
        """(result dict, None) or (None, ErrorCollection)."""
        if not isinstance(entry, dict):
            return None, errcoll(["Issue data must be a JSON object"])
        errs = {}
        fields = entry.get("fields", {})
        changes = self.validate_fields(fields, errs, True)
        label_ops, sets, comments = self.validate_update(entry.get("update") or {}, fields, errs, True)
        changes.update(sets)
        props = entry.get("properties") or []
        if not isinstance(props, list) or any(
                not isinstance(p, dict) or not isinstance(p.get("key"), str) or not p["key"]
                or len(p["key"]) > 255 or "value" not in p for p in props):
            errs["properties"] = "properties must be a list of {key, value} objects (key 1..255 chars)"
        elif any(len(json.dumps(p["value"])) > 32768 for p in props):
            errs["properties"] = "The property value exceeds the maximum length of 32768 characters."
        trans = entry.get("transition")
        target = None
        initial = self.workflows[changes["project"]]["initial"] if changes.get("project") in self.workflows \
            else "To Do"
        if trans is not None:
            tid = trans.get("id") if isinstance(trans, dict) else None
            target = self.transition_target(tid, initial, changes.get("project")) \
                if changes.get("project") in self.workflows else None
            if target is None:
                errs["transition"] = "Transition id '%s' is not valid for this issue." % tid
        if errs:
            return None, errcoll([], errs)
        with self.lock:
            iss = Issue()
            iss.id = self.next_id
            self.next_id += 1
            pkey = changes.pop("project")
            self.next_num[pkey] += 1
            iss.project, iss.num = pkey, self.next_num[pkey]
            iss.key = "%s-%d" % (pkey, iss.num)
            labels = self.apply_label_ops(changes.pop("labels", []), label_ops)
            iss.fields = {"priority": DEFAULT_PRIORITY, "reporter": ctx["account"]}
            iss.fields.update(changes)
            iss.labels = []
            iss.status = target or initial
            iss.properties = {p["key"]: copy.deepcopy(p["value"]) for p in props}
            iss.comments = []
            now = self.now()
            iss.created = iss.updated = now
            iss.write_count = 1
            iss.changed = time.monotonic()
            iss.indexed = None
            iss.history = None
            if self.lag_s() > 0:
                self.recent[iss.id] = iss.changed
            self.issues[iss.id] = iss
            self.key_index[iss.key] = iss.id
            self.project_index[pkey].add(iss.id)
            self.set_labels(iss, labels)
            for body in comments:
                self.new_comment(iss, body, ctx["base"])
            if self.admin_hooks or self.dyn_hooks:  # costs nothing without webhooks
                self.emit("jira:issue_created", iss, None, ctx["account"], "issue_created")
        res = {"id": str(iss.id), "key": iss.key, "self": self.issue_self(ctx["base"], iss.id)}
        if target:
            res["transition"] = {"status": 200, "errorCollection": errcoll()}
        return res, None

    # ------------------------------------------------------------------
    # API handlers: discovery

    def h_myself(self, h, ctx):
        return Reply(200, self.user_obj(ctx["account"], ctx["base"]))

    def h_server_info(self, h, ctx):
        return Reply(200, {"baseUrl": self.site(), "deploymentType": "Cloud", "version": "1001.0.0-SNAPSHOT",
                           "buildNumber": 100000, "serverTitle": "Jira (simulated)",
                           "serverTime": fmt_ts(self.now())})

    def h_project_statuses(self, h, ctx, key_or_id):
        """GET /project/{key}/statuses: per issue type, the statuses of its
        workflow (one workflow per project here)."""
        key = next((k for k, p in self.projects.items() if k == key_or_id.upper() or p["id"] == key_or_id), None)
        if key is None:
            return Reply(404, errcoll(["No project could be found with key '%s'." % key_or_id]))
        sts = []
        for name in self.workflow_statuses(key):
            o = self.status_obj(name, ctx["base"])
            sts.append({"self": o["self"], "description": "", "iconUrl": "", "name": name, "id": o["id"]})
        out = []
        for i, _n, _d in ISSUE_TYPES:
            t = self.issuetype_obj(i, ctx["base"])
            out.append({"self": t["self"], "id": i, "name": t["name"], "subtask": False,
                        "statuses": copy.deepcopy(sts)})
        return Reply(200, out)

    def h_project(self, h, ctx, key_or_id):
        key = None
        if key_or_id.upper() in self.projects:
            key = key_or_id.upper()
        else:
            for k, p in self.projects.items():
                if p["id"] == key_or_id:
                    key = k
        if key is None:
            return Reply(404, errcoll(["No project could be found with key '%s'." % key_or_id]))
        o = self.project_obj(key, ctx["base"])
        o.update({"style": "classic", "isPrivate": False, "lead": self.user_obj(SYNC_ACCOUNT, ctx["base"]),
                  "issueTypes": [self.issuetype_obj(i, ctx["base"]) for i, _n, _d in ISSUE_TYPES]})
        return Reply(200, o)

    def h_field(self, h, ctx):
        out = []
        for fid, name, typ, extra, orderable, clauses in SYSTEM_FIELDS:
            schema = {"type": typ, "system": fid}
            schema.update(extra)
            out.append({"id": fid, "key": fid, "name": name, "custom": False, "orderable": orderable,
                        "navigable": True, "searchable": True, "clauseNames": clauses, "schema": schema})
        for fid, (name, kind) in CUSTOM.items():
            num = int(fid.split("_")[1])
            schema = {"type": {"textfield": "string", "float": "number"}.get(kind, "option"),
                      "custom": "com.atlassian.jira.plugin.system.customfieldtypes:%s" % kind,
                      "customId": num}
            out.append({"id": fid, "key": fid, "name": name, "untranslatedName": name, "custom": True,
                        "orderable": True, "navigable": True, "searchable": True,
                        "clauseNames": ["cf[%d]" % num, name], "schema": schema})
        return Reply(200, out)

    def priority_values(self, base):
        return [{"self": "%s/rest/api/3/priority/%s" % (base, i), "statusColor": c, "description": n,
                 "iconUrl": "", "name": n, "id": i, "isDefault": i == DEFAULT_PRIORITY}
                for i, n, c in PRIORITIES]

    def paging_params(self, h, default_max=50):
        try:
            start = int(h.qparam("startAt", "0"))
            mx = int(h.qparam("maxResults", str(default_max)))
        except ValueError:
            raise Reply(400, errcoll(["startAt and maxResults must be integers"]))
        return max(0, start), max(0, min(mx, 1000))

    def h_priority_search(self, h, ctx):
        start, mx = self.paging_params(h)
        vals = self.priority_values(ctx["base"])
        ids = h.query.get("id")
        if ids:
            vals = [v for v in vals if v["id"] in ids]
        pn = h.qparam("priorityName")
        if pn:
            vals = [v for v in vals if pn.lower() in v["name"].lower()]
        page = vals[start:start + mx]
        return Reply(200, {"self": "%s/rest/api/3/priority/search?startAt=%d&maxResults=%d" % (ctx["base"], start, mx),
                           "maxResults": mx, "startAt": start, "total": len(vals),
                           "isLast": start + len(page) >= len(vals), "values": page})

    def h_priority(self, h, ctx):
        return Reply(200, self.priority_values(ctx["base"]))

    def h_issuetype(self, h, ctx):
        return Reply(200, [self.issuetype_obj(i, ctx["base"]) for i, _n, _d in ISSUE_TYPES])

    def h_user_search(self, h, ctx):
        q = h.qparam("query")
        acc = h.qparam("accountId")
        if q is None and acc is None:
            return Reply(400, errcoll(["One of 'query' or 'accountId' query parameters must be provided."]))
        if self.fault_flag("user_search_empty"):
            return Reply(200, [])
        start, mx = self.paging_params(h)
        out = []
        for u in self.users.values():
            if acc is not None and u["accountId"] != acc:
                continue
            if q is not None:
                ql = q.strip().lower()
                name = u["displayName"].lower()
                hit = name.startswith(ql) or any(w.startswith(ql) for w in name.split())
                if not hit and not u["hidden"] and u["email"].lower().startswith(ql):
                    hit = True
                if not hit:
                    continue
            out.append(self.user_obj(u["accountId"], ctx["base"]))
        return Reply(200, out[start:start + mx])

    # ------------------------------------------------------------------
    # API handlers: issues

    def h_issue_create(self, h, ctx):
        body = self.json_obj(h)
        res, err = self.create_one(body, ctx)
        if err:
            return Reply(400, err)
        return Reply(201, res)

    def h_issue_bulk(self, h, ctx):
        body = self.json_obj(h)
        ups = body.get("issueUpdates")
        if not isinstance(ups, list):
            return Reply(400, errcoll(["issueUpdates must be a list of issues to create."]))
        if len(ups) > 50:
            return Reply(400, errcoll(["Too many issues in one bulk request: %d (the maximum is 50)." % len(ups)]))
        if not ups:
            return Reply(400, errcoll(["issueUpdates must contain at least one issue."]))
        fail = set()
        for x in self.take_list("fail_bulk_element"):
            try:
                fail.add(int(x))
            except (TypeError, ValueError):
                pass
        issues, errors = [], []
        for i, entry in enumerate(ups):
            if i in fail:
                errors.append({"status": 400, "failedElementNumber": i,
                               "elementErrors": errcoll([], {"summary": "Simulated failure (fail_bulk_element)."})})
                continue
            res, err = self.create_one(entry, ctx)
            if err:
                errors.append({"status": 400, "failedElementNumber": i, "elementErrors": err})
            else:
                issues.append(res)
        return Reply(201 if issues else 400, {"issues": issues, "errors": errors})

    def h_issue_get(self, h, ctx, id_or_key):
        wanted = self.parse_fields_param(h.qparam("fields"))
        props = [p for p in (h.qparam("properties") or "").split(",") if p.strip()]
        with self.lock:
            iss = self.need_issue(id_or_key)
            out = {"expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
                   "id": str(iss.id), "self": self.issue_self(ctx["base"], iss.id), "key": iss.key,
                   "fields": self.render_fields(iss, wanted, ctx["base"])}
            if props:
                out["properties"] = {k: copy.deepcopy(iss.properties[k]) for k in props if k in iss.properties}
            if "changelog" in self.expand_set(h.qparam("expand")):
                out["changelog"] = self.changelog_obj(iss, ctx["base"])
        return Reply(200, out)

    def h_issue_edit(self, h, ctx, id_or_key):
        with self.lock:
            self.need_issue(id_or_key)
        if self.take("conflict_409"):
            return Reply(409, errcoll(["The issue was updated by another request at the same time. Try again."]),
                         note="fault=conflict_409")
        body = self.json_obj(h)
        errs = {}
        fields = body.get("fields", {})
        changes = self.validate_fields(fields, errs, False)
        label_ops, sets, comments = self.validate_update(body.get("update") or {}, fields, errs, False)
        changes.update(sets)
        # IssueUpdateDetails.properties: "Details of issue properties to be add or update."
        props = body.get("properties") or []
        if not isinstance(props, list) or any(
                not isinstance(p, dict) or not isinstance(p.get("key"), str) or not p["key"]
                or len(p["key"]) > 255 or "value" not in p for p in props):
            errs["properties"] = "properties must be a list of {key, value} objects (key 1..255 chars)"
        elif any(len(json.dumps(p["value"])) > 32768 for p in props):
            errs["properties"] = "The property value exceeds the maximum length of 32768 characters."
        if errs:
            return Reply(400, errcoll([], errs))
        with self.lock:
            iss = self.need_issue(id_or_key)
            for p in props:
                iss.properties[p["key"]] = copy.deepcopy(p["value"])
            new_labels = self.apply_label_ops(changes.pop("labels", iss.labels), label_ops)
            changed = new_labels != iss.labels or bool(comments) or any(
                iss.fields.get(k) != v for k, v in changes.items())
            if changed:
                old = self.field_state(iss)
                self.before_change(iss)
                iss.fields.update(changes)
                self.set_labels(iss, new_labels)
                added = [self.new_comment(iss, b, ctx["base"]) for b in comments]
                iss.updated = self.now()
                self.record_change(iss, old, ctx["account"], added)
            iss.write_count += 1
            if str(h.qparam("returnIssue", "false")).lower() == "true":
                return Reply(200, {"id": str(iss.id), "key": iss.key, "self": self.issue_self(ctx["base"], iss.id),
                                   "fields": self.render_fields(iss, None, ctx["base"])})
        return Reply(204)

    def h_issue_bulkfetch(self, h, ctx):
        """POST /issue/bulkfetch: up to 100 issues by id or key, read from the
        issue store itself (not the search index: no lag), ascending id;
        unknown ones are listed in issueErrors."""
        if self.fault_flag("no_bulkfetch"):
            return Reply(404, errcoll(["No such endpoint (simulated: bulk fetch unavailable)."]),
                         note="fault=no_bulkfetch")
        body = self.json_obj(h)
        ids = body.get("issueIdsOrKeys")
        if not isinstance(ids, list) or not ids or len(ids) > 100 or \
                any(not isinstance(x, str) or not x for x in ids):
            return Reply(400, errcoll(["issueIdsOrKeys must list 1 to 100 issue ids or keys."]))
        fields = body.get("fields")
        props = body.get("properties") or []
        if not isinstance(props, list) or len(props) > 5:
            return Reply(400, errcoll(["properties must be a list of at most 5 keys"]))
        wanted = set(fields) if isinstance(fields, list) else set()
        wanted -= {"id", "key"}
        base = ctx["base"]
        found, errors = [], []
        with self.lock:
            for x in ids:
                iss = self.get_issue(x)
                if iss is None:
                    errors.append({"id": x, "errorMessage": "Issue does not exist or you do not have permission to see it."})
                elif all(iss.id != f.id for f in found):
                    found.append(iss)
            found.sort(key=lambda i: i.id)
            items = []
            for iss in found:
                it = {"id": str(iss.id), "key": iss.key, "self": self.issue_self(base, iss.id)}
                if wanted:
                    it["fields"] = self.render_fields(iss, wanted, base)
                if props:
                    it["properties"] = {k: copy.deepcopy(iss.properties[k]) for k in props if k in iss.properties}
                items.append(it)
        out = {"issues": items}
        if errors:
            out["issueErrors"] = errors
        return Reply(200, out)

    def h_issue_delete(self, h, ctx, id_or_key):
        with self.lock:
            iss = self.need_issue(id_or_key)
            self.emit("jira:issue_deleted", iss, None, ctx["account"], "issue_deleted")
            self.drop_issue(iss)
        return Reply(204)

    def drop_issue(self, iss):
        self.set_labels(iss, [])
        del self.issues[iss.id]
        self.key_index.pop(iss.key, None)
        self.project_index[iss.project].discard(iss.id)
        self.recent.pop(iss.id, None)

    def transitions_list(self, iss, base):
        out = []
        glob = {i for i, _n, _t, frm in self.workflows[iss.project]["transitions"] if frm is None}
        for tid, name, target in self.open_transitions(iss.project, iss.status):
            out.append({"id": tid, "name": name, "to": self.status_obj(target, base), "hasScreen": False,
                        "isGlobal": tid in glob, "isInitial": False, "isAvailable": True,
                        "isConditional": False, "isLooped": False})
        return out

    def h_transitions_get(self, h, ctx, id_or_key):
        with self.lock:
            iss = self.need_issue(id_or_key)
            return Reply(200, {"expand": "transitions", "transitions": self.transitions_list(iss, ctx["base"])})

    def h_transitions_post(self, h, ctx, id_or_key):
        with self.lock:
            self.need_issue(id_or_key)
        body = self.json_obj(h)
        tr = body.get("transition")
        tid = tr.get("id") if isinstance(tr, dict) else None
        if tid is None:
            return Reply(400, errcoll(["Missing 'transition' identifier."]))
        errs = {}
        fields = body.get("fields", {})
        changes = self.validate_fields(fields, errs, False)
        label_ops, sets, comments = self.validate_update(body.get("update") or {}, fields, errs, False)
        changes.update(sets)
        if errs:
            return Reply(400, errcoll([], errs))
        with self.lock:
            iss = self.need_issue(id_or_key)
            target = self.transition_target(tid, iss.status, iss.project)
            if target is None:
                return Reply(400, errcoll(["Transition id '%s' is not valid for this issue." % tid]))
            old = self.field_state(iss)
            self.before_change(iss)
            iss.status = target
            new_labels = self.apply_label_ops(changes.pop("labels", iss.labels), label_ops)
            iss.fields.update(changes)
            self.set_labels(iss, new_labels)
            added = [self.new_comment(iss, b, ctx["base"]) for b in comments]
            iss.updated = self.now()
            iss.write_count += 1
            self.record_change(iss, old, ctx["account"], added)
        return Reply(204)

    def h_props_list(self, h, ctx, id_or_key):
        with self.lock:
            iss = self.need_issue(id_or_key)
            return Reply(200, {"keys": [{"self": "%s/properties/%s" % (self.issue_self(ctx["base"], iss.id), k),
                                         "key": k} for k in iss.properties]})

    def h_prop_get(self, h, ctx, id_or_key, pkey):
        with self.lock:
            iss = self.need_issue(id_or_key)
            if pkey not in iss.properties:
                return Reply(404, errcoll(["The property with key '%s' does not exist." % pkey]))
            return Reply(200, {"key": pkey, "value": copy.deepcopy(iss.properties[pkey])})

    def h_prop_put(self, h, ctx, id_or_key, pkey):
        with self.lock:
            self.need_issue(id_or_key)
        if len(pkey) > 255:
            return Reply(400, errcoll(["The property key cannot be longer than 255 characters."]))
        try:
            text = h.body.decode("utf-8")
        except UnicodeDecodeError:
            return Reply(400, errcoll(["The property value must be valid UTF-8 JSON."]))
        if not text.strip():
            return Reply(400, errcoll(["The property value cannot be empty."]))
        if len(text) > 32768:
            return Reply(400, errcoll(["The property value exceeds the maximum length of 32768 characters."]))
        try:
            val = json.loads(text)
        except ValueError:
            return Reply(400, errcoll(["The property value must be valid JSON."]))
        with self.lock:
            iss = self.need_issue(id_or_key)
            existed = pkey in iss.properties
            iss.properties[pkey] = val
            iss.write_count += 1
        return Reply(200 if existed else 201, raw=b"")

    def h_prop_delete(self, h, ctx, id_or_key, pkey):
        with self.lock:
            iss = self.need_issue(id_or_key)
            if pkey not in iss.properties:
                return Reply(404, errcoll(["The property with key '%s' does not exist." % pkey]))
            del iss.properties[pkey]
            iss.write_count += 1
        return Reply(204)

    def h_comment_get(self, h, ctx, id_or_key):
        start, mx = self.paging_params(h, 5000)
        with self.lock:
            iss = self.need_issue(id_or_key)
            cs = iss.comments[start:start + mx]
            return Reply(200, {"startAt": start, "maxResults": mx, "total": len(iss.comments),
                               "comments": [self.comment_obj(iss, c, ctx["base"]) for c in cs]})

    def h_comment_post(self, h, ctx, id_or_key):
        with self.lock:
            self.need_issue(id_or_key)
        body = self.json_obj(h)
        e = adf_error(body.get("body"))
        if e:
            return Reply(400, errcoll([], {"comment": e}))
        with self.lock:
            iss = self.need_issue(id_or_key)
            self.before_change(iss)
            c = self.new_comment(iss, copy.deepcopy(body["body"]), ctx["base"])
            iss.updated = self.now()
            iss.write_count += 1
            self.record_change(iss, self.field_state(iss), ctx["account"], [c])
            return Reply(201, self.comment_obj(iss, c, ctx["base"]))

    # ------------------------------------------------------------------
    # search

    def h_search_old(self, h, ctx):
        return Reply(410, errcoll(["The requested API has been removed. Please migrate to the "
                                   "/rest/api/3/search/jql API."]))

    def parse_time(self, v, fname):
        """(epoch seconds, granularity seconds) for a JQL date literal."""
        if isinstance(v, tuple):
            if v == ("fn", "now"):
                return self.now(), 0
            raise JqlError("Function '%s()' is not supported for field '%s' by the simulator." % (v[1], fname))
        s = str(v).strip()
        m = re.fullmatch(r"([+-]?)\s*(\d+)\s*([wdhm])", s)
        if m:
            mult = {"w": 604800, "d": 86400, "h": 3600, "m": 60}[m.group(3)]
            n = int(m.group(2)) * mult
            return self.now() + (n if m.group(1) == "+" else -n), 0
        for pat, gran in (("%Y-%m-%d %H:%M", 60), ("%Y/%m/%d %H:%M", 60), ("%Y-%m-%d", 86400), ("%Y/%m/%d", 86400)):
            try:
                d = dt.datetime.strptime(s, pat).replace(tzinfo=dt.timezone.utc)
                return d.timestamp(), gran
            except ValueError:
                continue
        raise JqlError("Date value '%s' for field '%s' is invalid. Valid formats include: 'yyyy/MM/dd HH:mm', "
                       "'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'."
                       % (s, fname))

    def field_of(self, raw):
        f = FIELD_ALIASES.get(raw.lower())
        if f:
            return f
        m = re.fullmatch(r"cf\[(\d+)\]", raw, re.I) or re.fullmatch(r"customfield_(\d+)", raw, re.I)
        if m and "customfield_%s" % m.group(1) in CUSTOM:
            return "customfield_%s" % m.group(1)
        for fid, (name, _k) in CUSTOM.items():
            if name.lower() == raw.lower():
                return fid
        raise JqlError("Field '%s' does not exist or you do not have permission to view it." % raw)

    def compile_node(self, node):
        """(predicate(view) -> bool, candidate function () -> set|None)."""
        kind = node[0]
        if kind in ("and", "or"):
            parts = [self.compile_node(n) for n in node[1]]
            preds = tuple(p for p, _c in parts)
            cands = [c for _p, c in parts]
            if kind == "and":
                def cand_and():
                    sets = [s for s in (c() for c in cands) if s is not None]
                    if not sets:
                        return None
                    sets.sort(key=len)
                    out = set(sets[0])
                    for s in sets[1:]:
                        out &= s
                    return out
                return (lambda v: all(p(v) for p in preds)), cand_and

            def cand_or():
                out = set()
                for c in cands:
                    s = c()
                    if s is None:
                        return None
                    out |= s
                return out
            return (lambda v: any(p(v) for p in preds)), cand_or
        if kind == "not":
            p, _c = self.compile_node(node[1])
            return (lambda v: not p(v)), (lambda: None)
        _k, raw_field, op, vals = node
        return self.compile_clause(raw_field, op.lower(), vals)

    def compile_clause(self, raw_field, op, vals):
        f = self.field_of(raw_field)
        none = lambda: None
        multi = op in ("in", "not in")
        neg = op in ("!=", "not in", "is not")

        def need_ops(allowed):
            if op not in allowed:
                raise JqlError("The operator '%s' is not supported by the '%s' field." % (op.upper() if op.isalpha()
                                                                                        else op, raw_field))

        def plain(v):
            if isinstance(v, tuple):
                raise JqlError("Function '%s()' is not supported for field '%s' by the simulator." % (v[1], raw_field))
            return str(v)

        def membership(get, values):
            s = set(values)
            if op in ("=", "in"):
                return lambda v: get(v) in s
            return lambda v: get(v) not in s

        if op in ("is", "is not"):
            empty = {
                "labels": lambda v: not v.labels,
                "assignee": lambda v: not v.fields.get("assignee"),
                "duedate": lambda v: not v.fields.get("duedate"),
                "description": lambda v: not v.fields.get("description"),
            }.get(f)
            if empty is None and f in CUSTOM:
                empty = lambda v, f=f: v.fields.get(f) in (None, "")
            if empty is None:
                raise JqlError("The field '%s' does not support searching for EMPTY values." % raw_field)
            return ((lambda v: not empty(v)) if neg else empty), none

        if f == "project":
            need_ops(EQ_OPS)
            keys = []
            for v in vals:
                s = plain(v)
                k = None
                for key, p in self.projects.items():
                    if s.upper() == key or s == p["id"] or s.lower() == p["name"].lower():
                        k = key
                if k is None:
                    raise JqlError("The value '%s' does not exist for the field 'project'." % s)
                keys.append(k)
            pred = membership(lambda v: v.project, keys)
            if neg:
                return pred, none
            return pred, lambda: set().union(*(self.project_index[k] for k in keys))
        if f == "labels":
            need_ops(EQ_OPS)
            labels = [plain(v) for v in vals]
            s = set(labels)
            if op in ("=", "in"):
                return (lambda v: not s.isdisjoint(v.labels)), \
                       (lambda: set().union(*(self.label_index.get(lb, ()) for lb in labels)))
            return (lambda v: s.isdisjoint(v.labels)), none
        if f == "key":
            need_ops(EQ_OPS)
            keys = []
            for v in vals:
                s = plain(v).strip().upper()
                if not re.fullmatch(r"[A-Z][A-Z0-9_]*-\d+", s):
                    raise JqlError("The issue key '%s' for field '%s' is invalid." % (plain(v), raw_field))
                keys.append(s)
            pred = membership(lambda v: v.key, keys)
            if neg:
                return pred, none
            return pred, lambda: {self.key_index[k] for k in keys if k in self.key_index}
        if f == "id":
            need_ops(EQ_OPS | {"<", "<=", ">", ">="})
            ids, keys = set(), set()
            for v in vals:
                s = plain(v).strip()
                if s.isdigit():
                    ids.add(int(s))
                elif re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*-\d+", s):
                    keys.add(s.upper())
                else:
                    raise JqlError("The issue key '%s' for field '%s' is invalid." % (s, raw_field))
            if op in ("<", "<=", ">", ">="):
                if len(ids) != 1 or keys:
                    raise JqlError("Field '%s' with '%s' needs one numeric id." % (raw_field, op))
                n = next(iter(ids))
                cmp = {"<": lambda a: a < n, "<=": lambda a: a <= n, ">": lambda a: a > n, ">=": lambda a: a >= n}[op]
                return (lambda v: cmp(v.id)), none
            hit = lambda v: v.id in ids or v.key in keys
            if neg:
                return (lambda v: not hit(v)), none
            return hit, lambda: ids | {self.key_index[k] for k in keys if k in self.key_index}
        if f == "status":
            need_ops(EQ_OPS)
            names = []
            for v in vals:
                s = plain(v)
                n = None
                for name, meta in STATUSES.items():
                    if s.lower() == name.lower() or s == meta[0]:
                        n = name
                if n is None:
                    raise JqlError("The value '%s' does not exist for the field 'status'." % s)
                names.append(n)
            return membership(lambda v: v.status, names), none
        if f in ("issuetype", "priority"):
            need_ops(EQ_OPS)
            table = ISSUE_TYPES if f == "issuetype" else PRIORITIES
            ids = []
            for v in vals:
                s = plain(v)
                i = next((t[0] for t in table if s == t[0] or s.lower() == t[1].lower()), None)
                if i is None:
                    raise JqlError("The value '%s' does not exist for the field '%s'." % (s, raw_field))
                ids.append(i)
            return membership(lambda v, f=f: v.fields.get(f), ids), none
        if f in ("assignee", "reporter"):
            need_ops(EQ_OPS)
            accs = []
            for v in vals:
                if v == ("fn", "currentuser"):
                    accs.append(SYNC_ACCOUNT)
                    continue
                s = plain(v)
                u = next((a for a, u in self.users.items()
                          if s == a or (not u["hidden"] and s.lower() == u["email"].lower())), None)
                if u is None:
                    raise JqlError("The value '%s' does not exist for the field '%s'." % (s, raw_field))
                accs.append(u)
            return membership(lambda v, f=f: v.fields.get(f), accs), none
        if f in ("updated", "created"):
            need_ops(CMP_OPS)
            t, gran = self.parse_time(vals[0], raw_field)
            get = (lambda v: v.updated) if f == "updated" else (lambda v: v.created)
            return self.cmp_pred(op, get, t, gran), none
        if f == "duedate":
            need_ops(CMP_OPS)
            t, _g = self.parse_time(vals[0], raw_field)
            d = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d")
            get = lambda v: v.fields.get("duedate")
            inner = self.cmp_pred(op, get, d, 0)
            return (lambda v: get(v) is not None and inner(v)), none
        if f == "summary" or (f in CUSTOM and CUSTOM[f][1] == "textfield" and op in ("~", "!~")):
            need_ops({"~", "!~"})
            words = [w for w in re.split(r"\W+", plain(vals[0]).lower()) if w]
            get = (lambda v: (v.fields.get("summary") or "").lower()) if f == "summary" \
                else (lambda v, f=f: (v.fields.get(f) or "").lower())
            contains = lambda v: all(w in get(v) for w in words)
            return ((lambda v: not contains(v)) if op == "!~" else contains), none
        if f in CUSTOM:
            need_ops(EQ_OPS)
            if CUSTOM[f][1] == "select":
                ids = []
                for v in vals:
                    s = plain(v)
                    i = next((o[0] for o in SELECT_OPTIONS[f] if s == o[0] or s == o[1]), None)
                    if i is None:
                        raise JqlError("The option '%s' for field '%s' does not exist." % (s, raw_field))
                    ids.append(i)
                return membership(lambda v, f=f: v.fields.get(f), ids), none
            return membership(lambda v, f=f: v.fields.get(f), [plain(v) for v in vals]), none
        raise JqlError("Field '%s' is not supported by the simulator in JQL." % raw_field)

    @staticmethod
    def cmp_pred(op, get, t, gran):
        if op == "=":
            return (lambda v: t <= get(v) < t + gran) if gran else (lambda v: get(v) == t)
        if op == "!=":
            return (lambda v: not (t <= get(v) < t + gran)) if gran else (lambda v: get(v) != t)
        return {">": lambda v: get(v) > t, ">=": lambda v: get(v) >= t,
                "<": lambda v: get(v) < t, "<=": lambda v: get(v) <= t}[op]

    def sort_key(self, name):
        n = name.lower()
        if n in ("key", "issuekey"):
            return lambda v: (v.project, v.num)
        if n == "id":
            return lambda v: v.id
        if n in ("created", "createddate"):
            return lambda v: v.created
        if n in ("updated", "updateddate"):
            return lambda v: v.updated
        if n == "status":
            return lambda v: v.status
        if n == "priority":
            return lambda v: v.fields.get("priority") or "9"
        if n == "summary":
            return lambda v: v.fields.get("summary") or ""
        if n in ("duedate", "due"):
            return lambda v: (v.fields.get("duedate") is None, v.fields.get("duedate") or "")
        raise JqlError("Not able to sort using field '%s'." % name)

    def run_jql(self, jql, reconcile):
        """Sorted list of visible issue views matching jql."""
        try:
            expr, order = JqlParser(jql).parse()
            if expr is None:
                raise Reply(400, errcoll([UNBOUNDED]))
            pred, cand = self.compile_node(expr)
            sorts = [(self.sort_key(f), desc) for f, desc in order]
        except JqlError as e:
            raise Reply(400, errcoll([str(e)]))
        now = time.monotonic()
        lag = self.lag_s()
        with self.lock:
            if lag > 0:
                for iid in [i for i, t in self.recent.items() if now - t >= lag]:
                    del self.recent[iid]
            else:
                self.recent.clear()
            ids = cand()
            if ids is None:
                pool = self.issues.values()
            else:
                pool = (self.issues[i] for i in (ids | set(self.recent)) if i in self.issues)
            out = []
            for iss in pool:
                v = iss
                if lag > 0 and iss.id not in reconcile and now - iss.changed < lag:
                    v = iss.indexed
                    if v is None:
                        continue
                if pred(v):
                    out.append(v)
            out.sort(key=lambda v: v.id)
            for key, desc in reversed(sorts):
                out.sort(key=key, reverse=desc)
        return out

    def search_params(self, h):
        if h.command == "POST":
            b = self.json_obj(h)
            return b.get("jql"), b.get("nextPageToken"), b.get("maxResults"), b.get("fields"), \
                b.get("reconcileIssues"), b.get("properties"), b.get("expand")
        rec = h.qparam("reconcileIssues")
        props = h.qparam("properties")
        return h.qparam("jql"), h.qparam("nextPageToken"), h.qparam("maxResults"), h.qparam("fields"), \
            (rec.split(",") if rec else None), (props.split(",") if props else None), h.qparam("expand")

    @staticmethod
    def expand_set(expand):
        if isinstance(expand, list):
            return {str(x).strip() for x in expand}
        return {x.strip() for x in str(expand or "").split(",")}

    def h_search_jql(self, h, ctx):
        jql, token, mx, fields, reconcile, props, expand = self.search_params(h)
        with_changelog = "changelog" in self.expand_set(expand)
        if jql is not None and not isinstance(jql, str):
            return Reply(400, errcoll(["jql must be a string"]))
        jql = jql or ""
        try:
            mx = 50 if mx is None or mx == "" else int(mx)
        except (TypeError, ValueError):
            return Reply(400, errcoll(["maxResults must be an integer"]))
        if mx < 1:
            return Reply(400, errcoll(["maxResults must be between 1 and 5000"]))
        mx = min(mx, 5000)
        rec_ids = set()
        if reconcile is not None:
            if not isinstance(reconcile, list):
                return Reply(400, errcoll(["reconcileIssues must be a list of issue ids"]))
            if len(reconcile) > 50:
                return Reply(400, errcoll(["The number of issues to reconcile cannot exceed 50."]))
            for r in reconcile:
                try:
                    rec_ids.add(int(str(r).strip()))
                except ValueError:
                    return Reply(400, errcoll(["reconcileIssues must contain numeric issue ids"]))
        if props is not None and (not isinstance(props, list) or len(props) > 5):
            return Reply(400, errcoll(["properties must be a list of at most 5 keys"]))
        wanted = self.parse_fields_param(fields) if fields is not None else set()
        wanted -= {"id", "key"}
        qhash = hashlib.sha1(jql.encode("utf-8")).hexdigest()[:12]
        offset = 0
        if token:
            try:
                o, qh = base64.urlsafe_b64decode(str(token) + "=" * (-len(str(token)) % 4)).decode().split(":")
                offset = int(o)
                if qh != qhash or offset < 0:
                    raise ValueError
            except (ValueError, UnicodeDecodeError):
                return Reply(400, errcoll(["The nextPageToken is invalid or does not belong to this query."]))
        views = self.run_jql(jql, rec_ids)
        page = views[offset:offset + mx]
        base = ctx["base"]
        items = []
        with self.lock:
            for v in page:
                it = {"id": str(v.id), "key": v.key, "self": self.issue_self(base, v.id)}
                if wanted:
                    it["fields"] = self.render_fields(v, wanted, base)
                if props:
                    live = self.issues.get(v.id)
                    pr = live.properties if live else {}
                    it["properties"] = {k: copy.deepcopy(pr[k]) for k in props if k in pr}
                if with_changelog:
                    it["changelog"] = self.changelog_obj(v, base)
                items.append(it)
        out = {"issues": items}
        last = offset + len(page) >= len(views)
        if not last:
            nxt = "%d:%s" % (offset + len(page), qhash)
            out["nextPageToken"] = base64.urlsafe_b64encode(nxt.encode()).decode().rstrip("=")
        out["isLast"] = last
        return Reply(200, out)

    def h_search_count(self, h, ctx):
        b = self.json_obj(h)
        jql = b.get("jql") or ""
        return Reply(200, {"count": len(self.run_jql(jql, set()))})

    # ------------------------------------------------------------------
    # changelog (callers hold self.lock)

    @staticmethod
    def field_state(iss):
        return dict(iss.fields), list(iss.labels), iss.status

    def value_text(self, name, val):
        """(from/to id, display string) of a stored field value, as changelogs show them."""
        if val is None:
            return None, None
        if name == "priority":
            return val, next((n for i, n, _c in PRIORITIES if i == val), val)
        if name == "issuetype":
            return val, next((n for i, n, _d in ISSUE_TYPES if i == val), val)
        if name in ("assignee", "reporter"):
            u = self.users.get(val)
            return val, u["displayName"] if u else val
        if name == "description":
            return None, adf_text(val)[:255]
        if name in CUSTOM and CUSTOM[name][1] == "select":
            return val, next((v for i, v in SELECT_OPTIONS[name] if i == val), val)
        if name == "duedate":
            # from/to carry the date itself; the display strings are Java timestamps
            # ("2025-08-22 00:00:00.0"), as third-party captures of Jira Cloud show
            # (docs/api/jira-cloud.md is silent on changelog items other than status)
            return val, "%s 00:00:00.0" % val
        return None, str(val)

    def diff_items(self, old, iss):
        """Changelog items for the difference between old (field_state) and iss."""
        fields, labels, status = old
        items = []
        if status != iss.status:
            items.append({"field": "status", "fieldtype": "jira", "fieldId": "status",
                          "from": STATUSES[status][0], "fromString": status,
                          "to": STATUSES[iss.status][0], "toString": iss.status})
        for name in sorted(set(fields) | set(iss.fields)):
            a, b = fields.get(name), iss.fields.get(name)
            if a == b:
                continue
            fa, sa = self.value_text(name, a)
            fb, sb = self.value_text(name, b)
            custom = name in CUSTOM
            items.append({"field": CUSTOM[name][0] if custom else name, "fieldtype": "custom" if custom else "jira",
                          "fieldId": name, "from": fa, "fromString": sa, "to": fb, "toString": sb})
        if labels != iss.labels:
            items.append({"field": "labels", "fieldtype": "jira", "fieldId": "labels", "from": None,
                          "fromString": " ".join(labels), "to": None, "toString": " ".join(iss.labels)})
        return items

    def record_change(self, iss, old, actor, comments):
        """Keep a changelog history and tell the webhooks about one change."""
        items = self.diff_items(old, iss)
        hid = None
        if items:
            hid = str(self.next_history)
            self.next_history += 1
            hist = iss.history if iss.history is not None else []
            hist.append({"id": hid, "author": actor, "created": iss.updated, "items": items})
            iss.history = hist[-HISTORY_MAX:]
        if not (self.admin_hooks or self.dyn_hooks):
            return
        if any(it["field"] == "status" for it in items):
            kind = "issue_generic"
        elif items and all(it["field"] == "assignee" for it in items):
            kind = "issue_assigned"
        elif items:
            kind = "issue_updated"
        else:
            kind = "issue_commented"
        if items or comments:
            self.emit("jira:issue_updated", iss, items, actor, kind, history_id=hid)
        for c in comments:
            self.emit("comment_created", iss, None, actor, "issue_commented", comment=c)

    def changelog_obj(self, v, base):
        hist = list(reversed(v.history or []))
        return {"startAt": 0, "maxResults": len(hist), "total": len(hist),
                "histories": [{"id": x["id"], "author": self.user_obj(x["author"], base),
                               "created": fmt_ts(x["created"]), "items": copy.deepcopy(x["items"])}
                              for x in hist]}

    # ------------------------------------------------------------------
    # webhooks: matching and queueing (callers of emit hold self.lock)

    def emit(self, event, iss, items, actor, type_name, comment=None, history_id=None):
        if not (self.admin_hooks or self.dyn_hooks):
            return
        now = self.now()
        targets = self.match_hooks(event, iss, items or [], now)
        if not targets:
            return
        site = self.site()
        user = self.user_obj(actor, site) or {"accountId": actor}
        payload = {"timestamp": int(now * 1000), "webhookEvent": event, "issue_event_type_name": type_name,
                   "user": {k: user[k] for k in ("self", "accountId", "displayName", "accountType", "active")
                            if k in user},
                   "issue": {"id": str(iss.id), "self": "%s/rest/api/2/issue/%d" % (site, iss.id), "key": iss.key,
                             "fields": self.render_fields(iss, None, site)}}
        if items:
            payload["changelog"] = {"id": history_id or "0", "items": copy.deepcopy(items)}
        if comment is not None:
            payload["comment"] = self.comment_obj(iss, comment, site)
        for kind, ids, url, secret, exclude in targets:
            body = dict(payload)
            if kind == "dynamic":
                body["matchedWebhookIds"] = ids
            raw = b"" if exclude else simbase.json_bytes(body)
            self.enqueue(Delivery(kind, ids, url, event, iss.key, raw, secret))

    def match_hooks(self, event, iss, items, now):
        with self.hook_cv:
            admins = list(self.admin_hooks.values())
            dyns = list(self.dyn_hooks.values())
        out = []
        for a in admins:
            if a["enabled"] and event in a["events"] and (a["pred"] is None or a["pred"](iss)):
                out.append(("admin", [a["id"]], a["url"], a["secret"], a["excludeBody"]))
        by_url = {}
        for d in dyns:
            if d["expires"] <= now or event not in d["events"] or not d["pred"](iss):
                continue
            if event == "jira:issue_updated" and d["fieldIdsFilter"]:
                if not any(it.get("fieldId", it.get("field")) in d["fieldIdsFilter"] for it in items):
                    continue
            by_url.setdefault(d["url"], []).append(d["id"])
        for url, ids in by_url.items():
            out.append(("dynamic", sorted(ids), url, None, False))
        return out

    def enqueue(self, d):
        dup = self.take("webhook_duplicate")
        with self.hook_cv:
            d.seq = self.next_delivery
            self.next_delivery += 1
            d.dup = dup
            waiting = len(self.pending)
            if waiting >= DELIVERY_QUEUE_MAX:
                self.dropped += 1
                d.state = "dropped"
            else:
                d.state = "pending"
                heapq.heappush(self.pending, (time.monotonic(), d.seq, d.seq, d))
            self.log_delivery(d)
            if self.deliverer is None:
                self.deliverer = threading.Thread(target=self.deliver_loop, name="webhooks", daemon=True)
                self.deliverer.start()
            self.hook_cv.notify_all()

    def log_delivery(self, d):
        """Keep d in the bounded log; evict the oldest finished ones (hook_cv held)."""
        self.deliveries[d.seq] = d
        if len(self.deliveries) > DELIVERY_LOG_MAX:
            for seq in list(self.deliveries):
                if len(self.deliveries) <= DELIVERY_LOG_MAX:
                    break
                if self.deliveries[seq].state not in ("pending", "in_flight"):
                    del self.deliveries[seq]

    # ------------------------------------------------------------------
    # webhooks: the delivery thread

    def deliver_loop(self):
        while True:
            with self.hook_cv:
                while True:
                    if not self.paused and self.pending:
                        wait = self.pending[0][0] - time.monotonic()
                        if wait <= 0:
                            d = heapq.heappop(self.pending)[3]
                            d.state = "in_flight"
                            self.in_flight += 1
                            break
                        self.hook_cv.wait(min(wait, 1.0))
                    else:
                        self.hook_cv.wait(1.0)
            try:
                self.attempt(d)
            except Exception as e:  # a simulator bug must not kill deliveries
                sys.stderr.write("jira webhook delivery %d: %s\n" % (d.seq, e))
                with self.hook_cv:
                    d.state = "failed"
            finally:
                with self.hook_cv:
                    self.in_flight -= 1
                    self.hook_cv.notify_all()

    def hook_alive(self, d):
        """Dynamic deliveries stop when every matched webhook expired or was deleted."""
        if d.kind != "dynamic":
            return d.ids[0] in self.admin_hooks
        now = self.now()
        with self.hook_cv:
            return any(i in self.dyn_hooks and self.dyn_hooks[i]["expires"] > now for i in d.ids)

    def jwt(self, now):
        def b64(b):
            return base64.urlsafe_b64encode(b).rstrip(b"=")
        head = b64(simbase.json_bytes({"alg": "HS256", "typ": "JWT"}))
        claims = b64(simbase.json_bytes({"iss": "jira:" + self.cloud_id, "aud": self.args.client_id,
                                         "sub": SYNC_ACCOUNT, "iat": int(now), "exp": int(now) + 180}))
        signed = head + b"." + claims
        sig = b64(hmac.new(self.args.client_secret.encode(), signed, hashlib.sha256).digest())
        return (signed + b"." + sig).decode()

    def attempt(self, d):
        if not self.hook_alive(d):
            with self.hook_cv:
                d.state = "cancelled"
            return
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Atlassian Webhook HTTP Client",
                   "X-Atlassian-Webhook-Identifier": d.ident, "X-Atlassian-Webhook-Flow": "Primary"}
        if d.attempts > 0:
            headers["X-Atlassian-Webhook-Retry"] = str(d.attempts)
        if d.secret:
            headers["X-Hub-Signature"] = hub_signature(d.secret, d.body)
        if d.kind == "dynamic":
            headers["Authorization"] = "Bearer " + self.jwt(self.now())
        status = self.post(d.url, d.body, headers)
        sent_dup = False
        if d.dup and isinstance(status, int) and 200 <= status < 300:
            # an injected duplicate: the same delivery again, same identifier
            headers.pop("Authorization", None)
            if d.kind == "dynamic":
                headers["Authorization"] = "Bearer " + self.jwt(self.now())
            dup_status = self.post(d.url, d.body, headers)
            sent_dup = True
        with self.hook_cv:
            d.attempts += 1
            d.statuses.append(status)
            if sent_dup:
                d.statuses.append(dup_status)
                d.dup = False
            retryable = not isinstance(status, int) or status in RETRY_STATUSES or status >= 500
            if isinstance(status, int) and 200 <= status < 300:
                d.state = "delivered"
            elif retryable and d.attempts <= MAX_RETRIES and status != "refused":
                scale = self.fault_num("webhook_retry_scale", self.args.webhook_retry_scale)
                gap = random.uniform(*RETRY_GAP_S) * max(scale, 0.0)
                d.state = "pending"
                heapq.heappush(self.pending, (time.monotonic() + gap, d.seq, d.seq, d))
            else:
                d.state = "failed"

    def post(self, url, body, headers):
        """HTTP status, or "timeout" / "error: ..." / "refused" when no answer came."""
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or u.hostname not in LOOPBACK:
            return "refused"  # the simulator never sends anything off this machine
        timeout = self.fault_num("webhook_timeout_s", self.args.webhook_timeout)
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        try:
            if u.scheme == "https":
                conn = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=CONNECT_TIMEOUT_S,
                                                   context=ssl._create_unverified_context())
            else:
                conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=CONNECT_TIMEOUT_S)
            try:
                conn.connect()
                conn.sock.settimeout(timeout)
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read(1 << 20)
                return resp.status
            finally:
                conn.close()
        except TimeoutError:
            return "timeout"
        except (OSError, http.client.HTTPException) as e:
            return "error: %s" % (e.__class__.__name__,)

    # ------------------------------------------------------------------
    # webhooks: admin registration (/rest/webhooks/1.0/webhook)

    def hook_jql(self, jql):
        """Compiled predicate for a webhook JQL filter (None = every issue)."""
        if jql is None or not str(jql).strip():
            return None
        expr, order = JqlParser(str(jql)).parse()
        if expr is None:
            return None
        return self.compile_node(expr)[0]

    def admin_obj(self, a):
        o = {"name": a["name"], "description": a["description"], "url": a["url"], "events": list(a["events"]),
             "filters": dict(a["filters"]), "excludeBody": a["excludeBody"], "enabled": a["enabled"],
             "self": "%s/rest/webhooks/1.0/webhook/%d" % (self.site(), a["id"]),
             "lastUpdatedUser": SYNC_ACCOUNT, "lastUpdatedDisplayName": self.users[SYNC_ACCOUNT]["displayName"],
             "lastUpdated": int(a["lastUpdated"] * 1000), "isSigned": bool(a["secret"])}
        return o

    def admin_fill(self, a, b, creating):
        """Apply a registration body to the record a; raise Reply(400) on errors."""
        errs = {}
        if creating or "name" in b:
            if not isinstance(b.get("name"), str) or not b["name"].strip():
                errs["name"] = "A webhook needs a name."
        if creating or "url" in b:
            u = b.get("url")
            if not isinstance(u, str) or urlsplit(u).scheme not in ("http", "https") or not urlsplit(u).hostname:
                errs["url"] = "The URL must be an absolute http or https URL."
        if "events" in b and (not isinstance(b["events"], list) or
                              any(not isinstance(e, str) or e not in WEBHOOK_EVENTS for e in b["events"])):
            errs["events"] = "Unknown or invalid events: %s" % b.get("events")
        filters = b.get("filters", a.get("filters", {}))
        pred = a.get("pred")
        if "filters" in b:
            if not isinstance(filters, dict):
                errs["filters"] = "filters must be an object"
            else:
                try:
                    pred = self.hook_jql(filters.get("issue-related-events-section"))
                except JqlError as e:
                    errs["filters"] = "Invalid JQL in issue-related-events-section: %s" % e
        if "secret" in b and b["secret"] is not None and not isinstance(b["secret"], str):
            errs["secret"] = "secret must be a string"
        if errs:
            raise Reply(400, errcoll([], errs))
        for k in ("name", "url"):
            if k in b:
                a[k] = b[k]
        a["description"] = b.get("description", a.get("description", "")) or ""
        a["events"] = list(b.get("events", a.get("events", [])))
        a["filters"] = dict(filters) if isinstance(filters, dict) else {}
        a["pred"] = pred
        a["excludeBody"] = bool(b.get("excludeBody", a.get("excludeBody", False)))
        a["enabled"] = bool(b.get("enabled", a.get("enabled", True)))
        if "secret" in b:
            a["secret"] = b["secret"] or None
        a.setdefault("secret", None)
        a["lastUpdated"] = self.now()

    def admin_call(self, h, method, hid):
        if h.bearer() is not None:
            return self.unauthorized("Bearer tokens are not accepted for webhook administration.")
        if h.basic_auth() is None:
            return self.unauthorized()
        r = self.check_basic(h)
        if r:
            return r
        if self.args.no_admin or self.fault_flag("no_admin"):
            return Reply(403, errcoll(["Only Jira administrators can manage webhooks."]))
        if method == "POST":
            b = self.json_obj(h)
            a = {}
            self.admin_fill(a, b, True)
            with self.hook_cv:
                if len(self.admin_hooks) >= ADMIN_HOOK_MAX:
                    return Reply(400, errcoll(["This site already has %d webhooks registered over REST, "
                                               "the maximum." % ADMIN_HOOK_MAX]))
                a["id"] = self.next_admin_hook
                self.next_admin_hook += 1
                self.admin_hooks[a["id"]] = a
            return Reply(201, self.admin_obj(a))
        if hid is None:
            with self.hook_cv:
                hooks = sorted(self.admin_hooks.values(), key=lambda x: x["id"])
            return Reply(200, [self.admin_obj(a) for a in hooks])
        try:
            num = int(hid)
        except ValueError:
            num = None
        with self.hook_cv:
            a = self.admin_hooks.get(num)
        if a is None:
            return Reply(404, errcoll(["Webhook %s not found." % hid]))
        if method == "GET":
            return Reply(200, self.admin_obj(a))
        if method == "DELETE":
            with self.hook_cv:
                self.admin_hooks.pop(num, None)
            return Reply(204)
        b = self.json_obj(h)
        upd = dict(a)
        self.admin_fill(upd, b, False)
        with self.hook_cv:
            if num in self.admin_hooks:
                self.admin_hooks[num] = upd
        return Reply(200, self.admin_obj(upd))

    # ------------------------------------------------------------------
    # webhooks: dynamic registration (/rest/api/3/webhook, OAuth apps only)

    def dyn_guard(self, ctx):
        if not ctx.get("oauth"):
            raise Reply(403, errcoll(["Only Connect apps and OAuth 2.0 apps can use this operation."]))

    def dyn_jql(self, jql):
        """(errors, predicate) for a dynamic webhook's jqlFilter."""
        if not isinstance(jql, str) or not jql.strip():
            return ["The jqlFilter is required."], None
        try:
            expr, order = JqlParser(jql).parse()
        except JqlError as e:
            return [str(e)], None
        if expr is None:
            return ["The jqlFilter must contain a condition."], None
        errors = []
        if order:
            errors.append("The clause ORDER BY is unsupported")

        def walk(n):
            if n[0] in ("and", "or"):
                for x in n[1]:
                    walk(x)
                return
            if n[0] == "not":
                walk(n[1])
                return
            _k, field, op, _vals = n
            if field.lower() not in DYN_JQL_FIELDS:
                errors.append("The clause %s is unsupported" % field)
            elif op.lower() not in DYN_JQL_OPS:
                errors.append("The operator '%s' is unsupported" % op.upper())
        walk(expr)
        if errors:
            return errors, None
        try:
            return [], self.compile_node(expr)[0]
        except JqlError as e:
            return [str(e)], None

    def dyn_alive(self, now):
        """Live dynamic webhooks (hook_cv held); expired ones are forgotten."""
        for i in [i for i, d in self.dyn_hooks.items() if d["expires"] <= now]:
            del self.dyn_hooks[i]
        return self.dyn_hooks

    def expiration(self, t, string):
        if string:
            return fmt_ts(t)
        return int(t * 1000)

    def h_dyn_register(self, h, ctx):
        self.dyn_guard(ctx)
        b = self.json_obj(h)
        url, hooks = b.get("url"), b.get("webhooks")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            return Reply(400, errcoll([], {"url": "The url must be an absolute http or https URL."}))
        if not isinstance(hooks, list) or not hooks:
            return Reply(400, errcoll([], {"webhooks": "At least one webhook is required."}))
        now = self.now()
        with self.hook_cv:
            other = {d["url"] for d in self.dyn_alive(now).values()} - {url}
        if other:
            return Reply(400, errcoll(["Only a single URL per app is allowed to be registered; this app already "
                                       "uses %s." % sorted(other)[0]]))
        results = []
        for w in hooks:
            errors = []
            if not isinstance(w, dict):
                results.append({"errors": ["A webhook must be an object."]})
                continue
            events = w.get("events")
            if not isinstance(events, list) or not events:
                errors.append("The events are required.")
            else:
                errors += ["The event %s is not supported" % e for e in events if e not in WEBHOOK_EVENTS]
            jerr, pred = self.dyn_jql(w.get("jqlFilter"))
            errors += jerr
            fids = w.get("fieldIdsFilter")
            if fids is not None and (not isinstance(fids, list) or any(not isinstance(f, str) for f in fids)):
                errors.append("fieldIdsFilter must be a list of field ids.")
            props = w.get("issuePropertyKeysFilter")
            if props is not None and (not isinstance(props, list) or any(not isinstance(p, str) for p in props)):
                errors.append("issuePropertyKeysFilter must be a list of property keys.")
            if errors:
                results.append({"errors": errors})
                continue
            with self.hook_cv:
                hid = self.next_dyn_hook
                self.next_dyn_hook += 1
                self.dyn_hooks[hid] = {"id": hid, "url": url, "events": list(events), "jqlFilter": w["jqlFilter"],
                                       "fieldIdsFilter": list(fids or []), "issuePropertyKeysFilter": list(props or []),
                                       "pred": pred, "created": now, "expires": now + DYN_TTL_S}
            results.append({"createdWebhookId": hid})
        return Reply(200, {"webhookRegistrationResult": results})

    def h_dyn_list(self, h, ctx):
        self.dyn_guard(ctx)
        start, mx = self.paging_params(h, 100)
        mx = min(mx, 100)
        string = self.fault("webhook_expiration_string") == "all"
        with self.hook_cv:
            hooks = sorted(self.dyn_alive(self.now()).values(), key=lambda x: x["id"])
        page = hooks[start:start + mx]
        vals = []
        for d in page:
            o = {"id": d["id"], "events": list(d["events"]), "jqlFilter": d["jqlFilter"],
                 "expirationDate": self.expiration(d["expires"], string), "url": d["url"]}
            if d["fieldIdsFilter"]:
                o["fieldIdsFilter"] = list(d["fieldIdsFilter"])
            if d["issuePropertyKeysFilter"]:
                o["issuePropertyKeysFilter"] = list(d["issuePropertyKeysFilter"])
            vals.append(o)
        return Reply(200, {"maxResults": mx, "startAt": start, "total": len(hooks),
                           "isLast": start + len(page) >= len(hooks), "values": vals})

    def webhook_ids(self, h):
        b = self.json_obj(h)
        ids = b.get("webhookIds")
        if not isinstance(ids, list) or not ids or any(type(i) is not int for i in ids):
            raise Reply(400, errcoll([], {"webhookIds": "webhookIds must be a non-empty list of integers."}))
        return ids

    def h_dyn_refresh(self, h, ctx):
        self.dyn_guard(ctx)
        ids = self.webhook_ids(h)
        now = self.now()
        exp = now + DYN_TTL_S
        with self.hook_cv:
            live = self.dyn_alive(now)
            for i in ids:  # unknown or foreign ids are silently ignored
                if i in live:
                    live[i]["expires"] = exp
        string = self.args.webhook_expiration_string or bool(self.fault("webhook_expiration_string"))
        return Reply(200, {"expirationDate": self.expiration(exp, string)})

    def h_dyn_delete(self, h, ctx):
        self.dyn_guard(ctx)
        ids = self.webhook_ids(h)
        with self.hook_cv:
            for i in ids:
                self.dyn_hooks.pop(i, None)
        return Reply(202)

    def h_dyn_failed(self, h, ctx):
        return Reply(403, errcoll(["Only Connect apps can use this operation."]))

    # ------------------------------------------------------------------
    # webhooks and clock: control endpoints

    def clock_obj(self):
        now = self.now()
        return {"now_ms": int(now * 1000), "now": fmt_ts(now), "offset_s": self.clock_offset}

    def delivery_obj(self, d, full):
        o = {"seq": d.seq, "id": d.ident, "kind": d.kind, "webhook_ids": list(d.ids), "url": d.url,
             "event": d.event, "issue": d.issue, "attempts": d.attempts, "statuses": list(d.statuses),
             "last_status": d.statuses[-1] if d.statuses else None, "state": d.state}
        if full:
            o["body"] = json.loads(d.body) if d.body else None
        return o

    def hook_control(self, method, p, h):
        if p == "/_sim/clock":
            if method == "POST":
                b = control_json(h)
                try:
                    if "offset_s" in b:
                        self.clock_offset = float(b["offset_s"])
                    self.clock_offset += float(b.get("advance_s", 0))
                except (TypeError, ValueError):
                    return Reply(400, {"error": "advance_s and offset_s must be numbers"})
                with self.hook_cv:
                    self.hook_cv.notify_all()
            return Reply(200, self.clock_obj())
        if p == "/_sim/webhooks" and method == "GET":
            now = self.now()
            with self.hook_cv:
                admin = [dict(self.admin_obj(a), id=a["id"], has_secret=bool(a["secret"]))
                         for a in sorted(self.admin_hooks.values(), key=lambda x: x["id"])]
                dyn = [{"id": d["id"], "url": d["url"], "events": d["events"], "jqlFilter": d["jqlFilter"],
                        "fieldIdsFilter": d["fieldIdsFilter"], "expires_ms": int(d["expires"] * 1000),
                        "expired": d["expires"] <= now}
                       for d in sorted(self.dyn_hooks.values(), key=lambda x: x["id"])]
            return Reply(200, {"admin": admin, "dynamic": dyn})
        if p == "/_sim/webhooks/vanish" and method == "POST":
            b = control_json(h)
            ids = b.get("ids", [b["id"]] if "id" in b else None)
            with self.hook_cv:
                gone = [i for i in (ids if ids is not None else list(self.dyn_hooks)) if i in self.dyn_hooks]
                for i in gone:
                    del self.dyn_hooks[i]
            return Reply(200, {"vanished": gone})
        if p == "/_sim/webhooks/sign" and method == "POST":
            b = control_json(h)
            if not isinstance(b.get("secret"), str) or not isinstance(b.get("body"), str):
                return Reply(400, {"error": "secret and body must be strings"})
            return Reply(200, {"X-Hub-Signature": hub_signature(b["secret"], b["body"].encode("utf-8"))})
        if p == "/_sim/webhooks/reset" and method == "POST":
            with self.hook_cv:
                n = len(self.admin_hooks) + len(self.dyn_hooks)
                self.admin_hooks.clear()
                self.dyn_hooks.clear()
            return Reply(200, {"deleted": n})
        if p == "/_sim/deliveries" and method == "GET":
            full = h.qparam("full") in ("1", "true")
            with self.hook_cv:
                out = [self.delivery_obj(d, full) for d in self.deliveries.values()]
                return Reply(200, {"deliveries": out, "pending": len(self.pending), "in_flight": self.in_flight,
                                   "paused": self.paused, "dropped": self.dropped})
        if p == "/_sim/deliveries/wait" and method == "POST":
            b = control_json(h)
            end = time.monotonic() + float(b.get("timeout_s", 10))
            due_only = bool(b.get("due_only", False))
            with self.hook_cv:
                while True:
                    now = time.monotonic()
                    waiting = [x for x in self.pending if not due_only or x[0] <= now]
                    if not waiting and self.in_flight == 0:
                        return Reply(200, {"idle": True, "pending": len(self.pending)})
                    if now >= end:
                        return Reply(200, {"idle": False, "pending": len(self.pending),
                                           "in_flight": self.in_flight})
                    self.hook_cv.wait(min(0.05, end - now))
        if p == "/_sim/deliveries/pause" and method == "POST":
            with self.hook_cv:
                self.paused = True
            return Reply(200, {"paused": True})
        if p == "/_sim/deliveries/resume" and method == "POST":
            b = control_json(h)
            with self.hook_cv:
                if b.get("reverse"):
                    # out-of-order injection: what waits goes out newest first
                    now = time.monotonic()
                    self.pending = [(now if due <= now else due, -seq, seq, d) for due, _o, seq, d in self.pending]
                    heapq.heapify(self.pending)
                self.paused = False
                self.hook_cv.notify_all()
            return Reply(200, {"paused": False})
        if p == "/_sim/deliveries/reset" and method == "POST":
            b = control_json(h)
            with self.hook_cv:
                if b.get("drop_pending"):
                    for x in self.pending:
                        x[3].state = "dropped"
                    self.pending = []
                for seq in [s for s, d in self.deliveries.items() if d.state not in ("pending", "in_flight")]:
                    del self.deliveries[seq]
            return Reply(200, {"ok": True})
        return None

    # ------------------------------------------------------------------
    # control

    def sim_issue(self, iss):
        return {"id": str(iss.id), "key": iss.key, "fields": self.render_fields(iss, None, self.site()),
                "labels": list(iss.labels), "status": iss.status, "properties": copy.deepcopy(iss.properties),
                "comments": len(iss.comments), "write_count": iss.write_count,
                "created": fmt_ts(iss.created), "updated": fmt_ts(iss.updated)}

    def control(self, method, p, h):
        r = self.hook_control(method, p, h)
        if r is not None:
            return r
        if p == "/_sim/issues" and method == "GET":
            key, label = h.qparam("key"), h.qparam("label")
            with self.lock:
                if key is not None:
                    iss = self.get_issue(key)
                    if iss is None:
                        return Reply(404, {"error": "no issue %s" % key})
                    return Reply(200, self.sim_issue(iss))
                if label is not None:
                    sel = sorted(self.label_index.get(label, ()))
                    return Reply(200, [self.sim_issue(self.issues[i]) for i in sel])
                return Reply(200, [self.sim_issue(i) for i in sorted(self.issues.values(), key=lambda x: x.id)])
        if p == "/_sim/reset" and method == "POST":
            with self.lock:
                n = len(self.issues)
                self.issues.clear()
                self.key_index.clear()
                self.label_index.clear()
                for s in self.project_index.values():
                    s.clear()
                self.recent.clear()
            return Reply(200, {"deleted": n})
        if p == "/_sim/transition" and method == "POST":
            b = control_json(h)
            want = str(b.get("status", b.get("to", ""))).lower()  # "to" is accepted as an alias
            status = next((s for s in STATUSES if s.lower() == want), None)
            if status is None:
                return Reply(400, {"error": "status must be one of %s" % ", ".join(STATUSES)})
            actor = SYNC_ACCOUNT if b.get("as_agent") else b.get("actor", HUMAN_ACCOUNT)
            if actor not in self.users:
                return Reply(400, {"error": "actor must be a known accountId"})
            with self.lock:
                iss = self.get_issue(b.get("key", ""))
                if iss is None:
                    return Reply(404, {"error": "no issue %s" % b.get("key")})
                if status not in self.workflow_statuses(iss.project):
                    return Reply(400, {"error": "status of %s must be one of %s (its project's workflow)"
                                       % (iss.key, ", ".join(self.workflow_statuses(iss.project)))})
                old = self.field_state(iss)
                self.before_change(iss)
                iss.status = status
                iss.updated = self.now()
                self.record_change(iss, old, actor, [])
                return Reply(200, self.sim_issue(iss))
        if p == "/_sim/edit" and method == "POST":
            # a person edits fields in the Jira UI: same validation as PUT /issue, but
            # the change (changelog, webhooks) is theirs and write_count does not move
            b = control_json(h)
            fields = b.get("fields")
            if not isinstance(fields, dict) or not fields:
                return Reply(400, {"error": "fields must be a non-empty object of field -> value"})
            actor = SYNC_ACCOUNT if b.get("as_agent") else b.get("actor", HUMAN_ACCOUNT)
            if actor not in self.users:
                return Reply(400, {"error": "actor must be a known accountId"})
            errs = {}
            changes = self.validate_fields(fields, errs, False)
            if errs:
                return Reply(400, errcoll([], errs))
            with self.lock:
                iss = self.get_issue(b.get("key", ""))
                if iss is None:
                    return Reply(404, {"error": "no issue %s" % b.get("key")})
                new_labels = changes.pop("labels", iss.labels)
                if new_labels != iss.labels or any(iss.fields.get(k) != v for k, v in changes.items()):
                    old = self.field_state(iss)
                    self.before_change(iss)
                    iss.fields.update(changes)
                    self.set_labels(iss, new_labels)
                    iss.updated = self.now()
                    self.record_change(iss, old, actor, [])
                return Reply(200, self.sim_issue(iss))
        if p == "/_sim/oauth" and method == "POST":
            b = control_json(h)
            rt = b.get("refresh_token")
            if rt is not None and (not isinstance(rt, str) or not rt):
                return Reply(400, {"error": "refresh_token must be a non-empty string"})
            return Reply(200, {"refresh_token": self.new_family(rt)})
        if p == "/_sim/oauth" and method == "GET":
            now = self.now()
            with self.lock:
                fams = []
                for fid, f in self.families.items():
                    fams.append({"id": fid, "revoked": f["revoked"],
                                 "active_refresh_tokens": sum(1 for r in self.rts.values()
                                                              if r["fid"] == fid and r["state"] == "active"),
                                 "access_tokens": sum(1 for a in self.access.values()
                                                      if a["fid"] == fid and a["exp"] > now)})
            return Reply(200, {"families": fams})
        if p == "/_sim/expire_access_tokens" and method == "POST":
            with self.lock:
                n = len(self.access)
                self.access.clear()
            return Reply(200, {"expired": n})
        return None


if __name__ == "__main__":
    sys.exit(simbase.main(JiraSim))
