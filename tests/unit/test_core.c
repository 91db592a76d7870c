/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: errors, buffers, logging redaction, HTTP helpers, config loader,
 * schedules, the connector registry.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "agent/agent.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_http.h"
#include "shared/mlc_log.h"
#include "shared/mlc_json.h"
#include "tinytest.h"

static void every_code_has_a_string(void)
{
    for (int rc = 0; rc <= MLC_RC_MAX; rc++) {
        CHECK(strcmp(mlc_strerror((enum mlc_rc)rc), "unknown error") != 0);
    }
    CHECK_STR(mlc_strerror((enum mlc_rc)99), "unknown error");
}

static void errbuf_keeps_first_message(void)
{
    struct mlc_errbuf e = { 0 };

    mlc_errf(&e, "cannot open spool '%s'", "/x");
    mlc_errf(&e, "second");
    CHECK_STR(mlc_err_msg(&e), "cannot open spool '/x'");
    mlc_err_reset(&e);
    CHECK_STR(mlc_err_msg(&e), "");
}

static void buf_caps_input(void)
{
    struct mlc_buf b = MLC_BUF_INIT;

    b.max = 8;
    CHECK_INT(mlc_buf_adds(&b, "12345678"), MLC_OK);
    CHECK_INT(mlc_buf_adds(&b, "9"), MLC_E_TOOBIG);
    CHECK_STR(mlc_buf_str(&b), "12345678");
    mlc_buf_reset(&b);
    b.max = 0;
    CHECK_INT(mlc_buf_add_json_str(&b, "a\"\n"), MLC_OK);
    CHECK_STR(mlc_buf_str(&b), "\"a\\\"\\u000a\"");
    mlc_buf_release(&b);
}

static void log_redacts_secrets(void)
{
    char out[128];

    mlc_log_add_secret("hunter2secret");
    mlc_log_redact("token=hunter2secret; again hunter2secret", out, sizeof(out));
    CHECK_STR(out, "token=[redacted]; again [redacted]");
    mlc_log_add_secret("abc"); /* too short to register */
    mlc_log_redact("abc", out, sizeof(out));
    CHECK_STR(out, "abc");
    mlc_log_clear_secrets();
}

static void classify_statuses(void)
{
    CHECK_INT(mlc_http_classify(200, 0), MLC_OK);
    CHECK_INT(mlc_http_classify(201, 0), MLC_OK);
    CHECK_INT(mlc_http_classify(401, 0), MLC_E_AUTH);
    CHECK_INT(mlc_http_classify(444, 0), MLC_E_AUTH);
    CHECK_INT(mlc_http_classify(404, 0), MLC_E_NOTFOUND);
    CHECK_INT(mlc_http_classify(400, 0), MLC_E_REJECTED);
    CHECK_INT(mlc_http_classify(409, 0), MLC_E_CONFLICT);
    CHECK_INT(mlc_http_classify(412, 0), MLC_E_CONFLICT);
    CHECK_INT(mlc_http_classify(429, 0), MLC_E_THROTTLED);
    CHECK_INT(mlc_http_classify(503, 1), MLC_E_THROTTLED);
    CHECK_INT(mlc_http_classify(503, 0), MLC_E_NET);
    CHECK_INT(mlc_http_classify(500, 0), MLC_E_NET);
    CHECK_INT(mlc_http_classify(0, 0), MLC_E_NET);
}

