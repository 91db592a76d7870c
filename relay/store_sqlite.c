/* SPDX-License-Identifier: Apache-2.0
 * store_sqlite: the relay store in one SQLite file, for a single relay node.
 *
 * Durability: WAL with synchronous=FULL, so every commit fsyncs the WAL
 * before the call returns and a webhook's 2xx survives a power loss. A batch
 * of deliveries shares one transaction: one fsync for the whole batch.
 * Leases and acknowledgements commit with synchronous=NORMAL (no fsync of
 * their own; the next FULL commit or checkpoint carries them to the disk):
 * losing one to a power cut only sends a delivery again, which the agent
 * drops by its seq.
 * Other processes (the `mlc-relay tenant|command` CLI) open the same file.
 * Writers wait for each other up to BUSY_MS, and every multi-statement write
 * starts with BEGIN IMMEDIATE, so none fails half-way on a lock upgrade.
 * Leases: claims are single UPDATE statements, and SQLite runs one writer at
 * a time, so two handles (nodes) never lease the same row at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sqlite3.h>
#include "relay/store.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_log.h"

#define BUSY_MS 10000

/* Migrations, numbered by PRAGMA user_version; each runs in one transaction. */
static const char *const sq_migrations[] = {
    /* 1: the first schema */
    "CREATE TABLE relay_tenant(name TEXT PRIMARY KEY, key_hash TEXT NOT NULL,"
    "  hook_secret TEXT NOT NULL, jira_client_secret TEXT NOT NULL DEFAULT '',"
    "  zoho_token TEXT NOT NULL DEFAULT '', created_ms INTEGER NOT NULL,"
    "  rotated_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE relay_delivery(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  tenant TEXT NOT NULL REFERENCES relay_tenant(name), kind TEXT NOT NULL,"
    "  ext_id TEXT NOT NULL, received_ms INTEGER NOT NULL, lease_node TEXT,"
    "  lease_until_ms INTEGER NOT NULL DEFAULT 0, acked_ms INTEGER,"
    /* the body last: SQLite reads the columns before it without its overflow pages */
    "  body BLOB NOT NULL, UNIQUE(tenant, kind, ext_id));"
    /* the claim path: a tenant's unacked rows in seq order; acked rows leave it */
    "CREATE INDEX relay_delivery_pending ON relay_delivery(tenant, seq) WHERE acked_ms IS NULL;"
    "CREATE TABLE relay_command(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  tenant TEXT NOT NULL REFERENCES relay_tenant(name), body TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL, sent_ms INTEGER, answered_ms INTEGER, answer TEXT);"
    "CREATE INDEX relay_command_unsent ON relay_command(tenant, id) WHERE sent_ms IS NULL;",
    /* 2: settings of the store itself (the tenant secrets' key check) */
    "CREATE TABLE relay_meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    /* 3: bodies in a table of their own, written once: a lease or an ack
     * then rewrites a short row among many, not a page holding one body.
     * relay_delivery.body stays, empty. */
    "CREATE TABLE relay_delivery_body(seq INTEGER PRIMARY KEY, body BLOB NOT NULL);"
    "INSERT INTO relay_delivery_body(seq, body) SELECT seq, body FROM relay_delivery"
    "  WHERE length(body) > 0;"
    "UPDATE relay_delivery SET body = x'' WHERE length(body) > 0;",
};
#define SQ_SCHEMA_VERSION ((int)(sizeof(sq_migrations) / sizeof(sq_migrations[0])))

enum sq_stmt {
    SQ_TENANT_ADD,
    SQ_TENANT_UPDATE,
    SQ_TENANT_GET,
    SQ_TENANT_LIST,
    SQ_DELIVERY_PUT,
    SQ_DELIVERY_BODY_PUT,
    SQ_DELIVERY_FIND,
    SQ_DELIVERY_CLAIM,
    SQ_DELIVERY_RELEASE,
    SQ_DELIVERY_ACK,
    SQ_DELIVERY_ACK_RANGE,
    SQ_COMMAND_PUT,
    SQ_COMMAND_CLAIM,
    SQ_COMMAND_ANSWER,
    SQ_COMMAND_GET,
    SQ_COMMAND_TENANTS,
    SQ_STATS,
    SQ_META_GET,
    SQ_META_PUT_NEW,
    SQ__COUNT
};

#define TENANT_COLS \
    "name, key_hash, hook_secret, jira_client_secret, zoho_token, created_ms, rotated_ms"
#define COMMAND_COLS "id, tenant, body, created_ms, answered_ms, answer"

