#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Looker API 4.0 simulator (login, datagroups, inline queries) for ml-connector tests.

Follows docs/api/looker.md section 9. Everything lives under /api/4.0:

  POST   /login                      form body (or, deprecated, query) client_id +
                                     client_secret -> {access_token, token_type,
                                     expires_in, refresh_token: null}; bad -> 404
  DELETE /logout                     204, the token stops working
  GET    /datagroups                 every datagroup (ids are strings)
  GET    /datagroups/{id}
  PATCH  /datagroups/{id}            stale_before / triggered_at (int64 epoch s);
                                     a value after the simulator's clock -> 422
                                     ValidationError; read-only members ignored
  POST   /queries/run/{fmt}          json, json_bi, csv, sql: an inline query
                                     {model, view, fields, filters, sorts, limit}
                                     answered from PostgreSQL (--pg, via psql)
  GET    /looks/{id}/run/{fmt}       a Look configured with POST /_sim/looks

Tokens: "Authorization: token X" and "Authorization: Bearer X" both work; an
unknown or expired token -> 401 (fault "auth_404": 404 in Looker's
"not found" style). Tokens live --token-ttl seconds (fault "token_ttl_s"
overrides it for new logins); fault "token_uses": N makes the next token
issued die after N API calls (a token expiring in the middle of a run).

The model: --model (default mlc_finance) has one explore per table of the
--schema (default mlc_staging) in PostgreSQL; its fields are
"<table>.<column>" (dimensions), "<table>.count" and "<table>.total_<column>"
(measures). Query results are cached per (query, format) until the model's
datagroup is triggered (a PATCH of triggered_at or stale_before), or an
entry is older than stale_before; ?cache=false skips the cache.

The clock: the Date header and the 422 check follow time.time() plus the
fault "clock_skew_s" (negative: Looker's clock is behind the agent's).

