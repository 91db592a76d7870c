/* SPDX-License-Identifier: Apache-2.0
 * connector: helpers shared by every connector (pages, secrets, logging).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/connector.h"
#include "agent/secrets.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_log.h"

void page_release(struct page *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
        free(p->recs[i].key);
        free(p->recs[i].cursor);
        free(p->recs[i].error);
        cJSON_Delete(p->recs[i].data);
    }
    free(p->recs);
    memset(p, 0, sizeof(*p));
}

struct record *page_push(struct page *p)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->recs = mlc_xrealloc(p->recs, p->cap * sizeof(*p->recs));
    }
    memset(&p->recs[p->n], 0, sizeof(p->recs[0]));
    return &p->recs[p->n++];
}

const char *const conn_common_allow[] = { "credential_expires", NULL };

enum mlc_rc conn_secret(struct conn *c, const char *ref, char **out)
{
    return secrets_resolve(c->secrets, ref, out, &c->err);
}

void conn_log_write(const struct conn *c, int lvl, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mlc_log_write(lvl, c->ops ? c->ops->name : "conn", 0, "[%s:%s] %s", c->ops ? c->ops->name : "?",
                  c->name ? c->name : "?", msg);
}

const char *conn_kind_type(const char *kind, char *out, size_t n)
{
    size_t len = strlen(kind);

    snprintf(out, n, "%s", kind);
    if (len > 5 && len < n && strcmp(out + len - 5, "-poll") == 0) {
        out[len - 5] = '\0';
    }
    return out;
}

const char *conn_type(const struct conn *c)
{
    return c->ops->name;
}

const char *conn_setting(const struct conn *c, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->conf, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

enum mlc_rc conn_ping(struct conn *c)
{
    return c->ops->ping ? c->ops->ping(c) : MLC_OK;
}
