/* SPDX-License-Identifier: Apache-2.0
 * store_pg: the relay store in PostgreSQL, shared by several relay nodes.
 *
 * Each handle holds two connections: one runs the prepared statements, the
 * other only LISTENs on channel mlc_wake, and its socket is what wake_fd()
 * hands the event loop. Writers NOTIFY "<what>:<tenant>" inside their
 * transaction, so a wake-up is sent exactly when the rows become visible.
 *
 * Leases: a claim is one UPDATE over rows picked with FOR UPDATE SKIP LOCKED
 * whose lease has run out; a row that another node is claiming right now is
 * skipped, and one it has just claimed fails the re-check of lease_until_ms.
 * So each delivery goes to one node at a time.
 *
 * A batch of deliveries is one transaction sent as a libpq pipeline, PG_CHUNK
 * statements per round trip; its 2xx waits for the COMMIT, which the server
 * makes durable (synchronous_commit) before answering.
 *
 * A lost connection fails the call in progress with MLC_E_NET and a message
 * naming the server; the next call reconnects (PQreset) and prepares the
 * statements again.
 */
#include <endian.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include "relay/store.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_log.h"

#define PG_CHUNK           64 /* pipelined inserts per round trip: bounds unread results */
#define PG_TRIES           3  /* a batch that lost a deadlock is tried again */
#define PG_WAKE_CHANNEL    "mlc_wake"
#define PG_CONNECT_TIMEOUT "10"
/* pg_advisory_xact_lock key that serializes schema migrations ("mlc_rela") */
#define PG_MIGRATE_LOCK "7884571223264012641"

/* Migrations, numbered by the row in relay_schema; each runs in one transaction. */
static const char *const pg_migrations[] = {
    /* 1: the first schema */
    "CREATE TABLE relay_tenant(name TEXT PRIMARY KEY, key_hash TEXT NOT NULL,"
    "  hook_secret TEXT NOT NULL, jira_client_secret TEXT NOT NULL DEFAULT '',"
    "  zoho_token TEXT NOT NULL DEFAULT '', created_ms BIGINT NOT NULL,"
    "  rotated_ms BIGINT NOT NULL DEFAULT 0);"
    "CREATE TABLE relay_delivery(seq BIGSERIAL PRIMARY KEY,"
    "  tenant TEXT NOT NULL REFERENCES relay_tenant(name), kind TEXT NOT NULL,"
    "  ext_id TEXT NOT NULL, received_ms BIGINT NOT NULL, lease_node TEXT,"
    "  lease_until_ms BIGINT NOT NULL DEFAULT 0, acked_ms BIGINT, body BYTEA NOT NULL,"
    "  UNIQUE(tenant, kind, ext_id));"
    /* the claim path: a tenant's unacked rows in seq order; acked rows leave it */
    "CREATE INDEX relay_delivery_pending ON relay_delivery(tenant, seq) WHERE acked_ms IS NULL;"
    "CREATE TABLE relay_command(id BIGSERIAL PRIMARY KEY,"
    "  tenant TEXT NOT NULL REFERENCES relay_tenant(name), body TEXT NOT NULL,"
    "  created_ms BIGINT NOT NULL, sent_ms BIGINT, answered_ms BIGINT, answer TEXT);"
    "CREATE INDEX relay_command_unsent ON relay_command(tenant, id) WHERE sent_ms IS NULL;",
    /* 2: settings of the store itself (the tenant secrets' key check) */
    "CREATE TABLE relay_meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);",
};
#define PG_SCHEMA_VERSION ((int)(sizeof(pg_migrations) / sizeof(pg_migrations[0])))

enum pg_stmt {
    PG_TENANT_ADD,
    PG_TENANT_UPDATE,
    PG_TENANT_GET,
    PG_TENANT_LIST,
    PG_DELIVERY_PUT,
    PG_DELIVERY_FIND,
    PG_WAKE,
    PG_DELIVERY_CLAIM,
    PG_DELIVERY_RELEASE,
    PG_DELIVERY_ACK,
    PG_DELIVERY_ACK_RANGES,
    PG_COMMAND_PUT,
    PG_COMMAND_CLAIM,
    PG_COMMAND_ANSWER,
    PG_COMMAND_GET,
    PG_COMMAND_TENANTS,
    PG_STATS,
    PG_META_GET,
    PG_META_PUT_NEW,
    PG__COUNT
};

#define TENANT_COLS \
    "name, key_hash, hook_secret, jira_client_secret, zoho_token, created_ms, rotated_ms"
#define COMMAND_COLS "id, tenant, body, created_ms, answered_ms, answer"