static const char *const sq_sql[SQ__COUNT] = {
    [SQ_TENANT_ADD] = "INSERT INTO relay_tenant(" TENANT_COLS ") VALUES(:name, :key_hash,"
                      " :hook_secret, :jira_client_secret, :zoho_token, :created_ms, :rotated_ms)",
    [SQ_TENANT_UPDATE] = "UPDATE relay_tenant SET key_hash = :key_hash, hook_secret = :hook_secret,"
                         " jira_client_secret = :jira_client_secret, zoho_token = :zoho_token,"
                         " created_ms = :created_ms, rotated_ms = :rotated_ms WHERE name = :name",
    [SQ_TENANT_GET] = "SELECT " TENANT_COLS " FROM relay_tenant WHERE name = :name",
    [SQ_TENANT_LIST] = "SELECT " TENANT_COLS " FROM relay_tenant ORDER BY name",
    [SQ_DELIVERY_PUT] = "INSERT INTO relay_delivery(tenant, kind, ext_id, body, received_ms)"
                        " VALUES(:tenant, :kind, :ext_id, x'', :received_ms)"
                        " ON CONFLICT(tenant, kind, ext_id) DO NOTHING RETURNING seq",
    [SQ_DELIVERY_BODY_PUT] = "INSERT INTO relay_delivery_body(seq, body) VALUES(:seq, :body)",
    [SQ_DELIVERY_FIND] = "SELECT seq FROM relay_delivery"
                         " WHERE tenant = :tenant AND kind = :kind AND ext_id = :ext_id",
    [SQ_DELIVERY_CLAIM] =
        "UPDATE relay_delivery SET lease_node = :node, lease_until_ms = :until"
        " WHERE seq IN (SELECT seq FROM relay_delivery WHERE tenant = :tenant"
        " AND acked_ms IS NULL AND lease_until_ms <= :now AND seq < :below ORDER BY seq LIMIT :max)"
        " RETURNING seq, kind, ext_id, COALESCE((SELECT b.body FROM relay_delivery_body b"
        " WHERE b.seq = relay_delivery.seq), body), received_ms",
    [SQ_DELIVERY_RELEASE] = "UPDATE relay_delivery SET lease_node = NULL, lease_until_ms = 0"
                            " WHERE tenant = :tenant AND acked_ms IS NULL AND lease_node = :node",
    [SQ_DELIVERY_ACK] =
        "UPDATE relay_delivery SET acked_ms = :now, lease_node = NULL,"
        " lease_until_ms = 0 WHERE seq = :seq AND tenant = :tenant AND acked_ms IS NULL",
    [SQ_DELIVERY_ACK_RANGE] =
        "UPDATE relay_delivery SET acked_ms = :now, lease_node = NULL, lease_until_ms = 0"
        " WHERE seq BETWEEN :first AND :last AND tenant = :tenant AND acked_ms IS NULL",
    [SQ_COMMAND_PUT] =
        "INSERT INTO relay_command(tenant, body, created_ms) VALUES(:tenant, :body, :now)"
        " RETURNING id",
    [SQ_COMMAND_CLAIM] =
        "UPDATE relay_command SET sent_ms = :now WHERE id IN (SELECT id FROM relay_command"
        " WHERE tenant = :tenant AND sent_ms IS NULL ORDER BY id LIMIT :max)"
        " RETURNING " COMMAND_COLS,
    /* the first answer stays (an agent may repeat its STATUS after a reconnect) */
    [SQ_COMMAND_ANSWER] = "UPDATE relay_command SET answered_ms = :now, answer = :answer"
                          " WHERE id = :id AND answered_ms IS NULL RETURNING id",
    [SQ_COMMAND_GET] = "SELECT " COMMAND_COLS " FROM relay_command WHERE id = :id",
    /* reads only relay_command_unsent, which holds just the unsent commands */
    [SQ_COMMAND_TENANTS] = "SELECT DISTINCT tenant FROM relay_command WHERE sent_ms IS NULL"
                           " ORDER BY tenant LIMIT :max",
    [SQ_STATS] = "SELECT (SELECT count(*) FROM relay_tenant),"
                 " (SELECT count(*) FROM relay_delivery WHERE acked_ms IS NULL),"
                 " (SELECT count(*) FROM relay_delivery)," /* acked = all - pending */
                 " (SELECT count(*) FROM relay_command WHERE answered_ms IS NULL)",
    [SQ_META_GET] = "SELECT value FROM relay_meta WHERE name = :name",
    [SQ_META_PUT_NEW] = "INSERT INTO relay_meta(name, value) VALUES(:name, :value)"
                        " ON CONFLICT(name) DO NOTHING",
};

struct sq {
    struct store base; /* first: a struct store * is a struct sq * */
    sqlite3 *db;
    int wal_fd;        /* the WAL, for sync()'s fdatasync; -1 = none */
    sqlite3 *ckpt_db;  /* sync()'s own connection, for checkpoints */
    long long synced;  /* sync() calls, for spacing checkpoints */
    char *path;
    sqlite3_stmt *st[SQ__COUNT];
};

static const struct store_ops sq_ops;

static struct sq *sq_of(struct store *s)
{
    return (struct sq *)s;
}

/* Records what failed, where, and a hint; returns the rc for it. */
static enum mlc_rc sq_fail(struct sq *q, const char *what, struct mlc_errbuf *err)
{
    int code = sqlite3_extended_errcode(q->db);
    const char *hint = "";

    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        hint = " (another process kept the database locked for more than 10 s; try again)";
        break;
    case SQLITE_FULL:
        hint = " (the disk is full)";
        break;
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_PERM:
        hint = " (check that the file and its directory are writable by the relay)";
        break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        hint = " (the file is damaged or not a relay store: restore it from a backup)";
        break;
    default:
        break;
    }
    mlc_errf(err, "relay store '%s': cannot %s: %s%s", q->path, what, sqlite3_errmsg(q->db), hint);
    return MLC_E_IO;
}

static enum mlc_rc sq_exec(struct sq *q, const char *sql, const char *what, struct mlc_errbuf *err)
{
    if (sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        return sq_fail(q, what, err);
    }
    return MLC_OK;
}

