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
/* in-flight creates: keys read per bulk fetch, and at most this many calls */
#define JIRA_SCAN_CHUNK 100
#define JIRA_SCAN_MAX_CALLS 20
/* the issue property the agent keeps its trace in: audit id, marker, content hash */
#define JIRA_TRACE_PROP "mlc.trace"
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

/* Parse one POST /rest/api/3/search/jql page requested with fields=labels
 * and properties=mlc.trace:
 * {"issues":[{"id","key","fields":{"labels":[...]},"properties":{"mlc.trace":
 * {"hash":...}}}],"nextPageToken","isLast"}.
 * Calls on_label(ctx, label, key, id, hash) once per label string of each issue
 * (hash: the mlc.trace property's content hash, or JIRA_TRACE_PENDING for an
 * issue whose status or comments were not finished; NULL when absent or malformed)
 * (strings lent for the duration of the call). *next_token becomes a heap copy of
 * nextPageToken when another page follows, or NULL on the last page (isLast
 * true, or no token). MLC_E_PROTO (and *next_token NULL) on invalid JSON,
 * wrong types, an issue without key/id, or isLast false without a token;
 * labels already reported by then stay reported. */
enum mlc_rc jira_parse_search_page(const char *body, size_t len,
                                   void (*on_label)(void *ctx, const char *label, const char *key,
                                                    const char *id, const char *hash),
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

/* The text of a number custom field as the number Jira wants: an optional
 * sign, digits with an optional '.' fraction and exponent, blanks around
 * allowed; no hex, inf or nan, nothing beyond a double's range. 0 and *out
 * (may be NULL) set, or -1. */
int jira_number_text(const char *s, double *out);

/* ---- status and comments after a write (workflow.c) ---- */

/* The marker that ends every comment the agent posts: "mlc-comment:<id>". */
#define JIRA_COMMENT_MARK "mlc-comment:"
/* Longest source comment id; comments read back per page. */
#define JIRA_COMMENT_ID_MAX 128
#define JIRA_COMMENT_PAGE   100
/* Longest comment text sent (bytes): Jira takes at most 32 767 characters. */
#define JIRA_COMMENT_TEXT_MAX 30000
/* The trace hash of an issue whose status or comments are still to be done. */
#define JIRA_TRACE_PENDING "pending"

/* Is id usable as a comment id: 1..JIRA_COMMENT_ID_MAX bytes, no spaces or
 * control characters. */
int jira_comment_id_ok(const char *id);

/* The ADF body of a comment: text (jira_adf_from_text; cut to
 * JIRA_COMMENT_TEXT_MAX bytes and marked " [...]" when longer), then a
 * paragraph holding only the marker JIRA_COMMENT_MARK id. New tree, caller
 * frees. */
cJSON *jira_comment_body(const char *text, const char *id);

/* One page of GET /issue/{key}/comment ({"startAt","maxResults","total",
 * "comments":[{"body": ADF}]}): appends to ids (array) the id of every
 * marker found in a text node of a comment body. *next_start = the startAt
 * of the next page, or -1 on the last one. MLC_E_PROTO (err says why) on
 * anything but an object with a "comments" array. */
enum mlc_rc jira_parse_comment_page(const char *body, size_t len, cJSON *ids, long *next_start,
                                    struct mlc_errbuf *err);

/* Pick from a GET /issue/{key}/transitions body the transition whose "to"
 * status is want (its name, regardless of case, or its id); its id goes to
 * id (idn bytes). The names of all "to" statuses, quoted and comma
 * separated, are appended to reachable (may be NULL). Returns 1 found, 0
 * none leads there, -1 not a transitions list. */
int jira_transition_pick(const char *body, size_t len, const char *want, char *id, size_t idn,
                         struct mlc_buf *reachable);

/* ---- change notifications: watch() and changes() ---- */

/* A dynamic webhook lives 30 days from creation or refresh; watch() refreshes
 * it when fewer than JIRA_HOOK_REFRESH_MS remain (so every 25 days). */
#define JIRA_HOOK_TTL_MS     (30LL * 86400000LL)
#define JIRA_HOOK_REFRESH_MS (5LL * 86400000LL)
/* Last known statuses changes() keeps in its state. */
#define JIRA_SEEN_MAX 2000

/* Parse a Jira timestamp "2019-06-01T12:42:30.000+0000" (fraction optional;
 * the zone may be +hhmm, +hh:mm or Z) into epoch milliseconds. 0 on success,
 * -1 on anything else. */
int jira_time_parse(const char *s, long long *ms);

/* Format epoch milliseconds as "2019-06-01T12:42:30.000+0000" (UTC) into out
 * (at least 29 bytes). */
void jira_time_format(long long ms, char *out, size_t n);

/* A webhook expirationDate into epoch milliseconds: Jira documents an int64
 * (epoch ms) but its own example is the string form above, so both are
 * accepted (a string of digits counts as epoch ms). 0 on success, -1 when v
 * is neither. */
int jira_expiration_parse(const cJSON *v, long long *ms);

/* Append the webhook filter for a project to b: project = MFG (the key is
 * quoted when it is not a plain key). The same text every time, so watch()
 * recognises its own webhooks by url + filter. */
enum mlc_rc jira_jql_project(struct mlc_buf *b, const char *project);

/* Append the changes() query to b:
 *   project = MFG AND updated >= "-Nm" ORDER BY updated ASC
 * N counts whole minutes from since_ms to server_now_ms (both on the Jira
 * server's clock) plus a minute of overlap and one for rounding, at least 2.
 * A relative period needs neither the account's time zone nor our clock. */
enum mlc_rc jira_jql_changes(struct mlc_buf *b, const char *project, long long since_ms,
                             long long server_now_ms);

/* One issue of a changes() search page (fields status, labels, updated,
 * duedate, priority; expand=changelog) checked against seen, the object of
 * last known values {"MFG-12":["3","In Progress","2026-12-10","High"],...},
 * which is updated (the entry moves to the end; trim it with jira_seen_trim).
 * Returns a change_to_json() object (caller frees) when emit is nonzero and
 * a value differs from the last known one: the status, or, for an issue not
 * in seen, a status change in its changelog at or after window_ms whose start
 * differs from the current status; the due date and priority only against a
 * known value. NULL otherwise (also for an issue without key or status). */
cJSON *jira_change_event(const cJSON *issue, cJSON *seen, long long window_ms, int emit);

/* One webhook delivery (network input) as a generic change: the changelog's
 * items by fieldId (display strings, but the ISO date for duedate). */
enum mlc_rc jira_event_parse(const char *body, size_t len, struct change *ch,
                             struct mlc_errbuf *err);

/* Drop the oldest entries of seen until at most max remain. */
void jira_seen_trim(cJSON *seen, size_t max);

#endif
