/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: mappings (compile + apply), durations, schedules, Retry-After.
 * Input: a JSON document {"mapping": {...}, "row": {...}} or any bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "agent/agent.h"
#include "agent/mapping.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mlc_errbuf err = { 0 };
    enum sched_kind kind;
    long every;
    int daily;
    char *s = malloc(size + 1);
    cJSON *doc;

    if (s == NULL) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    mlc_conf_parse_duration(s);
    mlc_retry_after_parse(s, 1700000000LL);
    {
        char why[256];
        if (sched_parse(s, &kind, &every, &daily, why, sizeof(why)) == 0) {
            sched_next(kind, every, daily, 1700000000LL);
        }
    }
    doc = cJSON_ParseWithLength(s, size);
    if (doc != NULL) {
        struct mapping *m = mapping_compile(cJSON_GetObjectItem(doc, "mapping"), "mapping", &err);
        if (m != NULL) {
            cJSON *out = mapping_apply(m, cJSON_GetObjectItem(doc, "row"), &err);
            cJSON_Delete(out);
            mapping_free(m);
        }
        cJSON_Delete(doc);
    }
    free(s);
    return 0;
}
