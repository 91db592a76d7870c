/* SPDX-License-Identifier: Apache-2.0
 * mlc_err: result-code strings and the first-message-wins error buffer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "shared/mlc_err.h"
#include "shared/mlc_log.h"

static const char *const rc_names[MLC_RC_MAX + 1] = {
    [MLC_OK] = "success",
    [MLC_E_NOMEM] = "out of memory",
    [MLC_E_INVAL] = "invalid argument or configuration",
    [MLC_E_IO] = "local disk or database error",
    [MLC_E_NET] = "network or server error",
    [MLC_E_THROTTLED] = "throttled by the remote system",
    [MLC_E_AUTH] = "authentication failed",
    [MLC_E_REJECTED] = "rejected by the remote system",
    [MLC_E_CONFLICT] = "conflicting concurrent change",
    [MLC_E_PROTO] = "unparseable answer from the remote system",
    [MLC_E_TOOBIG] = "input over its size limit",
    [MLC_E_NOTFOUND] = "not found",
    [MLC_E_STOPPED] = "stopped on request",
};

const char *mlc_strerror(enum mlc_rc rc)
{
    if ((int)rc < 0 || rc > MLC_RC_MAX || rc_names[rc] == NULL) {
        return "unknown error";
    }
    return rc_names[rc];
}

int mlc_rc_transient(enum mlc_rc rc)
{
    return rc == MLC_E_NET || rc == MLC_E_THROTTLED || rc == MLC_E_CONFLICT;
}

void mlc_errf(struct mlc_errbuf *e, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL || e->set) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    e->set = 1;
}

void mlc_err_reset(struct mlc_errbuf *e)
{
    if (e != NULL) {
        e->set = 0;
        e->msg[0] = '\0';
    }
}

const char *mlc_err_msg(const struct mlc_errbuf *e)
{
    if (e == NULL || !e->set) {
        return "";
    }
    return e->msg;
}

void mlc_bug(const char *file, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mlc_log_write(MLC_LOG_ERROR, file, line, "BUG: %s", msg);
    abort();
}
