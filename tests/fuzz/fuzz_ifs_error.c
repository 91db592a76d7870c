/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: IFS Cloud OData error bodies and token endpoint refusals,
 * and the date-times cursors carry.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/ifs/ifs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char code[64], msg[512], small[4];
    char *s;

    ifs_error_parse((const char *)data, size, code, sizeof(code), msg, sizeof(msg));
    for (const char *p = msg; *p; p++) {
        if ((unsigned char)*p < 0x20) {
            abort(); /* one line */
        }
    }
    ifs_error_parse((const char *)data, size, small, sizeof(small), small, sizeof(small));
    s = malloc(size + 1);
    if (s != NULL) {
        memcpy(s, data, size);
        s[size] = '\0';
        ifs_time_ms(s);
        free(s);
    }
    return 0;
}
