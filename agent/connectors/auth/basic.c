/* SPDX-License-Identifier: Apache-2.0
 * auth basic: HTTP Basic user + password on every request. Nothing to renew:
 * a refusal means the operator must fix the credential.
 */
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/auth/auth.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_log.h"

struct basic {
    char *user;
    char *password;
};

static void wipe_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

static enum mlc_rc basic_renew(struct auth *au, struct conn *c, int force)
{
    struct basic *b = au->priv;

    if (!force) {
        return MLC_OK; /* the same pair every time */
    }
    mlc_errf(&c->err,
             "system '%s': user '%s' or its password was refused: check both (config and "
             "secret store)",
             c->name, b->user);
    return MLC_E_AUTH;
}

static void basic_apply(struct auth *au, struct mlc_http_req *rq)
{
    struct basic *b = au->priv;

    rq->basic_user = b->user;
    rq->basic_pass = b->password;
}

static void basic_release(struct auth *au)
{
    struct basic *b = au->priv;

    if (b != NULL) {
        free(b->user);
        wipe_free(b->password);
        free(b);
    }
}

static const struct auth_ops basic_ops = {
    .name = "basic",
    .renew = basic_renew,
    .apply = basic_apply,
    .release = basic_release,
};

struct auth *auth_basic_new(const char *user, const char *password)
{
    struct basic *b = mlc_xcalloc(1, sizeof(*b));

    b->user = mlc_xstrdup(user ? user : "");
    b->password = mlc_xstrdup(password ? password : "");
    mlc_log_add_secret(b->password);
    return auth_custom_new(&basic_ops, b);
}
