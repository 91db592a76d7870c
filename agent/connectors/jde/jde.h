/* SPDX-License-Identifier: Apache-2.0
 * jde: JD Edwards EnterpriseOne AIS connector; pure helpers for tests/fuzzers.
 */
#ifndef MLC_JDE_H
#define MLC_JDE_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "agent/connectors/connector.h"

#define JDE_MAX_KEYS 8
#define JDE_KEY_MAX 160 /* bytes of a record key, composite ones joined with '|' */

/* How to read a table: which columns are key, watermark date and time.
 * A record's key is its key column's value, blanks trimmed; with a
 * composite key (n_keys > 1) the columns' trimmed values joined with '|'
 * in key_cols order ("00001|10004821|PV|001"). */
struct jde_table {
    char table[16];
    const char *key_col;   /* the (first) key column, e.g. "DOCO" */
    int key_numeric;       /* 1: a one-column key must be a JSON number */
    const char *date_col;  /* "UPMJ" */
    const char *time_col;  /* "TDAY" on F4801, "UPMT" on most tables */
    const char *key_cols[JDE_MAX_KEYS]; /* a composite key's columns (key_cols[0] == key_col) */
    int n_keys;            /* 0 or 1: key_col alone */
};

/* Watermark "yyyyMMdd|HHMMSS|key" (the key may hold '|' itself); parse
 * gives 0 on success. */
struct jde_cursor {
    char date[9];
    long time;
    char key[JDE_KEY_MAX];
};
int jde_cursor_parse(const char *s, struct jde_cursor *out);
void jde_cursor_format(const struct jde_cursor *c, char *out, size_t n);

/* Parse one data-service BROWSE answer into out (rows appended). Rows that
 * cannot be keyed or dated become records with .error set and the raw row as
 * data. The change date may come as yyyyMMdd text (what AIS sends) or as a
 * Julian CYYDDD number (as the table stores it); the cursor holds yyyyMMdd.
 * *more and *next_href (heap, may stay NULL) describe paging. */
enum mlc_rc jde_parse_page(const char *body, size_t len, const struct jde_table *t,
                           struct page *out, int *more, char **next_href, struct mlc_errbuf *err);

/* The ServiceErrorResponse message of an error body, into out. */
void jde_error_text(const char *body, size_t len, char *out, size_t n);

/* The table description of a flow's "source" object: "table", "key" (a
 * column or an array of up to JDE_MAX_KEYS columns; default "DOCO"),
 * "key_type" ("number": a one-column key must be numeric, the default
 * for a key given as a string; "string"; an array key has no check unless
 * key_type is "number" and it has one column), "changed":
 * {"date": "UPMJ", "time": "UPMT"} (or the older "date_column" and
 * "time_column"; time defaults to TDAY on F4801, UPMT elsewhere). Column
 * names point into src. 0, or -1 with a message naming the setting. */
int jde_table_from_source(const cJSON *src, struct jde_table *t, struct mlc_errbuf *err);

extern const struct connector connector_jde;

#endif
