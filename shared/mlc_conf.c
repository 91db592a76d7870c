/* SPDX-License-Identifier: Apache-2.0
 * mlc_conf: table-driven config section loader; messages name the JSON path.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"

char *mlc_read_file(const char *path, size_t max, size_t *len, struct mlc_errbuf *err)
{
    struct mlc_buf b = MLC_BUF_INIT;
    char chunk[8192];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        mlc_errf(err, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    b.max = max;
    for (;;) {
        n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            mlc_errf(err, "cannot read '%s': %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0) {
            break;
        }
        if (mlc_buf_add(&b, chunk, (size_t)n) != MLC_OK) {
            mlc_errf(err, "'%s' is larger than %zu bytes", path, max);
            goto fail;
        }
    }
    close(fd);
    if (len) {
        *len = b.len;
    }
    return mlc_buf_detach(&b);
fail:
    close(fd);
    mlc_buf_release(&b);
    return NULL;
}

long mlc_conf_parse_duration(const char *s)
{
    char *end;
    long v;

    if (s == NULL || !isdigit((unsigned char)*s)) {
        return -1;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || v < 0 || v > 100L * 365 * 86400) {
        return -1;
    }
    if (*end == '\0' || strcmp(end, "s") == 0) {
        return v;
    }
    if (strcmp(end, "m") == 0) {
        return v * 60;
    }
    if (strcmp(end, "h") == 0) {
        return v * 3600;
    }
    if (strcmp(end, "d") == 0) {
        return v * 86400;
    }
    return -1;
}

char *mlc_conf_expand_env(const char *in, const char *path, struct mlc_errbuf *err)
{
    struct mlc_buf b = MLC_BUF_INIT;
    const char *p = in;

    while (*p) {
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            char name[128];
            const char *val;
            size_t n;
            if (end == NULL || (n = (size_t)(end - p - 2)) == 0 || n >= sizeof(name)) {
                mlc_errf(err, "%s: malformed ${VARIABLE} reference", path);
                goto fail;
            }
            memcpy(name, p + 2, n);
            name[n] = '\0';
            val = getenv(name);
            if (val == NULL) {
                mlc_errf(err, "%s: environment variable '%s' is not set", path, name);
                goto fail;
            }
            mlc_buf_adds(&b, val);
            p = end + 1;
        } else {
            mlc_buf_add(&b, p, 1);
            p++;
        }
    }
    return mlc_buf_detach(&b);
fail:
    mlc_buf_release(&b);
    return NULL;
}

static const char *type_name(enum conf_type t)
{
    switch (t) {
    case CONF_STR:
        return "string";
    case CONF_URL:
        return "URL";
    case CONF_INT:
        return "integer";
    case CONF_BOOL:
        return "boolean";
    case CONF_SECRET:
        return "secret reference";
    case CONF_ENUM:
        return "one of";
    case CONF_DURATION:
        return "duration";
    case CONF_JSON:
        return "object/array";
    }
    return "?";
}

static int enum_index(const char *choices, const char *v)
{
    const char *p = choices;
    size_t vl = strlen(v);
    int i = 0;

    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == vl && strncmp(p, v, n) == 0) {
            return i;
        }
        i++;
        p = bar ? bar + 1 : NULL;
    }
    return -1;
}

/* Apply one value (JSON item, or the default text when item is NULL). */
static enum mlc_rc set_value(const struct conf_key *k, const cJSON *item, const char *path,
                             void *dst, struct mlc_errbuf *err)
{
    char *field = (char *)dst + k->offset;
    char text[64];
    const char *s = NULL;
    char *expanded = NULL;

    if (k->type == CONF_JSON) {
        if (item != NULL && !cJSON_IsObject(item) && !cJSON_IsArray(item)) {
            mlc_errf(err, "%s: expected an object or array", path);
            return MLC_E_INVAL;
        }
        *(const cJSON **)field = item;
        return MLC_OK;
    }
    if (item == NULL) {
        s = k->dflt;
    } else if (cJSON_IsString(item)) {
        s = item->valuestring;
    } else if (cJSON_IsNumber(item) && (k->type == CONF_INT || k->type == CONF_DURATION)) {
        snprintf(text, sizeof(text), "%.0f", item->valuedouble);
        if (item->valuedouble != (double)(long)item->valuedouble) {
            mlc_errf(err, "%s: expected a whole number, got %g", path, item->valuedouble);
            return MLC_E_INVAL;
        }
        s = text;
    } else if (cJSON_IsBool(item) && k->type == CONF_BOOL) {
        s = cJSON_IsTrue(item) ? "true" : "false";
    } else {
        mlc_errf(err, "%s: expected a %s", path, type_name(k->type));
        return MLC_E_INVAL;
    }
    /* secrets keep their reference; everything else gets ${ENV} expanded now */
    if (item != NULL && k->type != CONF_SECRET && strstr(s, "${") != NULL) {
        expanded = mlc_conf_expand_env(s, path, err);
        if (expanded == NULL) {
            return MLC_E_INVAL;
        }
        s = expanded;
    }
    switch (k->type) {
    case CONF_STR:
    case CONF_SECRET:
        *(char **)field = mlc_xstrdup(s);
        break;
    case CONF_URL: {
        size_t n;
        char *u;
        if (s[0] != '\0' && strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0) {
            mlc_errf(err, "%s: '%s' is not an http:// or https:// URL", path, s);
            free(expanded);
            return MLC_E_INVAL;
        }
        u = mlc_xstrdup(s);
        n = strlen(u);
        while (n > 0 && u[n - 1] == '/') {
            u[--n] = '\0';
        }
        *(char **)field = u;
        break;
    }
    case CONF_INT:
    case CONF_DURATION: {
        long v;
        char *end;
        if (k->type == CONF_INT) {
            errno = 0;
            v = strtol(s, &end, 10);
            if (errno != 0 || *s == '\0' || *end != '\0') {
                v = -1;
                mlc_errf(err, "%s: '%s' is not an integer", path, s);
                free(expanded);
                return MLC_E_INVAL;
            }
        } else {
            v = mlc_conf_parse_duration(s);
            if (v < 0) {
                mlc_errf(err, "%s: '%s' is not a duration (use 30s, 15m, 2h or 1d)", path, s);
                free(expanded);
                return MLC_E_INVAL;
            }
        }
        if ((k->lo != 0 || k->hi != 0) && (v < k->lo || v > k->hi)) {
            mlc_errf(err, "%s: %ld is out of range (%ld to %ld)", path, v, k->lo, k->hi);
            free(expanded);
            return MLC_E_INVAL;
        }
        *(long *)field = v;
        break;
    }
    case CONF_BOOL:
        if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "1") == 0) {
            *(int *)field = 1;
        } else if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 || strcmp(s, "0") == 0) {
            *(int *)field = 0;
        } else {
            mlc_errf(err, "%s: '%s' is not a boolean (true or false)", path, s);
            free(expanded);
            return MLC_E_INVAL;
        }
        break;
    case CONF_ENUM: {
        int i = enum_index(k->choices, s);
        if (i < 0) {
            mlc_errf(err, "%s: '%s' is not one of %s", path, s, k->choices);
            free(expanded);
            return MLC_E_INVAL;
        }
        *(int *)field = i;
        break;
    }
    case CONF_JSON:
        break;
    }
    free(expanded);
    return MLC_OK;
}

