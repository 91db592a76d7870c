/* SPDX-License-Identifier: Apache-2.0
 * looker parse: the Looker answers the connector reads (looker.md 3, 4.2).
 * Network input: every member is checked for its type before use.
 */
#include <stdio.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "agent/connectors/looker/looker.h"
#include "agent/connectors/auth/auth.h"
#include "shared/mlc_json.h"

static cJSON *parse(const char *body, size_t len)
{
    return body != NULL && len > 0 ? cJSON_ParseWithLength(body, len) : NULL;
}

/* Whether s can go into a URL path as it is (the id is sent back in one). */
static int path_safe(const char *s)
{
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.' || ch == ':')) {
            return 0;
        }
    }
    return 1;
}

/* A datagroup's id as text: Looker sends a string; a number is accepted. */
static int id_text(const cJSON *dg, char *out, size_t n)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(dg, "id");

    if (cJSON_IsString(id) && id->valuestring[0] != '\0' && strlen(id->valuestring) < n &&
        path_safe(id->valuestring)) {
        snprintf(out, n, "%s", id->valuestring);
        return 0;
    }
    if (cJSON_IsNumber(id) && id->valuedouble >= 0 && id->valuedouble < 1e15) {
        snprintf(out, n, "%.0f", id->valuedouble);
        return 0;
    }
    return -1;
}

static int str_is(const cJSON *obj, const char *member, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, member);

    return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

int looker_datagroup_find(const char *body, size_t len, const char *model, const char *name,
                          char *id, size_t nid, struct mlc_errbuf *err)
{
    cJSON *root = parse(body, len);
    const cJSON *dg;
    char seen[256];
    size_t o = 0;
    int rc = 1, n = 0;

    seen[0] = '\0';
    id[0] = '\0';
    if (!cJSON_IsArray(root)) {
        mlc_errf(err, "the datagroup list is not a JSON array");
        cJSON_Delete(root);
        return -1;
    }
    cJSON_ArrayForEach(dg, root)
    {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(dg, "model_name");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(dg, "name");

        if (!cJSON_IsObject(dg)) {
            continue;
        }
        if (str_is(dg, "model_name", model) && str_is(dg, "name", name)) {
            if (id_text(dg, id, nid) != 0) {
                mlc_errf(err, "datagroup %s/%s has no usable id in the list", model, name);
                rc = -1;
            } else {
                rc = 0;
            }
            break;
        }
        if (cJSON_IsString(m) && cJSON_IsString(nm) && n < 5 && o < sizeof(seen)) {
            o += (size_t)snprintf(seen + o, sizeof(seen) - o, "%s%.60s/%.60s", n ? ", " : "",
                                  m->valuestring, nm->valuestring);
            n++;
        }
    }
    if (rc == 1) {
        mlc_errf(err,
                 "no datagroup named '%s' in model '%s' (the API user sees %d%s%s%s): check the "
                 "after_load model and datagroup, that the model is deployed, and that the user's "
                 "role can see it",
                 name, model, cJSON_GetArraySize(root), n ? ": " : "", seen,
                 cJSON_GetArraySize(root) > n ? ", ..." : "");
    }
    cJSON_Delete(root);
    return rc;
}

int looker_datagroup_check(const char *body, size_t len, const char *model, const char *name,
                           long long *triggered_at)
{
    cJSON *root = parse(body, len);
    const cJSON *t;
    int rc;

    if (triggered_at != NULL) {
        *triggered_at = 0;
    }
    if (!cJSON_IsObject(root) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "name")) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "model_name"))) {
        cJSON_Delete(root);
        return -1;
    }
    rc = str_is(root, "model_name", model) && str_is(root, "name", name) ? 0 : 1;
    t = cJSON_GetObjectItemCaseSensitive(root, "triggered_at");
    if (triggered_at != NULL && cJSON_IsNumber(t) && t->valuedouble > 0 && t->valuedouble < 1e13) {
        *triggered_at = (long long)t->valuedouble;
    }
    cJSON_Delete(root);
    return rc;
}

void looker_error_line(const char *body, size_t len, char *out, size_t n)
{
    cJSON *root;
    const cJSON *errs, *e;

    if (n == 0) {
        return;
    }
    auth_error_line(body != NULL ? body : "", body != NULL ? len : 0, out, n);
    root = parse(body, len);
    errs = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "errors") : NULL;
    e = cJSON_IsArray(errs) ? cJSON_GetArrayItem(errs, 0) : NULL;
    if (cJSON_IsObject(e)) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "field");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        size_t o = strlen(out);
        if (o < n - 1) {
            snprintf(out + o, n - o, " (%s%s%s)", cJSON_IsString(f) ? f->valuestring : "?",
                     cJSON_IsString(m) ? ": " : "", cJSON_IsString(m) ? m->valuestring : "");
        }
        for (char *p = out; *p; p++) {
            if ((unsigned char)*p < 0x20) {
                *p = ' ';
            }
        }
    }
    cJSON_Delete(root);
}