static const char *const pg_sql[PG__COUNT] = {
    [PG_TENANT_ADD] =
        "INSERT INTO relay_tenant(" TENANT_COLS ") VALUES($1, $2, $3, $4, $5, $6, $7)",
    [PG_TENANT_UPDATE] =
        "UPDATE relay_tenant SET key_hash = $2, hook_secret = $3,"
        " jira_client_secret = $4, zoho_token = $5, created_ms = $6, rotated_ms = $7"
        " WHERE name = $1",
    [PG_TENANT_GET] = "SELECT " TENANT_COLS " FROM relay_tenant WHERE name = $1",
    /* byte order, as SQLite sorts */
    [PG_TENANT_LIST] = "SELECT " TENANT_COLS " FROM relay_tenant ORDER BY name COLLATE \"C\"",
    [PG_DELIVERY_PUT] = "INSERT INTO relay_delivery(tenant, kind, ext_id, body, received_ms)"
                        " VALUES($1, $2, $3, $4, $5) ON CONFLICT (tenant, kind, ext_id) DO NOTHING"
                        " RETURNING seq",
    [PG_DELIVERY_FIND] =
        "SELECT seq FROM relay_delivery WHERE tenant = $1 AND kind = $2 AND ext_id = $3",
    [PG_WAKE] = "SELECT pg_notify('" PG_WAKE_CHANNEL "', $1)",
    [PG_DELIVERY_CLAIM] = "WITH c AS (UPDATE relay_delivery SET lease_node = $2,"
                          " lease_until_ms = $3::bigint + $4::bigint"
                          " WHERE seq IN (SELECT seq FROM relay_delivery WHERE tenant = $1"
                          " AND acked_ms IS NULL AND lease_until_ms <= $3::bigint ORDER BY seq"
                          " LIMIT $5 FOR UPDATE SKIP LOCKED)"
                          " RETURNING seq, kind, ext_id, body, received_ms)"
                          " SELECT seq, kind, ext_id, body, received_ms FROM c ORDER BY seq",
    [PG_DELIVERY_RELEASE] = "UPDATE relay_delivery SET lease_node = NULL, lease_until_ms = 0"
                            " WHERE tenant = $1 AND acked_ms IS NULL AND lease_node = $2",
    [PG_DELIVERY_ACK] =
        "UPDATE relay_delivery SET acked_ms = $3, lease_node = NULL, lease_until_ms = 0"
        " WHERE tenant = $1 AND seq = ANY($2::bigint[]) AND acked_ms IS NULL",
    [PG_DELIVERY_ACK_RANGES] =
        "UPDATE relay_delivery d SET acked_ms = $4, lease_node = NULL, lease_until_ms = 0"
        " FROM unnest($2::bigint[], $3::bigint[]) AS r(first, last)"
        " WHERE d.tenant = $1 AND d.seq BETWEEN r.first AND r.last AND d.acked_ms IS NULL",
    [PG_COMMAND_PUT] =
        "WITH ins AS (INSERT INTO relay_command(tenant, body, created_ms)"
        " VALUES($1::text, $2, $3) RETURNING id)"
        " SELECT ins.id FROM ins, pg_notify('" PG_WAKE_CHANNEL "', 'command:' || $1::text)",
    [PG_COMMAND_CLAIM] = "WITH c AS (UPDATE relay_command SET sent_ms = $2 WHERE id IN (SELECT id"
                         " FROM relay_command WHERE tenant = $1 AND sent_ms IS NULL ORDER BY id"
                         " LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING " COMMAND_COLS ")"
                         " SELECT " COMMAND_COLS " FROM c ORDER BY id",
    /* the first answer stays (an agent may repeat its STATUS after a reconnect) */
    [PG_COMMAND_ANSWER] = "UPDATE relay_command SET answered_ms = $2, answer = $3"
                          " WHERE id = $1 AND answered_ms IS NULL",
    [PG_COMMAND_GET] = "SELECT " COMMAND_COLS " FROM relay_command WHERE id = $1",
    /* reads only relay_command_unsent, which holds just the unsent commands */
    [PG_COMMAND_TENANTS] = "SELECT DISTINCT tenant COLLATE \"C\" FROM relay_command"
                           " WHERE sent_ms IS NULL ORDER BY 1 LIMIT $1",
    [PG_STATS] = "SELECT (SELECT count(*) FROM relay_tenant),"
                 " (SELECT count(*) FROM relay_delivery WHERE acked_ms IS NULL),"
                 " (SELECT count(*) FROM relay_delivery)," /* acked = all - pending */
                 " (SELECT count(*) FROM relay_command WHERE answered_ms IS NULL)",
    [PG_META_GET] = "SELECT value FROM relay_meta WHERE name = $1",
    [PG_META_PUT_NEW] = "INSERT INTO relay_meta(name, value) VALUES($1, $2) ON CONFLICT (name) DO NOTHING",
};

struct pg {
    struct store base; /* first: a struct store * is a struct pg * */
    PGconn *conn;      /* statements */
    PGconn *listen;    /* LISTEN mlc_wake, nothing else */
    int prepared;      /* the statements exist on conn's current session */
    int broken;        /* the server ended the session: reconnect before the next call */
    char where[256];   /* "host:port/db" for messages; never the password */
};

static const struct store_ops pg_ops;

static struct pg *pg_of(struct store *s)
{
    return (struct pg *)s;
}

/* libpq messages end in newlines and may span lines: one line for ours. */
static const char *one_line(const char *m, char *buf, size_t n)
{
    size_t len = 0;

    for (m = m ? m : ""; *m != '\0' && len + 1 < n; m++) {
        int space = *m == ' ' || *m == '\n' || *m == '\t' || *m == '\r';

        if (!space) {
            buf[len++] = *m;
        } else if (len > 0 && buf[len - 1] != ' ') {
            buf[len++] = ' ';
        }
    }
    while (len > 0 && buf[len - 1] == ' ') {
        len--;
    }
    buf[len] = '\0';
    return buf;
}

static void pg_notice(void *arg, const char *message)
{
    struct pg *p = arg;
    char line[512];

    mlc_info("PostgreSQL server %s: %s", p->where, one_line(message, line, sizeof(line)));
}

static int result_ok(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);

    return r != NULL && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
}

static int result_sqlstate(const PGresult *r, const char *state)
{
    const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    return s != NULL && strcmp(s, state) == 0;
}

/* The session is over: the connection broke, or the server said it ends it
 * (FATAL: shutdown, pg_terminate_backend, ...; SQLSTATE class 08). In a
 * pipeline the FATAL message arrives before libpq has seen the socket close. */
static int session_lost(struct pg *p, const PGresult *r)
{
    const char *severity = r ? PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    return PQstatus(p->conn) != CONNECTION_OK ||
           (severity != NULL &&
            (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0)) ||
           (state != NULL && strncmp(state, "08", 2) == 0);
}

/* Records what failed and where, clears r; returns the rc for it. */
static enum mlc_rc pg_fail(struct pg *p, PGresult *r, const char *what, struct mlc_errbuf *err)
{
    char line[512];
    const char *m = r ? PQresultErrorMessage(r) : "";
    enum mlc_rc rc = MLC_E_IO;

    if (m[0] == '\0') {
        m = PQerrorMessage(p->conn);
    }
    one_line(m, line, sizeof(line));
    if (session_lost(p, r)) {
        p->broken = 1;
        mlc_errf(err,
                 "lost the connection to PostgreSQL server %s while trying to %s: %s (the "
                 "relay reconnects on its next store call; check that the server is up and "
                 "reachable)",
                 p->where, what, line);
        rc = MLC_E_NET;
    } else {
        mlc_errf(err, "PostgreSQL server %s: cannot %s: %s", p->where, what, line);
    }
    PQclear(r);
    return rc;
}

static PGconn *pg_connect(struct pg *p, const char *conninfo, const char *role,
                          struct mlc_errbuf *err)
{
    char app[96]; /* the server keeps 63 bytes */
    /* defaults first: the conninfo, expanded from "dbname", overrides them */
    const char *const keys[] = { "connect_timeout", "application_name", "dbname", NULL };
    const char *vals[] = { PG_CONNECT_TIMEOUT, app, conninfo, NULL };
    PGconn *c;

    snprintf(app, sizeof(app), "mlc-relay %s%s", p->base.node, role);
    c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        mlc_errf(err, "cannot connect to PostgreSQL: out of memory");
        return NULL;
    }
    if (p->where[0] == '\0' || PQstatus(c) == CONNECTION_OK) {
        const char *host = PQhost(c);

        snprintf(p->where, sizeof(p->where), "'%s:%s/%s'", host && host[0] ? host : "localhost",
                 PQport(c) ? PQport(c) : "", PQdb(c) ? PQdb(c) : "");
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char line[512];

        mlc_errf(err,
                 "cannot connect to PostgreSQL server %s: %s (check the relay's store "
                 "setting, and that the server runs and accepts this relay's connections)",
                 p->where, one_line(PQerrorMessage(c), line, sizeof(line)));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, pg_notice, p);
    return c;
}