/* Around a lease or acknowledgement write: synchronous=NORMAL for it
 * (relaxed = 1), FULL again after (0). Outside transactions only; a failed
 * pragma leaves FULL, which is only slower. */
static void sq_relaxed(struct sq *q, int relaxed)
{
    sqlite3_exec(q->db, relaxed ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL", NULL,
                 NULL, NULL);
}

static void sq_rollback(struct sq *q)
{
    if (!sqlite3_get_autocommit(q->db)) {
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    }
}

static sqlite3_stmt *sq_stmt(struct sq *q, enum sq_stmt which)
{
    if (q->st[which] == NULL) {
        if (sqlite3_prepare_v3(q->db, sq_sql[which], -1, SQLITE_PREPARE_PERSISTENT, &q->st[which],
                               NULL) != SQLITE_OK) {
            MLC_BUG("cannot prepare relay store statement %d: %s", which, sqlite3_errmsg(q->db));
        }
    }
    sqlite3_reset(q->st[which]);
    sqlite3_clear_bindings(q->st[which]);
    return q->st[which];
}

static int sq_param(sqlite3_stmt *st, const char *name)
{
    int i = sqlite3_bind_parameter_index(st, name);

    if (i == 0) {
        MLC_BUG("relay store statement has no parameter %s", name);
    }
    return i;
}

static void bind_text(sqlite3_stmt *st, const char *name, const char *v)
{
    if (v == NULL) {
        sqlite3_bind_null(st, sq_param(st, name));
    } else {
        sqlite3_bind_text(st, sq_param(st, name), v, -1, SQLITE_TRANSIENT);
    }
}

/* A fixed-size field that might lack its terminator. */
static void bind_field(sqlite3_stmt *st, const char *name, const char *v, size_t size)
{
    sqlite3_bind_text(st, sq_param(st, name), v, (int)strnlen(v, size), SQLITE_TRANSIENT);
}

static void bind_int(sqlite3_stmt *st, const char *name, long long v)
{
    sqlite3_bind_int64(st, sq_param(st, name), v);
}

static void col_copy(sqlite3_stmt *st, int col, char *dst, size_t n)
{
    const unsigned char *v = sqlite3_column_text(st, col);

    snprintf(dst, n, "%s", v ? (const char *)v : "");
}

/* A heap, NUL-terminated copy of a column (NULL stays NULL when keep_null). */
static char *col_dup(sqlite3_stmt *st, int col, size_t *len, int keep_null)
{
    const void *v;
    size_t n;
    char *p;

    if (keep_null && sqlite3_column_type(st, col) == SQLITE_NULL) {
        return NULL;
    }
    v = sqlite3_column_blob(st, col);
    n = (size_t)sqlite3_column_bytes(st, col);
    p = mlc_xmalloc(n + 1);
    if (n > 0) {
        memcpy(p, v, n);
    }
    p[n] = '\0';
    if (len != NULL) {
        *len = n;
    }
    return p;
}

/* The database holds tenants and webhook bodies: 0600 whatever the umask.
 * SQLite gives its -wal and -shm files the database file's mode, so creating
 * the database file ourselves is enough for new stores; an older relay's
 * files (0644 under umask 022) are tightened. */
static enum mlc_rc private_files(const char *path, struct mlc_errbuf *err)
{
    static const char *const suffix[] = { "", "-wal", "-shm", "-journal" };
    struct stat sb;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);

    if (fd >= 0) {
        char dir[4096];
        struct stat ds;
        snprintf(dir, sizeof(dir), "%s", path);
        /* a CLI run as root creates it for the service user that owns the directory */
        if (fchmod(fd, 0600) != 0 ||
            (geteuid() == 0 && stat(dirname(dir), &ds) == 0 && ds.st_uid != 0 &&
             fchown(fd, ds.st_uid, ds.st_gid) != 0)) {
            mlc_warn("relay store '%s': cannot set its owner or mode: %s", path, strerror(errno));
        }
        close(fd);
        return MLC_OK;
    }
    if (errno != EEXIST) {
        mlc_errf(err, "cannot create relay store '%s': %s (check that the directory exists and is "
                 "writable by the relay)", path, strerror(errno));
        return MLC_E_IO;
    }
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s%s", path, suffix[i]);
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 077) != 0) {
            if (chmod(p, sb.st_mode & 0700) == 0) {
                mlc_info("relay store: '%s' was readable by others; now mode %03o", p,
                         (unsigned)(sb.st_mode & 0700));
            } else {
                mlc_warn("relay store: '%s' is readable by others and chmod failed: %s; run chmod "
                         "600 '%s'", p, strerror(errno), p);
            }
        }
    }
    return MLC_OK;
}

enum mlc_rc store_sqlite_open(struct store **out, const char *path, const char *node,
                              struct mlc_errbuf *err)
{
    struct sq *q;
    sqlite3_stmt *st = NULL;
    int version = 0;
    enum mlc_rc rc;

