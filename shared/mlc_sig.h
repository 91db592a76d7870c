/* SPDX-License-Identifier: Apache-2.0
 * mlc_sig: authenticity checks for incoming webhooks, in constant time.
 *  - Jira admin webhooks: X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>
 *  - Jira dynamic (OAuth app) webhooks: Authorization: Bearer <JWT, HS256,
 *    signed with the app's client secret>
 */
#ifndef MLC_SIG_H
#define MLC_SIG_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "shared/mlc_err.h"

/* MLC_OK when header ("sha256=<64 hex>", case-insensitive hex) matches the
 * HMAC of body under secret; MLC_E_AUTH otherwise, including an unknown
 * method prefix (Atlassian warns the method may change: fail closed). */
enum mlc_rc mlc_sig_hub_verify(const char *secret, size_t secret_len, const void *body, size_t len,
                               const char *header, struct mlc_errbuf *err);

/* Verify a compact JWS (header.payload.signature) signed HS256 with secret.
 * Rejects any other alg (including "none"), bad base64url, a bad signature,
 * and exp/nbf outside now +/- leeway_s (claims are optional). On MLC_OK and a
 * non-NULL claims, *claims receives the parsed payload (caller frees). A
 * leading "Bearer " is skipped. */
enum mlc_rc mlc_sig_jwt_hs256_verify(const char *token, const char *secret, size_t secret_len,
                                     long long now, long leeway_s, cJSON **claims,
                                     struct mlc_errbuf *err);

/* Base64url (no padding) helpers, heap results; decode returns NULL on bad input. */
char *mlc_b64url_encode(const void *in, size_t n);
unsigned char *mlc_b64url_decode(const char *in, size_t n, size_t *out_len);

#endif