static enum mlc_rc pg_exec_simple(struct pg *p, const char *sql, const char *what,
                                  struct mlc_errbuf *err)
{
    PGresult *r = PQexec(p->conn, sql);

    if (!result_ok(r)) {
        return pg_fail(p, r, what, err);
    }
    PQclear(r);
    return MLC_OK;
}

static void pg_rollback(struct pg *p)
{
    if (!p->broken && PQstatus(p->conn) == CONNECTION_OK &&
        PQpipelineStatus(p->conn) == PQ_PIPELINE_OFF &&
        PQtransactionStatus(p->conn) != PQTRANS_IDLE) {
        PQclear(PQexec(p->conn, "ROLLBACK"));
    }
}

static enum mlc_rc pg_migrate(struct pg *p, struct mlc_errbuf *err)
{
    PGresult *r;
    int version = 0;
    char sql[128];
    enum mlc_rc rc;

    /* the lock makes a second relay starting at the same time wait, then see the new version */
    rc = pg_exec_simple(p, "BEGIN; SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK ")",
                        "lock the schema", err);
    if (rc != MLC_OK) {
        goto out;
    }
    r = PQexec(p->conn, "SELECT to_regclass('relay_schema') IS NOT NULL");
    if (!result_ok(r) || PQntuples(r) != 1) {
        rc = pg_fail(p, r, "look for the schema", err);
        goto out;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        PQclear(r);
        rc = pg_exec_simple(p,
                            "CREATE TABLE relay_schema(version INTEGER NOT NULL);"
                            " INSERT INTO relay_schema VALUES(0)",
                            "create the schema", err);
        if (rc != MLC_OK) {
            goto out;
        }
    } else {
        PQclear(r);
    }
    r = PQexec(p->conn, "SELECT max(version) FROM relay_schema");
    if (!result_ok(r) || PQntuples(r) != 1) {
        rc = pg_fail(p, r, "read the schema version", err);
        goto out;
    }
    version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (version > PG_SCHEMA_VERSION) {
        mlc_errf(err,
                 "relay store on PostgreSQL server %s has schema version %d, newer than this "
                 "relay knows (%d): upgrade the relay",
                 p->where, version, PG_SCHEMA_VERSION);
        rc = MLC_E_INVAL;
        goto out;
    }
    for (int v = version; v < PG_SCHEMA_VERSION; v++) {
        rc = pg_exec_simple(p, pg_migrations[v], "migrate the schema", err);
        if (rc != MLC_OK) {
            goto out;
        }
        mlc_info("relay store on PostgreSQL server %s migrated to schema version %d", p->where,
                 v + 1);
    }
    snprintf(sql, sizeof(sql), "UPDATE relay_schema SET version = %d; COMMIT", PG_SCHEMA_VERSION);
    rc = pg_exec_simple(p, sql, "commit the schema", err);
out:
    pg_rollback(p);
    return rc;
}

static void stmt_name(enum pg_stmt which, char *buf, size_t n)
{
    snprintf(buf, n, "mlc_relay_%d", (int)which);
}

static enum mlc_rc pg_prepare_all(struct pg *p, struct mlc_errbuf *err)
{
    for (int i = 0; i < PG__COUNT; i++) {
        char name[32];
        PGresult *r;

        stmt_name(i, name, sizeof(name));
        r = PQprepare(p->conn, name, pg_sql[i], 0, NULL);
        if (!result_ok(r)) {
            return pg_fail(p, r, "prepare the relay's statements", err);
        }
        PQclear(r);
    }
    p->prepared = 1;
    return MLC_OK;
}

static int listen_start(struct pg *p)
{
    PGresult *r = PQexec(p->listen, "LISTEN " PG_WAKE_CHANNEL);
    int ok = result_ok(r);

    PQclear(r);
    return ok;
}

static void listen_reset(struct pg *p)
{
    char line[512];

    PQreset(p->listen);
    if (PQstatus(p->listen) == CONNECTION_OK && listen_start(p)) {
        mlc_info("listening for wake-ups again on PostgreSQL server %s", p->where);
        return;
    }
    mlc_warn("cannot listen for wake-ups on PostgreSQL server %s: %s (the relay tries again on "
             "its next store call)",
             p->where, one_line(PQerrorMessage(p->listen), line, sizeof(line)));
}

/* Before every call: reconnect what a lost connection left behind. */
static enum mlc_rc pg_ready(struct pg *p, struct mlc_errbuf *err)
{
    if (p->broken || PQstatus(p->conn) != CONNECTION_OK) {
        char line[512];

        mlc_warn("reconnecting to PostgreSQL server %s", p->where);
        PQreset(p->conn);
        p->prepared = 0;
        p->broken = 0;
        if (PQstatus(p->conn) != CONNECTION_OK) {
            mlc_errf(err,
                     "cannot reconnect to PostgreSQL server %s: %s (check that the server is "
                     "up and reachable; the relay tries again on its next store call)",
                     p->where, one_line(PQerrorMessage(p->conn), line, sizeof(line)));
            return MLC_E_NET;
        }
        mlc_info("reconnected to PostgreSQL server %s", p->where);
    }
    if (!p->prepared) {
        enum mlc_rc rc = pg_prepare_all(p, err);

        if (rc != MLC_OK) {
            return rc;
        }
    }
    if (PQstatus(p->listen) != CONNECTION_OK) {
        listen_reset(p);
    }
    return MLC_OK;
}

/* Runs a prepared statement; params are text unless fmts says binary.
 * Results come in binary: see col_int() and col_dup(). */
static PGresult *pg_run(struct pg *p, enum pg_stmt which, int n, const char *const *vals,
                        const int *lens, const int *fmts)
{
    char name[32];

    stmt_name(which, name, sizeof(name));
    return PQexecPrepared(p->conn, name, n, vals, lens, fmts, 1);
}

static int pg_send(struct pg *p, enum pg_stmt which, int n, const char *const *vals,
                   const int *lens, const int *fmts)
{
    char name[32];

    stmt_name(which, name, sizeof(name));
    return PQsendQueryPrepared(p->conn, name, n, vals, lens, fmts, 1);
}

/* An int8 or int4 column in binary format; NULL reads as 0. */
static long long col_int(const PGresult *r, int row, int col)
{
    const char *v = PQgetvalue(r, row, col);

    if (PQgetisnull(r, row, col)) {
        return 0;
    }
    if (PQgetlength(r, row, col) == 8) {
        uint64_t x;

        memcpy(&x, v, 8);
        return (long long)be64toh(x);
    }
    if (PQgetlength(r, row, col) == 4) {
        uint32_t x;

        memcpy(&x, v, 4);
        return (int32_t)be32toh(x);
    }
    MLC_BUG("column %d is not an integer (%d bytes)", col, PQgetlength(r, row, col));
}

