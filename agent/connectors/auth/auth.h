/* SPDX-License-Identifier: Apache-2.0
 * auth: how an HTTP connector proves who it is, shared by every connector.
 *
 * A provider turns configured credentials into the Authorization of each
 * request and knows how to get fresh ones:
 *   basic               user + password on every request
 *   bearer              a fixed token (API keys, personal access tokens)
 *   oauth_refresh       OAuth 2.0 refresh_token grant; a rotated refresh token
 *                       is stored in the vault (durably) before the access
 *                       token it came with is used (Jira 3LO; Zoho, whose
 *                       token answer names the api_domain to call)
 *   client_credentials  OAuth 2.0 client_credentials grant (IFS, Looker)
 *   custom              the connector's own session login (JD Edwards AIS
 *                       tokenrequest), through the same wrapper
 *
 * auth_send() is the one "authenticate, and on an auth failure
 * re-authenticate once and retry" wrapper every HTTP connector uses: it
 * authenticates when there is no credential yet, sends with mlc_http_send()
 * (transient retries live there), and on MLC_E_AUTH renews the credential
 * (force) and sends once more. A second MLC_E_AUTH is returned as it is.
 */
#ifndef MLC_AUTH_H
#define MLC_AUTH_H

#include "agent/connectors/connector.h"

struct auth;

struct auth_ops {
    const char *name;
    /* Get a credential; force = 1: the last one was refused, get a new one.
     * Network calls go through c->http; reasons into c->err. */
    enum mlc_rc (*renew)(struct auth *au, struct conn *c, int force);
    /* Put the credential on a request (basic_user/pass, bearer, or a header
     * written into au->header and added by auth_send). */
    void (*apply)(struct auth *au, struct mlc_http_req *rq);
    void (*release)(struct auth *au);
};

struct auth {
    const struct auth_ops *ops;
    int have;            /* a credential is held */
    char header[2048];   /* an extra "Name: value" request header, "" = none */
    void *priv;
};

/* ---- providers ---- */
struct auth *auth_basic_new(const char *user, const char *password);
struct auth *auth_bearer_new(const char *token);

struct auth_oauth_conf {
    const char *token_url;      /* e.g. https://auth.atlassian.com/oauth/token */
    const char *client_id;
    const char *client_secret;
    const char *refresh_token;  /* the configured one; the vault's stored one wins */
    const char *vault_name;     /* where the rotated refresh token lives */
    int form;                   /* 1: form-encoded request (Zoho), 0: JSON (Atlassian) */
};
struct auth *auth_oauth_refresh_new(const struct auth_oauth_conf *cf);
/* From the last token answer: its api_domain (Zoho), "" when none. */
const char *auth_oauth_api_domain(const struct auth *au);

struct auth_cc_conf {
    const char *token_url;
    const char *client_id;
    const char *client_secret;
    const char *scope;          /* may be NULL */
};
struct auth *auth_client_credentials_new(const struct auth_cc_conf *cf);

/* A connector's own login: renew() and apply() are its own; priv is its own. */
struct auth *auth_custom_new(const struct auth_ops *ops, void *priv);

void auth_free(struct auth *au);

/* The wrapper described above. resp is released and reused for the retry. */
enum mlc_rc auth_send(struct auth *au, struct conn *c, struct mlc_http_req *rq,
                      struct mlc_http_resp *resp);

/* ---- helpers every HTTP connector needs ---- */
/* An error body (JSON or text) as one line of at most n-1 bytes: the first
 * "message"/"error_description"/"errorMessages" text found, else the text. */
void auth_error_line(const char *body, size_t len, char *out, size_t n);

#endif
