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
 * authenticates when there is no credential yet (or the held one is about
 * to run out, see renew_at_ms), sends with mlc_http_send() (transient
 * retries live there), and on MLC_E_AUTH renews the credential (force) and
 * sends once more. A second MLC_E_AUTH is returned as it is.
 *
 * Messages go to c->err and never carry a secret: passwords, tokens and
 * client secrets are never formatted into them, and what a token endpoint
 * says is passed through mlc_log_redact() first. Every access or refresh
 * token a provider obtains is registered with mlc_log_add_secret().
 *
 * A provider belongs to one conn and is used by one thread at a time.
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
    /* When auth_send() renews the held credential before using it (the
     * now_ms clock), 0 = it does not run out. auth_send() clears it before
     * each renew(); a provider that knows its credential's lifetime sets it
     * with auth_set_lifetime(). */
    long long renew_at_ms;
    /* The clock for renew_at_ms, ms; NULL = CLOCK_MONOTONIC. Tests set their own. */
    long long (*now_ms)(void);
    char header[2048];   /* an extra "Name: value" request header, "" = none */
    void *priv;
};

/* A credential that lives for seconds from now is renewed when fewer than
 * AUTH_RENEW_BEFORE_MS remain, or, when it lives less than twice that, at
 * half its life (so a short-lived token is not renewed before every call). */
#define AUTH_RENEW_BEFORE_MS 60000LL

/* For providers: the credential just obtained lives for seconds (<= 0 or
 * NaN: unknown, only a refusal renews it). Sets au->renew_at_ms. */
void auth_set_lifetime(struct auth *au, double seconds);
/* au's clock (au->now_ms, or CLOCK_MONOTONIC), in ms. */
long long auth_now_ms(const struct auth *au);

/* ---- providers ----
 * Each *_new() copies the strings it is given (the caller keeps its own) and
 * returns a provider for auth_free(). NULL strings count as "". */

/* HTTP Basic on every request. A refusal (force renew) is MLC_E_AUTH with
 * "user ... or its password was refused" (the password is never shown). */
struct auth *auth_basic_new(const char *user, const char *password);
/* Authorization: Bearer <token> on every request; a refusal is MLC_E_AUTH. */
struct auth *auth_bearer_new(const char *token);

/* OAuth 2.0 refresh_token grant (RFC 6749 6).
 * Atlassian 3LO (jira-cloud.md 1.2): JSON body to
 * https://auth.atlassian.com/oauth/token; every answer carries a new refresh
 * token and disables the one used, a bad or reused one is 403 invalid_grant.
 * Zoho (zoho-crm.md 1.2, 1.3): form body to {accounts-server}/oauth/v2/token,
 * the accounts server of the data centre where the user consented; refresh
 * tokens do not rotate; the answer names the api_domain every API call must
 * use, errors may come as a 200 with {"error":...} (a body without
 * access_token is never taken as success), and the header is
 * "Authorization: Zoho-oauthtoken <token>" (scheme below).
 *
 * The refresh token used is the vault's (conn_secret_get(vault_name)), else
 * the configured one. A new refresh token in the answer is stored with
 * conn_secret_put() before the access token is used; if that fails, renew()
 * fails with MLC_E_IO, keeps the new token in memory and stores it first on
 * the next renew() (the server has already disabled the old one: if the
 * agent stops before then, the app must be re-authorised).
 * Refusals: invalid_grant (consent revoked or expired, token reused),
 * Zoho's invalid_code (taken to mean the same; zoho-crm.md does not say),
 * invalid_client or a bare 401 are MLC_E_AUTH; unauthorized_client,
 * unsupported_grant_type, invalid_scope and invalid_request are MLC_E_INVAL;
 * otherwise the rc mlc_http_send() classified (5xx, transport: MLC_E_NET).
 * The lifetime is expires_in (Zoho's older expires_in_sec first, when sent).
 * Refreshes of one refresh token by two providers (two conns, two agents)
 * are not serialised: each reads the vault just before its grant. */
struct auth_oauth_conf {
    const char *token_url;      /* e.g. https://auth.atlassian.com/oauth/token */
    const char *client_id;
    const char *client_secret;
    const char *refresh_token;  /* the configured one; the vault's stored one wins */
    const char *vault_name;     /* where the rotated refresh token lives; NULL: the
                                 * server never rotates (a rotation then fails renew) */
    int form;                   /* 1: form-encoded request (Zoho), 0: JSON (Atlassian) */
    const char *scheme;         /* Authorization scheme, NULL = "Bearer" (Zoho: "Zoho-oauthtoken") */
    const struct mlc_retry *retry; /* token calls' retry policy (copied), NULL = mlc_http's
                                    * default */
};
struct auth *auth_oauth_refresh_new(const struct auth_oauth_conf *cf);
/* From the last token answer: its api_domain (Zoho), "" when none or when au
 * is another kind of provider. Lent; valid until the next renew. An
 * api_domain that is not an http(s) URL fails the renew (MLC_E_PROTO). */
const char *auth_oauth_api_domain(const struct auth *au);

/* How the client authenticates at the token endpoint. */
enum auth_cc_style {
    /* RFC 6749 2.3.1: HTTP Basic with the form-encoded client_id and
     * client_secret; body grant_type=client_credentials[&scope=..] */
    AUTH_CC_BASIC = 0,
    /* client_id and client_secret as form fields next to grant_type (the
     * other way 2.3.1 allows; IFS's documented sample, ifs-cloud.md 2) */
    AUTH_CC_POST,
    /* Looker's POST {base}/api/4.0/login (looker.md 2.1): a form body of
     * client_id and client_secret only, no grant_type or scope; the answer is
     * access_token + expires_in; no refresh, a new login instead. Looker
     * answers bad credentials with 404, taken here as MLC_E_AUTH. */
    AUTH_CC_LOOKER,
};

/* OAuth 2.0 client_credentials grant (IFS IAM/Keycloak, Looker's login). The
 * token is reused until AUTH_RENEW_BEFORE_MS before expires_in runs out, or a
 * refusal. Refusals are classified as for the refresh grant. */
struct auth_cc_conf {
    const char *token_url;
    const char *client_id;
    const char *client_secret;
    const char *scope;          /* may be NULL (IFS: "openid microprofile-jwt") */
    enum auth_cc_style style;
    const char *scheme;         /* Authorization scheme, NULL = "Bearer" (Looker accepts
                                 * "Bearer" and its documented "token") */
    const struct mlc_retry *retry; /* token calls' retry policy (copied), NULL = mlc_http's
                                    * default */
};
struct auth *auth_client_credentials_new(const struct auth_cc_conf *cf);

/* A connector's own login: renew() and apply() are its own; priv is its own. */
struct auth *auth_custom_new(const struct auth_ops *ops, void *priv);

void auth_free(struct auth *au);

/* The wrapper described above. resp is released and reused for the retry.
 * When c->err was empty on entry, a refusal that is renewed leaves no
 * message there: after a failed renew or retry, c->err holds that failure. */
enum mlc_rc auth_send(struct auth *au, struct conn *c, struct mlc_http_req *rq,
                      struct mlc_http_resp *resp);

/* ---- helpers every HTTP connector needs ---- */
/* An error body (JSON or text) as one line of at most n-1 bytes: the first
 * "message"/"error_description"/"errorMessages" text found, else the text. */
void auth_error_line(const char *body, size_t len, char *out, size_t n);

#endif
