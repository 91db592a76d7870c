/* SPDX-License-Identifier: Apache-2.0
 * mlc-agent: command line entry point.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "agent/agent.h"
#include "agent/pipeline.h"
#include "agent/daemon.h"
#include "agent/statusview.h"
#include "shared/mlc_crypto.h"
#include "agent/writeback.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

#ifndef MLC_VERSION
#define MLC_VERSION "0.0.0"
#endif

#define DEFAULT_CONFIG "/etc/ml-connector/agent.json"

static struct agent *the_agent;

static void on_signal(int sig)
{
    (void)sig;
    if (the_agent != NULL) {
        the_agent->stop = 1;
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mlc-agent [-c CONFIG] [-q] [-v] COMMAND [ARGS]\n"
            "\n"
            "Keeps ERP records in agreement with the systems teams work in (see check-config\n"
            "for the system types this build knows).\n"
            "\n"
            "commands:\n"
            "  run                    daemon: run every flow on its schedule until SIGTERM/SIGINT\n"
            "  sync FLOW|--all [--dry-run] [--full]\n"
            "                         one full cycle now; --dry-run prints what would be created\n"
            "                         or updated and changes nothing; --full reads the source\n"
            "                         from its start, not from the last run's cursor (records\n"
            "                         the target already has cost no call)\n"
            "  ping                   try every system's address and credentials, one line each\n"
            "  check-config           validate the configuration and print what it accepts\n"
            "  status                 state database summary per flow\n"
            "  replay [FLOW]          move dead letters back to the outbox (next sync resends)\n"
            "  inbox add [--kind K] FILE...\n"
            "                         store webhook bodies (one per file; default kind: the type\n"
            "                         of the first write-back flow's target) as\n"
            "                         local deliveries; the same content is stored once\n"
            "  inbox apply            write pending deliveries back now (retries included), print counts\n"
            "  inbox list             pending and dead deliveries\n"
            "  warehouse init [--print]\n"
            "                         create what the flows' targets need before the first load\n"
            "                         (schema, tables with their keys and indexes, the load log,\n"
            "                         the reader role's grants); idempotent: run again after adding\n"
            "                         a flow or a column (missing columns are added, nothing is\n"
            "                         dropped); --print prints the SQL for a DBA and runs nothing\n"
            "  secret set NAME        store a secret (value read from stdin), encrypted at rest\n"
            "  password-hash          hash a status-page password (stdin) for agent.status_password_hash\n"
            "  version                print the version\n"
            "\n"
            "options:\n"
            "  -c CONFIG   configuration file (default $MLC_CONFIG or " DEFAULT_CONFIG ")\n"
            "  -q          quiet: no progress line\n"
            "  -v          debug logging\n"
            "  -h, --help  this text\n"
            "\n"
            "exit status: 0 success, 1 a sync or check failed, 2 usage or configuration error\n");
}

static void print_summary(const char *flow, const struct sync_stats *ss)
{
    printf("%s: created %ld, updated %ld, unchanged %ld, adopted %ld, failed %ld, pending %ld, "
           "seen %ld, warnings %ld\n",
           flow, ss->created, ss->updated, ss->unchanged, ss->adopted, ss->failed, ss->pending,
           ss->seen, ss->warnings);
    fflush(stdout);
}

static int cmd_sync(struct agent *a, int argc, char **argv)
{
    const char *name = NULL;
    int dry = 0, full = 0, all = 0, failed = 0, matched = 0;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dry-run") == 0) {
            dry = 1;
        } else if (strcmp(argv[i], "--full") == 0) {
            full = 1;
        } else if (strcmp(argv[i], "--all") == 0) {
            all = 1;
        } else if (name == NULL && argv[i][0] != '-') {
            name = argv[i];
        } else {
            fprintf(stderr, "mlc-agent sync: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (name == NULL && !all) {
        fprintf(stderr, "mlc-agent sync: name a flow or use --all (flows:");
        for (int i = 0; i < a->n_flows; i++) {
            fprintf(stderr, " %s", a->flows[i].name);
        }
        fprintf(stderr, ")\n");
        return 2;
    }
    a->after_defer = all && !dry; /* one after_load call per system for the whole pass */
    for (int i = 0; i < a->n_flows; i++) {
        struct flow *f = &a->flows[i];
        struct mlc_errbuf err = { 0 };
        struct sync_stats ss;
        enum mlc_rc rc;

        if (!all && strcmp(f->name, name) != 0) {
            continue;
        }
        matched++;
        if (!f->enabled) {
            if (!all) {
                fprintf(stderr, "mlc-agent sync: flow '%s' is disabled (\"enabled\": false in %s)\n",
                        f->name, a->config_path);
                return 2;
            }
            printf("%s: disabled, skipped\n", f->name);
            continue;
        }
        rc = pipeline_sync(a, f, (dry ? PIPELINE_DRY_RUN : 0u) | (full ? PIPELINE_FULL : 0u), &ss, &err);
        if (dry) {
            printf("dry run, nothing changed: ");
        }
        print_summary(f->name, &ss);
        if (rc != MLC_OK) {
            fprintf(stderr, "mlc-agent: %s\n", mlc_err_msg(&err));
            failed = 1;
        }
    }
    pipeline_after_flush(a);
    if (!all && matched == 0) {
        fprintf(stderr, "mlc-agent sync: no flow named '%s' in %s\n", name, a->config_path);
        return 2;
    }
    return failed;
}

