/* SPDX-License-Identifier: Apache-2.0
 * jira: the Jira Cloud target connector (REST API v3). The connector itself
 * is the one exported struct below; the pure helpers after it build requests
 * and parse responses without a network, for unit tests and fuzzers.
 */
#ifndef JIRA_H
#define JIRA_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_err.h"
#include "agent/connectors/connector.h"

extern const struct connector connector_jira;

/* Jira accepts at most 50 entries per bulk create, 50 reconcileIssues ids. */
#define JIRA_BULK_MAX 50
/* Markers per JQL query in find(). */
#define JIRA_FIND_CHUNK 50
/* Summary limit (Jira counts characters; bytes is the safe side). */
#define JIRA_SUMMARY_MAX 255

/* Map a POST /rest/api/3/issue/bulk response (201, or 400 when every entry
 * failed) onto out[0..n_items), where item i was issueUpdates[i]:
 *  - "errors"[]: failedElementNumber (0-based) gets rc from its "status"
 *    (mlc_http_classify; MLC_E_REJECTED when absent or not an error) and a
 *    message from elementErrors: errorMessages joined by "; ", then each
 *    "field: msg" pair ("customfield_10050: Field value is too long");
 *  - "issues"[] are the successes in request order without an index: they
 *    fill the indexes not named by an error, with key/id and rc MLC_OK.
 * Returns MLC_E_PROTO (message in err, out untouched) for anything else:
 * invalid JSON, wrong types, an index out of range or repeated, or counts that
 * do not add up to n_items. Never reads past len. */
enum mlc_rc jira_parse_bulk_response(const char *body, size_t len, size_t n_items,
                                     struct result *out, struct mlc_errbuf *err);

/* Parse one POST /rest/api/3/search/jql page requested with fields=labels:
 * {"issues":[{"id","key","fields":{"labels":[...]}}],"nextPageToken","isLast"}.
 * Calls on_label(ctx, label, key, id) once per label string of each issue
 * (strings lent for the duration of the call). *next_token becomes a heap copy of
 * nextPageToken when another page follows, or NULL on the last page (isLast
 * true, or no token). MLC_E_PROTO (and *next_token NULL) on invalid JSON,
 * wrong types, an issue without key/id, or isLast false without a token;
 * labels already reported by then stay reported. */
enum mlc_rc jira_parse_search_page(const char *body, size_t len,
                                   void (*on_label)(void *ctx, const char *label, const char *key,
                                                    const char *id),
                                   void *ctx, char **next_token, struct mlc_errbuf *err);

/* Turn an ErrorCollection body into one line in out (n bytes, n > 0):
 * errorMessages joined by "; ", then "field: msg" for each entry of errors,
 * then error/error_description (OAuth bodies). Returns MLC_OK when a message
 * was found; otherwise MLC_E_PROTO with a printable snippet of the body (or
 * "" for an empty body) in out. Truncates to fit. */
enum mlc_rc jira_error_text(const char *body, size_t len, char *out, size_t n);

/* Append the JQL that finds markers[0..n) in project to b:
 * project = "MFG" AND labels in ("m1", "m2"), with '"' and '\' escaped. */
enum mlc_rc jira_jql_markers(struct mlc_buf *b, const char *project, const char *const *markers,
                             size_t n);

/* Summary cleaning into out (n bytes): C0 controls (including CR/LF) become
 * spaces, a CRLF pair one space, invalid UTF-8 U+FFFD; then cut to at most
 * JIRA_SUMMARY_MAX bytes (and n - 1) without splitting a UTF-8 sequence. */
void jira_summary_clean(const char *in, char *out, size_t n);

/* A label as Jira accepts it: spaces (and other whitespace) become '_'.
 * Heap copy, caller frees; NULL for an empty or all-invalid label. */
char *jira_label_clean(const char *in);

#endif
