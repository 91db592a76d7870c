/* SPDX-License-Identifier: Apache-2.0
 * oauth_token: what the two OAuth 2.0 grant providers share (private to
 * agent/connectors/auth/): one call of a token endpoint with its answer
 * classified, the access token a provider holds and puts on requests, and
 * failure messages with registered secrets scrubbed.
 */
#ifndef MLC_OAUTH_TOKEN_H
#define MLC_OAUTH_TOKEN_H

#include <cjson/cJSON.h>
#include "agent/connectors/auth/auth.h"
#include "shared/mlc_buf.h"

/* One POST to a token endpoint. */
struct oauth_call {
    const char *url;
    const char *body;
    int json;               /* 1: body is JSON, 0: form-encoded */
    const char *basic_user; /* client authentication by HTTP Basic, or NULL */
    const char *basic_pass;
    const struct mlc_retry *retry; /* NULL = mlc_http's default */
};

/* What the endpoint answered. Strings are lent from root; release frees it. */
struct oauth_answer {
    cJSON *root;
    long status;               /* HTTP status, 0 = no answer */
    const char *access_token;  /* set when the call succeeded */
    const char *refresh_token; /* from any 2xx JSON object, even one that failed: NULL = none */
    const char *api_domain;    /* NULL = none */
    double expires_in;         /* seconds, 0 = not said */
    char error[64];            /* the OAuth "error" code of a refusal, "" = none */
    char detail[400];          /* on failure, one line: "HTTP 403, invalid_grant: why", or
                                * mlc_http's message (registered secrets redacted) */
};

/* Make the call and classify the answer. MLC_OK: access_token is set.
 * Refusals: invalid_grant, invalid_client, invalid_code (Zoho) and a bare
 * 401 are MLC_E_AUTH; unauthorized_client, unsupported_grant_type,
 * invalid_scope, invalid_request MLC_E_INVAL; a 2xx without access_token
 * MLC_E_PROTO; otherwise what mlc_http_send() returned. Writes nothing to
 * c->err (the provider words the message). */
enum mlc_rc oauth_token_call(struct conn *c, const struct oauth_call *call,
                             struct oauth_answer *ans);
void oauth_answer_release(struct oauth_answer *ans);

/* Append "name=value" form-encoded to b, with a '&' unless b is empty.
 * MLC_E_NOMEM when b cannot grow. */
enum mlc_rc oauth_form_add(struct mlc_buf *b, const char *name, const char *value);

/* The access token a provider holds. */
struct oauth_token {
    char *access; /* NULL = none */
    char *scheme; /* NULL = "Bearer" */
};
/* Hold ans's access token (the old one is wiped): register it with the log
 * redactor, set au's lifetime from expires_in and, for a scheme other than
 * Bearer, au->header; count it in c->token_refreshes. MLC_E_PROTO, message
 * in c->err, when such a header would not fit in au->header. */
enum mlc_rc oauth_token_take(struct auth *au, struct oauth_token *t, const struct oauth_answer *ans,
                             struct conn *c);
/* The scheme to keep in oauth_token.scheme: NULL for NULL, "" or Bearer. */
char *oauth_scheme_dup(const char *scheme);
void oauth_token_apply(const struct oauth_token *t, struct mlc_http_req *rq);
void oauth_token_release(struct oauth_token *t);

/* mlc_errf() into c->err, registered secrets redacted. */
void oauth_failf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Heap copy of s (NULL: ""); wipe and free (NULL is a no-op). */
char *oauth_dup(const char *s);
void oauth_wipe_free(char *s);

#endif