static int cmd_ping(struct agent *a)
{
    int failed = 0;

    for (int i = 0; i < a->n_conns; i++) {
        struct conn *c = &a->conns[i];
        enum mlc_rc rc;
        mlc_err_reset(&c->err);
        rc = conn_ping(c);
        if (rc == MLC_OK) {
            printf("%-16s %-6s ok\n", c->name, conn_type(c));
        } else {
            printf("%-16s %-6s FAILED: %s\n", c->name, conn_type(c),
                   c->err.set ? c->err.msg : mlc_strerror(rc));
            failed = 1;
        }
        fflush(stdout);
    }
    return failed;
}

static int cmd_status(struct agent *a)
{
    cJSON *snap = statusview_snapshot(a, a->st, NULL, 0);

    printf("state database: %s\n", a->cf.state_db);
    statusview_print(snap, stdout);
    cJSON_Delete(snap);
    printf("inbox: %lld pending, %lld dead (mlc-agent inbox list)\n", state_inbox_count(a->st, "pending"),
           state_inbox_count(a->st, "dead"));
    return 0;
}

/* `mlc-agent password-hash`: a status-page password (stdin) -> agent.status_password_hash */
static int cmd_password_hash(void)
{
    char buf[512], *h;
    size_t n = fread(buf, 1, sizeof(buf) - 1, stdin);

    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        buf[--n] = '\0';
    }
    if (n < 8) {
        fprintf(stderr, "mlc-agent password-hash: give the password (at least 8 characters) on standard input\n");
        return 2;
    }
    h = mlc_password_hash(buf, 200000);
    memset(buf, 0, sizeof(buf));
    if (h == NULL) {
        fprintf(stderr, "mlc-agent password-hash: no randomness from the kernel\n");
        return 1;
    }
    printf("%s\n", h);
    free(h);
    return 0;
}

static int cmd_run(struct agent *a)
{
    return agent_daemon(a);
}

