/* SPDX-License-Identifier: Apache-2.0
 * psft: PeopleSoft (Integration Broker REST) source connector; the pure
 * parts, exposed for unit tests and fuzzers.
 *
 * PeopleSoft does not page (peoplesoft.md 5, 9): a read names a date-time
 * window on the cursor column and the answer is cut at maxrows. The window
 * reader below splits a capped window in halves until every answer is whole;
 * a capped one-second window is read on by key ("after key") where the query
 * or service supports it, else it fails with a message saying what to raise.
 */
#ifndef MLC_PSFT_H
#define MLC_PSFT_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "agent/connectors/connector.h"

enum psft_kind { PSFT_PO = 0, PSFT_REQ, PSFT_VCHR, PSFT_VNDR, PSFT_NKIND };

/* What each record kind is keyed and listed by (peoplesoft.md 6 and 9). */
struct psft_kind_def {
    const char *name;   /* config value: "po", "requisition", "voucher", "vendor" */
    const char *k1, *k2; /* the composite key's columns */
    const char *list;   /* the custom service's list member ("purchaseOrders") */
    const char *stamp;  /* default cursor column */
    int vendor_join;    /* 1: VENDOR_SETID + VENDOR_ID name a vendor to join */
};
const struct psft_kind_def *psft_kind_def(int kind);
int psft_kind_parse(const char *s); /* -1 when unknown */

/* Date-times are microseconds since 1970-01-01T00:00:00 of the server's wall
 * clock (PeopleSoft stamps carry no zone). Accepted: YYYY-MM-DDTHH:MM:SS,
 * the same with a space, PeopleSoft's YYYY-MM-DD-HH.MM.SS, each with an
 * optional fraction of up to 6 digits. Returns 0, -1 when invalid, -2 when
 * the value is a date without a time (it cannot drive a cursor). */
int psft_dttm_parse(const char *s, long long *us);
enum { PSFT_DTTM_ISO = 0, PSFT_DTTM_SPACE, PSFT_DTTM_PSFT };
/* Whole seconds in the chosen style (what a prompt or parameter receives). */
void psft_dttm_format(long long us, int style, char *out, size_t n);
/* Full precision "YYYY-MM-DDTHH:MM:SS.ffffff" (cursors, messages). */
void psft_dttm_format_full(long long us, char *out, size_t n);

/* A cursor column name that by PeopleSoft naming holds a date only
 * ("PO_DT", "INVOICE_DT"): 1. Such a column cannot be a cursor. */
int psft_column_date_only(const char *col);

/* One record as read. */
struct psft_item {
    char *k1, *k2;    /* the key's parts, as sent (leading zeros kept) */
    char *key;        /* "US001-0000012345"; NULL when the row has no usable key */
    long long stamp;  /* the cursor column; -1 when unknown (error rows) */
    long long eff;    /* the record's change time: max(stamp, its vendor's stamp) */
    cJSON *data;      /* columns without the alias prefix ("PO_ID") */
    char *error;      /* non-NULL: the row cannot become a record */
};

struct psft_batch {
    struct psft_item *v;
    size_t n, cap;
    int capped;      /* the answer was cut (truncated: true, or maxrows rows) */
    size_t excluded; /* rows left out on purpose (template vouchers) */
};
void psft_batch_release(struct psft_batch *b);
struct psft_item *psft_batch_push(struct psft_batch *b); /* zeroed; aborts on OOM */

/* How to read an answer. */
struct psft_shape {
    int kind;
    const char *cursor_col; /* "LAST_DTTM_UPDATE" */
    long maxrows;           /* answers with this many rows are taken as cut */
    const char *list;       /* service: the list member; NULL = the kind's */
    const char *query;      /* QAS: the query asked for (checked against the answer), may be NULL */
    const char *child;      /* QAS: a child query ("lines", "comments"): each row is one child
                             * of its key's record, gathered in an array of this name */
};

/* A Query Access Services ExecuteQuery JSON answer (peoplesoft.md 5): rows
 * lose "attr:rownumber" and their alias prefixes; rows of one key that carry
 * LINE_NBR are folded into one record with a "lines" array (with sh->child,
 * every row is folded into an array of that name). A cursor column
 * holding dates only is MLC_E_INVAL with a message naming it. */