static void col_copy(const PGresult *r, int row, int col, char *dst, size_t n)
{
    snprintf(dst, n, "%.*s", PQgetlength(r, row, col), PQgetvalue(r, row, col));
}

/* A heap, NUL-terminated copy of a text or bytea column (NULL stays NULL when keep_null). */
static char *col_dup(const PGresult *r, int row, int col, size_t *len, int keep_null)
{
    size_t n = (size_t)PQgetlength(r, row, col);
    char *d;

    if (keep_null && PQgetisnull(r, row, col)) {
        return NULL;
    }
    d = mlc_xmalloc(n + 1);
    memcpy(d, PQgetvalue(r, row, col), n);
    d[n] = '\0';
    if (len != NULL) {
        *len = n;
    }
    return d;
}

static void pg_close(struct store *s)
{
    struct pg *p = pg_of(s);

    if (p == NULL) {
        return;
    }
    PQfinish(p->conn);
    PQfinish(p->listen);
    store_wipe(&p->base);
    free(p);
}

enum mlc_rc store_pg_open(struct store **out, const char *conninfo, const char *node,
                          struct mlc_errbuf *err)
{
    struct pg *p;
    enum mlc_rc rc;

    *out = NULL;
    if (node == NULL || node[0] == '\0' || strlen(node) >= sizeof(p->base.node)) {
        mlc_errf(err, "relay node id '%s' must be 1 to %zu characters", node ? node : "",
                 sizeof(p->base.node) - 1);
        return MLC_E_INVAL;
    }
    p = mlc_xcalloc(1, sizeof(*p));
    p->base.ops = &pg_ops;
    snprintf(p->base.node, sizeof(p->base.node), "%s", node);
    p->conn = pg_connect(p, conninfo, "", err);
    if (p->conn == NULL) {
        rc = MLC_E_NET;
        goto fail;
    }
    if ((rc = pg_migrate(p, err)) != MLC_OK || (rc = pg_prepare_all(p, err)) != MLC_OK) {
        goto fail;
    }
    p->listen = pg_connect(p, conninfo, " listen", err);
    if (p->listen == NULL) {
        rc = MLC_E_NET;
        goto fail;
    }
    if (!listen_start(p)) {
        char line[512];

        mlc_errf(err, "PostgreSQL server %s: cannot LISTEN " PG_WAKE_CHANNEL ": %s", p->where,
                 one_line(PQerrorMessage(p->listen), line, sizeof(line)));
        rc = MLC_E_IO;
        goto fail;
    }
    *out = &p->base;
    return MLC_OK;
fail:
    pg_close(&p->base);
    return rc;
}

/* Parameters of t with its secrets sealed (sealed[] to free afterwards). */
static void tenant_params(struct pg *p, const struct tenant_rec *t, char nums[2][24],
                          const char *vals[7], char fields[2][TENANT_NAME_MAX + 2], char *sealed[3])
{
    snprintf(fields[0], sizeof(fields[0]), "%.*s", TENANT_NAME_MAX, t->name);
    snprintf(fields[1], sizeof(fields[1]), "%.*s", (int)sizeof(t->key_hash) - 1, t->key_hash);
    sealed[0] = store_seal(&p->base, fields[0], "hook_secret", t->hook_secret);
    sealed[1] = store_seal(&p->base, fields[0], "jira_client_secret", t->jira_client_secret);
    sealed[2] = store_seal(&p->base, fields[0], "zoho_token", t->zoho_token);
    snprintf(nums[0], sizeof(nums[0]), "%lld", t->created_ms);
    snprintf(nums[1], sizeof(nums[1]), "%lld", t->rotated_ms);
    vals[0] = fields[0];
    vals[1] = fields[1];
    vals[2] = sealed[0];
    vals[3] = sealed[1];
    vals[4] = sealed[2];
    vals[5] = nums[0];
    vals[6] = nums[1];
}

static enum mlc_rc read_tenant(struct pg *p, const PGresult *r, int row, struct tenant_rec *t,
                               struct mlc_errbuf *err)
{
    enum mlc_rc rc;

    memset(t, 0, sizeof(*t));
    col_copy(r, row, 0, t->name, sizeof(t->name));
    col_copy(r, row, 1, t->key_hash, sizeof(t->key_hash));
    t->created_ms = col_int(r, row, 5);
    t->rotated_ms = col_int(r, row, 6);
    if ((rc = store_unseal(&p->base, t->name, "hook_secret", PQgetvalue(r, row, 2), t->hook_secret,
                           sizeof(t->hook_secret), err)) != MLC_OK ||
        (rc = store_unseal(&p->base, t->name, "jira_client_secret", PQgetvalue(r, row, 3),
                           t->jira_client_secret, sizeof(t->jira_client_secret), err)) != MLC_OK ||
        (rc = store_unseal(&p->base, t->name, "zoho_token", PQgetvalue(r, row, 4), t->zoho_token,
                           sizeof(t->zoho_token), err)) != MLC_OK) {
        memset(t, 0, sizeof(*t));
    }
    return rc;
}

static enum mlc_rc pg_tenant_write(struct store *s, const struct tenant_rec *t, int add,
                                   struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    char nums[2][24], fields[2][TENANT_NAME_MAX + 2], *sealed[3];
    const char *vals[7];
    PGresult *r;
    enum mlc_rc rc;

    if (add && !tenant_name_ok(t->name)) {
        mlc_errf(err, "tenant name '%.*s' is not 1 to %d of A-Z a-z 0-9 _ -", TENANT_NAME_MAX,
                 t->name, TENANT_NAME_MAX);
        return MLC_E_INVAL;
    }
    rc = pg_ready(p, err);
    if (rc != MLC_OK) {
        return rc;
    }
    tenant_params(p, t, nums, vals, fields, sealed);
    r = pg_run(p, add ? PG_TENANT_ADD : PG_TENANT_UPDATE, 7, vals, NULL, NULL);
    for (int i = 0; i < 3; i++) {
        free(sealed[i]);
    }
    if (add && result_sqlstate(r, "23505")) {
        PQclear(r);
        mlc_errf(err,
                 "tenant '%s' already exists in the relay store on PostgreSQL server %s "
                 "(rotate or update it instead)",
                 fields[0], p->where);
        return MLC_E_INVAL;
    }
    if (!result_ok(r)) {
        return pg_fail(p, r, add ? "add a tenant" : "update a tenant", err);
    }
    if (!add && strcmp(PQcmdTuples(r), "0") == 0) {
        PQclear(r);
        mlc_errf(err, "no tenant '%s' in the relay store on PostgreSQL server %s", fields[0],
                 p->where);
        return MLC_E_NOTFOUND;
    }
    PQclear(r);
    return MLC_OK;
}

