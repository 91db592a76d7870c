/* SPDX-License-Identifier: Apache-2.0
 * auth oauth_refresh: the OAuth 2.0 refresh_token grant (Atlassian 3LO with
 * rotating refresh tokens; Zoho, with its api_domain). See auth.h.
 *
 * Rotation is why the order below matters: the answer that carries a new
 * refresh token has already disabled the one we sent. The new one is made
 * durable in the vault before its access token is used; should the vault
 * fail, the new token is kept here and stored first on the next renew, and
 * nothing is sent with the access token meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/auth/auth.h"
#include "agent/connectors/auth/oauth_token.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

struct oref {
    char *token_url;
    char *client_id;
    char *client_secret;
    char *refresh_conf; /* the configured refresh token, "" = none */
    char *vault_name;   /* NULL = nowhere to keep a rotated one */
    int form;
    int has_retry;
    struct mlc_retry retry;
    struct oauth_token tok;
    char *pending;    /* a rotated refresh token the vault has not taken yet */
    char *api_domain; /* from the last answer, NULL = none */
};

static const struct auth_ops oref_ops;

/* conn_secret_get/put with their message caught, so ours can carry it. */
static enum mlc_rc vault_get(struct conn *c, const char *name, char **out, char *why, size_t n)
{
    struct mlc_errbuf keep = c->err;
    enum mlc_rc rc;

    mlc_err_reset(&c->err);
    rc = conn_secret_get(c, name, out);
    snprintf(why, n, "%.*s", (int)(n > 0 ? n - 1 : 0), c->err.set ? c->err.msg : mlc_strerror(rc));
    c->err = keep;
    return rc;
}

static enum mlc_rc vault_put(struct conn *c, const char *name, const char *value, char *why,
                             size_t n)
{
    struct mlc_errbuf keep = c->err;
    enum mlc_rc rc;

    mlc_err_reset(&c->err);
    rc = conn_secret_put(c, name, value);
    snprintf(why, n, "%.*s", (int)(n > 0 ? n - 1 : 0), c->err.set ? c->err.msg : mlc_strerror(rc));
    c->err = keep;
    return rc;
}

/* Store a rotated refresh token; on failure keep it pending (see top). */
static enum mlc_rc oref_store(struct oref *o, struct conn *c, const char *token)
{
    char why[300];
    enum mlc_rc rc;

    if (o->pending != token) {
        oauth_wipe_free(o->pending);
        o->pending = mlc_xstrdup(token);
    }
    if (o->vault_name == NULL) {
        oauth_failf(c,
                    "system '%s': the token endpoint rotated the oauth refresh token, and no "
                    "vault_name is configured to keep it in: set one, then re-authorise the app "
                    "(re-consent)",
                    c->name);
        return MLC_E_INVAL;
    }
    rc = vault_put(c, o->vault_name, token, why, sizeof(why));
    if (rc == MLC_OK) {
        oauth_wipe_free(o->pending);
        o->pending = NULL;
        return MLC_OK;
    }
    oauth_failf(c,
                "system '%s': cannot store the rotated oauth refresh token as secret '%s' "
                "(%s): the server has already disabled the previous one; the agent retries "
                "the store on the next call, but if it stops first, re-authorise the app "
                "(re-consent) and store the new refresh token",
                c->name, o->vault_name, why);
    return MLC_E_IO;
}

/* The refresh token to send (heap, caller wipes): a pending rotated one once
 * it is stored, else the vault's, else the configured one. */
static enum mlc_rc oref_current(struct oref *o, struct conn *c, char **out)
{
    char why[300];
    enum mlc_rc rc;

    *out = NULL;
    if (o->pending != NULL) {
        *out = mlc_xstrdup(o->pending);
        rc = oref_store(o, c, *out);
        if (rc != MLC_OK) {
            oauth_wipe_free(*out);
            *out = NULL;
        }
        return rc;
    }
    if (o->vault_name != NULL) {
        rc = vault_get(c, o->vault_name, out, why, sizeof(why));
        if (rc == MLC_OK && *out != NULL && (*out)[0] != '\0') {
            return MLC_OK;
        }
        oauth_wipe_free(*out);
        *out = NULL;
        if (rc != MLC_OK && rc != MLC_E_NOTFOUND) {
            oauth_failf(c, "system '%s': cannot read secret '%s': %s", c->name, o->vault_name, why);
            return rc;
        }
    }
    if (o->refresh_conf[0] == '\0') {
        oauth_failf(c,
                    "system '%s': no oauth refresh token: authorise the app, then store its "
                    "refresh token as secret '%s'",
                    c->name, o->vault_name ? o->vault_name : "(set vault_name)");
        return MLC_E_INVAL;
    }
    *out = mlc_xstrdup(o->refresh_conf);
    return MLC_OK;
}

/* The grant's body: JSON (Atlassian) or form-encoded (Zoho). Heap, caller wipes. */
static char *oref_body(const struct oref *o, const char *refresh)
{
    static const char *const names[] = { "grant_type", "client_id", "client_secret",
                                         "refresh_token" };
    const char *values[] = { "refresh_token", o->client_id, o->client_secret, refresh };
    struct mlc_buf b = MLC_BUF_INIT;
    enum mlc_rc rc = MLC_OK;

    if (!o->form) {
        rc = mlc_buf_adds(&b, "{");
    }
    for (size_t i = 0; i < 4 && rc == MLC_OK; i++) {
        if (o->form) {
            rc = oauth_form_add(&b, names[i], values[i]);
            continue;
        }
        rc = mlc_buf_addf(&b, "%s\"%s\":", i > 0 ? "," : "", names[i]);
        if (rc == MLC_OK) {
            rc = mlc_buf_add_json_str(&b, values[i]);
        }
    }
    if (rc == MLC_OK && !o->form) {
        rc = mlc_buf_adds(&b, "}");
    }
    if (rc != MLC_OK) {
        MLC_BUG("cannot build a token request: %s", mlc_strerror(rc));
    }
    return mlc_buf_detach(&b);
}