static int cmd_secret(struct agent *a, int argc, char **argv)
{
    struct mlc_errbuf err = { 0 };
    struct mlc_buf val = MLC_BUF_INIT;
    char chunk[512];
    size_t n;

    if (argc != 2 || strcmp(argv[0], "set") != 0) {
        fprintf(stderr, "usage: mlc-agent secret set NAME   (value on stdin)\n");
        return 2;
    }
    if (isatty(0)) {
        fprintf(stderr, "value for secret '%s' (end with Enter): ", argv[1]);
    }
    val.max = 64 * 1024;
    while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
        if (mlc_buf_add(&val, chunk, n) != MLC_OK) {
            fprintf(stderr, "mlc-agent: secret value too long (64 KiB at most)\n");
            mlc_buf_release(&val);
            return 2;
        }
        if (isatty(0) && memchr(chunk, '\n', n)) {
            break;
        }
    }
    while (val.len > 0 && (val.ptr[val.len - 1] == '\n' || val.ptr[val.len - 1] == '\r')) {
        val.ptr[--val.len] = '\0';
    }
    if (val.len == 0) {
        fprintf(stderr, "mlc-agent: empty value: secret '%s' not changed\n", argv[1]);
        return 2;
    }
    if (secrets_put(a->secrets, argv[1], val.ptr, &err) != MLC_OK) {
        fprintf(stderr, "mlc-agent: %s\n", mlc_err_msg(&err));
        memset(val.ptr, 0, val.len);
        mlc_buf_release(&val);
        return 1;
    }
    memset(val.ptr, 0, val.len);
    mlc_buf_release(&val);
    printf("secret '%s' stored (encrypted with %s)\n", argv[1], a->cf.key_file);
    return 0;
}

/* A delivery kind: a connector type that sends changes (its webhooks) or
 * "TYPE-poll" (changes the agent polled itself). */
static int inbox_kind_ok(const char *kind)
{
    char type[sizeof(((struct inbox_row *)0)->kind)];
    size_t n = strlen(kind);

    if (n == 0 || n >= sizeof(type)) {
        return 0;
    }
    return connector_find(conn_kind_type(kind, type, sizeof(type))) != NULL;
}

/* inbox add: webhook bodies from files, as local deliveries (negative seqs);
 * the content's hash is the delivery id, so the same file is stored once. */
static int inbox_add(struct agent *a, int argc, char **argv)
{
    const char *kind = NULL;
    int failed = 0, files = 0;

    /* default: the target of the first flow that writes back */
    for (int i = 0; i < a->n_flows && kind == NULL; i++) {
        if (a->flows[i].wb != NULL) {
            kind = conn_type(a->flows[i].dst);
        }
    }

    for (int i = 0; i < argc; i++) {
        struct mlc_errbuf err = { 0 };
        uint8_t h[MLC_SHA256_LEN];
        char hex[2 * MLC_SHA256_LEN + 1], ext[80];
        size_t len = 0;
        char *body;
        cJSON *doc;
        long long seq;
        int fresh = 0;
        enum mlc_rc rc;

        if (strcmp(argv[i], "--kind") == 0 && i + 1 < argc) {
            kind = argv[++i];
            if (!inbox_kind_ok(kind)) {
                size_t nk;
                const struct connector *const *all = connector_all(&nk);
                fprintf(stderr,
                        "mlc-agent inbox add: --kind '%s' is not a delivery kind: use a system type "
                        "(a webhook) or TYPE-poll (a polled change); types:",
                        kind);
                for (size_t k = 0; k < nk; k++) {
                    fprintf(stderr, " %s", all[k]->name);
                }
                fprintf(stderr, "\n");
                return 2;
            }
            continue;
        }
        files++;
        if (kind == NULL) {
            fprintf(stderr, "mlc-agent inbox add: no flow writes back: say which system the "
                            "bodies come from with --kind TYPE\n");
            return 2;
        }
        body = mlc_read_file(argv[i], 4u << 20, &len, &err);
        if (body == NULL) {
            fprintf(stderr, "mlc-agent: %s\n", mlc_err_msg(&err));
            failed = 1;
            continue;
        }
        doc = strlen(body) == len ? mlc_json_parse(body, len, argv[i], &err) : NULL;
        if (doc == NULL) {
            fprintf(stderr, "mlc-agent: %s\n", err.set ? mlc_err_msg(&err) : "a NUL byte in the file");
            free(body);
            failed = 1;
            continue;
        }
        cJSON_Delete(doc);
        mlc_sha256(body, len, h);
        mlc_hex(h, sizeof(h), hex);
        snprintf(ext, sizeof(ext), "sha256:%s", hex);
        /* one transaction: a concurrent `inbox add` cannot take the same local seq */
        rc = state_begin(a->st, &err);
        seq = state_inbox_local_seq(a->st);
        if (rc == MLC_OK) {
            rc = state_inbox_put(a->st, seq, kind, ext, body, state_now_ms(), &fresh, &err);
        }
        if (rc == MLC_OK) {
            rc = state_commit(a->st, &err);
        }
        free(body);
        if (rc != MLC_OK) {
            state_rollback(a->st);
            fprintf(stderr, "mlc-agent: %s\n", mlc_err_msg(&err));
            return 1;
        }
        if (fresh) {
            printf("%s: stored as delivery %lld (%s)\n", argv[i], seq, kind);
        } else {
            printf("%s: already in the inbox (same %s content), not stored again\n", argv[i], kind);
        }
    }
    if (files == 0) {
        fprintf(stderr, "usage: mlc-agent inbox add [--kind KIND] FILE...\n");
        return 2;
    }
    return failed;
}