static enum mlc_rc pg_tenant_add(struct store *s, const struct tenant_rec *t,
                                 struct mlc_errbuf *err)
{
    return pg_tenant_write(s, t, 1, err);
}

static enum mlc_rc pg_tenant_update(struct store *s, const struct tenant_rec *t,
                                    struct mlc_errbuf *err)
{
    return pg_tenant_write(s, t, 0, err);
}

static enum mlc_rc pg_tenant_get(struct store *s, const char *name, struct tenant_rec *out,
                                 struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    const char *vals[1] = { name };
    PGresult *r;
    enum mlc_rc rc = pg_ready(p, err);

    if (rc != MLC_OK) {
        return rc;
    }
    r = pg_run(p, PG_TENANT_GET, 1, vals, NULL, NULL);
    if (!result_ok(r)) {
        return pg_fail(p, r, "read a tenant", err);
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        mlc_errf(err, "no tenant '%s' in the relay store on PostgreSQL server %s", name, p->where);
        return MLC_E_NOTFOUND;
    }
    rc = read_tenant(p, r, 0, out, err);
    PQclear(r);
    return rc;
}

static enum mlc_rc pg_tenant_list(struct store *s, struct tenant_rec **out, size_t *n,
                                  struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    PGresult *r;
    int rows;
    enum mlc_rc rc = pg_ready(p, err);

    *out = NULL;
    *n = 0;
    if (rc != MLC_OK) {
        return rc;
    }
    r = pg_run(p, PG_TENANT_LIST, 0, NULL, NULL, NULL);
    if (!result_ok(r)) {
        return pg_fail(p, r, "list tenants", err);
    }
    rows = PQntuples(r);
    if (rows > 0) {
        *out = mlc_xcalloc((size_t)rows, sizeof(**out));
        for (int i = 0; i < rows; i++) {
            if ((rc = read_tenant(p, r, i, &(*out)[i], err)) != MLC_OK) {
                PQclear(r);
                memset(*out, 0, (size_t)rows * sizeof(**out));
                free(*out);
                *out = NULL;
                return rc;
            }
        }
    }
    *n = (size_t)rows;
    PQclear(r);
    return MLC_OK;
}

/* The next result of a pipeline: one query's result (the NULL that ends it
 * is consumed too), or the PGRES_PIPELINE_SYNC. NULL: the connection broke. */
static PGresult *pipe_next(struct pg *p)
{
    PGresult *r = PQgetResult(p->conn), *more;

    if (r == NULL || PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
        return r;
    }
    while ((more = PQgetResult(p->conn)) != NULL) {
        /* a second result for one query: keep the error, if any */
        if (result_ok(r)) {
            PQclear(r);
            r = more;
        } else {
            PQclear(more);
        }
    }
    return r;
}

/* The next query's result when it succeeded and nothing failed before; else
 * NULL, with the first failure recorded in *rc and err. d names the
 * delivery being inserted, for a clearer message. */
static PGresult *pipe_take(struct pg *p, enum mlc_rc *rc, int *again, const char *what,
                           const struct delivery_in *d, struct mlc_errbuf *err)
{
    PGresult *r = pipe_next(p);

    if (result_ok(r) && *rc == MLC_OK) {
        return r;
    }
    if (*rc != MLC_OK) {
        PQclear(r); /* PGRES_PIPELINE_ABORTED after the first failure */
        return NULL;
    }
    if (result_sqlstate(r, "40P01") || result_sqlstate(r, "40001")) {
        *again = 1; /* two nodes stored the same ids in opposite orders */
    }
    if (d != NULL && result_sqlstate(r, "23503")) {
        PQclear(r);
        mlc_errf(err,
                 "PostgreSQL server %s: cannot store a delivery for tenant '%s': no such tenant",
                 p->where, d->tenant);
        *rc = MLC_E_NOTFOUND;
        return NULL;
    }
    *rc = pg_fail(p, r, what, err);
    return NULL;
}

static void put_params(const struct delivery_in *d, char *num, const char *vals[5], int lens[5])
{
    snprintf(num, 24, "%lld", d->received_ms);
    vals[0] = d->tenant;
    vals[1] = d->kind;
    vals[2] = d->ext_id;
    vals[3] = d->body_len ? d->body : "";
    vals[4] = num;
    lens[3] = (int)d->body_len;
}

/* One try at storing the batch: BEGIN, the inserts, the look-ups of
 * duplicates and the NOTIFYs, COMMIT, all in one pipeline, PG_CHUNK queries
 * per round trip so the results waiting to be read stay small. */
static enum mlc_rc pg_put_batch(struct pg *p, struct delivery_in *items, size_t n, int *again,
                                struct mlc_errbuf *err)
{
    static const int fmts[5] = { 0, 0, 0, 1, 0 }; /* the body goes as binary bytea */
    size_t *dups = mlc_xmalloc(n * sizeof(*dups)), ndup = 0;
    const char **tenants = mlc_xmalloc(n * sizeof(*tenants));
    size_t nten = 0;
    enum mlc_rc rc = MLC_OK;
    PGresult *r;

    for (size_t i = 0; i < n; i++) {
        items[i].seq = 0;
        items[i].duplicate = 0;
    }
    if (!PQenterPipelineMode(p->conn) ||
        !PQsendQueryParams(p->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0)) {
        rc = pg_fail(p, NULL, "start storing deliveries", err);
        goto sync;
    }
    for (size_t start = 0; start < n && rc == MLC_OK; start += PG_CHUNK) {
        size_t end = start + PG_CHUNK < n ? start + PG_CHUNK : n;

        for (size_t i = start; i < end; i++) {
            char num[24];
            const char *vals[5];
            int lens[5] = { 0 };

            put_params(&items[i], num, vals, lens);
            if (!pg_send(p, PG_DELIVERY_PUT, 5, vals, lens, fmts)) {
                rc = pg_fail(p, NULL, "send deliveries", err);
                goto sync;
            }
        }
        if (!PQsendFlushRequest(p->conn) || PQflush(p->conn) != 0) {
            rc = pg_fail(p, NULL, "send deliveries", err);
            goto sync;
        }
        if (start == 0) {
            PQclear(pipe_take(p, &rc, again, "start storing deliveries", NULL, err));
        }
        for (size_t i = start; i < end; i++) {
            r = pipe_take(p, &rc, again, "store a delivery", &items[i], err);
            if (r == NULL) {
                continue;
            }
            if (PQntuples(r) == 1) {
                items[i].seq = col_int(r, 0, 0);
            } else {
                dups[ndup++] = i;
            }
            PQclear(r);
        }
    }
    if (rc != MLC_OK) {
        goto sync;
    }
    /* wake-ups: one per tenant with new rows, sent by the server at COMMIT */
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;