static void retry_after_forms(void)
{
    /* 1994-11-06 08:49:37 UTC = 784111777 */
    CHECK_INT(mlc_retry_after_parse("120", 0), 120000);
    CHECK_INT(mlc_retry_after_parse(" 3 ", 0), 3000);
    CHECK_INT(mlc_retry_after_parse("99999999999", 0), 3600000);
    CHECK_INT(mlc_retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", 784111777LL - 30), 30000);
    CHECK_INT(mlc_retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", 784111777LL + 30), 0);
    CHECK_INT(mlc_retry_after_parse("soon", 0), -1);
    CHECK_INT(mlc_retry_after_parse("-5", 0), -1);
    CHECK_INT(mlc_retry_after_parse("12abc", 0), -1);
    CHECK_INT(mlc_retry_after_parse("Sun, 06 Foo 1994 08:49:37 GMT", 0), -1);
    CHECK_INT(mlc_retry_after_parse(NULL, 0), -1);
}

static void backoff_is_bounded(void)
{
    for (int attempt = 0; attempt < 40; attempt++) {
        long v = mlc_backoff_ms(attempt, 250, 30000);
        long ceil = attempt < 7 ? 250L << attempt : 30000;
        CHECK(v >= 0);
        CHECK(v <= (ceil > 30000 ? 30000 : ceil));
    }
}

struct sample {
    char *url;
    long size;
    int on;
    int mode;
    long every;
    char *pw;
};

static const struct conf_key sample_keys[] = {
    { "url", CONF_URL, offsetof(struct sample, url), NULL, "where", 0, 0, NULL },
    { "size", CONF_INT, offsetof(struct sample, size), "500", "rows", 1, 1000, NULL },
    { "on", CONF_BOOL, offsetof(struct sample, on), "true", "switch", 0, 0, NULL },
    { "mode", CONF_ENUM, offsetof(struct sample, mode), "token", "auth", 0, 0, "token|basic" },
    { "every", CONF_DURATION, offsetof(struct sample, every), "15m", "period", 0, 0, NULL },
    { "pw", CONF_SECRET, offsetof(struct sample, pw), "", "secret", 0, 0, NULL },
    { 0 },
};

static enum mlc_rc load_sample(const char *json, struct sample *s, struct mlc_errbuf *e)
{
    cJSON *o = cJSON_Parse(json);
    enum mlc_rc rc;

    memset(s, 0, sizeof(*s));
    mlc_err_reset(e);
    rc = mlc_conf_load(o, "systems.jde", sample_keys, NULL, s, e);
    cJSON_Delete(o);
    return rc;
}

static void conf_errors_name_the_path(void)
{
    struct mlc_errbuf e = { 0 };
    struct sample s;

    CHECK_INT(load_sample("{\"url\":\"http://h/x/\",\"size\":20,\"mode\":\"basic\",\"every\":\"2h\"}", &s, &e), MLC_OK);
    CHECK_STR(s.url, "http://h/x");
    CHECK_INT(s.size, 20);
    CHECK_INT(s.on, 1);
    CHECK_INT(s.mode, 1);
    CHECK_INT(s.every, 7200);
    mlc_conf_release(sample_keys, &s);

    CHECK_INT(load_sample("{\"url\":\"http://h\",\"size\":0}", &s, &e), MLC_E_INVAL);
    CHECK(strstr(mlc_err_msg(&e), "systems.jde.size") != NULL);
    mlc_conf_release(sample_keys, &s);
    CHECK_INT(load_sample("{\"size\":3}", &s, &e), MLC_E_INVAL);
    CHECK(strstr(mlc_err_msg(&e), "systems.jde.url: required") != NULL);
    mlc_conf_release(sample_keys, &s);
    CHECK_INT(load_sample("{\"url\":\"ftp://h\"}", &s, &e), MLC_E_INVAL);
    CHECK(strstr(mlc_err_msg(&e), "systems.jde.url") != NULL);
    mlc_conf_release(sample_keys, &s);
    CHECK_INT(load_sample("{\"url\":\"http://h\",\"bogus\":1}", &s, &e), MLC_E_INVAL);
    CHECK(strstr(mlc_err_msg(&e), "systems.jde.bogus: unknown setting") != NULL);
    mlc_conf_release(sample_keys, &s);
    CHECK_INT(load_sample("{\"url\":\"http://h\",\"mode\":\"oauth\"}", &s, &e), MLC_E_INVAL);
    CHECK(strstr(mlc_err_msg(&e), "systems.jde.mode") != NULL);
    mlc_conf_release(sample_keys, &s);
    CHECK_INT(load_sample("{\"url\":\"http://h\",\"size\":\"many\"}", &s, &e), MLC_E_INVAL);
    mlc_conf_release(sample_keys, &s);
}

static void conf_expands_env(void)
{
    struct mlc_errbuf e = { 0 };
    struct sample s;
    char *v;

    setenv("MLC_TEST_HOST", "ais.example", 1);
    CHECK_INT(load_sample("{\"url\":\"https://${MLC_TEST_HOST}:9300\",\"pw\":\"${MLC_TEST_PW}\"}", &s, &e), MLC_OK);
    CHECK_STR(s.url, "https://ais.example:9300");
    CHECK_STR(s.pw, "${MLC_TEST_PW}"); /* secrets are resolved later, not at load */
    mlc_conf_release(sample_keys, &s);
    unsetenv("MLC_TEST_NOPE");
    v = mlc_conf_expand_env("x${MLC_TEST_NOPE}", "a.b", &e);
    CHECK(v == NULL);
    CHECK(strstr(mlc_err_msg(&e), "MLC_TEST_NOPE") != NULL);
    CHECK_INT(mlc_conf_parse_duration("15m"), 900);
    CHECK_INT(mlc_conf_parse_duration("1d"), 86400);
    CHECK_INT(mlc_conf_parse_duration("15x"), -1);
    CHECK_INT(mlc_conf_parse_duration(""), -1);
}

static void schedules_parse(void)
{
    enum sched_kind k;
    long every = 0;
    int at = 0;
    char why[256];

    CHECK_INT(sched_parse("every 15m", &k, &every, &at, why, sizeof(why)), 0);
    CHECK_INT(k, SCHED_EVERY);
    CHECK_INT(every, 900);
    CHECK_INT(sched_parse("daily 02:00", &k, &every, &at, why, sizeof(why)), 0);
    CHECK_INT(k, SCHED_DAILY);
    CHECK_INT(at, 120);
    CHECK_INT(sched_parse("weekly mon 06:00", &k, &every, &at, why, sizeof(why)), 0);
    CHECK_INT(k, SCHED_WEEKLY);
    CHECK_INT(at, 1440 + 360);
    CHECK_INT(sched_parse("weekly Sunday 23:59", &k, &every, &at, why, sizeof(why)), 0);
    CHECK_INT(at, 23 * 60 + 59);
    CHECK_INT(sched_parse("manual", &k, &every, &at, why, sizeof(why)), 0);
    CHECK_INT(k, SCHED_MANUAL);
    CHECK_INT(sched_parse("daily 24:00", &k, &every, &at, why, sizeof(why)), -1);
    CHECK(strstr(why, "daily HH:MM") != NULL && strstr(why, "'daily 24:00'") != NULL);
    CHECK_INT(sched_parse("daily 2:00", &k, &every, &at, why, sizeof(why)), -1);
    CHECK_INT(sched_parse("every", &k, &every, &at, why, sizeof(why)), -1);
    CHECK_INT(sched_parse("hourly", &k, &every, &at, why, sizeof(why)), -1);
    CHECK(strstr(why, "weekly DAY HH:MM") != NULL);
    CHECK_INT(sched_parse("weekly funday 06:00", &k, &every, &at, why, sizeof(why)), -1);
    CHECK(strstr(why, "mon, tue") != NULL && strstr(why, "'weekly funday 06:00'") != NULL);
    CHECK_INT(sched_parse("weekly mon", &k, &every, &at, why, sizeof(why)), -1);
    CHECK_INT(sched_parse("weekly mon 6:00", &k, &every, &at, why, sizeof(why)), -1);
    CHECK(strstr(why, "HH:MM after the day") != NULL);
    CHECK_INT(sched_parse("weekly mon 06:60", &k, &every, &at, why, sizeof(why)), -1);
    CHECK_INT(sched_parse("weekly  mon 06:00", &k, &every, &at, why, sizeof(why)), -1);
    CHECK_INT(sched_parse("weekly mon 06:00 ", &k, &every, &at, NULL, 0), -1);
    CHECK_INT(sched_next(SCHED_EVERY, 900, 0, 1000), 1900);
    CHECK_INT(sched_next(SCHED_MANUAL, 0, 0, 1000), -1);
}

/* Epoch seconds of a UTC wall time (no time zone involved). */
static long long utc(int y, int mo, int d, int h, int mi)
{
    long long days = 0;

    for (int yy = 1970; yy < y; yy++) {
        days += (yy % 4 == 0 && (yy % 100 != 0 || yy % 400 == 0)) ? 366 : 365;
    }
    static const int cum[] = { 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334 };
    days += cum[mo - 1] + d - 1;
    if (mo > 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) {
        days++;
    }
    return days * 86400 + h * 3600 + mi * 60;
}

static void with_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

/* Daily and weekly runs in a zone with DST (Europe/Berlin: CET +1, CEST +2;
 * 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00). */
static void schedules_local_time(void)
{
    const char *old = getenv("TZ");
    char *saved = old ? strdup(old) : NULL;
    char zone[160];
    long long n;

    with_tz("Europe/Berlin");
    /* an ordinary day: 06:00 CET is 05:00 UTC */
    CHECK_INT(sched_next(SCHED_DAILY, 0, 360, utc(2026, 1, 14, 4, 0)), utc(2026, 1, 14, 5, 0));
    CHECK_INT(sched_next(SCHED_DAILY, 0, 360, utc(2026, 1, 14, 5, 0)), utc(2026, 1, 15, 5, 0));
    /* a run that ends in its own minute is not due again that day */
    CHECK_INT(sched_next(SCHED_DAILY, 0, 360, utc(2026, 1, 14, 5, 0) + 40), utc(2026, 1, 15, 5, 0));
    /* weekly mon 06:00: 2026-01-14 is a Wednesday, next Monday is the 19th */
    CHECK_INT(sched_next(SCHED_WEEKLY, 0, 1440 + 360, utc(2026, 1, 14, 4, 0)), utc(2026, 1, 19, 5, 0));
    /* on Monday before and after the time */
    CHECK_INT(sched_next(SCHED_WEEKLY, 0, 1440 + 360, utc(2026, 1, 19, 4, 59)), utc(2026, 1, 19, 5, 0));
    CHECK_INT(sched_next(SCHED_WEEKLY, 0, 1440 + 360, utc(2026, 1, 19, 5, 0)), utc(2026, 1, 26, 5, 0));
    /* weekly sun 23:30 from Saturday evening */
    CHECK_INT(sched_next(SCHED_WEEKLY, 0, 23 * 60 + 30, utc(2026, 1, 17, 20, 0)), utc(2026, 1, 18, 22, 30));
    /* across spring forward: 06:00 on 2026-03-29 is already CEST (04:00 UTC) */
    CHECK_INT(sched_next(SCHED_DAILY, 0, 360, utc(2026, 3, 28, 6, 0)), utc(2026, 3, 29, 4, 0));
    CHECK_INT(sched_next(SCHED_WEEKLY, 0, 1440 + 360, utc(2026, 3, 27, 12, 0)), utc(2026, 3, 30, 4, 0));
    /* a time the clock skips (02:30 on 2026-03-29) still runs that day, once, after the gap */
    n = sched_next(SCHED_DAILY, 0, 150, utc(2026, 3, 28, 23, 0));
    CHECK(n > utc(2026, 3, 29, 0, 59) && n <= utc(2026, 3, 29, 1, 30));
    CHECK_INT(sched_next(SCHED_DAILY, 0, 150, n), utc(2026, 3, 30, 0, 30));
    /* a time that occurs twice (02:30 on 2026-10-25): the first, 00:30 UTC, and only once */
    CHECK_INT(sched_next(SCHED_DAILY, 0, 150, utc(2026, 10, 24, 22, 0)), utc(2026, 10, 25, 0, 30));
    CHECK_INT(sched_next(SCHED_DAILY, 0, 150, utc(2026, 10, 25, 0, 30) + 30), utc(2026, 10, 26, 1, 30));
    /* and in the repeated hour's second pass (02:10 CET), nothing more that day */
    CHECK(sched_next(SCHED_DAILY, 0, 150, utc(2026, 10, 25, 1, 10)) >= utc(2026, 10, 26, 1, 30));
    /* the zone as the status page shows it, with DST */
    sched_zone(utc(2026, 1, 14, 12, 0), zone, sizeof(zone));
    CHECK_STR(zone, "Europe/Berlin (CET, UTC+01:00)");
    sched_zone(utc(2026, 7, 14, 12, 0), zone, sizeof(zone));
    CHECK_STR(zone, "Europe/Berlin (CEST, UTC+02:00)");

    /* the same schedule in New York: 06:00 EST is 11:00 UTC */
    with_tz("America/New_York");
    CHECK_INT(sched_next(SCHED_WEEKLY, 0, 1440 + 360, utc(2026, 1, 14, 4, 0)), utc(2026, 1, 19, 11, 0));
    sched_zone(utc(2026, 1, 14, 12, 0), zone, sizeof(zone));
    CHECK_STR(zone, "America/New_York (EST, UTC-05:00)");
    with_tz("UTC");
    CHECK_INT(sched_next(SCHED_DAILY, 0, 120, utc(2026, 1, 14, 1, 0)), utc(2026, 1, 14, 2, 0));

    if (saved != NULL) {
        with_tz(saved);
        free(saved);
    } else {
        unsetenv("TZ");
        tzset();
    }
}

static void registry_is_consistent(void)
{
    size_t n;
    const struct connector *const *all = connector_all(&n);

    CHECK(n >= 2);
    for (size_t i = 0; i < n; i++) {
        const struct connector *c = all[i];
        CHECK(c->name != NULL && c->open != NULL && c->close != NULL && c->keys != NULL);
        CHECK(connector_find(c->name) == c);
        for (size_t j = i + 1; j < n; j++) {
            CHECK(strcmp(all[j]->name, c->name) != 0);
        }
        CHECK(!!(c->caps & CONN_SOURCE) == (c->poll != NULL));
        CHECK(!!(c->caps & CONN_WRITEBACK) == (c->write_back != NULL));
        /* find() is never called for a target that upserts (connector.h) */
        CHECK(!!(c->caps & CONN_TARGET) ==
              (c->apply != NULL && (c->find != NULL || (c->caps & CONN_UPSERT))));
    }
    CHECK(connector_find("nope") == NULL);
}

/* mlc_json_print must write exactly what cJSON_PrintUnformatted writes
 * (ledger hashes are taken over that text): random trees of every kind,
 * numbers at the edges of int and of double precision, every control byte. */
static cJSON *random_item(unsigned *seed, int depth)
{
    static const double nums[] = { 0, -0.0, 1, -1, 2147483647.0, -2147483648.0, 2147483648.0,
                                   -2147483649.0, 0.1, 1e300, -1e-300, 3.141592653589793,
                                   123456789012345678.0, 1.0 / 3.0, 1e15, 1e17, 0.5, 100001 };
    unsigned r = (unsigned)rand_r(seed);
    char text[24];

    switch (depth > 3 ? r % 5 : r % 7) {
    case 0:
        return cJSON_CreateNull();
    case 1:
        return cJSON_CreateBool((int)(r & 8));
    case 2:
        if (r & 16) {
            return cJSON_CreateNumber(nums[(r >> 5) % (sizeof(nums) / sizeof(nums[0]))]);
        }
        return cJSON_CreateNumber(((double)rand_r(seed) - RAND_MAX / 2) / ((r >> 6) % 1000 + 1));
    case 3:
    case 4:
        for (size_t i = 0; i + 1 < sizeof(text); i++) {
            unsigned c = (unsigned)rand_r(seed) % 140;
            text[i] = (char)(c < 128 ? c : 0xc3 + (c & 1)); /* control bytes, ASCII, UTF-8 lead */
            if (text[i] == '\0') {
                break;
            }
        }
        text[sizeof(text) - 1] = '\0';
        return cJSON_CreateString(text);
    case 5: {
        cJSON *a = cJSON_CreateArray();
        for (int i = (int)(r >> 8) % 4; i > 0; i--) {
            cJSON_AddItemToArray(a, random_item(seed, depth + 1));
        }
        return a;
    }
    default: {
        cJSON *o = cJSON_CreateObject();
        for (int i = (int)(r >> 8) % 4; i > 0; i--) {
            snprintf(text, sizeof(text), "k%d\t\"%u", i, (unsigned)rand_r(seed) % 100);
            cJSON_AddItemToObject(o, text, random_item(seed, depth + 1));
        }
        return o;
    }
    }
}

static void json_print_matches_cjson(void)
{
    unsigned seed = 12345;
    int same = 0;

    for (int i = 0; i < 3000; i++) {
        cJSON *t = random_item(&seed, 0);
        char *ours = mlc_json_print(t), *theirs = cJSON_PrintUnformatted(t);
        if (strcmp(ours, theirs) == 0) {
            same++;
        } else {
            CHECK_STR(ours, theirs);
        }
        free(ours);
        cJSON_free(theirs);
        cJSON_Delete(t);
    }
    CHECK_INT(same, 3000);
}

int main(void)
{
    RUN(every_code_has_a_string);
    RUN(errbuf_keeps_first_message);
    RUN(buf_caps_input);
    RUN(log_redacts_secrets);
    RUN(classify_statuses);
    RUN(retry_after_forms);
    RUN(backoff_is_bounded);
    RUN(conf_errors_name_the_path);
    RUN(conf_expands_env);
    RUN(schedules_parse);
    RUN(schedules_local_time);
    RUN(registry_is_consistent);
    RUN(json_print_matches_cjson);
    return TT_DONE();
}
