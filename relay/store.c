/* SPDX-License-Identifier: Apache-2.0
 * store: picks the back end from the spec string and frees what the back
 * ends hand out. The back ends are store_sqlite.c and store_pg.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "relay/store.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_log.h"

#define SEAL_PREFIX "enc1:"
#define KEY_CHECK_NAME "key_check"
#define KEY_CHECK_MSG "mlc-relay tenant secrets key check v1"

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static enum mlc_rc open_backend(struct store **out, const char *spec, const char *node,
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

static void seal_aad(char *aad, size_t n, const char *tenant, const char *field)
{
    snprintf(aad, n, "relay_tenant:%s:%s", tenant, field);
}

char *store_seal(const struct store *s, const char *tenant, const char *field, const char *clear)
{
    char aad[128], *b64, *out;
    uint8_t *box = NULL;
    size_t len = 0;

    if (clear[0] == '\0') {
        return mlc_xstrdup("");
    }
    seal_aad(aad, sizeof(aad), tenant, field);
    if (mlc_seal(s->key.key, aad, strlen(aad), clear, strlen(clear), &box, &len) != MLC_OK) {
        MLC_BUG("cannot seal a tenant secret (AES-GCM failed)");
    }
    b64 = mlc_base64_encode(box, len);
    free(box);
    if (b64 == NULL) {
        MLC_BUG("out of memory sealing a tenant secret");
    }
    out = mlc_xasprintf(SEAL_PREFIX "%s", b64);
    free(b64);
    return out;
}

void store_wipe(struct store *s)
{
    store_key_wipe(&s->key);
    memset(s->unsealed, 0, sizeof(s->unsealed));
}

static const struct unseal_entry *unsealed_find(const struct store *s, const char *tenant,
                                                const char *field, const char *stored)
{
    for (int i = 0; i < UNSEAL_CACHE; i++) {
        const struct unseal_entry *e = &s->unsealed[i];
        if (e->stored[0] != '\0' && strcmp(e->stored, stored) == 0 && strcmp(e->tenant, tenant) == 0 &&
            strcmp(e->field, field) == 0) {
            return e;
        }
    }
    return NULL;
}

static void unsealed_keep(struct store *s, const char *tenant, const char *field, const char *stored,
                          const char *clear)
{
    struct unseal_entry *e = &s->unsealed[s->unsealed_next];

    if (strlen(stored) >= sizeof(e->stored) || strlen(tenant) >= sizeof(e->tenant) ||
        strlen(field) >= sizeof(e->field) || strlen(clear) >= sizeof(e->clear)) {
        return;
    }
    s->unsealed_next = (s->unsealed_next + 1) % UNSEAL_CACHE;
    memset(e, 0, sizeof(*e));
    strcpy(e->tenant, tenant);
    strcpy(e->field, field);
    strcpy(e->stored, stored);
    strcpy(e->clear, clear);
}

enum mlc_rc store_unseal(struct store *s, const char *tenant, const char *field, const char *stored,
                         char *dst, size_t n, struct mlc_errbuf *err)
{
    char aad[128];
    uint8_t *box, *plain = NULL;
    size_t blen = 0, plen = 0;
    enum mlc_rc rc;
    const struct unseal_entry *e;

    dst[0] = '\0';
    if (stored == NULL || stored[0] == '\0') {
        return MLC_OK;
    }
    if (strncmp(stored, SEAL_PREFIX, strlen(SEAL_PREFIX)) != 0) {
        s->clear_read++;
        snprintf(dst, n, "%s", stored);
        return MLC_OK;
    }
    e = unsealed_find(s, tenant, field, stored);
    if (e != NULL && strlen(e->clear) < n) {
        memcpy(dst, e->clear, strlen(e->clear) + 1);
        return MLC_OK;
    }
    box = mlc_base64_decode(stored + strlen(SEAL_PREFIX), &blen);
    seal_aad(aad, sizeof(aad), tenant, field);
    rc = box ? mlc_open(s->key.key, aad, strlen(aad), box, blen, &plain, &plen) : MLC_E_PROTO;
    free(box);
    if (rc != MLC_OK || plen >= n) {
        if (plain != NULL) {
            memset(plain, 0, plen);
            free(plain);
        }
        mlc_errf(err, "tenant '%s': its %s does not decrypt with the relay key from '%s' (the "
                 "store was sealed with another key: restore the key file that belongs to it)",
                 tenant, field, s->key.source);
        return MLC_E_AUTH;
    }
    memcpy(dst, plain, plen + 1);
    memset(plain, 0, plen);
    free(plain);
    unsealed_keep(s, tenant, field, stored, dst);
    return MLC_OK;
}

static void key_check_value(const struct store_key *k, char out[2 * MLC_SHA256_LEN + 1])
{
    uint8_t mac[MLC_SHA256_LEN];

    mlc_hmac_sha256(k->key, sizeof(k->key), KEY_CHECK_MSG, strlen(KEY_CHECK_MSG), mac);
    mlc_hex(mac, sizeof(mac), out);
}

/* The store's key check value against key: record it on first use (saving a
 * fresh key file first), refuse a mismatch or a missing key file. */
