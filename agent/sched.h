/* SPDX-License-Identifier: Apache-2.0
 * sched: when a flow runs ("every 15m", "daily 02:00", "weekly mon 06:00",
 * "manual"). Daily and weekly times are wall-clock times in the agent's
 * local time zone (TZ, else /etc/localtime).
 */
#ifndef MLC_SCHED_H
#define MLC_SCHED_H

#include <stddef.h>

enum sched_kind { SCHED_MANUAL = 0, SCHED_EVERY, SCHED_DAILY, SCHED_WEEKLY };

/* Parse s (NULL = "manual"). SCHED_EVERY sets *every_s; SCHED_DAILY sets
 * *at_min to the minutes after local midnight; SCHED_WEEKLY to the minutes
 * after Sunday 00:00 local (day * 1440 + hour * 60 + minute, Sunday = 0).
 * 0, or -1 with a one-line reason in why (n bytes; why may be NULL). */
int sched_parse(const char *s, enum sched_kind *kind, long *every_s, int *at_min, char *why,
                size_t n);

/* The next run after now (epoch seconds), -1 for SCHED_MANUAL. Daily and
 * weekly runs are decided on the local wall clock: a time already reached
 * today (or this week) moves to the next day (week); a time the clock skips
 * (a spring-forward gap) runs when the clock leaves the gap; a time that
 * occurs twice (fall back) runs once, at its first occurrence. */
long long sched_next(enum sched_kind kind, long every_s, int at_min, long long now);

/* The local time zone as shown next to schedules, e.g. "Europe/Berlin (CET,
 * UTC+01:00)", at time now (the abbreviation and offset change with DST). */
void sched_zone(long long now, char *out, size_t n);

#endif