Control endpoints (besides simbase's /_sim/stats, /_sim/faults, ...):
  GET  /_sim/datagroups              every datagroup with its PATCH history
  GET  /_sim/patches                 every PATCH accepted: [{id, model, name,
                                     stale_before, triggered_at, at}]
  POST /_sim/datagroups              {model, name}: add one
  POST /_sim/redeploy                {model, name}: the datagroup gets a new id
                                     (the old one answers 404)
  POST /_sim/expire_tokens           every token issued so far stops working
  GET  /_sim/queries                 the query log: [{model, view, fmt, cache: hit|miss}]
  POST /_sim/looks                   {id, query}: a Look to run
  GET  /_sim/clock                   {now: the simulator's clock, epoch s}
"""

import csv
import io
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simbase  # noqa: E402
from simbase import Reply, Route  # noqa: E402

API = "/api/4.0"
DOC_URL = "https://cloud.google.com/looker/docs/r/api/support"
IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class LookerSim(simbase.Sim):
    """Looker API 4.0 simulator (login, datagroups, queries from PostgreSQL)."""

    name = "looker"

    @staticmethod
    def add_args(p):
        p.add_argument("--client-id", default="mlc-looker", help="API key client id")
        p.add_argument("--client-secret", default="looker-secret", help="API key client secret")
        p.add_argument("--token-ttl", type=int, default=3600, help="expires_in of new tokens, seconds")
        p.add_argument("--model", default="mlc_finance", help="the LookML model name")
        p.add_argument("--datagroup", default="mlc_staging_load",
                       help="the model's datagroup (its cache policy); more with POST /_sim/datagroups")
        p.add_argument("--pg", default=None,
                       help="libpq conninfo of the warehouse for queries (psql runs them); "
                            "without it queries answer 404 for every view")
        p.add_argument("--schema", default="mlc_staging", help="the schema the model's views read")

    def __init__(self, args):
        super().__init__(args)
        self.lock = threading.Lock()
        self.tokens = {}  # token -> expiry (simulator clock, epoch s)
        self.token_uses = {}  # token -> API calls it still may make (fault token_uses)
        self.tokens_issued = 0
        self.next_id = 1
        self.datagroups = {}  # id -> dict
        self.patches = []
        self.cache = {}  # (model, key) -> (created_at, answer Reply args)
        self.queries = []
        self.looks = {}
        self.add_datagroup(args.model, args.datagroup)
        self.add_datagroup(args.model, "nightly")

    # ---- clock, errors -----------------------------------------------------

    def now(self):
        return time.time() + self.fault_num("clock_skew_s", 0)

    def http_time(self):
        return self.now()

    def error_body(self, status, message):
        return {"message": message, "documentation_url": DOC_URL}

    def add_datagroup(self, model, name):
        with self.lock:
            dg_id = str(self.next_id)
            self.next_id += 1
            self.datagroups[dg_id] = {
                "id": dg_id, "model_name": model, "name": name, "created_at": int(self.now()),
                "stale_before": None, "trigger_check_at": None, "trigger_error": None,
                "trigger_value": None, "triggered_at": None, "can": {"update": True},
            }
            return dict(self.datagroups[dg_id])

    # ---- auth ----------------------------------------------------------------

    def need_token(self, h):
        a = h.header("Authorization") or ""
        scheme, _, tok = a.partition(" ")
        tok = tok.strip()
        with self.lock:
            exp = self.tokens.get(tok) if scheme.lower() in ("token", "bearer") else None
            uses = self.token_uses.get(tok)
            if exp is not None and uses is not None:
                if uses <= 0:
                    exp = 0
                else:
                    self.token_uses[tok] = uses - 1
        if exp is None or exp <= self.now():
            status = 404 if self.fault_flag("auth_404") else 401
            msg = "Not found" if status == 404 else "Requires authentication."
            raise Reply(status, self.error_body(status, msg),
                        note="auth=%s" % ("expired" if exp is not None else "unknown"))

    def h_login(self, h):
        form = {}
        if h.media_type() == "application/x-www-form-urlencoded" or (h.body and not h.is_json_ct()):
            form = {k: v[0] for k, v in parse_qs(h.body.decode("utf-8", "replace"),
                                                 keep_blank_values=True).items()}
        cid = form.get("client_id") or h.qparam("client_id")
        csec = form.get("client_secret") or h.qparam("client_secret")
        if cid != self.args.client_id or csec != self.args.client_secret:
            raise Reply(404, self.error_body(404, "Not found"), note="login=refused")
        ttl = int(self.fault_num("token_ttl_s", self.args.token_ttl))
        tok = secrets.token_hex(20)
        uses = self.fault("token_uses")
        if uses is not None:
            self.merge_faults({"token_uses": None})  # one token only
        with self.lock:
            self.tokens[tok] = self.now() + ttl
            self.tokens_issued += 1
            if uses is not None:
                self.token_uses[tok] = int(uses)
        return Reply(200, {"access_token": tok, "token_type": "Bearer", "expires_in": ttl,
                           "refresh_token": None})

    def h_logout(self, h):
        self.need_token(h)
        tok = (h.header("Authorization") or "").partition(" ")[2].strip()
        with self.lock:
            self.tokens.pop(tok, None)
        return Reply(204)

    # ---- datagroups -----------------------------------------------------------

    def dg_or_404(self, dg_id):
        with self.lock:
            dg = self.datagroups.get(dg_id)
            if dg is None:
                raise Reply(404, self.error_body(404, "Not found"))
            return dict(dg)

    def h_dg_list(self, h):
        self.need_token(h)
        with self.lock:
            return Reply(200, [dict(d) for d in self.datagroups.values()])

    def h_dg_get(self, h, dg_id):
        self.need_token(h)
        return Reply(200, self.dg_or_404(dg_id))

    def h_dg_patch(self, h, dg_id):
        self.need_token(h)
        self.dg_or_404(dg_id)
        body = h.json_body()
        if not isinstance(body, dict):
            raise Reply(400, self.error_body(400, "Body must be a Datagroup object"))
        now = int(self.now())
        errors = []
        upd = {}
        for f in ("stale_before", "triggered_at"):
            if f not in body or body[f] is None:
                continue
            v = body[f]
            if isinstance(v, bool) or not isinstance(v, int):
                errors.append({"field": f, "code": "invalid", "message": "must be an integer (epoch seconds)",
                               "documentation_url": DOC_URL})
            elif v > now:
                errors.append({"field": f, "code": "invalid",
                               "message": "%s may not be in the future (%d > %d)" % (f, v, now),
                               "documentation_url": DOC_URL})
            else:
                upd[f] = v
        if errors:
            raise Reply(422, {"message": "Validation Failed", "errors": errors, "documentation_url": DOC_URL},
                        note="patch=future")
        with self.lock:
            dg = self.datagroups.get(dg_id)
            if dg is None:
                raise Reply(404, self.error_body(404, "Not found"))
            dg.update(upd)
            if upd:
                self.patches.append({"id": dg_id, "model": dg["model_name"], "name": dg["name"],
                                     "stale_before": upd.get("stale_before"),
                                     "triggered_at": upd.get("triggered_at"), "at": self.now()})
                # a trigger drops the model's cached results (the datagroup is the
                # model's persist_with policy in this simulator)
                if dg["name"] == self.args.datagroup:
                    for k in [k for k in self.cache if k[0] == dg["model_name"]]:
                        del self.cache[k]
            return Reply(200, dict(dg))

    # ---- queries ---------------------------------------------------------------

    def psql(self, sql):
        if not self.args.pg:
            raise Reply(404, self.error_body(404, "Not found (the simulator has no --pg warehouse)"))
        r = subprocess.run(["psql", self.args.pg, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-c", sql], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise Reply(400, self.error_body(400, "SQL error: %s" % r.stderr.strip()[:300]))
        return r.stdout.strip()

    def view_columns(self, view):
        if not IDENT.match(view or ""):
            return None
        out = self.psql("SELECT coalesce(json_agg(column_name::text ORDER BY ordinal_position), '[]') "
                        "FROM information_schema.columns WHERE table_schema = '%s' AND table_name = '%s'"
                        % (self.args.schema, view))
        cols = json.loads(out or "[]")
        return cols or None

    def compile_query(self, q):
        if not isinstance(q, dict):
            raise Reply(400, self.error_body(400, "Body must be a Query object"))
        model, view = q.get("model"), q.get("view")
        if model != self.args.model:
            raise Reply(404, self.error_body(404, "model '%s' not found" % model))
        cols = self.view_columns(view)
        if cols is None:
            raise Reply(404, self.error_body(404, "explore '%s' not found in model '%s'" % (view, model)))
        fields = q.get("fields")
        if not isinstance(fields, list) or not fields:
            raise Reply(422, {"message": "Validation Failed", "documentation_url": DOC_URL,
                              "errors": [{"field": "fields", "code": "missing", "message": "fields required",
                                          "documentation_url": DOC_URL}]})
        sel, dims = [], []
        for f in fields:
            v, _, name = str(f).partition(".")
            if v != view:
                raise Reply(422, {"message": "Validation Failed", "documentation_url": DOC_URL,
                                  "errors": [{"field": "fields", "code": "invalid",
                                              "message": "unknown field %s" % f, "documentation_url": DOC_URL}]})
            if name == "count":
                expr = "count(*)"
            elif name.startswith("total_") and name[6:] in cols:
                expr = 'sum("%s")' % name[6:]
            elif name in cols:
                expr = '"%s"' % name
                dims.append(expr)
            else:
                raise Reply(422, {"message": "Validation Failed", "documentation_url": DOC_URL,
                                  "errors": [{"field": "fields", "code": "invalid",
                                              "message": "unknown field %s" % f, "documentation_url": DOC_URL}]})
            sel.append('%s AS "%s"' % (expr, f))
        where = []
        for f, val in (q.get("filters") or {}).items():
            v, _, name = str(f).partition(".")
            if v != view or name not in cols:
                raise Reply(422, {"message": "Validation Failed", "documentation_url": DOC_URL,
                                  "errors": [{"field": "filters", "code": "invalid",
                                              "message": "unknown field %s" % f, "documentation_url": DOC_URL}]})
            where.append('"%s"::text = \'%s\'' % (name, str(val).replace("'", "''")))
        sql = "SELECT %s FROM %s.%s" % (", ".join(sel), self.args.schema, view)
        if where:
            sql += " WHERE " + " AND ".join(where)
        if dims:
            sql += " GROUP BY " + ", ".join(dims) + " ORDER BY " + ", ".join(dims)
        limit = str(q.get("limit", "500"))
        if limit != "-1":
            if not limit.isdigit():
                raise Reply(400, self.error_body(400, "limit must be a number as a string"))
            sql += " LIMIT %s" % limit
        return sql, fields

    def run_query(self, h, q, fmt):
        sql, fields = self.compile_query(q)
        if fmt == "sql":
            return Reply(200, raw=sql.encode(), headers={"Content-Type": "text/plain"})
        if fmt not in ("json", "json_bi", "csv"):
            raise Reply(400, self.error_body(400, "result_format %s is not simulated" % fmt))
        key = (q.get("model"), json.dumps(q, sort_keys=True) + "|" + fmt)
        use_cache = (h.qparam("cache", "true") or "true").lower() != "false"
        with self.lock:
            hit = self.cache.get(key) if use_cache else None
            if hit is not None:
                created, rep = hit
                dg = next((d for d in self.datagroups.values() if d["model_name"] == key[0]
                           and d["name"] == self.args.datagroup), None)
                if dg is not None and dg.get("stale_before") and created < dg["stale_before"]:
                    hit = None
        self.queries.append({"model": q.get("model"), "view": q.get("view"), "fmt": fmt,
                             "cache": "hit" if hit else "miss"})
        if hit is not None:
            return Reply(200, raw=rep[0], headers=rep[1], note="cache=hit")
        rows = json.loads(self.psql("SELECT coalesce(json_agg(t), '[]') FROM (%s) t" % sql) or "[]")
        if fmt == "json":
            raw, hd = simbase.json_bytes(rows), {"Content-Type": "application/json"}
        elif fmt == "json_bi":
            raw = simbase.json_bytes({"metadata": {"fields": {"dimensions": [{"name": f} for f in fields
                                                                             if not f.endswith(".count")]}},
                                      "rows": [{f: {"value": r.get(f)} for f in fields} for r in rows]})
            hd = {"Content-Type": "application/json"}
        else:
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(fields)
            for r in rows:
                w.writerow([r.get(f) for f in fields])
            raw, hd = buf.getvalue().encode(), {"Content-Type": "text/csv"}
        with self.lock:
            self.cache[key] = (self.now(), (raw, hd))
        return Reply(200, raw=raw, headers=hd, note="cache=miss")

    def h_query(self, h, fmt):
        self.need_token(h)
        return self.run_query(h, h.json_body(), fmt)

    def h_look(self, h, look_id, fmt):
        self.need_token(h)
        with self.lock:
            q = self.looks.get(look_id)
        if q is None:
            raise Reply(404, self.error_body(404, "Not found"))
        return self.run_query(h, q, fmt)

    # ---- routing -----------------------------------------------------------------

    def route(self, method, path, h):
        if not path.startswith(API + "/"):
            return None
        p = path[len(API):]
        if p == "/login" and method == "POST":
            return Route("login", lambda: self.h_login(h))
        if p == "/logout" and method == "DELETE":
            return Route("logout", lambda: self.h_logout(h))
        if p == "/datagroups" and method == "GET":
            return Route("datagroups", lambda: self.h_dg_list(h))
        m = re.match(r"^/datagroups/([^/]+)$", p)
        if m and method == "GET":
            return Route("datagroup", lambda: self.h_dg_get(h, m.group(1)))
        if m and method == "PATCH":
            return Route("datagroup PATCH", lambda: self.h_dg_patch(h, m.group(1)), write=True)
        m = re.match(r"^/queries/run/([a-z_]+)$", p)
        if m and method == "POST":
            return Route("queries/run", lambda: self.h_query(h, m.group(1)))
        m = re.match(r"^/looks/([^/]+)/run/([a-z_]+)$", p)
        if m and method == "GET":
            return Route("looks/run", lambda: self.h_look(h, m.group(1), m.group(2)))
        return None

    def control(self, method, p, h):
        if p == "/_sim/datagroups" and method == "GET":
            with self.lock:
                out = []
                for d in self.datagroups.values():
                    d = dict(d)
                    d["patches"] = [x for x in self.patches if x["id"] == d["id"]]
                    out.append(d)
            return Reply(200, out)
        if p == "/_sim/patches" and method == "GET":
            with self.lock:
                return Reply(200, list(self.patches))
        if p == "/_sim/datagroups" and method == "POST":
            b = simbase.control_json(h)
            return Reply(200, self.add_datagroup(b.get("model", self.args.model), b["name"]))
        if p == "/_sim/redeploy" and method == "POST":
            b = simbase.control_json(h)
            model, name = b.get("model", self.args.model), b.get("name", self.args.datagroup)
            with self.lock:
                old = [k for k, d in self.datagroups.items() if d["model_name"] == model and d["name"] == name]
                if not old:
                    return Reply(404, {"error": "no datagroup %s/%s" % (model, name)})
                d = self.datagroups.pop(old[0])
                d["id"] = str(self.next_id)
                self.next_id += 1
                self.datagroups[d["id"]] = d
            return Reply(200, {"old_id": old[0], "id": d["id"]})
        if p == "/_sim/expire_tokens" and method == "POST":
            with self.lock:
                n = len(self.tokens)
                for t in self.tokens:
                    self.tokens[t] = 0
            return Reply(200, {"expired": n})
        if p == "/_sim/queries" and method == "GET":
            return Reply(200, list(self.queries))
        if p == "/_sim/looks" and method == "POST":
            b = simbase.control_json(h)
            with self.lock:
                self.looks[str(b["id"])] = b["query"]
            return Reply(200, {"ok": True})
        if p == "/_sim/clock" and method == "GET":
            return Reply(200, {"now": self.now()})
        return None

    def stats_snapshot(self):
        s = super().stats_snapshot()
        with self.lock:
            s["tokens_issued"] = self.tokens_issued
            s["patches"] = len(self.patches)
        return s


if __name__ == "__main__":
    sys.exit(simbase.main(LookerSim))
