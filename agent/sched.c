/* SPDX-License-Identifier: Apache-2.0
 * sched: per-flow schedules: "every 15m", "daily 02:00", "manual".
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "agent/sched.h"
#include "shared/mlc_conf.h"

int sched_parse(const char *s, enum sched_kind *kind, long *every_s, int *daily_min)
{
    int h, m;
    char extra;

    if (s == NULL || strcmp(s, "manual") == 0) {
        *kind = SCHED_MANUAL;
        return 0;
    }
    if (strncmp(s, "every ", 6) == 0) {
        long v = mlc_conf_parse_duration(s + 6);
        if (v < 1) {
            return -1;
        }
        *kind = SCHED_EVERY;
        *every_s = v;
        return 0;
    }
    if (strncmp(s, "daily ", 6) == 0 && sscanf(s + 6, "%2d:%2d%c", &h, &m, &extra) == 2 && h >= 0 &&
        h < 24 && m >= 0 && m < 60 && strlen(s + 6) == 5) {
        *kind = SCHED_DAILY;
        *daily_min = h * 60 + m;
        return 0;
    }
    return -1;
}

long long sched_next(enum sched_kind kind, long every_s, int daily_min, long long now)
{
    time_t t = (time_t)now;
    struct tm tm;

    if (kind == SCHED_EVERY) {
        return now + every_s;
    }
    if (kind == SCHED_DAILY) {
        localtime_r(&t, &tm);
        tm.tm_hour = daily_min / 60;
        tm.tm_min = daily_min % 60;
        tm.tm_sec = 0;
        tm.tm_isdst = -1;
        t = mktime(&tm);
        if ((long long)t <= now) {
            tm.tm_mday += 1;
            tm.tm_isdst = -1;
            t = mktime(&tm);
        }
        return (long long)t;
    }
    return -1;
}
