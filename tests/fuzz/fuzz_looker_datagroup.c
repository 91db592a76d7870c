/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: one Looker Datagroup object (GET or PATCH
 * /api/4.0/datagroups/{id}), checked against a model + name.
 */
#include <stdint.h>
#include <stdlib.h>
#include "agent/connectors/looker/looker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    long long t = -1;
    int rc = looker_datagroup_check((const char *)data, size, "mlc_finance", "mlc_staging_load", &t);

    if (rc < -1 || rc > 1 || t < 0) {
        abort();
    }
    looker_datagroup_check((const char *)data, size, "", "", NULL);
    return 0;
}