    *out = NULL;
    if (node == NULL || node[0] == '\0' || strlen(node) >= sizeof(q->base.node)) {
        mlc_errf(err, "relay node id '%s' must be 1 to %zu characters", node ? node : "",
                 sizeof(q->base.node) - 1);
        return MLC_E_INVAL;
    }
    if (path == NULL || path[0] == '\0') {
        mlc_errf(err, "no SQLite file given for the relay store (use 'sqlite:/path/relay.db')");
        return MLC_E_INVAL;
    }
    q = mlc_xcalloc(1, sizeof(*q));
    q->wal_fd = -1;
    q->base.ops = &sq_ops;
    snprintf(q->base.node, sizeof(q->base.node), "%s", node);
    q->path = mlc_xstrdup(path);
    if ((rc = private_files(path, err)) != MLC_OK) {
        goto fail;
    }
    if (sqlite3_open_v2(path, &q->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        mlc_errf(err,
                 "cannot open relay store '%s': %s (check that the directory exists and is "
                 "writable by the relay)",
                 path, q->db ? sqlite3_errmsg(q->db) : "out of memory");
        rc = MLC_E_IO;
        goto fail;
    }
    sqlite3_busy_timeout(q->db, BUSY_MS);
    /* secure_delete: a rewritten row's old bytes (a secret before sealing) are zeroed */
    rc = sq_exec(q, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                    " PRAGMA secure_delete=ON;", "set WAL mode", err);
    if (rc != MLC_OK) {
        goto fail;
    }
    /* read the version inside the write transaction: two processes opening a
     * new file at once must not both run the same migration */
    rc = sq_exec(q, "BEGIN IMMEDIATE", "start the schema check", err);
    if (rc != MLC_OK) {
        goto fail;
    }
    if (sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        rc = sq_fail(q, "read the schema version", err);
        sqlite3_finalize(st);
        goto fail;
    }
    version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > SQ_SCHEMA_VERSION) {
        mlc_errf(err,
                 "relay store '%s' has schema version %d, newer than this relay knows (%d): "
                 "upgrade the relay",
                 path, version, SQ_SCHEMA_VERSION);
        rc = MLC_E_INVAL;
        goto fail;
    }
    for (int v = version; v < SQ_SCHEMA_VERSION; v++) {
        char pragma[64];

        snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v + 1);
        if ((rc = sq_exec(q, sq_migrations[v], "migrate the schema", err)) != MLC_OK ||
            (rc = sq_exec(q, pragma, "record the schema version", err)) != MLC_OK) {
            goto fail;
        }
        mlc_info("relay store '%s' migrated to schema version %d", path, v + 1);
    }
    rc = sq_exec(q, "COMMIT", "commit the schema", err);
    if (rc != MLC_OK) {
        goto fail;
    }
    *out = &q->base;
    return MLC_OK;
fail:
    if (q->db != NULL) {
        sq_rollback(q);
    }
    q->base.ops->close(&q->base);
    return rc;
}

static void sq_close(struct store *s)
{
    struct sq *q = sq_of(s);

    if (q == NULL) {
        return;
    }
    for (int i = 0; i < SQ__COUNT; i++) {
        sqlite3_finalize(q->st[i]);
    }
    sqlite3_close(q->ckpt_db);
    sqlite3_close(q->db);
    if (q->wal_fd >= 0) {
        close(q->wal_fd);
    }
    store_wipe(&q->base);
    free(q->path);
    free(q);
}

/* Binds t with its secrets sealed; returns the sealed copies to free. */
static void bind_tenant(struct sq *q, sqlite3_stmt *st, const struct tenant_rec *t, char *sealed[3])
{
    char name[TENANT_NAME_MAX + 1];

    snprintf(name, sizeof(name), "%.*s", TENANT_NAME_MAX, t->name);
    sealed[0] = store_seal(&q->base, name, "hook_secret", t->hook_secret);
    sealed[1] = store_seal(&q->base, name, "jira_client_secret", t->jira_client_secret);
    sealed[2] = store_seal(&q->base, name, "zoho_token", t->zoho_token);
    bind_field(st, ":name", t->name, sizeof(t->name));
    bind_field(st, ":key_hash", t->key_hash, sizeof(t->key_hash));
    bind_text(st, ":hook_secret", sealed[0]);
    bind_text(st, ":jira_client_secret", sealed[1]);
    bind_text(st, ":zoho_token", sealed[2]);
    bind_int(st, ":created_ms", t->created_ms);
    bind_int(st, ":rotated_ms", t->rotated_ms);
}

static void free_sealed(char *sealed[3])
{
    for (int i = 0; i < 3; i++) {
        free(sealed[i]);
    }
}

static enum mlc_rc read_tenant(struct sq *q, sqlite3_stmt *st, struct tenant_rec *t,
                               struct mlc_errbuf *err)
{
    enum mlc_rc rc;

    memset(t, 0, sizeof(*t));
    col_copy(st, 0, t->name, sizeof(t->name));
    col_copy(st, 1, t->key_hash, sizeof(t->key_hash));
    t->created_ms = sqlite3_column_int64(st, 5);
    t->rotated_ms = sqlite3_column_int64(st, 6);
    if ((rc = store_unseal(&q->base, t->name, "hook_secret", (const char *)sqlite3_column_text(st, 2),
                           t->hook_secret, sizeof(t->hook_secret), err)) != MLC_OK ||
        (rc = store_unseal(&q->base, t->name, "jira_client_secret",
                           (const char *)sqlite3_column_text(st, 3), t->jira_client_secret,
                           sizeof(t->jira_client_secret), err)) != MLC_OK ||
        (rc = store_unseal(&q->base, t->name, "zoho_token", (const char *)sqlite3_column_text(st, 4),
                           t->zoho_token, sizeof(t->zoho_token), err)) != MLC_OK) {
        memset(t, 0, sizeof(*t));
    }
    return rc;
}