enum mlc_rc psft_parse_qas(const char *body, size_t len, const struct psft_shape *sh,
                           struct psft_batch *out, struct mlc_errbuf *err);
/* A custom list service answer (peoplesoft.md 9). */
enum mlc_rc psft_parse_svc(const char *body, size_t len, const struct psft_shape *sh,
                           struct psft_batch *out, struct mlc_errbuf *err);

/* An error body as one line: IBResponse XML (its DefaultMessage, message
 * set and id), a JSON {"status":"error","code","message"}, or the text. */
void psft_error_text(const char *body, size_t len, char *out, size_t n);
/* 1 when the body is an Integration Broker IBResponse error document. */
int psft_is_ibresponse(const char *body, size_t len);
/* 1 when a 2xx body still reports a failure (IBResponse, or a JSON status
 * other than "success"); the one-line reason goes to out. */
int psft_body_failed(const char *body, size_t len, char *out, size_t n);

/* ---- the window reader ----
 * fetch reads the rows whose cursor column lies in [from, to) (the service
 * may include rows at exactly `to`; they are dropped here and read with the
 * next window). after1/after2 (NULL: a plain window) ask for a keyset read:
 * the rows after position (from, after1, after2) in (stamp, key) order, cut
 * at maxrows in that order; ("", "") is the start of `from` itself. */
typedef enum mlc_rc (*psft_fetch_fn)(void *ctx, long long from, long long to, const char *after1,
                                     const char *after2, struct psft_batch *out,
                                     struct mlc_errbuf *err);
struct psft_window {
    psft_fetch_fn fetch;
    void *ctx;
    int can_after;       /* the read path takes an after-key (keyset reads) */
    long long res_us;    /* the finest window the read path can express (1 s) */
    long maxrows;        /* for messages */
    const char *column;  /* for messages */
    const char *hint;    /* for messages: where maxrows / the after-key is set */
    int sorted;          /* answers are sorted by the cursor column (then key) before the
                          * cut: the window is walked by keyset (with an after-key), or a
                          * capped answer is taken as whole below its last second, instead
                          * of halving the window */
    unsigned long calls; /* fetches made */
};
/* All records whose cursor column lies in [from, to), appended to out (not
 * in any particular order; out->capped is left 0). */
enum mlc_rc psft_read_window(struct psft_window *w, long long from, long long to,
                             struct psft_batch *out, struct mlc_errbuf *err);

/* ---- vendors, joined into POs and vouchers ---- */
struct psft_vendor {
    char *key;   /* "SHARE-0000000042" */
    char *name;  /* NAME1 */
    char *terms; /* the terms column, NULL when absent */
    long long stamp;
};
struct psft_vendors {
    struct psft_vendor *v;
    size_t n;
};
/* Take the vendor items of b (sorted by key); name/terms columns as given. */
void psft_vendors_build(struct psft_vendors *vc, const struct psft_batch *b, const char *terms_col);
const struct psft_vendor *psft_vendors_find(const struct psft_vendors *vc, const char *key);
void psft_vendors_release(struct psft_vendors *vc);
/* Put VENDOR_NAME / VENDOR_TERMS into it->data and set it->eff (the later of
 * its own stamp and its vendor's). Returns the vendor found, or NULL. */
const struct psft_vendor *psft_join_vendor(struct psft_item *it, const struct psft_vendors *vc);

/* Records in cursor order: by eff, then key; error rows first. */
void psft_batch_sort(struct psft_batch *b);
/* Keep, per key, only the latest read (the record changed while being read). */
void psft_batch_dedupe(struct psft_batch *b);

/* Cursor "YYYY-MM-DDTHH:MM:SS.ffffff|KEY": parse gives 0 on success. */
int psft_cursor_parse(const char *s, long long *eff, char *key, size_t n);
void psft_cursor_format(long long eff, const char *key, char *out, size_t n);
/* Order of (eff, key) pairs, as the cursor compares them. */
int psft_cursor_cmp(long long a_eff, const char *a_key, long long b_eff, const char *b_key);

/* The lines of a PO or requisition as one text (data."lines"), set as
 * LINES_SUMMARY with LINE_COUNT. */
void psft_lines_summarise(cJSON *data);

extern const struct connector connector_psft;

#endif