static int inbox_apply(struct agent *a)
{
    struct wb_stats sum = { 0 }, ws;
    struct mlc_errbuf err = { 0 };
    enum mlc_rc rc = MLC_OK;

    state_inbox_retry_now(a->st);
    while (!a->stop) {
        rc = writeback_drain(a, 100, &ws, &err);
        sum.applied += ws.applied;
        sum.ignored += ws.ignored;
        sum.echoes += ws.echoes;
        sum.failed += ws.failed;
        sum.retry += ws.retry;
        sum.waiting += ws.waiting;
        /* stop when nothing moved, or a system failed (its rows wait for their retry) */
        if (rc != MLC_OK || ws.retry > 0 || ws.applied + ws.ignored + ws.echoes + ws.failed == 0) {
            break;
        }
    }
    printf("inbox: applied %ld, ignored %ld, echoes %ld, failed %ld, retry later %ld, pending %lld\n",
           sum.applied, sum.ignored, sum.echoes, sum.failed, sum.retry, state_inbox_pending(a->st));
    if (sum.waiting > 0) {
        printf("inbox: %ld unanswered calls are read back after writeback.settle_after\n", sum.waiting);
    }
    if (rc != MLC_OK) {
        fprintf(stderr, "mlc-agent: %s\n", mlc_err_msg(&err));
        return 1;
    }
    return sum.failed > 0;
}

static int inbox_list(struct agent *a)
{
    const char *sql = "SELECT seq, kind, state, attempts, datetime(stored_ms / 1000, 'unixepoch'),"
                      " COALESCE(ext_id, ''), COALESCE(detail, '') FROM state_inbox"
                      " WHERE state IN ('pending', 'inflight', 'dead') ORDER BY id";
    sqlite3_stmt *q = NULL;
    int n = 0;

    if (sqlite3_prepare_v2(a->st->db, sql, -1, &q, NULL) != SQLITE_OK) {
        fprintf(stderr, "mlc-agent: state database '%s': %s\n", a->cf.state_db,
                sqlite3_errmsg(a->st->db));
        sqlite3_finalize(q);
        return 1;
    }
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (n++ == 0) {
            printf("%-8s %-9s %-7s %-8s %-19s %s\n", "seq", "kind", "state", "attempts",
                   "stored (UTC)", "id / detail");
        }
        printf("%-8lld %-9s %-7s %-8d %-19s %s\n", (long long)sqlite3_column_int64(q, 0),
               sqlite3_column_text(q, 1), sqlite3_column_text(q, 2), sqlite3_column_int(q, 3),
               sqlite3_column_text(q, 4), sqlite3_column_text(q, 5));
        if (sqlite3_column_bytes(q, 6) > 0) {
            printf("%-8s %s\n", "", sqlite3_column_text(q, 6));
        }
    }
    sqlite3_finalize(q);
    printf("%d pending or dead deliveries\n", n);
    return 0;
}