static enum mlc_rc sq_tenant_add(struct store *s, const struct tenant_rec *t,
                                 struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st;
    char *sealed[3];
    int rc;

    if (!tenant_name_ok(t->name)) {
        mlc_errf(err, "tenant name '%.*s' is not 1 to %d of A-Z a-z 0-9 _ -", TENANT_NAME_MAX,
                 t->name, TENANT_NAME_MAX);
        return MLC_E_INVAL;
    }
    st = sq_stmt(q, SQ_TENANT_ADD);
    bind_tenant(q, st, t, sealed);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    free_sealed(sealed);
    if (rc == SQLITE_DONE) {
        return MLC_OK;
    }
    if (sqlite3_extended_errcode(q->db) == SQLITE_CONSTRAINT_PRIMARYKEY ||
        sqlite3_extended_errcode(q->db) == SQLITE_CONSTRAINT_UNIQUE) {
        mlc_errf(err,
                 "tenant '%s' already exists in relay store '%s' (rotate or update it instead)",
                 t->name, q->path);
        return MLC_E_INVAL;
    }
    return sq_fail(q, "add a tenant", err);
}

static enum mlc_rc sq_tenant_update(struct store *s, const struct tenant_rec *t,
                                    struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st = sq_stmt(q, SQ_TENANT_UPDATE);
    char *sealed[3];
    int rc;

    bind_tenant(q, st, t, sealed);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    free_sealed(sealed);
    if (rc != SQLITE_DONE) {
        return sq_fail(q, "update a tenant", err);
    }
    if (sqlite3_changes(q->db) == 0) {
        mlc_errf(err, "no tenant '%.*s' in relay store '%s'", TENANT_NAME_MAX, t->name, q->path);
        return MLC_E_NOTFOUND;
    }
    return MLC_OK;
}

static enum mlc_rc sq_tenant_get(struct store *s, const char *name, struct tenant_rec *out,
                                 struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st = sq_stmt(q, SQ_TENANT_GET);
    int rc;

    bind_text(st, ":name", name);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        enum mlc_rc r2 = read_tenant(q, st, out, err);
        sqlite3_reset(st);
        return r2;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        return sq_fail(q, "read a tenant", err);
    }
    mlc_errf(err, "no tenant '%s' in relay store '%s'", name, q->path);
    return MLC_E_NOTFOUND;
}

static enum mlc_rc sq_tenant_list(struct store *s, struct tenant_rec **out, size_t *n,
                                  struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st = sq_stmt(q, SQ_TENANT_LIST);
    struct tenant_rec *v = NULL;
    size_t len = 0, cap = 0;
    int rc;

    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            v = mlc_xrealloc(v, cap * sizeof(*v));
        }
        if (read_tenant(q, st, &v[len++], err) != MLC_OK) {
            sqlite3_reset(st);
            memset(v, 0, len * sizeof(*v));
            free(v);
            return MLC_E_AUTH;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        free(v);
        return sq_fail(q, "list tenants", err);
    }
    *out = v;
    *n = len;
    return MLC_OK;
}

static enum mlc_rc sq_put_one(struct sq *q, struct delivery_in *d, struct mlc_errbuf *err)
{
    sqlite3_stmt *st = sq_stmt(q, SQ_DELIVERY_PUT);
    int rc;

    bind_text(st, ":tenant", d->tenant);
    bind_text(st, ":kind", d->kind);
    bind_text(st, ":ext_id", d->ext_id);
    bind_int(st, ":received_ms", d->received_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        d->seq = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        st = sq_stmt(q, SQ_DELIVERY_BODY_PUT);
        bind_int(st, ":seq", d->seq);
        sqlite3_bind_blob(st, sq_param(st, ":body"), d->body_len ? d->body : "", (int)d->body_len,
                          SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? MLC_OK : sq_fail(q, "store a delivery's body", err);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        if (sqlite3_extended_errcode(q->db) == SQLITE_CONSTRAINT_FOREIGNKEY) {
            mlc_errf(err,
                     "relay store '%s': cannot store a delivery for tenant '%s': no such tenant",
                     q->path, d->tenant);
            return MLC_E_NOTFOUND;
        }
        return sq_fail(q, "store a delivery", err);
    }
    /* already stored: report the first one's seq */
    st = sq_stmt(q, SQ_DELIVERY_FIND);
    bind_text(st, ":tenant", d->tenant);
    bind_text(st, ":kind", d->kind);
    bind_text(st, ":ext_id", d->ext_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        d->seq = sqlite3_column_int64(st, 0);
        d->duplicate = 1;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) {
        return sq_fail(q, "look up a repeated delivery", err);
    }
    return MLC_OK;
}

static enum mlc_rc put_batch(struct sq *q, struct delivery_in *items, size_t n, int lazy,
                             struct mlc_errbuf *err)
{
    enum mlc_rc rc;

