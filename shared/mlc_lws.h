/* SPDX-License-Identifier: Apache-2.0
 * mlc_lws: small libwebsockets helpers shared by the relay and the agent's
 * status page.
 */
#ifndef MLC_LWS_H
#define MLC_LWS_H

#include <stddef.h>
#include <libwebsockets.h>

/* Answer an HTTP request in one go from inside an lws HTTP callback:
 * status, Content-Type, extra headers (NULL-terminated "Name: value" list,
 * may be NULL), body; then end the transaction. Returns what the callback
 * returns: 0, or -1 to close the connection. The connection's per-session
 * data may be gone afterwards: read nothing from it after this call. */
int mlc_lws_reply(struct lws *wsi, unsigned status, const char *type, const void *body, size_t len,
                  const char *const *headers);

#endif