/* An api_domain is used as the base of every API call: an http(s) URL of
 * printable characters, nothing else. */
static int api_domain_ok(const char *s)
{
    if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0) {
        return 0;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            return 0;
        }
    }
    return strlen(s) < 256;
}

static void oref_fail(const struct oref *o, struct conn *c, enum mlc_rc rc,
                      const struct oauth_answer *ans)
{
    if (rc == MLC_E_AUTH &&
        (strcmp(ans->error, "invalid_grant") == 0 || strcmp(ans->error, "invalid_code") == 0)) {
        oauth_failf(c,
                    "system '%s': the oauth refresh token was refused (%s): the consent was "
                    "revoked or has expired; re-authorise the app, then store the new refresh "
                    "token as secret '%s'",
                    c->name, ans->detail, o->vault_name ? o->vault_name : "(set vault_name)");
    } else if (rc == MLC_E_AUTH) {
        oauth_failf(c,
                    "system '%s': the token endpoint refused client '%s' (%s): check client_id "
                    "and client_secret",
                    c->name, o->client_id, ans->detail);
    } else if (rc == MLC_E_INVAL) {
        oauth_failf(c,
                    "system '%s': the token endpoint refused the refresh (%s): check the app's "
                    "settings (grant types, scopes)",
                    c->name, ans->detail);
    } else {
        oauth_failf(c, "system '%s': oauth token refresh failed: %s", c->name, ans->detail);
    }
}

static enum mlc_rc oref_renew(struct auth *au, struct conn *c, int force)
{
    struct oref *o = au->priv;
    struct oauth_answer ans = { 0 };
    struct oauth_call call = { 0 };
    char *refresh = NULL, *body = NULL;
    enum mlc_rc rc, stored;

    (void)force; /* a refresh is a refresh: the grant is the same either way */
    rc = oref_current(o, c, &refresh);
    if (rc != MLC_OK) {
        goto out;
    }
    body = oref_body(o, refresh);
    call.url = o->token_url;
    call.body = body;
    call.json = !o->form;
    call.retry = o->has_retry ? &o->retry : NULL;
    rc = oauth_token_call(c, &call, &ans);
    if (ans.refresh_token != NULL && strcmp(ans.refresh_token, refresh) != 0) {
        /* rotated: durable before anything else (see top) */
        mlc_log_add_secret(ans.refresh_token);
        stored = oref_store(o, c, ans.refresh_token);
        if (stored != MLC_OK) {
            rc = stored;
            goto out;
        }
    }
    if (rc != MLC_OK) {
        oref_fail(o, c, rc, &ans);
        goto out;
    }
    if (ans.api_domain != NULL && !api_domain_ok(ans.api_domain)) {
        oauth_failf(c, "system '%s': the token answer's api_domain is not an http(s) URL", c->name);
        rc = MLC_E_PROTO;
        goto out;
    }
    rc = oauth_token_take(au, &o->tok, &ans, c);
    if (rc != MLC_OK) {
        goto out;
    }
    free(o->api_domain);
    o->api_domain = ans.api_domain ? mlc_xstrdup(ans.api_domain) : NULL;
out:
    oauth_answer_release(&ans);
    oauth_wipe_free(body);
    oauth_wipe_free(refresh);
    return rc;
}

static void oref_apply(struct auth *au, struct mlc_http_req *rq)
{
    struct oref *o = au->priv;

    oauth_token_apply(&o->tok, rq);
}

static void oref_release(struct auth *au)
{
    struct oref *o = au->priv;

    if (o == NULL) {
        return;
    }
    free(o->token_url);
    free(o->client_id);
    oauth_wipe_free(o->client_secret);
    oauth_wipe_free(o->refresh_conf);
    free(o->vault_name);
    oauth_token_release(&o->tok);
    oauth_wipe_free(o->pending);
    free(o->api_domain);
    free(o);
}

static const struct auth_ops oref_ops = {
    .name = "oauth_refresh",
    .renew = oref_renew,
    .apply = oref_apply,
    .release = oref_release,
};

struct auth *auth_oauth_refresh_new(const struct auth_oauth_conf *cf)
{
    struct oref *o = mlc_xcalloc(1, sizeof(*o));

    o->token_url = oauth_dup(cf->token_url);
    o->client_id = oauth_dup(cf->client_id);
    o->client_secret = oauth_dup(cf->client_secret);
    o->refresh_conf = oauth_dup(cf->refresh_token);
    o->vault_name =
        cf->vault_name != NULL && cf->vault_name[0] != '\0' ? mlc_xstrdup(cf->vault_name) : NULL;
    o->form = cf->form;
    if (cf->retry != NULL) {
        o->retry = *cf->retry;
        o->has_retry = 1;
    }
    o->tok.scheme = oauth_scheme_dup(cf->scheme);
    mlc_log_add_secret(o->client_secret);
    mlc_log_add_secret(o->refresh_conf);
    return auth_custom_new(&oref_ops, o);
}

const char *auth_oauth_api_domain(const struct auth *au)
{
    const struct oref *o;

    if (au == NULL || au->ops != &oref_ops) {
        return "";
    }
    o = au->priv;
    return o->api_domain ? o->api_domain : "";
}
