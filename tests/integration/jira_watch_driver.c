/* SPDX-License-Identifier: Apache-2.0
 * jira_watch_driver: calls the Jira connector's watch() and changes() once,
 * for tests/integration/test_jira_watch.py (the agent's run loop is not
 * needed). Usage:
 *
 *   jira_watch_driver CONFIG STATE watch URL [SECRET]
 *   jira_watch_driver CONFIG STATE changes
 *
 * CONFIG is a JSON file {"system":{...jira system...},"target":{...},
 * "state_db":PATH,"key_file":PATH}. STATE is a JSON file
 * {"state":{...},"cursor":null|"..."} that is read, passed to the call and
 * written back. One line of JSON goes to stdout:
 *   {"rc":"ok","err":"","state":{...},"next_in_ms":N}      (watch)
 *   {"rc":"ok","err":"","state":{...},"cursor":"...","events":[...]} (changes)
 * The exit status is 0 when the driver ran (whatever the connector's rc), 2
 * on usage or setup errors. Log lines go to stderr (MLC_LOG_LEVEL, default
 * warn). Run without arguments it says what it is and passes trivially,
 * because `make check` runs every program in build/.../tests/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cjson/cJSON.h>
#include "agent/connectors/connector.h"
#include "agent/connectors/jira/jira.h"
#include "agent/secrets.h"
#include "agent/state.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

static char *slurp(const char *path)
{
    struct mlc_buf b = MLC_BUF_INIT;
    char chunk[4096];
    size_t n;
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        mlc_buf_add(&b, chunk, n);
    }
    fclose(f);
    if (b.ptr == NULL) {
        return mlc_xstrdup("");
    }
    return mlc_buf_detach(&b);
}

static int spill(const char *path, const cJSON *obj)
{
    char *text = mlc_json_print(obj);
    char tmp[4096];
    FILE *f;
    int ok;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (f == NULL) {
        free(text);
        return -1;
    }
    ok = fputs(text, f) >= 0;
    ok = fclose(f) == 0 && ok;
    free(text);
    return ok && rename(tmp, path) == 0 ? 0 : -1;
}

static long long wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int usage(void)
{
    fprintf(stderr, "usage: jira_watch_driver CONFIG STATE watch URL [SECRET]\n"
                    "       jira_watch_driver CONFIG STATE changes\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct conn c;
    struct vault vault;
    struct state *st = NULL;
    struct secret_store *ss = NULL;
    struct mlc_errbuf err = { 0 };
    cJSON *conf = NULL, *file = NULL, *state, *out = mlc_json_xobj(), *events = NULL;
    const cJSON *cur;
    char *text, *cursor = NULL;
    const char *lvl = getenv("MLC_LOG_LEVEL");
    enum mlc_rc rc;
    int status = 2;

    if (argc == 1) {
        printf("# jira_watch_driver is a helper of tests/integration/test_jira_watch.py\n");
        printf("0 passed, 0 failed\n");
        cJSON_Delete(out);
        return 0;
    }
    if (argc < 4 || (strcmp(argv[3], "watch") == 0 && (argc < 5 || argc > 6)) ||
        (strcmp(argv[3], "changes") == 0 && argc != 4) ||
        (strcmp(argv[3], "watch") != 0 && strcmp(argv[3], "changes") != 0)) {
        cJSON_Delete(out);
        return usage();
    }
    mlc_log_level =
        lvl != NULL && mlc_log_parse_level(lvl) >= 0 ? mlc_log_parse_level(lvl) : MLC_LOG_WARN;
    mlc_http_global_init();
    memset(&c, 0, sizeof(c));
    text = slurp(argv[1]);
    conf = text != NULL ? cJSON_Parse(text) : NULL;
    free(text);
    text = slurp(argv[2]);
    file = text != NULL && text[0] != '\0' ? cJSON_Parse(text) : mlc_json_xobj();
    free(text);
    if (!cJSON_IsObject(conf) || !cJSON_IsObject(file)) {
        fprintf(stderr, "jira_watch_driver: cannot read '%s' or '%s' as JSON objects\n", argv[1],
                argv[2]);
        goto out;
    }
    if (state_open(&st, mlc_json_str(conf, "state_db"), &err) != MLC_OK ||
        secrets_open(&ss, st, mlc_json_str(conf, "key_file"), 1, &err) != MLC_OK) {
        fprintf(stderr, "jira_watch_driver: %s\n", mlc_err_msg(&err));
        goto out;
    }
    state = cJSON_GetObjectItemCaseSensitive(file, "state");
    if (!cJSON_IsObject(state)) {
        cJSON_DeleteItemFromObjectCaseSensitive(file, "state");
        state = mlc_json_xobj();
        mlc_json_xadd(file, "state", state);
    }
    cur = cJSON_GetObjectItemCaseSensitive(file, "cursor");
    cursor = cJSON_IsString(cur) ? mlc_xstrdup(cur->valuestring) : NULL;

    c.ops = &connector_jira;
    c.name = (char *)"jira";
    c.conf = cJSON_GetObjectItemCaseSensitive(conf, "system");
    secrets_vault(ss, &vault);
    c.vault = &vault;
    rc = c.ops->open(&c);
    if (rc != MLC_OK) {
        fprintf(stderr, "jira_watch_driver: open: %s\n", mlc_err_msg(&c.err));
        goto out;
    }
    if (strcmp(argv[3], "watch") == 0) {
        struct watch_req req = { 0 };
        long long next = 0;

        req.url = argv[4];
        req.hook_secret = argc > 5 && argv[5][0] != '\0' ? argv[5] : NULL;
        req.now_ms = wall_ms();
        rc = c.ops->watch(&c, cJSON_GetObjectItemCaseSensitive(conf, "target"), &req, state, &next);
        mlc_json_xadd_num(out, "next_in_ms", (double)(next - req.now_ms));
    } else {
        events = mlc_json_xarr();
        rc = c.ops->changes(&c, cJSON_GetObjectItemCaseSensitive(conf, "target"), &cursor, state,
                            events);
        mlc_json_xadd(out, "cursor",
                      cursor != NULL ? cJSON_CreateString(cursor) : cJSON_CreateNull());
        mlc_json_xadd(out, "events", events);
        cJSON_DeleteItemFromObjectCaseSensitive(file, "cursor");
        mlc_json_xadd(file, "cursor",
                      cursor != NULL ? cJSON_CreateString(cursor) : cJSON_CreateNull());
    }
    mlc_json_xadd_str(out, "rc", rc == MLC_OK ? "ok" : mlc_strerror(rc));
    mlc_json_xadd_str(out, "err", rc == MLC_OK ? "" : mlc_err_msg(&c.err));
    mlc_json_xadd_num(out, "api_calls", (double)c.api_calls);
    mlc_json_xadd(out, "state", cJSON_Duplicate(state, 1));
    if (spill(argv[2], file) != 0) {
        fprintf(stderr, "jira_watch_driver: cannot write '%s'\n", argv[2]);
        goto out;
    }
    text = mlc_json_print(out);
    printf("%s\n", text);
    free(text);
    status = 0;
out:
    if (c.ops != NULL) {
        c.ops->close(&c);
    }
    free(cursor);
    cJSON_Delete(out);
    cJSON_Delete(file);
    cJSON_Delete(conf);
    secrets_close(ss);
    state_close(st);
    mlc_http_global_cleanup();
    return status;
}
