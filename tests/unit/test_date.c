/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: mlc_date (JDE Julian CYYDDD, yyyyMMdd, formatting, HHMMSS).
 */
#include <string.h>
#include "shared/mlc_date.h"
#include "tinytest.h"

static int ymd_is(long j, int y, int m, int d)
{
    struct mlc_ymd out = { 0, 0, 0 };

    return mlc_julian_to_ymd(j, &out) == 0 && out.y == y && out.m == m && out.d == d;
}

static void julian_to_ymd_known(void)
{
    CHECK(ymd_is(124015, 2024, 1, 15));
    CHECK(ymd_is(100001, 2000, 1, 1));
    CHECK(ymd_is(1, 1900, 1, 1));
    CHECK(ymd_is(99365, 1999, 12, 31));
    CHECK(ymd_is(123365, 2023, 12, 31));
    CHECK(ymd_is(124060, 2024, 2, 29)); /* leap day */
    CHECK(ymd_is(124061, 2024, 3, 1));
    CHECK(ymd_is(124366, 2024, 12, 31));
    CHECK(ymd_is(100060, 2000, 2, 29)); /* 2000 is a leap year (divisible by 400) */
    CHECK(ymd_is(100366, 2000, 12, 31));
    CHECK(ymd_is(123059, 2023, 2, 28));
    CHECK(ymd_is(123060, 2023, 3, 1));
}

static void julian_rejects_invalid(void)
{
    struct mlc_ymd out;

    CHECK_INT(mlc_julian_to_ymd(123000, &out), -1); /* day 0 */
    CHECK_INT(mlc_julian_to_ymd(123366, &out), -1); /* 2023 has 365 days */
    CHECK_INT(mlc_julian_to_ymd(124367, &out), -1);
    CHECK_INT(mlc_julian_to_ymd(0, &out), -1);
    CHECK_INT(mlc_julian_to_ymd(-5, &out), -1);
    CHECK_INT(mlc_julian_to_ymd(1000000, &out), -1);
    CHECK_INT(mlc_julian_to_ymd(200366, &out), -1); /* 2100 is not a leap year */
}

static void ymd_to_julian_round_trip(void)
{
    struct mlc_ymd d = { 2024, 1, 15 };
    long j;

    CHECK_INT(mlc_ymd_to_julian(&d), 124015);
    d = (struct mlc_ymd){ 2000, 1, 1 };
    CHECK_INT(mlc_ymd_to_julian(&d), 100001);
    d = (struct mlc_ymd){ 2024, 2, 29 };
    CHECK_INT(mlc_ymd_to_julian(&d), 124060);
    d = (struct mlc_ymd){ 2023, 2, 29 };
    CHECK_INT(mlc_ymd_to_julian(&d), -1);
    d = (struct mlc_ymd){ 1899, 12, 31 };
    CHECK_INT(mlc_ymd_to_julian(&d), -1);
    /* every day of a leap and a common year survives the round trip */
    for (j = 100001; j <= 101365; j++) {
        struct mlc_ymd back;

        if (mlc_julian_to_ymd(j, &back) == 0) {
            CHECK_INT(mlc_ymd_to_julian(&back), j);
        }
    }
}

static void yyyymmdd_parse_strict(void)
{
    struct mlc_ymd d = { 0, 0, 0 };

    CHECK_INT(mlc_yyyymmdd_parse("20240115", &d), 0);
    CHECK(d.y == 2024 && d.m == 1 && d.d == 15);
    CHECK_INT(mlc_yyyymmdd_parse("20240229", &d), 0);
    CHECK_INT(mlc_yyyymmdd_parse("20230229", &d), -1);
    CHECK_INT(mlc_yyyymmdd_parse("2024011", &d), -1);
    CHECK_INT(mlc_yyyymmdd_parse("20241301", &d), -1);
    CHECK_INT(mlc_yyyymmdd_parse("2024-01-15", &d), -1);
    CHECK_INT(mlc_yyyymmdd_parse("202401150", &d), -1);
    CHECK_INT(mlc_yyyymmdd_parse("20240100", &d), -1);
    CHECK_INT(mlc_yyyymmdd_parse(" 2024011", &d), -1);
    CHECK_INT(mlc_yyyymmdd_parse("+2024011", &d), -1);
    CHECK_INT(mlc_yyyymmdd_parse("00000101", &d), -1);
    CHECK_INT(mlc_yyyymmdd_parse("", &d), -1);
    CHECK_INT(mlc_yyyymmdd_parse(NULL, &d), -1);
}

static void format_patterns(void)
{
    struct mlc_ymd d = { 2024, 1, 5 };
    char out[32], small[10];

    CHECK_INT(mlc_ymd_format(&d, "MM/dd/yyyy", out, sizeof(out)), 0);
    CHECK_STR(out, "01/05/2024");
    CHECK_INT(mlc_ymd_format(&d, "dd/MM/yyyy", out, sizeof(out)), 0);
    CHECK_STR(out, "05/01/2024");
    CHECK_INT(mlc_ymd_format(&d, "yyyy-MM-dd", out, sizeof(out)), 0);
    CHECK_STR(out, "2024-01-05");
    CHECK_INT(mlc_ymd_format(&d, "yyyyMMdd", out, sizeof(out)), 0);
    CHECK_STR(out, "20240105");
    CHECK_INT(mlc_ymd_format(&d, "dd.MM.yy", out, sizeof(out)), 0);
    CHECK_STR(out, "05.01.24");
    /* "01/05/2024" needs 11 bytes with its NUL */
    CHECK_INT(mlc_ymd_format(&d, "MM/dd/yyyy", small, sizeof(small)), -1);
    CHECK_STR(small, "");
    d.m = 13;
    CHECK_INT(mlc_ymd_format(&d, "MM/dd/yyyy", out, sizeof(out)), -1);
}

static void iso_and_valid(void)
{
    struct mlc_ymd d = { 2024, 2, 29 };
    char iso[11];

    mlc_ymd_iso(&d, iso);
    CHECK_STR(iso, "2024-02-29");
    CHECK(mlc_ymd_valid(&d));
    d.y = 2023;
    CHECK(!mlc_ymd_valid(&d));
    d = (struct mlc_ymd){ 1900, 2, 29 };
    CHECK(!mlc_ymd_valid(&d));
    d = (struct mlc_ymd){ 2024, 4, 31 };
    CHECK(!mlc_ymd_valid(&d));
}

static void hhmmss_split(void)
{
    int h = -1, m = -1, s = -1;

    CHECK_INT(mlc_hhmmss_split(93015, &h, &m, &s), 0);
    CHECK(h == 9 && m == 30 && s == 15);
    CHECK_INT(mlc_hhmmss_split(0, &h, &m, &s), 0);
    CHECK(h == 0 && m == 0 && s == 0);
    CHECK_INT(mlc_hhmmss_split(235959, &h, &m, &s), 0);
    CHECK(h == 23 && m == 59 && s == 59);
    CHECK_INT(mlc_hhmmss_split(240000, &h, &m, &s), -1);
    CHECK_INT(mlc_hhmmss_split(96000, &h, &m, &s), -1);
    CHECK_INT(mlc_hhmmss_split(95960, &h, &m, &s), -1);
    CHECK_INT(mlc_hhmmss_split(-1, &h, &m, &s), -1);
}

int main(void)
{
    RUN(julian_to_ymd_known);
    RUN(julian_rejects_invalid);
    RUN(ymd_to_julian_round_trip);
    RUN(yyyymmdd_parse_strict);
    RUN(format_patterns);
    RUN(iso_and_valid);
    RUN(hhmmss_split);
    return TT_DONE();
}
