/* SPDX-License-Identifier: Apache-2.0
 * mlc_lws: libwebsockets helpers (see mlc_lws.h).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_lws.h"

/* "Cache-Control: no-store" -> lws wants the name lower-case with its colon */
static int add_header(struct lws *wsi, const char *h, unsigned char **p, unsigned char *end)
{
    const char *colon = strchr(h, ':');
    char name[64];
    size_t n = colon ? (size_t)(colon - h) + 1 : 0;
    const char *v;

    if (n == 0 || n >= sizeof(name)) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        name[i] = (char)tolower((unsigned char)h[i]);
    }
    name[n] = '\0';
    for (v = colon + 1; *v == ' '; v++) {
    }
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)v,
                                       (int)strlen(v), p, end);
}

int mlc_lws_reply(struct lws *wsi, unsigned status, const char *type, const void *body, size_t len,
                  const char *const *headers)
{
    unsigned char hdr[LWS_PRE + 2048], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
    unsigned char *b;
    int n;

    if (lws_add_http_common_headers(wsi, status, type, (lws_filepos_t)len, &p, end)) {
        return -1;
    }
    for (const char *const *h = headers; h && *h; h++) {
        if (add_header(wsi, *h, &p, end)) {
            return -1;
        }
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end)) {
        return -1;
    }
    b = mlc_xmalloc(LWS_PRE + len + 1);
    memcpy(b + LWS_PRE, body, len);
    n = lws_write(wsi, b + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
    free(b);
    if (n < (int)len) {
        return -1;
    }
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}
