/* SPDX-License-Identifier: Apache-2.0
 * tinytest: the smallest test harness that does the job. Each test is a
 * function; CHECK() records a failure with file:line and the expression and
 * lets the test continue; the binary prints "ok N name" / "not ok N name",
 * then "N passed, N failed", and exits non-zero when anything failed.
 */
#ifndef TINYTEST_H
#define TINYTEST_H

#include <stdio.h>
#include <string.h>

static int tt_failed_checks;
static int tt_passed, tt_failed;

#define CHECK(expr)                                                            \
    do {                                                                       \
        if (!(expr)) {                                                         \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
                    #expr);                                                    \
            tt_failed_checks++;                                                \
        }                                                                      \
    } while (0)

#define CHECK_STR(a, b)                                                              \
    do {                                                                             \
        const char *tt_a = (a), *tt_b = (b);                                         \
        if (tt_a == NULL || tt_b == NULL || strcmp(tt_a, tt_b) != 0) {               \
            fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__,    \
                    __LINE__, #a, tt_a ? tt_a : "(null)", tt_b ? tt_b : "(null)");   \
            tt_failed_checks++;                                                      \
        }                                                                            \
    } while (0)

#define CHECK_INT(a, b)                                                           \
    do {                                                                          \
        long long tt_a = (long long)(a), tt_b = (long long)(b);                   \
        if (tt_a != tt_b) {                                                       \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %lld\n", __FILE__,     \
                    __LINE__, #a, tt_a, tt_b);                                    \
            tt_failed_checks++;                                                   \
        }                                                                         \
    } while (0)

#define RUN(fn)                                                                    \
    do {                                                                           \
        int tt_before = tt_failed_checks;                                          \
        fn();                                                                      \
        if (tt_failed_checks == tt_before) {                                       \
            tt_passed++;                                                           \
            printf("ok %d %s\n", tt_passed + tt_failed, #fn);                      \
        } else {                                                                   \
            tt_failed++;                                                           \
            printf("not ok %d %s\n", tt_passed + tt_failed, #fn);                  \
        }                                                                          \
        fflush(stdout);                                                            \
    } while (0)

#define TT_DONE()                                                 \
    (printf("%d passed, %d failed\n", tt_passed, tt_failed), \
     tt_failed ? 1 : 0)

#endif