static enum mlc_rc key_check(struct store *s, struct mlc_errbuf *err)
{
    char want[2 * MLC_SHA256_LEN + 1], have[128];
    enum mlc_rc rc = s->ops->meta_get(s, KEY_CHECK_NAME, have, sizeof(have), err);

    if (rc == MLC_E_NOTFOUND) {
        mlc_err_reset(err);
        if ((rc = store_key_save(&s->key, err)) != MLC_OK) {
            return rc;
        }
        key_check_value(&s->key, want);
        if ((rc = s->ops->meta_put_new(s, KEY_CHECK_NAME, want, err)) != MLC_OK ||
            (rc = s->ops->meta_get(s, KEY_CHECK_NAME, have, sizeof(have), err)) != MLC_OK) {
            return rc;
        }
    } else if (rc != MLC_OK) {
        return rc;
    } else if (s->key.unsaved) {
        mlc_errf(err, "the relay store's tenant secrets are sealed with a key, but the key file "
                 "'%s' does not exist: restore it from backup (or from another relay node)",
                 s->key.source);
        return MLC_E_AUTH;
    }
    key_check_value(&s->key, want);
    if (strlen(have) != strlen(want) || !mlc_ct_equal(have, want, strlen(want))) {
        mlc_errf(err, "the relay key from '%s' is not the key this store's tenant secrets are "
                 "sealed with (a store copied without its key file, or another node's key?): "
                 "restore the key file that belongs to this store", s->key.source);
        return MLC_E_AUTH;
    }
    return MLC_OK;
}

/* An older relay kept the secrets in clear: seal them now. */
static enum mlc_rc seal_clear_rows(struct store *s, struct mlc_errbuf *err)
{
    struct tenant_rec *ts = NULL;
    size_t n = 0, sealed = 0;
    enum mlc_rc rc;

    s->clear_read = 0;
    rc = s->ops->tenant_list(s, &ts, &n, err);
    if (rc != MLC_OK || s->clear_read == 0) {
        goto out;
    }
    /* every row again, one at a time: the list tells which had clear values
     * only in total, and rewriting a sealed row changes nothing it holds */
    for (size_t i = 0; i < n; i++) {
        struct tenant_rec t;
        s->clear_read = 0;
        rc = s->ops->tenant_get(s, ts[i].name, &t, err);
        if (rc == MLC_OK && s->clear_read > 0) {
            rc = s->ops->tenant_update(s, &t, err);
            sealed++;
        }
        memset(&t, 0, sizeof(t));
        if (rc != MLC_OK && rc != MLC_E_NOTFOUND) {
            goto out;
        }
        rc = MLC_OK;
    }
    if (s->ops->scrub != NULL) {
        s->ops->scrub(s);
    }
    mlc_info("relay store: sealed the secrets of %zu tenant(s) that an older relay kept in clear "
             "(key from '%s')", sealed, s->key.source);
out:
    if (ts != NULL) {
        memset(ts, 0, n * sizeof(*ts));
        free(ts);
    }
    s->clear_read = 0;
    return rc;
}

enum mlc_rc store_open(struct store **out, const char *spec, const char *node,
                       struct store_key *key, struct mlc_errbuf *err)
{
    enum mlc_rc rc;

    if (key == NULL) {
        MLC_BUG("store_open without a key");
    }
    rc = open_backend(out, spec, node, err);
    if (rc != MLC_OK) {
        return rc;
    }
    (*out)->key = *key;
    if ((rc = key_check(*out, err)) != MLC_OK || (rc = seal_clear_rows(*out, err)) != MLC_OK) {
        (*out)->ops->close(*out);
        *out = NULL;
        return rc;
    }
    *key = (*out)->key; /* saved (or replaced by another process's) key */
    return MLC_OK;
}