    if (n == 0) {
        return MLC_OK;
    }
    rc = store_check_batch(items, n, err);
    if (rc != MLC_OK) {
        return rc;
    }
    if (lazy) {
        sq_relaxed(q, 1);
    }
    rc = sq_exec(q, "BEGIN IMMEDIATE", "start storing deliveries", err);
    for (size_t i = 0; rc == MLC_OK && i < n; i++) {
        rc = sq_put_one(q, &items[i], err);
    }
    if (rc == MLC_OK) {
        rc = sq_exec(q, "COMMIT", "commit deliveries", err);
    }
    if (rc != MLC_OK) {
        sq_rollback(q);
        for (size_t i = 0; i < n; i++) {
            items[i].seq = 0;
            items[i].duplicate = 0;
        }
    }
    if (lazy) {
        sq_relaxed(q, 0);
    }
    return rc;
}

static enum mlc_rc sq_deliveries_put(struct store *s, struct delivery_in *items, size_t n,
                                     struct mlc_errbuf *err)
{
    return put_batch(sq_of(s), items, n, 0, err);
}

/* The commit writes the WAL without syncing it (synchronous=NORMAL); an
 * fdatasync of the WAL then makes it durable, as FULL would have at commit.
 * WAL frames are appended in order and recovery keeps the longest valid
 * prefix, so a sync covers every commit before it. */
static enum mlc_rc sq_deliveries_put_lazy(struct store *s, struct delivery_in *items, size_t n,
                                          struct mlc_errbuf *err)
{
    return put_batch(sq_of(s), items, n, 1, err);
}

/* Lazy puts: the WAL file stays open here for fdatasync(); checkpoints
 * (which copy the WAL into the database and sync both) move to sync()'s
 * thread and connection, so the loop neither syncs nor copies. The loop's
 * own checkpoints start only past WAL_SAFETY_PAGES, in case that thread
 * falls behind. */
#define WAL_SAFETY_PAGES 16384
#define CKPT_EVERY 8 /* syncs */

static enum mlc_rc sq_sync_start(struct store *s, struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    char pragma[64];

    /* the WAL exists while this connection is open (the last one to close
     * removes it) */
    q->wal_fd = open(sqlite3_filename_wal(sqlite3_db_filename(q->db, "main")), O_RDONLY | O_CLOEXEC);
    if (q->wal_fd < 0) {
        mlc_errf(err, "relay store '%s': cannot open its WAL: %s", q->path, strerror(errno));
        return MLC_E_IO;
    }
    if (sqlite3_open_v2(q->path, &q->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        mlc_errf(err, "relay store '%s': cannot open a second connection: %s", q->path,
                 q->ckpt_db ? sqlite3_errmsg(q->ckpt_db) : "out of memory");
        sqlite3_close(q->ckpt_db);
        q->ckpt_db = NULL;
        close(q->wal_fd);
        q->wal_fd = -1;
        return MLC_E_IO;
    }
    sqlite3_busy_timeout(q->ckpt_db, BUSY_MS);
    sqlite3_exec(q->ckpt_db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    snprintf(pragma, sizeof(pragma), "PRAGMA wal_autocheckpoint=%d", WAL_SAFETY_PAGES);
    sqlite3_exec(q->db, pragma, NULL, NULL, NULL);
    return MLC_OK;
}

static int sq_sync(struct store *s)
{
    struct sq *q = sq_of(s);

    if (fdatasync(q->wal_fd) != 0) {
        return errno;
    }
    /* a passive checkpoint waits for nobody; a later write transaction of
     * the loop starts the WAL over once all of it is in the database */
    if (++q->synced % CKPT_EVERY == 0) {
        sqlite3_wal_checkpoint_v2(q->ckpt_db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    }
    return 0;
}

static int by_seq(const void *a, const void *b)
{
    long long x = ((const struct delivery_out *)a)->seq, y = ((const struct delivery_out *)b)->seq;

    return (x > y) - (x < y);
}

static int sq_deliveries_claim(struct store *s, const char *tenant, int max, long long now_ms,
                               long long lease_ms, struct delivery_out *out, struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st;
    int n = 0, rc;

    if (max <= 0) {
        return 0;
    }
    sq_relaxed(q, 1);
    st = sq_stmt(q, SQ_DELIVERY_CLAIM);
    bind_text(st, ":node", q->base.node);
    bind_int(st, ":until", now_ms + lease_ms);
    bind_text(st, ":tenant", tenant);
    bind_int(st, ":now", now_ms);
    bind_int(st, ":max", max);
    bind_int(st, ":below", q->base.claim_below > 0 ? q->base.claim_below : INT64_MAX);
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct delivery_out *d = &out[n++];

        memset(d, 0, sizeof(*d));
        d->seq = sqlite3_column_int64(st, 0);
        col_copy(st, 1, d->kind, sizeof(d->kind));
        d->ext_id = col_dup(st, 2, NULL, 0);
        d->body = col_dup(st, 3, &d->body_len, 0);
        d->received_ms = sqlite3_column_int64(st, 4);
    }
    if (n == max) {
        rc = sqlite3_step(st); /* the LIMIT makes this SQLITE_DONE */
    }
    sqlite3_reset(st);
    sq_relaxed(q, 0);
    if (rc != SQLITE_DONE) {
        char what[128];

        delivery_out_release(out, (size_t)n);
        snprintf(what, sizeof(what), "claim deliveries of tenant '%s'", tenant);
        sq_fail(q, what, err);
        return -1;
    }
    /* RETURNING comes in no promised order */
    qsort(out, (size_t)n, sizeof(*out), by_seq);
    return n;
}

static enum mlc_rc sq_deliveries_release(struct store *s, const char *tenant,
                                         struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st = sq_stmt(q, SQ_DELIVERY_RELEASE);
    int rc;

    bind_text(st, ":tenant", tenant);
    bind_text(st, ":node", q->base.node);
    sq_relaxed(q, 1);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sq_relaxed(q, 0);
    if (rc != SQLITE_DONE) {
        return sq_fail(q, "release leases", err);
    }
    return MLC_OK;
}

static enum mlc_rc sq_deliveries_ack(struct store *s, const char *tenant, const long long *seqs,
                                     size_t n, long long now_ms, struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    enum mlc_rc rc;

    if (n == 0) {
        return MLC_OK;
    }
    sq_relaxed(q, 1);
    rc = sq_exec(q, "BEGIN IMMEDIATE", "start acknowledging deliveries", err);
    for (size_t i = 0; rc == MLC_OK && i < n; i++) {
        sqlite3_stmt *st = sq_stmt(q, SQ_DELIVERY_ACK);

        bind_int(st, ":now", now_ms);
        bind_int(st, ":seq", seqs[i]);
        bind_text(st, ":tenant", tenant);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = sq_fail(q, "acknowledge a delivery", err);
        }
        sqlite3_reset(st);
    }
    if (rc == MLC_OK) {
        rc = sq_exec(q, "COMMIT", "commit acknowledgements", err);
    }
    if (rc != MLC_OK) {
        sq_rollback(q);
    }
    sq_relaxed(q, 0);
    return rc;
}

static enum mlc_rc sq_deliveries_ack_ranges(struct store *s, const char *tenant,
                                            const struct seq_range *r, size_t n, long long now_ms,
                                            long long *acked, struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    long long changed = 0;
    enum mlc_rc rc;

    if (acked != NULL) {
        *acked = 0;
    }
    if (n == 0) {
        return MLC_OK;
    }
    sq_relaxed(q, 1);
    rc = sq_exec(q, "BEGIN IMMEDIATE", "start acknowledging deliveries", err);
    for (size_t i = 0; rc == MLC_OK && i < n; i++) {
        sqlite3_stmt *st = sq_stmt(q, SQ_DELIVERY_ACK_RANGE);

        bind_int(st, ":now", now_ms);
        bind_int(st, ":first", r[i].first);
        bind_int(st, ":last", r[i].last);
        bind_text(st, ":tenant", tenant);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = sq_fail(q, "acknowledge deliveries", err);
        } else {
            changed += sqlite3_changes(q->db);
        }
        sqlite3_reset(st);
    }
    if (rc == MLC_OK) {
        rc = sq_exec(q, "COMMIT", "commit acknowledgements", err);
    }
    if (rc != MLC_OK) {
        sq_rollback(q);
    } else if (acked != NULL) {
        *acked = changed;
    }
    sq_relaxed(q, 0);
    return rc;
}

static enum mlc_rc sq_command_put(struct store *s, const char *tenant, const char *body,
                                  long long now_ms, long long *id, struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st = sq_stmt(q, SQ_COMMAND_PUT);
    int rc;

    bind_text(st, ":tenant", tenant);
    bind_text(st, ":body", body);
    bind_int(st, ":now", now_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st);
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        return MLC_OK;
    }
    if (sqlite3_extended_errcode(q->db) == SQLITE_CONSTRAINT_FOREIGNKEY) {
        mlc_errf(err, "relay store '%s': cannot queue a command for tenant '%s': no such tenant",
                 q->path, tenant);
        return MLC_E_NOTFOUND;
    }
    return sq_fail(q, "queue a command", err);
}

