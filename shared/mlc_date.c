/* SPDX-License-Identifier: Apache-2.0
 * mlc_date: JD Edwards Julian dates (CYYDDD) to and from calendar dates,
 * AIS yyyyMMdd strings, pattern formatting and HHMMSS times. Pure functions.
 */
#include <stdio.h>
#include <string.h>

#include "shared/mlc_date.h"

/* JDE's century digit covers 1900..2899; nothing outside it is a JDE date. */
#define JDE_MIN_YEAR 1900
#define JDE_MAX_YEAR 2899

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

    if (m == 2 && is_leap(y)) {
        return 29;
    }
    return days[m - 1];
}

/* Returns 1 when d is a real calendar date in years 1..9999, else 0. */
int mlc_ymd_valid(const struct mlc_ymd *d)
{
    if (d == NULL || d->y < 1 || d->y > 9999 || d->m < 1 || d->m > 12) {
        return 0;
    }
    return d->d >= 1 && d->d <= days_in_month(d->y, d->m);
}

int mlc_julian_to_ymd(long cyyddd, struct mlc_ymd *out)
{
    int y, doy, m;

    if (cyyddd < 0 || cyyddd > 999999) {
        return -1;
    }
    y = JDE_MIN_YEAR + (int)(cyyddd / 1000);
    doy = (int)(cyyddd % 1000);
    if (doy < 1 || doy > (is_leap(y) ? 366 : 365)) {
        return -1;
    }
    for (m = 1; m <= 12; m++) {
        int dim = days_in_month(y, m);

        if (doy <= dim) {
            break;
        }
        doy -= dim;
    }
    out->y = y;
    out->m = m;
    out->d = doy;
    return 0;
}

/* Returns the CYYDDD number, or -1 when d is invalid or outside 1900..2899. */
long mlc_ymd_to_julian(const struct mlc_ymd *d)
{
    int m, doy = 0;

    if (!mlc_ymd_valid(d) || d->y < JDE_MIN_YEAR || d->y > JDE_MAX_YEAR) {
        return -1;
    }
    for (m = 1; m < d->m; m++) {
        doy += days_in_month(d->y, m);
    }
    doy += d->d;
    return (long)(d->y - JDE_MIN_YEAR) * 1000 + doy;
}

static int digits_value(const char *s, int n)
{
    int i, v = 0;

    for (i = 0; i < n; i++) {
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int mlc_yyyymmdd_parse(const char *s, struct mlc_ymd *out)
{
    struct mlc_ymd d;
    int i;

    if (s == NULL) {
        return -1;
    }
    /* exactly eight ASCII digits, then the end: no signs, spaces or dashes */
    for (i = 0; i < 8; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
    }
    if (s[8] != '\0') {
        return -1;
    }
    d.y = digits_value(s, 4);
    d.m = digits_value(s + 4, 2);
    d.d = digits_value(s + 6, 2);
    if (!mlc_ymd_valid(&d)) {
        return -1;
    }
    *out = d;
    return 0;
}

/* Pattern letters: yyyy (4-digit year), yy (2-digit year), MM, dd; every
 * other character is copied. Returns 0, or -1 when d is invalid or the
 * result (with its NUL) does not fit in n bytes. */
int mlc_ymd_format(const struct mlc_ymd *d, const char *pattern, char *out, size_t n)
{
    size_t o = 0;
    const char *p;

    if (out == NULL || n == 0) {
        return -1;
    }
    out[0] = '\0';
    if (pattern == NULL || !mlc_ymd_valid(d)) {
        return -1;
    }
    for (p = pattern; *p != '\0';) {
        char piece[5];
        size_t plen;

        if (strncmp(p, "yyyy", 4) == 0) {
            snprintf(piece, sizeof(piece), "%04d", d->y);
            p += 4;
        } else if (strncmp(p, "yy", 2) == 0) {
            snprintf(piece, sizeof(piece), "%02d", d->y % 100);
            p += 2;
        } else if (strncmp(p, "MM", 2) == 0) {
            snprintf(piece, sizeof(piece), "%02d", d->m);
            p += 2;
        } else if (strncmp(p, "dd", 2) == 0) {
            snprintf(piece, sizeof(piece), "%02d", d->d);
            p += 2;
        } else {
            piece[0] = *p;
            piece[1] = '\0';
            p++;
        }
        plen = strlen(piece);
        if (o + plen >= n) {
            out[0] = '\0';
            return -1;
        }
        memcpy(out + o, piece, plen);
        o += plen;
        out[o] = '\0';
    }
    return 0;
}

void mlc_ymd_iso(const struct mlc_ymd *d, char out[11])
{
    int y = d->y, m = d->m, dd = d->d;

    /* clamp so the text always has the fixed YYYY-MM-DD shape */
    if (y < 0 || y > 9999 || m < 0 || m > 99 || dd < 0 || dd > 99) {
        y = 0;
        m = 0;
        dd = 0;
    }
    snprintf(out, 11, "%04d-%02d-%02d", y, m, dd);
}

int mlc_hhmmss_split(long t, int *h, int *m, int *s)
{
    int hh, mm, ss;

    if (t < 0 || t > 235959) {
        return -1;
    }
    hh = (int)(t / 10000);
    mm = (int)(t / 100 % 100);
    ss = (int)(t % 100);
    if (mm > 59 || ss > 59) {
        return -1;
    }
    *h = hh;
    *m = mm;
    *s = ss;
    return 0;
}
