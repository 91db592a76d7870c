/* SPDX-License-Identifier: Apache-2.0
 * sched: when a flow runs ("every 15m", "daily 02:00", "manual").
 */
#ifndef MLC_SCHED_H
#define MLC_SCHED_H

enum sched_kind { SCHED_MANUAL = 0, SCHED_EVERY, SCHED_DAILY };

int sched_parse(const char *s, enum sched_kind *kind, long *every_s, int *daily_min);
long long sched_next(enum sched_kind kind, long every_s, int daily_min, long long now);

#endif
