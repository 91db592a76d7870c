/* SPDX-License-Identifier: Apache-2.0
 * auth client_credentials: the OAuth 2.0 client_credentials grant (IFS IAM),
 * and Looker's API-key login, which answers the same way. See auth.h.
 * There is no refresh token to keep: a new grant replaces a token that runs
 * out or is refused.
 */
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/auth/auth.h"
#include "agent/connectors/auth/oauth_token.h"
#include "shared/mlc_log.h"

struct cc {
    char *token_url;
    char *client_id;
    char *client_secret;
    char *scope; /* NULL = none */
    enum auth_cc_style style;
    int has_retry;
    struct mlc_retry retry;
    struct oauth_token tok;
};

/* The form body for the style (heap, caller wipes). */
static char *cc_body(const struct cc *g)
{
    struct mlc_buf b = MLC_BUF_INIT;
    enum mlc_rc rc = MLC_OK;

    if (g->style != AUTH_CC_LOOKER) {
        rc = oauth_form_add(&b, "grant_type", "client_credentials");
    }
    if (rc == MLC_OK && g->style != AUTH_CC_BASIC) {
        rc = oauth_form_add(&b, "client_id", g->client_id);
        if (rc == MLC_OK) {
            rc = oauth_form_add(&b, "client_secret", g->client_secret);
        }
    }
    if (rc == MLC_OK && g->style != AUTH_CC_LOOKER && g->scope != NULL) {
        rc = oauth_form_add(&b, "scope", g->scope);
    }
    if (rc != MLC_OK) {
        MLC_BUG("cannot build a token request: %s", mlc_strerror(rc));
    }
    return mlc_buf_detach(&b);
}

/* RFC 6749 2.3.1: the id and secret are form-encoded before they become the
 * Basic user and password. Heap, caller wipes. */
static char *form_encoded(const char *s)
{
    struct mlc_buf b = MLC_BUF_INIT;

    if (mlc_http_urlencode(&b, s) != MLC_OK) {
        MLC_BUG("cannot encode a client credential");
    }
    return b.ptr != NULL ? mlc_buf_detach(&b) : mlc_xstrdup("");
}

static void cc_fail(const struct cc *g, struct conn *c, enum mlc_rc rc,
                    const struct oauth_answer *ans)
{
    if (rc == MLC_E_AUTH) {
        oauth_failf(c,
                    "system '%s': the token endpoint refused client '%s' (%s): check client_id "
                    "and client_secret%s",
                    c->name, g->client_id, ans->detail,
                    g->style == AUTH_CC_LOOKER ? ", and that the URL ends in /api/4.0/login" : "");
    } else if (rc == MLC_E_INVAL) {
        oauth_failf(c,
                    "system '%s': the token endpoint refused the client_credentials grant (%s): "
                    "check scope and the client's settings (confidential, service account on)",
                    c->name, ans->detail);
    } else {
        oauth_failf(c, "system '%s': oauth client credentials token request failed: %s", c->name,
                    ans->detail);
    }
}

static enum mlc_rc cc_renew(struct auth *au, struct conn *c, int force)
{
    struct cc *g = au->priv;
    struct oauth_answer ans = { 0 };
    struct oauth_call call = { 0 };
    char *body = cc_body(g), *user = NULL, *pass = NULL;
    enum mlc_rc rc;

    (void)force; /* a new grant either way */
    call.url = g->token_url;
    call.body = body;
    call.retry = g->has_retry ? &g->retry : NULL;
    if (g->style == AUTH_CC_BASIC) {
        user = form_encoded(g->client_id);
        pass = form_encoded(g->client_secret);
        call.basic_user = user;
        call.basic_pass = pass;
    }
    rc = oauth_token_call(c, &call, &ans);
    if (rc == MLC_E_NOTFOUND && g->style == AUTH_CC_LOOKER) {
        rc = MLC_E_AUTH; /* Looker's answer to a bad API key (looker.md 2.1) */
    }
    if (rc != MLC_OK) {
        cc_fail(g, c, rc, &ans);
        goto out;
    }
    rc = oauth_token_take(au, &g->tok, &ans, c);
out:
    oauth_answer_release(&ans);
    oauth_wipe_free(body);
    free(user);
    oauth_wipe_free(pass);
    return rc;
}

static void cc_apply(struct auth *au, struct mlc_http_req *rq)
{
    struct cc *g = au->priv;

    oauth_token_apply(&g->tok, rq);
}

static void cc_release(struct auth *au)
{
    struct cc *g = au->priv;

    if (g == NULL) {
        return;
    }
    free(g->token_url);
    free(g->client_id);
    oauth_wipe_free(g->client_secret);
    free(g->scope);
    oauth_token_release(&g->tok);
    free(g);
}

static const struct auth_ops cc_ops = {
    .name = "client_credentials",
    .renew = cc_renew,
    .apply = cc_apply,
    .release = cc_release,
};

struct auth *auth_client_credentials_new(const struct auth_cc_conf *cf)
{
    struct cc *g = mlc_xcalloc(1, sizeof(*g));

    g->token_url = oauth_dup(cf->token_url);
    g->client_id = oauth_dup(cf->client_id);
    g->client_secret = oauth_dup(cf->client_secret);
    g->scope = cf->scope != NULL && cf->scope[0] != '\0' ? mlc_xstrdup(cf->scope) : NULL;
    g->style = cf->style;
    if (cf->retry != NULL) {
        g->retry = *cf->retry;
        g->has_retry = 1;
    }
    g->tok.scheme = oauth_scheme_dup(cf->scheme);
    mlc_log_add_secret(g->client_secret);
    return auth_custom_new(&cc_ops, g);
}