        while (k < nten && (items[i].seq == 0 || strcmp(tenants[k], items[i].tenant) != 0)) {
            k++;
        }
        if (items[i].seq != 0 && k == nten) {
            tenants[nten++] = items[i].tenant;
        }
    }
    /* duplicates were stored before, by an earlier batch, another node, or
     * earlier in this one: look up the first one's seq */
    for (size_t start = 0; start < ndup + nten && rc == MLC_OK; start += PG_CHUNK) {
        size_t end = start + PG_CHUNK < ndup + nten ? start + PG_CHUNK : ndup + nten;

        for (size_t j = start; j < end; j++) {
            int ok;

            if (j < ndup) {
                const struct delivery_in *d = &items[dups[j]];
                const char *vals[3] = { d->tenant, d->kind, d->ext_id };

                ok = pg_send(p, PG_DELIVERY_FIND, 3, vals, NULL, NULL);
            } else {
                char *payload = mlc_xasprintf("delivery:%s", tenants[j - ndup]);
                const char *vals[1] = { payload };

                ok = pg_send(p, PG_WAKE, 1, vals, NULL, NULL);
                free(payload);
            }
            if (!ok) {
                rc = pg_fail(p, NULL, "send look-ups of repeated deliveries", err);
                goto sync;
            }
        }
        if (!PQsendFlushRequest(p->conn) || PQflush(p->conn) != 0) {
            rc = pg_fail(p, NULL, "send look-ups of repeated deliveries", err);
            goto sync;
        }
        for (size_t j = start; j < end; j++) {
            r = pipe_take(p, &rc, again, j < ndup ? "look up a repeated delivery" : "notify", NULL,
                          err);
            if (r == NULL) {
                continue;
            }
            if (j < ndup && PQntuples(r) == 1) {
                items[dups[j]].seq = col_int(r, 0, 0);
                items[dups[j]].duplicate = 1;
            } else if (j < ndup) {
                mlc_errf(err,
                         "PostgreSQL server %s: delivery '%s' of tenant '%s' was a duplicate, "
                         "yet its first copy is gone",
                         p->where, items[dups[j]].ext_id, items[dups[j]].tenant);
                rc = MLC_E_IO;
            }
            PQclear(r);
        }
    }
    if (rc == MLC_OK) {
        if (!PQsendQueryParams(p->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) ||
            !PQpipelineSync(p->conn)) {
            rc = pg_fail(p, NULL, "commit deliveries", err);
            goto sync;
        }
        PQclear(pipe_take(p, &rc, again, "commit deliveries", NULL, err));
        goto drain;
    }
sync:
    if (PQpipelineStatus(p->conn) != PQ_PIPELINE_OFF && PQstatus(p->conn) == CONNECTION_OK) {
        PQpipelineSync(p->conn);
    }
drain:
    /* the rest up to the sync: aborted queries after a failure (each ends
     * in a NULL; more NULLs than queries sent means the sync never comes) */
    for (size_t nulls = 0;
         PQpipelineStatus(p->conn) != PQ_PIPELINE_OFF && PQstatus(p->conn) == CONNECTION_OK;) {
        r = PQgetResult(p->conn);
        if (r != NULL && PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            PQexitPipelineMode(p->conn);
            break;
        }
        if (r == NULL && ++nulls > 2 * n + 8) {
            p->broken = 1;
            break;
        }
        PQclear(r);
    }
    pg_rollback(p);
    if (rc != MLC_OK) {
        for (size_t i = 0; i < n; i++) {
            items[i].seq = 0;
            items[i].duplicate = 0;
        }
    }
    free(dups);
    free(tenants);
    return rc;
}

static enum mlc_rc pg_deliveries_put(struct store *s, struct delivery_in *items, size_t n,
                                     struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    enum mlc_rc rc;

    if (n == 0) {
        return MLC_OK;
    }
    rc = store_check_batch(items, n, err);
    for (int try = 1; rc == MLC_OK; try++) {
        struct mlc_errbuf e = { 0 };
        int again = 0;

        rc = pg_ready(p, err);
        if (rc != MLC_OK) {
            break;
        }
        rc = pg_put_batch(p, items, n, &again, &e);
        if (rc == MLC_OK || !again || try == PG_TRIES) {
            if (rc != MLC_OK) {
                mlc_errf(err, "%s", e.msg);
            }
            break;
        }
        mlc_info("storing %zu deliveries lost a deadlock on PostgreSQL server %s: trying again", n,
                 p->where);
        rc = MLC_OK;
    }
    return rc;
}

static int pg_deliveries_claim(struct store *s, const char *tenant, int max, long long now_ms,
                               long long lease_ms, struct delivery_out *out, struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    char now[24], lease[24], lim[24], what[128];
    const char *vals[5] = { tenant, p->base.node, now, lease, lim };
    PGresult *r;
    int rows;

    if (max <= 0) {
        return 0;
    }
    if (pg_ready(p, err) != MLC_OK) {
        return -1;
    }
    snprintf(now, sizeof(now), "%lld", now_ms);
    snprintf(lease, sizeof(lease), "%lld", lease_ms);
    snprintf(lim, sizeof(lim), "%d", max);
    r = pg_run(p, PG_DELIVERY_CLAIM, 5, vals, NULL, NULL);
    if (!result_ok(r)) {
        snprintf(what, sizeof(what), "claim deliveries of tenant '%s'", tenant);
        pg_fail(p, r, what, err);
        return -1;
    }
    rows = PQntuples(r);
    if (rows > max) {
        MLC_BUG("claim returned %d rows for at most %d", rows, max);
    }
    for (int i = 0; i < rows; i++) {
        struct delivery_out *d = &out[i];

        memset(d, 0, sizeof(*d));
        d->seq = col_int(r, i, 0);
        col_copy(r, i, 1, d->kind, sizeof(d->kind));
        d->ext_id = col_dup(r, i, 2, NULL, 0);
        d->body = col_dup(r, i, 3, &d->body_len, 0);
        d->received_ms = col_int(r, i, 4);
    }
    PQclear(r);
    return rows;
}

static enum mlc_rc pg_deliveries_release(struct store *s, const char *tenant,
                                         struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    const char *vals[2] = { tenant, p->base.node };
    PGresult *r;
    enum mlc_rc rc = pg_ready(p, err);

    if (rc != MLC_OK) {
        return rc;
    }
    r = pg_run(p, PG_DELIVERY_RELEASE, 2, vals, NULL, NULL);
    if (!result_ok(r)) {
        return pg_fail(p, r, "release leases", err);
    }
    PQclear(r);
    return MLC_OK;
}

