/* SPDX-License-Identifier: Apache-2.0
 * store: picks the back end from the spec string and frees what the back
 * ends hand out. The back ends are store_sqlite.c and store_pg.c.
 */
#include <stdlib.h>
#include <string.h>
#include "relay/store.h"

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n >= k && strcmp(s + n - k, suffix) == 0;
}

enum mlc_rc store_open(struct store **out, const char *spec, const char *node,
                       struct mlc_errbuf *err)
{
    *out = NULL;
    if (spec == NULL || spec[0] == '\0') {
        mlc_errf(err, "no relay store given: set it to 'sqlite:/path/relay.db' or a PostgreSQL "
                      "conninfo such as 'postgresql://user@host/db'");
        return MLC_E_INVAL;
    }
    if (has_prefix(spec, "sqlite:")) {
        const char *path = spec + strlen("sqlite:");

        /* sqlite:///abs/path.db is the URL spelling of sqlite:/abs/path.db */
        if (has_prefix(path, "//")) {
            path += 2;
        }
        return store_sqlite_open(out, path, node, err);
    }
    if (has_prefix(spec, "postgres://") || has_prefix(spec, "postgresql://")) {
        return store_pg_open(out, spec, node, err);
    }
    /* a path may contain '=', a conninfo may end in ".db" ("dbname=relay.db"):
     * something that looks like a path wins */
    if (has_suffix(spec, ".db") &&
        (spec[0] == '/' || spec[0] == '.' || strchr(spec, '=') == NULL)) {
        return store_sqlite_open(out, spec, node, err);
    }
    if (strchr(spec, '=') != NULL) {
        return store_pg_open(out, spec, node, err);
    }
    mlc_errf(err,
             "relay store '%s' is neither 'sqlite:/path' (or a path ending in .db) nor a "
             "PostgreSQL conninfo ('postgresql://...' or 'host=... dbname=...')",
             spec);
    return MLC_E_INVAL;
}

int tenant_name_ok(const char *name)
{
    size_t n;

    if (name == NULL) {
        return 0;
    }
    for (n = 0; n < TENANT_NAME_MAX + 1 && name[n] != '\0'; n++) {
        char c = name[n];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-')) {
            return 0;
        }
    }
    return n >= 1 && n <= TENANT_NAME_MAX;
}

enum mlc_rc store_check_batch(struct delivery_in *items, size_t n, struct mlc_errbuf *err)
{
    for (size_t i = 0; i < n; i++) {
        const struct delivery_in *d = &items[i];

        if (d->tenant == NULL || d->kind == NULL || d->ext_id == NULL ||
            (d->body == NULL && d->body_len > 0)) {
            mlc_errf(err, "delivery %zu of the batch lacks its tenant, kind, id or body", i);
            return MLC_E_INVAL;
        }
        if (d->kind[0] == '\0' || strlen(d->kind) >= sizeof(((struct delivery_out *)0)->kind)) {
            mlc_errf(err, "delivery kind '%s' is not 1 to 7 characters", d->kind);
            return MLC_E_INVAL;
        }
        if (d->body_len > 0x7fffffff) {
            mlc_errf(err, "delivery '%s' body of %zu bytes is too big to store", d->ext_id,
                     d->body_len);
            return MLC_E_TOOBIG;
        }
        items[i].seq = 0;
        items[i].duplicate = 0;
    }
    return MLC_OK;
}

void delivery_out_release(struct delivery_out *d, size_t n)
{
    if (d == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(d[i].ext_id);
        free(d[i].body);
        d[i].ext_id = NULL;
        d[i].body = NULL;
        d[i].body_len = 0;
    }
}

void command_rec_release(struct command_rec *c)
{
    if (c == NULL) {
        return;
    }
    free(c->body);
    free(c->answer);
    c->body = NULL;
    c->answer = NULL;
}
