/* SPDX-License-Identifier: Apache-2.0
 * mlc_log: one line per event on stderr (journald picks it up), with level,
 * source location and redaction of anything registered as a secret.
 */
#ifndef MLC_LOG_H
#define MLC_LOG_H

enum mlc_log_level { MLC_LOG_ERROR = 0, MLC_LOG_WARN = 1, MLC_LOG_INFO = 2, MLC_LOG_DEBUG = 3 };

extern int mlc_log_level;

#define mlc_log(lvl, ...)                                          \
    do {                                                           \
        if ((lvl) <= mlc_log_level) {                              \
            mlc_log_write((lvl), __FILE__, __LINE__, __VA_ARGS__); \
        }                                                          \
    } while (0)
#define mlc_error(...) mlc_log(MLC_LOG_ERROR, __VA_ARGS__)
#define mlc_warn(...)  mlc_log(MLC_LOG_WARN, __VA_ARGS__)
#define mlc_info(...)  mlc_log(MLC_LOG_INFO, __VA_ARGS__)
#define mlc_debug(...) mlc_log(MLC_LOG_DEBUG, __VA_ARGS__)

void mlc_log_write(int lvl, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "error", "warn", "info", "debug" -> level; -1 when unknown. */
int mlc_log_parse_level(const char *s);

/* Register a secret value (copied); every later log line has it replaced by
 * "[redacted]". Values shorter than 4 bytes are ignored (too many false hits). */
void mlc_log_add_secret(const char *value);
void mlc_log_clear_secrets(void);
/* Copy src into dst (size n) with registered secrets redacted; returns dst. */
char *mlc_log_redact(const char *src, char *dst, unsigned long n);

#endif
