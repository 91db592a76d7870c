/* SPDX-License-Identifier: Apache-2.0
 * mlc_log: leveled one-line logging to stderr with secret redaction.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "shared/mlc_log.h"

int mlc_log_level = MLC_LOG_INFO;

#define MAX_SECRETS 64

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char *secrets[MAX_SECRETS];
static int n_secrets;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int mlc_log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

void mlc_log_add_secret(const char *value)
{
    if (value == NULL || strlen(value) < 4) {
        return;
    }
    pthread_mutex_lock(&log_lock);
    for (int i = 0; i < n_secrets; i++) {
        if (strcmp(secrets[i], value) == 0) {
            pthread_mutex_unlock(&log_lock);
            return;
        }
    }
    if (n_secrets == MAX_SECRETS) {
        /* oldest out: rotated tokens keep arriving */
        free(secrets[0]);
        memmove(secrets, secrets + 1, sizeof(secrets[0]) * (MAX_SECRETS - 1));
        n_secrets--;
    }
    secrets[n_secrets] = strdup(value);
    if (secrets[n_secrets] != NULL) {
        n_secrets++;
    }
    pthread_mutex_unlock(&log_lock);
}

void mlc_log_clear_secrets(void)
{
    pthread_mutex_lock(&log_lock);
    for (int i = 0; i < n_secrets; i++) {
        free(secrets[i]);
    }
    n_secrets = 0;
    pthread_mutex_unlock(&log_lock);
}

/* Caller holds log_lock. */
static char *redact_locked(const char *src, char *dst, unsigned long n)
{
    static const char mark[] = "[redacted]";
    unsigned long o = 0;
    const char *p = src;

    if (n == 0) {
        return dst;
    }
    while (*p && o + 1 < n) {
        int hit = 0;
        for (int i = 0; i < n_secrets; i++) {
            size_t len = strlen(secrets[i]);
            if (strncmp(p, secrets[i], len) == 0) {
                for (size_t k = 0; k < sizeof(mark) - 1 && o + 1 < n; k++) {
                    dst[o++] = mark[k];
                }
                p += len;
                hit = 1;
                break;
            }
        }
        if (!hit) {
            dst[o++] = *p++;
        }
    }
    dst[o] = '\0';
    return dst;
}

char *mlc_log_redact(const char *src, char *dst, unsigned long n)
{
    pthread_mutex_lock(&log_lock);
    redact_locked(src, dst, n);
    pthread_mutex_unlock(&log_lock);
    return dst;
}

void mlc_log_write(int lvl, const char *file, int line, const char *fmt, ...)
{
    char msg[2048], clean[2048], stamp[32];
    const char *base = strrchr(file, '/');
    struct timespec ts;
    struct tm tm;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* one event, one line: fold embedded newlines */
    for (char *q = msg; *q; q++) {
        if (*q == '\n' || *q == '\r') {
            *q = ' ';
        }
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    if (lvl < 0) {
        lvl = 0;
    } else if (lvl > 3) {
        lvl = 3;
    }
    pthread_mutex_lock(&log_lock);
    redact_locked(msg, clean, sizeof(clean));
    fprintf(stderr, "%s.%03ldZ %-5s %s:%d %s\n", stamp, ts.tv_nsec / 1000000, level_names[lvl],
            base ? base + 1 : file, line, clean);
    pthread_mutex_unlock(&log_lock);
}
