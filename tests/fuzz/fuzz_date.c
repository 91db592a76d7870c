/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: JDE dates. The input is "<date text>\n<pattern>": the text is
 * tried as yyyyMMdd, as a Julian CYYDDD number and as HHMMSS; every date that
 * parses must format and convert back to itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "shared/mlc_date.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1), *pattern, *end, out[64], iso[11];
    struct mlc_ymd d, back;
    long num;
    int h, m, sec;

    if (s == NULL) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    pattern = strchr(s, '\n');
    if (pattern != NULL) {
        *pattern++ = '\0';
    } else {
        pattern = (char *)"MM/dd/yyyy";
    }
    if (mlc_yyyymmdd_parse(s, &d) == 0) {
        if (!mlc_ymd_valid(&d) || mlc_ymd_format(&d, "yyyyMMdd", out, sizeof(out)) != 0 ||
            strcmp(out, s) != 0) {
            abort();
        }
        mlc_ymd_format(&d, pattern, out, sizeof(out));
        mlc_ymd_iso(&d, iso);
    }
    num = strtol(s, &end, 10);
    if (mlc_julian_to_ymd(num, &d) == 0) {
        if (!mlc_ymd_valid(&d) || mlc_ymd_to_julian(&d) != num) {
            abort();
        }
        if (mlc_ymd_format(&d, "yyyyMMdd", out, sizeof(out)) != 0 ||
            mlc_yyyymmdd_parse(out, &back) != 0 || back.y != d.y || back.m != d.m ||
            back.d != d.d) {
            abort();
        }
        mlc_ymd_format(&d, pattern, out, sizeof(out));
    }
    if (mlc_hhmmss_split(num, &h, &m, &sec) == 0 &&
        (h < 0 || h > 23 || m < 0 || m > 59 || sec < 0 || sec > 59)) {
        abort();
    }
    /* arbitrary field values must not crash the formatters */
    if (size >= 3) {
        d.y = (int)data[0] * 40;
        d.m = data[1] % 16;
        d.d = data[2] % 40;
        mlc_ymd_format(&d, pattern, out, sizeof(out));
        mlc_ymd_iso(&d, iso);
        mlc_ymd_to_julian(&d);
    }
    free(s);
    return 0;
}