static void read_command(sqlite3_stmt *st, struct command_rec *c)
{
    memset(c, 0, sizeof(*c));
    c->id = sqlite3_column_int64(st, 0);
    col_copy(st, 1, c->tenant, sizeof(c->tenant));
    c->body = col_dup(st, 2, NULL, 0);
    c->created_ms = sqlite3_column_int64(st, 3);
    c->answered_ms = sqlite3_column_int64(st, 4); /* NULL reads as 0 */
    c->answer = col_dup(st, 5, NULL, 1);
}

static void command_recs_release(struct command_rec *c, int n)
{
    for (int i = 0; i < n; i++) {
        command_rec_release(&c[i]);
    }
}

static int by_id(const void *a, const void *b)
{
    long long x = ((const struct command_rec *)a)->id, y = ((const struct command_rec *)b)->id;

    return (x > y) - (x < y);
}

static int sq_command_claim(struct store *s, const char *tenant, int max, long long now_ms,
                            struct command_rec *out, struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st;
    int n = 0, rc;

    if (max <= 0) {
        return 0;
    }
    st = sq_stmt(q, SQ_COMMAND_CLAIM);
    bind_text(st, ":tenant", tenant);
    bind_int(st, ":now", now_ms);
    bind_int(st, ":max", max);
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        read_command(st, &out[n++]);
    }
    if (n == max) {
        rc = sqlite3_step(st);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        command_recs_release(out, n);
        sq_fail(q, "claim commands", err);
        return -1;
    }
    qsort(out, (size_t)n, sizeof(*out), by_id);
    return n;
}

