/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: Looker error bodies ({"message", "documentation_url"} and
 * 422 ValidationError with errors[]) made into one line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/looker/looker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[400], tiny[3];

    looker_error_line((const char *)data, size, out, sizeof(out));
    if (strlen(out) >= sizeof(out)) {
        abort();
    }
    for (const char *p = out; *p; p++) {
        if ((unsigned char)*p < 0x20) {
            abort(); /* one line */
        }
    }
    looker_error_line((const char *)data, size, tiny, sizeof(tiny));
    return 0;
}
