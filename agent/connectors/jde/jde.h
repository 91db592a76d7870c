/* SPDX-License-Identifier: Apache-2.0
 * jde: JD Edwards EnterpriseOne AIS connector; pure helpers for tests/fuzzers.
 */
#ifndef MLC_JDE_H
#define MLC_JDE_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "agent/connectors/connector.h"

/* How to read a table: which columns are key, watermark date and time. */
struct jde_table {
    char table[16];
    const char *key_col;   /* e.g. "DOCO" */
    int key_numeric;       /* 1: key must be a JSON number */
    const char *date_col;  /* "UPMJ" */
    const char *time_col;  /* "TDAY" on F4801, "UPMT" on most tables */
};

/* Watermark "yyyyMMdd|HHMMSS|key"; parse gives 0 on success. */
struct jde_cursor {
    char date[9];
    long time;
    char key[64];
};
int jde_cursor_parse(const char *s, struct jde_cursor *out);
void jde_cursor_format(const struct jde_cursor *c, char *out, size_t n);

/* Parse one data-service BROWSE answer into out (rows appended). Rows that
 * cannot be keyed or dated become records with .error set and the raw row as
 * data. *more and *next_href (heap, may stay NULL) describe paging. */
enum mlc_rc jde_parse_page(const char *body, size_t len, const struct jde_table *t,
                           struct page *out, int *more, char **next_href, struct mlc_errbuf *err);

/* The ServiceErrorResponse message of an error body, into out. */
void jde_error_text(const char *body, size_t len, char *out, size_t n);

extern const struct connector connector_jde;

#endif