static enum mlc_rc sq_command_answer(struct store *s, long long id, const char *answer,
                                     long long now_ms, struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st = sq_stmt(q, SQ_COMMAND_ANSWER);
    int rc;

    bind_int(st, ":id", id);
    bind_text(st, ":answer", answer);
    bind_int(st, ":now", now_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? MLC_OK : sq_fail(q, "record a command's answer", err);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        return sq_fail(q, "record a command's answer", err);
    }
    /* nothing changed: answered already (fine, the first answer stays) or unknown */
    st = sq_stmt(q, SQ_COMMAND_GET);
    bind_int(st, ":id", id);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW) {
        return MLC_OK;
    }
    if (rc != SQLITE_DONE) {
        return sq_fail(q, "look up a command", err);
    }
    mlc_errf(err, "no command %lld in relay store '%s'", id, q->path);
    return MLC_E_NOTFOUND;
}

static enum mlc_rc sq_command_get(struct store *s, long long id, struct command_rec *out,
                                  struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st = sq_stmt(q, SQ_COMMAND_GET);
    int rc;

    bind_int(st, ":id", id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        read_command(st, out);
        sqlite3_reset(st);
        return MLC_OK;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        return sq_fail(q, "read a command", err);
    }
    mlc_errf(err, "no command %lld in relay store '%s'", id, q->path);
    return MLC_E_NOTFOUND;
}

static int sq_command_tenants(struct store *s, char (*names)[TENANT_NAME_MAX + 1], int max,
                              struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st;
    int n = 0, rc = SQLITE_DONE;

    if (max <= 0) {
        return 0;
    }
    st = sq_stmt(q, SQ_COMMAND_TENANTS);
    bind_int(st, ":max", max);
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        col_copy(st, 0, names[n++], TENANT_NAME_MAX + 1);
    }
    if (n == max) {
        rc = sqlite3_step(st);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        sq_fail(q, "look for queued commands", err);
        return -1;
    }
    return n;
}

/* One node: nothing to wake across processes (the CLI's commands are found
 * by command_tenants()). */
static int sq_wake_fd(struct store *s)
{
    (void)s;
    return -1;
}

static void sq_wake_drain(struct store *s,
                          void (*cb)(void *arg, const char *tenant, const char *what), void *arg)
{
    (void)s;
    (void)cb;
    (void)arg;
}

static enum mlc_rc sq_stats(struct store *s, struct store_stats *out, struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st = sq_stmt(q, SQ_STATS);
    int rc = sqlite3_step(st);

    memset(out, 0, sizeof(*out));
    if (rc == SQLITE_ROW) {
        out->tenants = sqlite3_column_int64(st, 0);
        out->pending = sqlite3_column_int64(st, 1);
        out->acked = sqlite3_column_int64(st, 2) - out->pending;
        out->commands_pending = sqlite3_column_int64(st, 3);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) {
        return sq_fail(q, "count deliveries", err);
    }
    return MLC_OK;
}

static enum mlc_rc sq_meta_get(struct store *s, const char *name, char *out, size_t n,
                               struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st = sq_stmt(q, SQ_META_GET);
    int rc;

    bind_text(st, ":name", name);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        col_copy(st, 0, out, n);
        sqlite3_reset(st);
        return MLC_OK;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        return sq_fail(q, "read a store setting", err);
    }
    return MLC_E_NOTFOUND;
}

static enum mlc_rc sq_meta_put_new(struct store *s, const char *name, const char *value,
                                   struct mlc_errbuf *err)
{
    struct sq *q = sq_of(s);
    sqlite3_stmt *st = sq_stmt(q, SQ_META_PUT_NEW);
    int rc;

    bind_text(st, ":name", name);
    bind_text(st, ":value", value);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? MLC_OK : sq_fail(q, "record a store setting", err);
}

/* Rows rewritten with secure_delete leave no old copy in the database's
 * pages; the WAL still holds the old frames until a checkpoint, and keeps
 * their bytes after it unless truncated. */
static void sq_scrub(struct store *s)
{
    struct sq *q = sq_of(s);
    int log = 0, ckpt = 0;

    if (sqlite3_wal_checkpoint_v2(q->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log, &ckpt) != SQLITE_OK) {
        mlc_warn("relay store '%s': cannot checkpoint the WAL (%s); old clear copies of tenant "
                 "secrets stay in '%s-wal' until the next checkpoint", q->path, sqlite3_errmsg(q->db),
                 q->path);
    }
}

static const struct store_ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .tenant_add = sq_tenant_add,
    .tenant_update = sq_tenant_update,
    .tenant_get = sq_tenant_get,
    .tenant_list = sq_tenant_list,
    .deliveries_put = sq_deliveries_put,
    .deliveries_put_lazy = sq_deliveries_put_lazy,
    .sync_start = sq_sync_start,
    .sync = sq_sync,
    .deliveries_claim = sq_deliveries_claim,
    .deliveries_release = sq_deliveries_release,
    .deliveries_ack = sq_deliveries_ack,
    .deliveries_ack_ranges = sq_deliveries_ack_ranges,
    .command_put = sq_command_put,
    .command_claim = sq_command_claim,
    .command_answer = sq_command_answer,
    .command_get = sq_command_get,
    .command_tenants = sq_command_tenants,
    .wake_fd = sq_wake_fd,
    .wake_drain = sq_wake_drain,
    .stats = sq_stats,
    .meta_get = sq_meta_get,
    .meta_put_new = sq_meta_put_new,
    .scrub = sq_scrub,
};
