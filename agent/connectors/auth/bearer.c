/* SPDX-License-Identifier: Apache-2.0
 * auth bearer: a fixed token (API key, personal access token) as
 * "Authorization: Bearer" on every request. A refusal cannot be renewed.
 */
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/auth/auth.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_log.h"

static enum mlc_rc bearer_renew(struct auth *au, struct conn *c, int force)
{
    (void)au;
    if (!force) {
        return MLC_OK;
    }
    mlc_errf(&c->err,
             "system '%s': the bearer token was refused (revoked, expired or lacking rights): "
             "check it, or issue a new one and store it",
             c->name);
    return MLC_E_AUTH;
}

static void bearer_apply(struct auth *au, struct mlc_http_req *rq)
{
    rq->bearer = au->priv;
}

static void bearer_release(struct auth *au)
{
    char *token = au->priv;

    if (token != NULL) {
        explicit_bzero(token, strlen(token));
        free(token);
    }
}

static const struct auth_ops bearer_ops = {
    .name = "bearer",
    .renew = bearer_renew,
    .apply = bearer_apply,
    .release = bearer_release,
};

struct auth *auth_bearer_new(const char *token)
{
    char *t = mlc_xstrdup(token ? token : "");

    mlc_log_add_secret(t);
    return auth_custom_new(&bearer_ops, t);
}
