/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: Looker's datagroup list (GET /api/4.0/datagroups), searched
 * for a model + name, with a roomy and a tiny id buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/looker/looker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mlc_errbuf err = { 0 };
    char id[64], small[2];
    int rc;

    rc = looker_datagroup_find((const char *)data, size, "mlc_finance", "mlc_staging_load", id,
                               sizeof(id), &err);
    if (rc == 0 && (id[0] == '\0' || strlen(id) >= sizeof(id))) {
        abort(); /* found means a usable id */
    }
    if (rc != 0 && id[0] != '\0' && rc != -1) {
        abort();
    }
    looker_datagroup_find((const char *)data, size, "", "", small, sizeof(small), &err);
    return 0;
}