static enum mlc_rc pg_deliveries_ack(struct store *s, const char *tenant, const long long *seqs,
                                     size_t n, long long now_ms, struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    struct mlc_buf arr = MLC_BUF_INIT;
    char now[24];
    const char *vals[3];
    PGresult *r;
    enum mlc_rc rc;

    if (n == 0) {
        return MLC_OK;
    }
    rc = pg_ready(p, err);
    if (rc != MLC_OK) {
        return rc;
    }
    /* one statement for the lot: an int8[] literal "{1,2,3}" */
    for (size_t i = 0; i < n; i++) {
        if (mlc_buf_addf(&arr, "%c%lld", i ? ',' : '{', seqs[i]) != MLC_OK) {
            MLC_BUG("out of memory");
        }
    }
    if (mlc_buf_adds(&arr, "}") != MLC_OK) {
        MLC_BUG("out of memory");
    }
    snprintf(now, sizeof(now), "%lld", now_ms);
    vals[0] = tenant;
    vals[1] = mlc_buf_str(&arr);
    vals[2] = now;
    r = pg_run(p, PG_DELIVERY_ACK, 3, vals, NULL, NULL);
    mlc_buf_release(&arr);
    if (!result_ok(r)) {
        return pg_fail(p, r, "acknowledge deliveries", err);
    }
    PQclear(r);
    return MLC_OK;
}

static enum mlc_rc pg_deliveries_ack_ranges(struct store *s, const char *tenant,
                                            const struct seq_range *rg, size_t n, long long now_ms,
                                            long long *acked, struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    struct mlc_buf firsts = MLC_BUF_INIT, lasts = MLC_BUF_INIT;
    char now[24];
    const char *vals[4];
    PGresult *r;
    enum mlc_rc rc;

    if (acked != NULL) {
        *acked = 0;
    }
    if (n == 0) {
        return MLC_OK;
    }
    rc = pg_ready(p, err);
    if (rc != MLC_OK) {
        return rc;
    }
    /* one statement for the lot: two int8[] literals, the firsts and the lasts */
    for (size_t i = 0; i < n; i++) {
        if (mlc_buf_addf(&firsts, "%c%lld", i ? ',' : '{', rg[i].first) != MLC_OK ||
            mlc_buf_addf(&lasts, "%c%lld", i ? ',' : '{', rg[i].last) != MLC_OK) {
            MLC_BUG("out of memory");
        }
    }
    if (mlc_buf_adds(&firsts, "}") != MLC_OK || mlc_buf_adds(&lasts, "}") != MLC_OK) {
        MLC_BUG("out of memory");
    }
    snprintf(now, sizeof(now), "%lld", now_ms);
    vals[0] = tenant;
    vals[1] = mlc_buf_str(&firsts);
    vals[2] = mlc_buf_str(&lasts);
    vals[3] = now;
    r = pg_run(p, PG_DELIVERY_ACK_RANGES, 4, vals, NULL, NULL);
    mlc_buf_release(&firsts);
    mlc_buf_release(&lasts);
    if (!result_ok(r)) {
        return pg_fail(p, r, "acknowledge deliveries", err);
    }
    if (acked != NULL) {
        *acked = atoll(PQcmdTuples(r));
    }
    PQclear(r);
    return MLC_OK;
}

static enum mlc_rc pg_command_put(struct store *s, const char *tenant, const char *body,
                                  long long now_ms, long long *id, struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    char now[24];
    const char *vals[3] = { tenant, body, now };
    PGresult *r;
    enum mlc_rc rc = pg_ready(p, err);

    if (rc != MLC_OK) {
        return rc;
    }
    snprintf(now, sizeof(now), "%lld", now_ms);
    r = pg_run(p, PG_COMMAND_PUT, 3, vals, NULL, NULL);
    if (result_sqlstate(r, "23503")) {
        PQclear(r);
        mlc_errf(err,
                 "PostgreSQL server %s: cannot queue a command for tenant '%s': no such tenant",
                 p->where, tenant);
        return MLC_E_NOTFOUND;
    }
    if (!result_ok(r) || PQntuples(r) != 1) {
        return pg_fail(p, r, "queue a command", err);
    }
    *id = col_int(r, 0, 0);
    PQclear(r);
    return MLC_OK;
}

static void read_command(const PGresult *r, int row, struct command_rec *c)
{
    memset(c, 0, sizeof(*c));
    c->id = col_int(r, row, 0);
    col_copy(r, row, 1, c->tenant, sizeof(c->tenant));
    c->body = col_dup(r, row, 2, NULL, 0);
    c->created_ms = col_int(r, row, 3);
    c->answered_ms = col_int(r, row, 4);
    c->answer = col_dup(r, row, 5, NULL, 1);
}

static int pg_command_claim(struct store *s, const char *tenant, int max, long long now_ms,
                            struct command_rec *out, struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    char now[24], lim[24];
    const char *vals[3] = { tenant, now, lim };
    PGresult *r;
    int rows;

    if (max <= 0) {
        return 0;
    }
    if (pg_ready(p, err) != MLC_OK) {
        return -1;
    }
    snprintf(now, sizeof(now), "%lld", now_ms);
    snprintf(lim, sizeof(lim), "%d", max);
    r = pg_run(p, PG_COMMAND_CLAIM, 3, vals, NULL, NULL);
    if (!result_ok(r)) {
        pg_fail(p, r, "claim commands", err);
        return -1;
    }
    rows = PQntuples(r);
    if (rows > max) {
        MLC_BUG("claim returned %d rows for at most %d", rows, max);
    }
    for (int i = 0; i < rows; i++) {
        read_command(r, i, &out[i]);
    }
    PQclear(r);
    return rows;
}

static enum mlc_rc pg_command_get(struct store *s, long long id, struct command_rec *out,
                                  struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    char num[24];
    const char *vals[1] = { num };
    PGresult *r;
    enum mlc_rc rc = pg_ready(p, err);

    if (rc != MLC_OK) {
        return rc;
    }
    snprintf(num, sizeof(num), "%lld", id);
    r = pg_run(p, PG_COMMAND_GET, 1, vals, NULL, NULL);
    if (!result_ok(r)) {
        return pg_fail(p, r, "read a command", err);
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        mlc_errf(err, "no command %lld in the relay store on PostgreSQL server %s", id, p->where);
        return MLC_E_NOTFOUND;
    }
    read_command(r, 0, out);
    PQclear(r);
    return MLC_OK;
}