const char *mlc_conf_unknown_member(const cJSON *obj, const struct conf_key *keys,
                                    const char *const *names)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, obj)
    {
        int known = 0;
        for (const struct conf_key *k = keys; k && k->name && !known; k++) {
            known = strcmp(k->name, it->string) == 0;
        }
        for (const char *const *n = names; n && *n && !known; n++) {
            known = strcmp(*n, it->string) == 0;
        }
        if (!known) {
            return it->string;
        }
    }
    return NULL;
}

enum mlc_rc mlc_conf_load(const cJSON *obj, const char *path, const struct conf_key *keys,
                          const char *const *allow, void *dst, struct mlc_errbuf *err)
{
    const char *unknown;
    char sub[256];

    if (!cJSON_IsObject(obj)) {
        mlc_errf(err, "%s: expected an object", path);
        return MLC_E_INVAL;
    }
    unknown = mlc_conf_unknown_member(obj, keys, allow);
    if (unknown != NULL) {
        struct mlc_buf names = MLC_BUF_INIT;
        for (const struct conf_key *k = keys; k->name; k++) {
            mlc_buf_addf(&names, "%s%s", names.len ? ", " : "", k->name);
        }
        for (const char *const *a = allow; a != NULL && *a != NULL; a++) {
            mlc_buf_addf(&names, "%s%s", names.len ? ", " : "", *a);
        }
        mlc_errf(err, "%s.%s: unknown setting (known: %s)", path, unknown, mlc_buf_str(&names));
        mlc_buf_release(&names);
        return MLC_E_INVAL;
    }
    for (const struct conf_key *k = keys; k->name; k++) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, k->name);
        snprintf(sub, sizeof(sub), "%s.%s", path, k->name);
        if (cJSON_IsNull(item)) {
            item = NULL;
        }
        if (item == NULL && k->dflt == NULL && k->type != CONF_JSON) {
            mlc_errf(err, "%s: required setting is missing (%s)", sub, k->help ? k->help : "");
            return MLC_E_INVAL;
        }
        if (set_value(k, item, sub, dst, err) != MLC_OK) {
            return MLC_E_INVAL;
        }
    }
    return MLC_OK;
}

void mlc_conf_release(const struct conf_key *keys, void *dst)
{
    for (const struct conf_key *k = keys; k->name; k++) {
        if (k->type == CONF_STR || k->type == CONF_URL || k->type == CONF_SECRET) {
            char **f = (char **)((char *)dst + k->offset);
            free(*f);
            *f = NULL;
        }
    }
}

void mlc_conf_describe(const char *section, const struct conf_key *keys, void *fp)
{
    FILE *f = fp;

    fprintf(f, "[%s]\n", section);
    for (const struct conf_key *k = keys; k->name; k++) {
        fprintf(f, "  %-16s %-16s %-12s %s%s%s\n", k->name, type_name(k->type),
                k->dflt ? (k->dflt[0] ? k->dflt : "\"\"") : "(required)", k->help ? k->help : "",
                k->type == CONF_ENUM ? ": " : "", k->type == CONF_ENUM ? k->choices : "");
    }
}

int mlc_addr_is_loopback(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    size_t n = colon && strchr(hostport, ':') == colon ? (size_t)(colon - hostport) : strlen(hostport);

    if (hostport[0] == '[') { /* [::1]:8089 */
        const char *end = strchr(hostport, ']');
        if (end == NULL) {
            return 0;
        }
        n = (size_t)(end - hostport - 1);
        hostport++;
    }
    if (n >= sizeof(host)) {
        return 0;
    }
    memcpy(host, hostport, n);
    host[n] = '\0';
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 || strcmp(host, "localhost") == 0;
}
