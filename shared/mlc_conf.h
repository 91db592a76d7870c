/* SPDX-License-Identifier: Apache-2.0
 * mlc_conf: table-driven loading of JSON config sections into C structs.
 * Errors name the JSON path of the bad value ("systems.jira.page_size: ...").
 * Values may contain ${ENV_VAR}; secret fields hold a name in the encrypted
 * store ("secret:NAME"), an ${ENV_VAR}, or (discouraged) a literal.
 */
#ifndef MLC_CONF_H
#define MLC_CONF_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "shared/mlc_err.h"

enum conf_type {
    CONF_STR = 1,  /* char * (heap, freed by mlc_conf_release) */
    CONF_URL,      /* char *, must start with http:// or https:// ; trailing '/' removed */
    CONF_INT,      /* long; bounds in lo..hi */
    CONF_BOOL,     /* int */
    CONF_SECRET,   /* char *: the reference as written (resolved later by the secret store) */
    CONF_ENUM,     /* int: index into the '|'-separated list in .choices */
    CONF_DURATION, /* long seconds; "90s", "15m", "2h", "1d" or an integer */
    CONF_JSON,     /* const cJSON * lent from the document (object or array) */
};

struct conf_key {
    const char *name;
    enum conf_type type;
    size_t offset;       /* offsetof(struct x, field) */
    const char *dflt;    /* default as text; NULL = required */
    const char *help;    /* one line for check-config */
    long lo, hi;         /* CONF_INT / CONF_DURATION bounds (both 0 = unbounded) */
    const char *choices; /* CONF_ENUM: "token|basic" */
};

/* Fill dst from obj following keys. Unknown members are an error unless their
 * name appears in allow (NULL-terminated list, may be NULL). path is the JSON
 * path of obj for messages ("systems.jde"). */
enum mlc_rc mlc_conf_load(const cJSON *obj, const char *path, const struct conf_key *keys,
                          const char *const *allow, void *dst, struct mlc_errbuf *err);

/* The first member of obj named neither in keys (may be NULL) nor in names
 * (NULL-terminated, may be NULL); NULL when every member is known. */
const char *mlc_conf_unknown_member(const cJSON *obj, const struct conf_key *keys,
                                    const char *const *names);

/* Free the strings mlc_conf_load() put into dst. */
void mlc_conf_release(const struct conf_key *keys, void *dst);

/* Expand ${VAR} references (heap result). An unset variable is an error
 * naming it. */
char *mlc_conf_expand_env(const char *in, const char *path, struct mlc_errbuf *err);

/* Parse "90s" / "15m" / "2h" / "1d" / "120" into seconds; -1 when invalid. */
long mlc_conf_parse_duration(const char *s);

/* Print the key table (name, type, default, help) for check-config. */
void mlc_conf_describe(const char *section, const struct conf_key *keys, void *fp);

/* Read a whole file into a heap string (caller frees); NULL with err on failure. */
/* 1 when "HOST:PORT" (or a bare host) names a loopback address:
 * 127.x.y.z, ::1, [::1], localhost. */
int mlc_addr_is_loopback(const char *hostport);

char *mlc_read_file(const char *path, size_t max, size_t *len, struct mlc_errbuf *err);

#endif
