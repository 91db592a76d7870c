/* SPDX-License-Identifier: Apache-2.0
 * sched: per-flow schedules: "every 15m", "daily 02:00", "weekly mon 06:00",
 * "manual".
 */
#define _DEFAULT_SOURCE /* tm_gmtoff, readlink */

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "agent/sched.h"
#include "shared/mlc_conf.h"

static const char *const day_names[7][2] = {
    { "sun", "sunday" }, { "mon", "monday" },   { "tue", "tuesday" }, { "wed", "wednesday" },
    { "thu", "thursday" }, { "fri", "friday" }, { "sat", "saturday" },
};

static int fail(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;

    if (why != NULL && n > 0) {
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* "HH:MM" exactly (two digits each) into minutes after midnight, else -1. */
static int parse_hhmm(const char *s)
{
    if (strlen(s) != 5 || !isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1]) ||
        s[2] != ':' || !isdigit((unsigned char)s[3]) || !isdigit((unsigned char)s[4])) {
        return -1;
    }
    int h = (s[0] - '0') * 10 + (s[1] - '0');
    int m = (s[3] - '0') * 10 + (s[4] - '0');
    return h < 24 && m < 60 ? h * 60 + m : -1;
}

int sched_parse(const char *s, enum sched_kind *kind, long *every_s, int *at_min, char *why,
                size_t n)
{
    if (s == NULL || strcmp(s, "manual") == 0) {
        *kind = SCHED_MANUAL;
        return 0;
    }
    if (strncmp(s, "every ", 6) == 0) {
        long v = mlc_conf_parse_duration(s + 6);
        if (v < 1) {
            return fail(why, n, "'%s': expected a duration after \"every\", like \"every 15m\" "
                                "(units s, m, h, d)", s);
        }
        *kind = SCHED_EVERY;
        *every_s = v;
        return 0;
    }
    if (strncmp(s, "daily ", 6) == 0) {
        int m = parse_hhmm(s + 6);
        if (m < 0) {
            return fail(why, n, "'%s': expected \"daily HH:MM\" with a 24-hour time such as "
                                "\"daily 02:00\"", s);
        }
        *kind = SCHED_DAILY;
        *at_min = m;
        return 0;
    }
    if (strncmp(s, "weekly ", 7) == 0) {
        const char *day = s + 7, *sp = strchr(day, ' ');
        int d = -1, m;

        for (int i = 0; sp != NULL && i < 7; i++) {
            size_t len = (size_t)(sp - day);
            for (int k = 0; k < 2; k++) {
                if (strlen(day_names[i][k]) == len && strncasecmp(day, day_names[i][k], len) == 0) {
                    d = i;
                }
            }
        }
        if (d < 0) {
            return fail(why, n, "'%s': expected \"weekly DAY HH:MM\" with DAY one of mon, tue, "
                                "wed, thu, fri, sat, sun (e.g. \"weekly mon 06:00\")", s);
        }
        m = parse_hhmm(sp + 1);
        if (m < 0) {
            return fail(why, n, "'%s': expected a 24-hour time HH:MM after the day, as in "
                                "\"weekly mon 06:00\"", s);
        }
        *kind = SCHED_WEEKLY;
        *at_min = d * 1440 + m;
        return 0;
    }
    return fail(why, n, "'%s' is not \"every <N>s|m|h|d\", \"daily HH:MM\", "
                        "\"weekly DAY HH:MM\" or \"manual\"", s);
}

/* The first moment whose local wall clock reads minute on the day base +
 * days. mktime() picks one occurrence of an ambiguous time (fall back) and
 * moves a skipped one past the gap; the candidates half an hour and an hour
 * earlier catch an earlier occurrence. -1 when mktime cannot say. */
static long long local_at(const struct tm *base, int days, int minute)
{
    struct tm tm = *base, chk;
    long long first;
    time_t t;

    tm.tm_mday += days;
    tm.tm_hour = minute / 60;
    tm.tm_min = minute % 60;
    tm.tm_sec = 0;
    tm.tm_isdst = -1;
    t = mktime(&tm);
    if (t == (time_t)-1) {
        return -1;
    }
    first = (long long)t;
    for (int back = 1800; back <= 3600; back += 1800) {
        time_t c = t - back;
        if (localtime_r(&c, &chk) != NULL && chk.tm_hour == tm.tm_hour &&
            chk.tm_min == tm.tm_min && chk.tm_mday == tm.tm_mday) {
            first = (long long)c;
        }
    }
    return first;
}

long long sched_next(enum sched_kind kind, long every_s, int at_min, long long now)
{
    time_t t = (time_t)now;
    struct tm tm;
    int step, days, minute, wall;

    if (kind == SCHED_EVERY) {
        return now + every_s;
    }
    if (kind != SCHED_DAILY && kind != SCHED_WEEKLY) {
        return -1;
    }
    if (localtime_r(&t, &tm) == NULL) {
        return now + 86400;
    }
    wall = tm.tm_hour * 60 + tm.tm_min;
    minute = at_min % 1440;
    if (kind == SCHED_DAILY) {
        step = 1;
        days = wall < minute ? 0 : 1;
    } else {
        step = 7;
        days = (at_min / 1440 - tm.tm_wday + 7) % 7;
        if (days == 0 && wall >= minute) {
            days = 7;
        }
    }
    /* decided on the wall clock, so a run that ends in the same minute is
     * not due again that day; and only the first occurrence of a repeated
     * time counts (in the second pass of a fall-back hour it is past) */
    for (int tries = 0; tries < 3; tries++, days += step) {
        long long next = local_at(&tm, days, minute);
        if (next > now) {
            return next;
        }
    }
    return now + 86400LL * step;
}

void sched_zone(long long now, char *out, size_t n)
{
    const char *tz = getenv("TZ");
    char name[256] = "", abbr[16] = "", link[256];
    time_t t = (time_t)now;
    struct tm tm;
    long off;
    ssize_t k;

    if (tz != NULL && tz[0] != '\0') {
        snprintf(name, sizeof(name), "%s", tz[0] == ':' ? tz + 1 : tz);
    } else if ((k = readlink("/etc/localtime", link, sizeof(link) - 1)) > 0) {
        const char *p;
        link[k] = '\0';
        p = strstr(link, "zoneinfo/");
        snprintf(name, sizeof(name), "%s", p != NULL ? p + 9 : link);
    }
    tzset();
    if (localtime_r(&t, &tm) == NULL) {
        snprintf(out, n, "%s", name[0] ? name : "local time");
        return;
    }
    strftime(abbr, sizeof(abbr), "%Z", &tm);
    off = tm.tm_gmtoff;
    if (name[0] == '\0') {
        snprintf(name, sizeof(name), "%s", abbr[0] ? abbr : "local time");
    }
    snprintf(out, n, "%s (%s, UTC%c%02ld:%02ld)", name, abbr, off < 0 ? '-' : '+',
             labs(off) / 3600, labs(off) % 3600 / 60);
}