static int cmd_inbox(struct agent *a, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "add") == 0) {
        return inbox_add(a, argc - 1, argv + 1);
    }
    if (argc == 1 && strcmp(argv[0], "apply") == 0) {
        return inbox_apply(a);
    }
    if (argc == 1 && strcmp(argv[0], "list") == 0) {
        return inbox_list(a);
    }
    fprintf(stderr, "usage: mlc-agent inbox add [--kind KIND] FILE... | inbox apply | inbox list\n");
    return 2;
}

static int cmd_check(struct agent *a)
{
    size_t n;
    const struct connector *const *all = connector_all(&n);

    printf("configuration %s is valid: %d systems, %d flows\n", a->config_path, a->n_conns,
           a->n_flows);
    for (int i = 0; i < a->n_flows; i++) {
        struct flow *f = &a->flows[i];
        char zone[160] = "";
        if (f->sched == SCHED_DAILY || f->sched == SCHED_WEEKLY) {
            char z[150];
            sched_zone((long long)time(NULL), z, sizeof(z));
            snprintf(zone, sizeof(zone), " (%s)", z);
        }
        printf("  flow %-20s %s -> %s, schedule %s%s", f->name, f->src->name, f->dst->name,
               mlc_json_str(f->conf, "schedule") ? mlc_json_str(f->conf, "schedule") : "every 15m",
               zone);
        for (int k = 0; k < f->n_after; k++) {
            printf("%s%s", k == 0 ? ", after a load: " : ", ", f->after[k].c->name);
        }
        printf("\n");
    }
    for (int i = 0; i < a->n_conns; i++) {
        /* the connector's key table says which settings hold secrets */
        for (const struct conf_key *k = a->conns[i].ops->keys; k->name; k++) {
            const char *v = k->type == CONF_SECRET ? mlc_json_str(a->conns[i].conf, k->name) : NULL;
            if (v && strncmp(v, "secret:", 7) != 0 && strstr(v, "${") == NULL) {
                printf("  warning: systems.%s.%s holds a literal secret; prefer \"secret:NAME\" "
                       "(mlc-agent secret set NAME)\n", a->conns[i].name, k->name);
            }
        }
    }
    printf("\naccepted settings per system type:\n");
    for (size_t i = 0; i < n; i++) {
        mlc_conf_describe(all[i]->name, all[i]->keys, stdout);
    }
    return 0;
}

/* `warehouse init [--print]`: each system whose connector can set up its
 * flows' targets gets them all at once. */
static int cmd_warehouse(struct agent *a, int argc, char **argv)
{
    int print_only = 0, done = 0, rc = 0;

    if (argc < 1 || strcmp(argv[0], "init") != 0 || argc > 2 ||
        (argc == 2 && strcmp(argv[1], "--print") != 0)) {
        fprintf(stderr, "usage: mlc-agent warehouse init [--print]\n");
        return 2;
    }
    print_only = argc == 2;
    for (int i = 0; i < a->n_conns; i++) {
        struct conn *c = &a->conns[i];
        const cJSON **targets;
        struct mlc_buf script = MLC_BUF_INIT;
        size_t n = 0;
        enum mlc_rc crc;

        if (c->ops->init_targets == NULL) {
            continue;
        }
        targets = mlc_xcalloc((size_t)a->n_flows + 1, sizeof(*targets));
        for (int k = 0; k < a->n_flows; k++) {
            if (a->flows[k].dst == c) {
                targets[n++] = a->flows[k].target;
            }
        }
        if (n == 0) {
            free(targets);
            continue;
        }
        done++;
        mlc_err_reset(&c->err);
        crc = c->ops->init_targets(c, targets, n, print_only, &script);
        if (crc != MLC_OK) {
            fprintf(stderr, "mlc-agent warehouse init: system %s: %s\n", c->name, mlc_err_msg(&c->err));
            rc = 1;
        } else if (print_only) {
            fputs(mlc_buf_str(&script), stdout);
        } else {
            printf("%s: ready, %zu flow target%s (run again any time: it creates what is missing "
                   "and drops nothing)\n", c->name, n, n == 1 ? "" : "s");
        }
        mlc_buf_release(&script);
        free(targets);
    }
    if (done == 0) {
        fprintf(stderr, "mlc-agent warehouse init: no flow in %s writes to a system whose type "
                        "creates its tables (see check-config for the types)\n", a->config_path);
        return 2;
    }
    return rc;
}

