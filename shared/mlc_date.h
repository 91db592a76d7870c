/* SPDX-License-Identifier: Apache-2.0
 * mlc_date: JD Edwards dates. Julian CYYDDD (C = centuries after 1900, YY,
 * DDD = day of year; 2024-01-15 -> 124015), AIS yyyyMMdd strings, HHMMSS times.
 */
#ifndef MLC_DATE_H
#define MLC_DATE_H

#include <stddef.h>

struct mlc_ymd {
    int y, m, d;
};

/* 0 on success, -1 when not a valid date (day 0, day 366 in a common year...). */
int mlc_julian_to_ymd(long cyyddd, struct mlc_ymd *out);
long mlc_ymd_to_julian(const struct mlc_ymd *d);
/* "20240115" -> ymd; -1 on anything else. */
int mlc_yyyymmdd_parse(const char *s, struct mlc_ymd *out);
/* 1 when d is a real calendar date (years 1..9999), 0 otherwise. */
int mlc_ymd_valid(const struct mlc_ymd *d);
/* Format using a Java-style pattern with yyyy, MM, dd (e.g. "MM/dd/yyyy"). */
int mlc_ymd_format(const struct mlc_ymd *d, const char *pattern, char *out, size_t n);
/* ISO "YYYY-MM-DD" */
void mlc_ymd_iso(const struct mlc_ymd *d, char out[11]);
/* HHMMSS (leading zeros lost: 93015) -> 0 on success; -1 when out of range. */
int mlc_hhmmss_split(long t, int *h, int *m, int *s);

#endif