static enum mlc_rc pg_command_answer(struct store *s, long long id, const char *answer,
                                     long long now_ms, struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    char num[24], now[24];
    const char *vals[3] = { num, now, answer };
    struct command_rec c = { 0 };
    PGresult *r;
    enum mlc_rc rc = pg_ready(p, err);

    if (rc != MLC_OK) {
        return rc;
    }
    snprintf(num, sizeof(num), "%lld", id);
    snprintf(now, sizeof(now), "%lld", now_ms);
    r = pg_run(p, PG_COMMAND_ANSWER, 3, vals, NULL, NULL);
    if (!result_ok(r)) {
        return pg_fail(p, r, "record a command's answer", err);
    }
    if (strcmp(PQcmdTuples(r), "0") != 0) {
        PQclear(r);
        return MLC_OK;
    }
    PQclear(r);
    /* nothing changed: answered already (fine, the first answer stays) or unknown */
    rc = pg_command_get(s, id, &c, err);
    command_rec_release(&c);
    return rc;
}

static int pg_command_tenants(struct store *s, char (*names)[TENANT_NAME_MAX + 1], int max,
                              struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    char lim[24];
    const char *vals[1] = { lim };
    PGresult *r;
    int rows;

    if (max <= 0) {
        return 0;
    }
    if (pg_ready(p, err) != MLC_OK) {
        return -1;
    }
    snprintf(lim, sizeof(lim), "%d", max);
    r = pg_run(p, PG_COMMAND_TENANTS, 1, vals, NULL, NULL);
    if (!result_ok(r)) {
        pg_fail(p, r, "look for queued commands", err);
        return -1;
    }
    rows = PQntuples(r) < max ? PQntuples(r) : max;
    for (int i = 0; i < rows; i++) {
        col_copy(r, i, 0, names[i], TENANT_NAME_MAX + 1);
    }
    PQclear(r);
    return rows;
}

static int pg_wake_fd(struct store *s)
{
    struct pg *p = pg_of(s);

    return PQstatus(p->listen) == CONNECTION_OK ? PQsocket(p->listen) : -1;
}

static void pg_wake_drain(struct store *s,
                          void (*cb)(void *arg, const char *tenant, const char *what), void *arg)
{
    struct pg *p = pg_of(s);
    PGnotify *note;
    int ok = PQstatus(p->listen) == CONNECTION_OK && PQconsumeInput(p->listen);

    /* what arrived before a failure still counts */
    while ((note = PQnotifies(p->listen)) != NULL) {
        char *colon = note->extra ? strchr(note->extra, ':') : NULL;

        if (colon != NULL && colon[1] != '\0' && strcmp(note->relname, PG_WAKE_CHANNEL) == 0) {
            *colon = '\0';
            cb(arg, colon + 1, note->extra);
        }
        PQfreemem(note);
    }
    if (!ok || PQstatus(p->listen) != CONNECTION_OK) {
        char line[512];

        mlc_warn("lost the wake-up connection to PostgreSQL server %s: %s; reconnecting (wake-ups "
                 "sent meanwhile are lost: the relay's periodic claims find their deliveries)",
                 p->where, one_line(PQerrorMessage(p->listen), line, sizeof(line)));
        listen_reset(p);
    }
}

static enum mlc_rc pg_stats(struct store *s, struct store_stats *out, struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    PGresult *r;
    enum mlc_rc rc = pg_ready(p, err);

    memset(out, 0, sizeof(*out));
    if (rc != MLC_OK) {
        return rc;
    }
    r = pg_run(p, PG_STATS, 0, NULL, NULL, NULL);
    if (!result_ok(r) || PQntuples(r) != 1) {
        return pg_fail(p, r, "count deliveries", err);
    }
    out->tenants = col_int(r, 0, 0);
    out->pending = col_int(r, 0, 1);
    out->acked = col_int(r, 0, 2) - out->pending;
    out->commands_pending = col_int(r, 0, 3);
    PQclear(r);
    return MLC_OK;
}

static enum mlc_rc pg_meta_get(struct store *s, const char *name, char *out, size_t n,
                               struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    const char *vals[1] = { name };
    PGresult *r;
    enum mlc_rc rc = pg_ready(p, err);

    if (rc != MLC_OK) {
        return rc;
    }
    r = pg_run(p, PG_META_GET, 1, vals, NULL, NULL);
    if (!result_ok(r)) {
        return pg_fail(p, r, "read a store setting", err);
    }
    rc = PQntuples(r) == 0 ? MLC_E_NOTFOUND : MLC_OK;
    if (rc == MLC_OK) {
        col_copy(r, 0, 0, out, n);
    }
    PQclear(r);
    return rc;
}

static enum mlc_rc pg_meta_put_new(struct store *s, const char *name, const char *value,
                                   struct mlc_errbuf *err)
{
    struct pg *p = pg_of(s);
    const char *vals[2] = { name, value };
    PGresult *r;
    enum mlc_rc rc = pg_ready(p, err);

    if (rc != MLC_OK) {
        return rc;
    }
    r = pg_run(p, PG_META_PUT_NEW, 2, vals, NULL, NULL);
    if (!result_ok(r)) {
        return pg_fail(p, r, "record a store setting", err);
    }
    PQclear(r);
    return MLC_OK;
}

/* The clear rows an older relay wrote stay in the table's pages as dead
 * tuples until the table is rewritten; it is small (one row per tenant). */
static void pg_scrub(struct store *s)
{
    struct pg *p = pg_of(s);
    PGresult *r = PQexec(p->conn, "VACUUM FULL relay_tenant");

    if (!result_ok(r)) {
        char line[512];
        mlc_warn("PostgreSQL server %s: cannot VACUUM FULL relay_tenant (%s): old clear copies of "
                 "tenant secrets stay in its files until the next VACUUM FULL", p->where,
                 one_line(PQresultErrorMessage(r), line, sizeof(line)));
    }
    PQclear(r);
}

static const struct store_ops pg_ops = {
    .name = "postgres",
    .close = pg_close,
    .tenant_add = pg_tenant_add,
    .tenant_update = pg_tenant_update,
    .tenant_get = pg_tenant_get,
    .tenant_list = pg_tenant_list,
    .deliveries_put = pg_deliveries_put,
    .deliveries_claim = pg_deliveries_claim,
    .deliveries_release = pg_deliveries_release,
    .deliveries_ack = pg_deliveries_ack,
    .deliveries_ack_ranges = pg_deliveries_ack_ranges,
    .command_put = pg_command_put,
    .command_claim = pg_command_claim,
    .command_answer = pg_command_answer,
    .command_get = pg_command_get,
    .command_tenants = pg_command_tenants,
    .wake_fd = pg_wake_fd,
    .wake_drain = pg_wake_drain,
    .stats = pg_stats,
    .meta_get = pg_meta_get,
    .meta_put_new = pg_meta_put_new,
    .scrub = pg_scrub,
};