int main(int argc, char **argv)
{
    const char *config = getenv("MLC_CONFIG") ? getenv("MLC_CONFIG") : DEFAULT_CONFIG;
    struct mlc_errbuf err = { 0 };
    struct agent a = { 0 };
    const char *cmd;
    int i = 1, quiet = 0, rc = 0;
    struct sigaction sa;

    if (getenv("MLC_LOG_LEVEL") != NULL && mlc_log_parse_level(getenv("MLC_LOG_LEVEL")) >= 0) {
        mlc_log_level = mlc_log_parse_level(getenv("MLC_LOG_LEVEL"));
    }
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "-q") == 0) {
            quiet = 1;
        } else if (strcmp(argv[i], "-v") == 0) {
            mlc_log_level = MLC_LOG_DEBUG;
            setenv("MLC_LOG_LEVEL", "debug", 1);
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("mlc-agent %s\n", MLC_VERSION);
            return 0;
        } else {
            fprintf(stderr, "mlc-agent: unknown option '%s' (see mlc-agent --help)\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    cmd = argv[i++];
    if (strcmp(cmd, "version") == 0) {
        printf("mlc-agent %s\n", MLC_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "password-hash") == 0) {
        return cmd_password_hash();
    }
    if (strcmp(cmd, "run") && strcmp(cmd, "sync") && strcmp(cmd, "ping") &&
        strcmp(cmd, "check-config") && strcmp(cmd, "status") && strcmp(cmd, "replay") &&
        strcmp(cmd, "secret") && strcmp(cmd, "inbox") && strcmp(cmd, "warehouse")) {
        fprintf(stderr, "mlc-agent: unknown command '%s' (see mlc-agent --help)\n", cmd);
        return 2;
    }
    mlc_http_global_init();
    the_agent = &a;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    a.progress = !quiet && isatty(2);
    if (agent_load(&a, config, &err) != MLC_OK) {
        fprintf(stderr, "mlc-agent: configuration error: %s\n", mlc_err_msg(&err));
        rc = 2;
        goto out;
    }
    if (strcmp(cmd, "check-config") == 0) {
        rc = cmd_check(&a);
        goto out;
    }
    if (agent_open(&a, &err) != MLC_OK) {
        fprintf(stderr, "mlc-agent: %s\n", mlc_err_msg(&err));
        rc = 1;
        goto out;
    }
    if (strcmp(cmd, "sync") == 0) {
        rc = cmd_sync(&a, argc - i, argv + i);
    } else if (strcmp(cmd, "ping") == 0) {
        rc = cmd_ping(&a);
    } else if (strcmp(cmd, "status") == 0) {
        rc = cmd_status(&a);
    } else if (strcmp(cmd, "run") == 0) {
        rc = cmd_run(&a);
    } else if (strcmp(cmd, "secret") == 0) {
        rc = cmd_secret(&a, argc - i, argv + i);
    } else if (strcmp(cmd, "inbox") == 0) {
        rc = cmd_inbox(&a, argc - i, argv + i);
    } else if (strcmp(cmd, "warehouse") == 0) {
        rc = cmd_warehouse(&a, argc - i, argv + i);
    } else if (strcmp(cmd, "replay") == 0) {
        long long n = state_dead_replay(a.st, i < argc ? argv[i] : NULL, &err);
        if (n < 0) {
            fprintf(stderr, "mlc-agent: replay failed: %s\n", mlc_err_msg(&err));
            rc = 1;
        } else {
            printf("%lld dead letters moved back to the outbox; the next sync delivers them\n", n);
        }
    }
out:
    agent_release(&a);
    mlc_log_clear_secrets();
    mlc_http_global_cleanup();
    return rc;
}
