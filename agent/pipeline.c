/* SPDX-License-Identifier: Apache-2.0
 * pipeline: poll -> map -> hash -> outbox -> deliver -> ledger, for one flow.
 *
 * Nothing is lost: the cursor advances only in the transaction that stores
 * the page's outbox rows. Nothing is doubled: unchanged records hash equal to
 * the ledger and cost no call; a create is marked in flight (committed) before
 * it is sent, and an in-flight create found after a crash is looked up at the
 * target by its marker before it may be sent again.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "agent/agent.h"
#include "agent/pipeline.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_http.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

/* The largest batch any connector's max_batch may ask for (agent.c checks
 * it): the pipeline's per-batch arrays live on the stack. */
#define MAX_BATCH PIPELINE_MAX_BATCH

void pipeline_marker(const struct flow *f, const char *key, char *out, size_t n)
{
    size_t o = (size_t)snprintf(out, n, "%s", f->marker_prefix);

    for (const char *p = key; *p && o + 1 < n; p++) {
        unsigned char ch = (unsigned char)*p;
        out[o++] = (char)(isalnum(ch) || ch == '-' || ch == '_' || ch == '.' ? ch : '_');
    }
    out[o < n ? o : n - 1] = '\0';
}

static void new_audit_id(char out[33])
{
    uint8_t r[16];

    if (mlc_random(r, sizeof(r)) != MLC_OK) {
        MLC_BUG("no randomness for an audit id");
    }
    mlc_hex(r, sizeof(r), out);
}

static void hash_of(const char *payload, char out[65])
{
    uint8_t h[MLC_SHA256_LEN];

    mlc_sha256(payload, strlen(payload), h);
    mlc_hex(h, sizeof(h), out);
}

void pipeline_hash(const cJSON *mapped, char out[65])
{
    char *payload = mlc_json_print(mapped);

    hash_of(payload, out);
    free(payload);
}

static void progress(struct agent *a, const struct flow *f, const struct sync_stats *ss, int final)
{
    if (!a->progress) {
        return;
    }
    fprintf(stderr, "\r%s: read %ld, created %ld, updated %ld, unchanged %ld, failed %ld%s", f->name,
            ss->read, ss->created, ss->updated, ss->unchanged, ss->failed, final ? "\n" : "   ");
    fflush(stderr);
}

enum mlc_rc pipeline_prepare(struct agent *a, struct flow *f, struct mlc_errbuf *err)
{
    enum mlc_rc rc;

    (void)a;
    if (f->prepared) {
        return MLC_OK;
    }
    if (f->dst->ops->prepare == NULL) {
        f->prepared = 1;
        return MLC_OK;
    }
    mlc_err_reset(&f->dst->err);
    {
        struct prep_info pi = { f->mapped };
        rc = f->dst->ops->prepare(f->dst, f->target, &pi);
    }
    if (rc != MLC_OK) {
        mlc_errf(err, "flow %s: %s", f->name, mlc_err_msg(&f->dst->err));
        return rc;
    }
    f->prepared = 1;
    return MLC_OK;
}

long long pipeline_retry_delay_ms(int attempts)
{
    const long long cap = 3600000;
    long long ceil = 5000;

    for (int i = 1; i < attempts && ceil < cap; i++) {
        ceil *= 2;
    }
    if (ceil > cap) {
        ceil = cap;
    }
    /* mlc_backoff_ms at attempt 0 draws uniformly from [0, base] */
    return ceil - ceil / 2 + mlc_backoff_ms(0, (long)(ceil / 2), (long)(ceil / 2));
}

/* Next try for a record that failed transiently, in seconds. */
static long long retry_at(int attempts)
{
    return state_now() + (pipeline_retry_delay_ms(attempts) + 999) / 1000;
}

/* Target keys of records created before the earliest unanswered create of
 * rows[] was sent (the ledger's creation times are ms, sent_at is seconds:
 * a whole second earlier, never later). */
static int keys_before(struct agent *a, struct flow *f, const struct outbox_row *rows, int n,
                       char **keys, int max)
{
    long long first = 0;

    for (int i = 0; i < n; i++) {
        if (strcmp(rows[i].op, "create") == 0 && rows[i].sent_at > 0 &&
            (first == 0 || rows[i].sent_at < first)) {
            first = rows[i].sent_at;
        }
    }
    if (first == 0) {
        return 0;
    }
    n = state_ledger_keys_before(a->st, f->name, first * 1000, keys, max);
    if (n == 0 && max > 0) {
        keys[n++] = mlc_xstrdup(""); /* nothing created before it */
    }
    return n;
}

/* Record a record the target already has (found by its marker): the ledger
 * learns it; if the target holds exactly this content (its stored hash says
 * so) nothing is sent, otherwise the row becomes an update. *written = 1
 * when the row is finished (no call needed). */
static enum mlc_rc adopt(struct agent *a, struct flow *f, const struct outbox_row *r,
                         const struct tgt_found *fd, const char *action, int *written,
                         struct mlc_errbuf *err)
{
    struct ledger_row lr = { 0 };
    int same = fd->hash[0] != '\0' && strcmp(fd->hash, r->hash) == 0;
    enum mlc_rc rc;

    snprintf(lr.hash, sizeof(lr.hash), "%s", fd->hash);
    snprintf(lr.target_key, sizeof(lr.target_key), "%s", fd->target_key);
    snprintf(lr.target_id, sizeof(lr.target_id), "%s", fd->target_id);
    snprintf(lr.audit_id, sizeof(lr.audit_id), "%s", r->audit_id);
    rc = state_ledger_put(a->st, f->name, r->source_key, &lr, err);
    if (rc != MLC_OK) {
        return rc;
    }
    *written = same;
    if (same) {
        rc = state_outbox_delete(a->st, r->id, err);
    } else {
        rc = state_outbox_resolve(a->st, r->id, "update", fd->target_key, err);
    }
    state_audit(a->st, f->name, r->source_key, r->audit_id, action, fd->target_key,
                same ? "found at the target by its marker, content as sent: nothing to send"
                     : "found at the target by its marker; the current content is sent as an "
                       "update");
    return rc;
}

/* A row queued in flight at first sight that the flow's sent mark does not
 * cover: it never left (see state_outbox_put_fresh). */
static int never_left(const struct outbox_row *r, long long mark_id)
{
    return r->sent_at == 0 && r->id > mark_id;
}

/* This process's first run (ms): an agent that died before it started made
 * its last calls no later than this. */
static long long proc_start_ms;

/* Wait until calls of writes that are in flight (the youngest sent at
 * sent_at, whole seconds) can no longer be running at the target: a request
 * whose sender is gone may still land, and reading the target before it
 * does would find nothing and send it again (a second issue, a second
 * comment). One apply() may make calls long after its rows were marked sent
 * (a comment per created issue), so the wait counts from when the calls
 * ended: for rows this process sent, the return of its last apply(); for
 * rows of an agent that died, this process's start, as its death time is
 * unknown. 1 when stopped meanwhile. */
static int settle_wait(struct agent *a, struct flow *f, long long sent_at)
{
    long long sent_ms = (sent_at + 1) * 1000, ended, until, now = state_now_ms();

    if (sent_at <= 0) {
        return 0;
    }
    if (sent_ms <= proc_start_ms) {
        ended = proc_start_ms;
    } else {
        ended = f->apply_end_ms > sent_ms ? f->apply_end_ms : sent_ms;
    }
    until = ended + (long long)f->settle_after_s * 1000;
    if (now >= until) {
        return 0;
    }
    mlc_info("flow %s: writes %s may still be running at the target: reading them back in %.1fs "
             "(settle_after %lds)",
             f->name, sent_ms <= proc_start_ms ? "of an agent that stopped" : "left unanswered",
             (double)(until - now) / 1000.0, f->settle_after_s);
    while (!a->stop && state_now_ms() < until) {
        usleep(50 * 1000);
    }
    return a->stop != 0;
}

/* Resolve writes whose outcome is unknown (in flight when we stopped),
 * once calls that may still be running at the target have ended
 * (settle_wait()). Updates are sent again, the target's write step reading
 * back what is not idempotent (comments). A create is looked up
 * by its marker; found, it is recorded (or updated). Not found, it may still
 * be there: the target's search lags its writes, and on a busy site the id
 * hints miss. Such a create stays in flight, is looked up again on later
 * runs, and is sent again only once it has been unanswered for
 * f->recreate_after_s: a duplicate issue costs more than a late one. */
static enum mlc_rc recover(struct agent *a, struct flow *f, struct sync_stats *ss,
                           struct mlc_errbuf *err)
{
    struct outbox_row rows[MAX_BATCH];
    long long after = 0, mark_id, mark_at;
    enum mlc_rc rc = MLC_OK;

    state_sent_get(a->st, f->name, &mark_id, &mark_at);
    if (f->dst->ops->caps & CONN_UPSERT) {
        /* the target keys records by marker: sending one again cannot double it */
        for (;;) {
            int n = state_outbox_next_after(a->st, f->name, "inflight", NULL, after, rows,
                                            MAX_BATCH, 1LL << 62);
            for (int i = 0; i < n; i++) {
                if (rc == MLC_OK) {
                    rc = state_outbox_retry_later(a->st, rows[i].id, 0,
                                                  "unanswered: sent again (the target upserts)", err);
                }
                after = rows[i].id;
                outbox_row_release(&rows[i]);
            }
            if (n == 0 || rc != MLC_OK) {
                return rc;
            }
        }
    }
    for (;;) {
        const char *markers[MAX_BATCH];
        char mk[MAX_BATCH][128], *hints[MAX_BATCH];
        struct tgt_found fd[MAX_BATCH];
        int n = state_outbox_next_after(a->st, f->name, "inflight", NULL, after, rows, MAX_BATCH,
                                        1LL << 62);
        int nh = 0, creates = 0;
        long long now = state_now();

        if (n == 0) {
            return MLC_OK;
        }
        after = rows[n - 1].id;
        /* queued in flight at first sight (sent_at 0): covered by the sent
         * mark, it may have left then; above the mark, it never left, and
         * goes back to the queue without asking the target */
        {
            int keep = 0, unsent = 0;
            for (int i = 0; i < n; i++) {
                unsent += never_left(&rows[i], mark_id);
            }
            if (unsent > 0) {
                if ((rc = state_begin(a->st, err)) != MLC_OK) {
                    goto out;
                }
                for (int i = 0; i < n && rc == MLC_OK; i++) {
                    if (never_left(&rows[i], mark_id)) {
                        rc = state_outbox_resolve(a->st, rows[i].id, rows[i].op,
                                                  rows[i].target_key[0] ? rows[i].target_key : NULL,
                                                  err);
                    }
                }
                if (rc == MLC_OK) {
                    rc = state_commit(a->st, err);
                }
                if (rc != MLC_OK) {
                    state_rollback(a->st);
                    goto out;
                }
            }
            for (int i = 0; i < n; i++) {
                if (never_left(&rows[i], mark_id)) {
                    outbox_row_release(&rows[i]);
                    continue;
                }
                if (rows[i].sent_at == 0) {
                    rows[i].sent_at = mark_at;
                }
                rows[keep++] = rows[i];
            }
            n = keep;
            if (n == 0) {
                continue;
            }
        }
        {
            long long youngest = 0;
            for (int i = 0; i < n; i++) {
                youngest = rows[i].sent_at > youngest ? rows[i].sent_at : youngest;
            }
            if (settle_wait(a, f, youngest)) {
                for (int i = 0; i < n; i++) {
                    outbox_row_release(&rows[i]);
                }
                mlc_errf(err, "flow %s: stopped while waiting to read back unanswered writes",
                         f->name);
                return MLC_E_STOPPED;
            }
        }
        memset(fd, 0, sizeof(fd));
        for (int i = 0; i < n; i++) {
            pipeline_marker(f, rows[i].source_key, mk[i], sizeof(mk[i]));
            markers[i] = mk[i];
            creates += strcmp(rows[i].op, "create") == 0;
        }
        if (creates > 0) {
            nh = keys_before(a, f, rows, n, hints, 10);
            mlc_err_reset(&f->dst->err);
            rc = f->dst->ops->find(f->dst, f->target, markers, (size_t)n, (const char *const *)hints,
                                   (size_t)nh, fd);
            for (int i = 0; i < nh; i++) {
                free(hints[i]);
            }
            if (rc != MLC_OK) {
                mlc_errf(err, "flow %s: cannot check %d in-flight records at the target: %s", f->name,
                         n, mlc_err_msg(&f->dst->err));
                for (int i = 0; i < n; i++) {
                    outbox_row_release(&rows[i]);
                }
                return rc;
            }
        }
        if ((rc = state_begin(a->st, err)) != MLC_OK) {
            goto out;
        }
        for (int i = 0; i < n; i++) {
            struct outbox_row *r = &rows[i];
            if (strcmp(r->op, "update") == 0) {
                rc = state_outbox_resolve(a->st, r->id, "update", r->target_key, err);
            } else if (fd[i].found && strcmp(r->sent_hash, r->hash) == 0 &&
                       (fd[i].hash[0] == '\0' || strcmp(fd[i].hash, r->hash) == 0)) {
                /* the create landed with exactly this content: record it
                 * (a target that keeps a content hash and shows another one
                 * did not finish the write: that goes on as an update below) */
                struct ledger_row lr = { 0 };
                snprintf(lr.hash, sizeof(lr.hash), "%s", r->hash);
                snprintf(lr.target_key, sizeof(lr.target_key), "%s", fd[i].target_key);
                snprintf(lr.target_id, sizeof(lr.target_id), "%s", fd[i].target_id);
                snprintf(lr.audit_id, sizeof(lr.audit_id), "%s", r->audit_id);
                rc = state_ledger_put(a->st, f->name, r->source_key, &lr, err);
                if (rc == MLC_OK) {
                    rc = state_outbox_delete(a->st, r->id, err);
                }
                state_audit(a->st, f->name, r->source_key, r->audit_id, "recovered",
                            fd[i].target_key, "create confirmed at the target after a restart");
                ss->created++;
            } else if (fd[i].found) {
                /* it landed, but a newer version is queued (or the target did
                 * not finish it): send that as an update */
                rc = state_outbox_resolve(a->st, r->id, "update", fd[i].target_key, err);
                state_audit(a->st, f->name, r->source_key, r->audit_id, "recovered",
                            fd[i].target_key,
                            "create confirmed at the target; newer version queued as an update");
            } else if (!fd[i].absent && r->sent_at > 0 && now - r->sent_at < f->recreate_after_s) {
                /* not found yet: keep it in flight and look again next run */
                if (r->attempts <= 1 || now - r->sent_at < 60) {
                    mlc_info("flow %s: create of %s (audit %s) is unanswered and not found at "
                             "the target yet; looking again on later runs, sent again only "
                             "after %lds",
                             f->name, r->source_key, r->audit_id, f->recreate_after_s);
                }
            } else {
                char why[200];
                snprintf(why, sizeof(why),
                         fd[i].absent ? "unanswered create is not at the target (read after %llds): "
                                        "sending it again"
                                      : "unanswered create not found at the target after %llds: "
                                        "sending it again",
                         r->sent_at > 0 ? now - r->sent_at : 0LL);
                state_audit(a->st, f->name, r->source_key, r->audit_id, "resend", NULL, why);
                rc = state_outbox_resolve(a->st, r->id, "create", NULL, err);
            }
            if (rc != MLC_OK) {
                break;
            }
        }
        if (rc == MLC_OK) {
            rc = state_commit(a->st, err);
        }
        if (rc != MLC_OK) {
            state_rollback(a->st);
        }
    out:
        for (int i = 0; i < n; i++) {
            outbox_row_release(&rows[i]);
        }
        if (rc != MLC_OK) {
            return rc;
        }
    }
}

/* Pending creates the ledger does not know may exist at the target all the
 * same (a lost or new state database, a second machine): look their markers
 * up in one search per batch before creating any. Found ones are adopted and
 * leave rows[] (*n shrinks). */
static enum mlc_rc adopt_known(struct agent *a, struct flow *f, struct outbox_row *rows, int *n,
                               struct sync_stats *ss, struct mlc_errbuf *err)
{
    const char *markers[MAX_BATCH];
    char mk[MAX_BATCH][128];
    struct tgt_found fd[MAX_BATCH];
    int keep = 0, found = 0, written[MAX_BATCH] = { 0 };
    enum mlc_rc rc;

    for (int i = 0; i < *n; i++) {
        pipeline_marker(f, rows[i].source_key, mk[i], sizeof(mk[i]));
        markers[i] = mk[i];
    }
    mlc_err_reset(&f->dst->err);
    rc = f->dst->ops->find(f->dst, f->target, markers, (size_t)*n, NULL, 0, fd);
    if (rc != MLC_OK) {
        mlc_errf(err, "flow %s: cannot look up %d new records at the target before creating them: %s",
                 f->name, *n, mlc_err_msg(&f->dst->err));
        return rc;
    }
    for (int i = 0; i < *n; i++) {
        found += fd[i].found;
    }
    if (found == 0) {
        return MLC_OK;
    }
    if ((rc = state_begin(a->st, err)) != MLC_OK) {
        return rc;
    }
    for (int i = 0; i < *n && rc == MLC_OK; i++) {
        if (fd[i].found) {
            rc = adopt(a, f, &rows[i], &fd[i], "adopted", &written[i], err);
        }
    }
    if (rc == MLC_OK) {
        rc = state_commit(a->st, err);
    }
    if (rc != MLC_OK) {
        state_rollback(a->st);
        return rc; /* rows[] untouched: the caller releases them */
    }
    for (int i = 0; i < *n; i++) {
        if (!fd[i].found) {
            rows[keep++] = rows[i];
            continue;
        }
        ss->adopted += written[i];
        outbox_row_release(&rows[i]);
    }
    *n = keep;
    return MLC_OK;
}

static void dead_letter(struct agent *a, struct flow *f, const struct outbox_row *r, const char *why,
                        struct sync_stats *ss)
{
    struct mlc_errbuf ignore = { 0 };

    state_dead_put(a->st, f->name, r->source_key, r->payload, r->hash, why, r->audit_id,
                   r->attempts, &ignore);
    state_outbox_delete(a->st, r->id, &ignore);
    state_audit(a->st, f->name, r->source_key, r->audit_id, "dead_letter", r->target_key, why);
    mlc_warn("flow %s: record %s (audit %s) dead-lettered: %s", f->name, r->source_key, r->audit_id,
             why);
    ss->failed++;
}

/* A value the target left out of a record: counted, audited, logged. */
static void note_warning(struct agent *a, struct flow *f, const char *key, const char *audit_id,
                         const char *target_key, const char *warn, struct sync_stats *ss)
{
    ss->warnings++;
    state_audit(a->st, f->name, key, audit_id, "warning", target_key, warn);
    mlc_warn("flow %s: record %s: %s", f->name, key, warn);
}

/* Send rows[0..n) (all creates or all updates) with fields[i] as their
 * content; the target's verdicts land in res[]. Returns the call's own
 * result: not MLC_OK when the whole batch failed without verdicts (the
 * target's message is in f->dst->err). */
static enum mlc_rc send_rows(struct agent *a, struct flow *f, const struct outbox_row *rows,
                             cJSON *const *fields, int n, int creates, struct result *res)
{
    struct tgt_item items[MAX_BATCH];
    cJSON *prev[MAX_BATCH] = { 0 };
    char mk[MAX_BATCH][128];
    struct batch b = { 0 };
    enum mlc_rc rc;

    for (int i = 0; i < n; i++) {
        struct mlc_errbuf ignore = { 0 };
        pipeline_marker(f, rows[i].source_key, mk[i], sizeof(mk[i]));
        items[i].marker = mk[i];
        items[i].source_key = rows[i].source_key;
        items[i].target_key = creates ? NULL : rows[i].target_key;
        items[i].fields = fields[i];
        items[i].audit_id = rows[i].audit_id;
        items[i].hash = rows[i].hash;
        items[i].prev = NULL;
        if (!creates) {
            char *lists = NULL;
            if (state_ledger_lists(a->st, f->name, rows[i].source_key, &lists, &ignore) == MLC_OK &&
                lists != NULL) {
                prev[i] = cJSON_Parse(lists);
                items[i].prev = prev[i];
            }
            free(lists);
        }
        memset(&res[i], 0, sizeof(res[i]));
    }
    b.target = f->target;
    b.flow = f->name;
    b.items = items;
    b.n = (size_t)n;
    mlc_err_reset(&f->dst->err);
    rc = f->dst->ops->apply(f->dst, &b, res);
    f->apply_end_ms = state_now_ms();
    for (int i = 0; i < n; i++) {
        cJSON_Delete(prev[i]);
    }
    return rc;
}

/* Write what became of a sent batch, inside the caller's transaction: the
 * ledger and an audit row for each record written, a later try or a dead
 * letter for the others. arc is send_rows()' result: when the whole batch
 * failed, nothing was created (auth, config) or the rows are updates
 * (idempotent) and they wait for a later try; creates after a network
 * failure stay in flight, and the next run asks the target which of them
 * exist before sending any again. */
static enum mlc_rc settle(struct agent *a, struct flow *f, struct outbox_row *rows,
                          const struct result *res, int n, int creates, enum mlc_rc arc,
                          const char *why, struct sync_stats *ss, struct mlc_errbuf *err)
{
    enum mlc_rc rc = MLC_OK;

    if (arc != MLC_OK) {
        /* a target that upserts by key takes a create again without doubling it:
         * nothing stays in flight, the rows simply wait for the next try */
        if (!creates || arc == MLC_E_AUTH || arc == MLC_E_INVAL ||
            (f->dst->ops->caps & CONN_UPSERT)) {
            for (int i = 0; i < n && rc == MLC_OK; i++) {
                rc = state_outbox_retry_later(a->st, rows[i].id, creates ? 0 : retry_at(rows[i].attempts),
                                              why, err);
            }
        } else {
            /* in flight they stay; a row queued in flight at first sight
             * learns its send time here rather than from the sent mark */
            for (int i = 0; i < n && rc == MLC_OK; i++) {
                rc = state_outbox_stamp_sent(a->st, rows[i].id, err);
            }
        }
        return rc;
    }
    for (int i = 0; i < n && rc == MLC_OK; i++) {
        struct outbox_row *r = &rows[i];
        if (res[i].rc == MLC_OK) {
            struct ledger_row lr = { 0 };
            snprintf(lr.hash, sizeof(lr.hash), "%s", r->hash);
            snprintf(lr.target_key, sizeof(lr.target_key), "%s",
                     res[i].target_key[0] ? res[i].target_key : r->target_key);
            snprintf(lr.target_id, sizeof(lr.target_id), "%s", res[i].target_id);
            snprintf(lr.audit_id, sizeof(lr.audit_id), "%s", r->audit_id);
            lr.lists = res[i].lists;
            rc = state_ledger_put(a->st, f->name, r->source_key, &lr, err);
            if (rc == MLC_OK) {
                rc = state_outbox_delete(a->st, r->id, err);
            }
            state_audit(a->st, f->name, r->source_key, r->audit_id,
                        res[i].unchanged ? "unchanged" : creates ? "created" : "updated",
                        lr.target_key, NULL);
            if (res[i].warn[0] != '\0') {
                note_warning(a, f, r->source_key, r->audit_id, lr.target_key, res[i].warn, ss);
            }
            if (res[i].unchanged) {
                ss->unchanged++; /* the target already held it: it wrote nothing */
            } else if (creates) {
                ss->created++;
            } else {
                ss->updated++;
            }
        } else if (creates && res[i].target_key[0] != '\0') {
            /* created, but what the target does after its write (e.g. a
             * status or comments) failed: the record exists, so it is
             * recorded (with no hash: its content is not complete) and the
             * rest is sent as an update, never as a second create */
            struct ledger_row lr = { 0 };
            snprintf(lr.target_key, sizeof(lr.target_key), "%s", res[i].target_key);
            snprintf(lr.target_id, sizeof(lr.target_id), "%s", res[i].target_id);
            snprintf(lr.audit_id, sizeof(lr.audit_id), "%s", r->audit_id);
            rc = state_ledger_put(a->st, f->name, r->source_key, &lr, err);
            if (rc == MLC_OK) {
                rc = state_outbox_resolve(a->st, r->id, "update", res[i].target_key, err);
            }
            state_audit(a->st, f->name, r->source_key, r->audit_id, "created", lr.target_key,
                        res[i].err);
            if (rc != MLC_OK) {
                break;
            }
            if (mlc_rc_transient(res[i].rc) && r->attempts < f->max_attempts) {
                rc = state_outbox_retry_later(a->st, r->id, retry_at(r->attempts), res[i].err, err);
            } else {
                dead_letter(a, f, r, res[i].err[0] ? res[i].err : mlc_strerror(res[i].rc), ss);
            }
        } else if (res[i].rc == MLC_E_NOTFOUND && !creates) {
            char detail[700];
            snprintf(detail, sizeof(detail), "target %s no longer exists (deleted?): %s", r->target_key,
                     res[i].err);
            dead_letter(a, f, r, detail, ss);
        } else if (mlc_rc_transient(res[i].rc) && r->attempts < f->max_attempts) {
            rc = state_outbox_retry_later(a->st, r->id, retry_at(r->attempts), res[i].err, err);
        } else {
            dead_letter(a, f, r, res[i].err[0] ? res[i].err : mlc_strerror(res[i].rc), ss);
        }
    }
    return rc;
}

/* Deliver one batch of due outbox rows (waiting retries, rows recovery sent
 * back, versions queued behind an earlier one); *done = 1 when nothing was
 * due. Records first seen in this run take deliver_fresh() instead. */
static enum mlc_rc deliver_batch(struct agent *a, struct flow *f, struct sync_stats *ss, int *done,
                                 struct mlc_errbuf *err)
{
    struct outbox_row rows[MAX_BATCH];
    struct result *res = NULL;
    cJSON *fields[MAX_BATCH] = { 0 };
    long long now = state_now();
    int n, creates;
    enum mlc_rc rc, arc;

    for (;;) {
        n = state_outbox_next(a->st, f->name, "pending", "create", rows, f->batch, now);
        creates = n > 0;
        if (n == 0) {
            n = state_outbox_next(a->st, f->name, "pending", "update", rows, f->batch, now);
        }
        *done = n == 0;
        if (n == 0) {
            return MLC_OK;
        }
        if (!creates) {
            break;
        }
        /* nothing is created before the target was asked whether it has it
         * (a target that upserts by marker needs no asking) */
        if (f->dst->ops->caps & CONN_UPSERT) {
            break;
        }
        rc = adopt_known(a, f, rows, &n, ss, err);
        if (rc != MLC_OK) {
            for (int i = 0; i < n; i++) {
                outbox_row_release(&rows[i]);
            }
            return rc;
        }
        if (n > 0) {
            break;
        }
    }
    /* mark in flight first (durably): from here a crash leaves an unknown
     * outcome, which recover() settles by looking at the target */
    if ((rc = state_begin_durable(a->st, err)) != MLC_OK) {
        goto out;
    }
    for (int i = 0; i < n && rc == MLC_OK; i++) {
        rc = state_outbox_mark_inflight(a->st, rows[i].id, rows[i].hash, err);
        rows[i].attempts++;
    }
    if (rc == MLC_OK) {
        rc = state_commit(a->st, err);
    }
    if (rc != MLC_OK) {
        state_rollback(a->st);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        struct mlc_errbuf perr = { 0 };
        fields[i] = mlc_json_parse(rows[i].payload, strlen(rows[i].payload), "outbox payload", &perr);
        if (fields[i] == NULL) {
            fields[i] = mlc_json_xobj(); /* the target rejects it; the row dead-letters */
        }
    }
    res = mlc_xcalloc((size_t)n, sizeof(*res));
    arc = send_rows(a, f, rows, fields, n, creates, res);
    if (arc != MLC_OK) {
        mlc_errf(err, "flow %s: delivering %d records to %s failed: %s", f->name, n, f->dst->name,
                 mlc_err_msg(&f->dst->err));
    }
    /* (a first error stays the message: the call's, when it failed) */
    if ((rc = state_begin(a->st, err)) == MLC_OK) {
        rc = settle(a, f, rows, res, n, creates, arc, mlc_err_msg(&f->dst->err), ss, err);
        if (rc == MLC_OK) {
            rc = state_commit(a->st, err);
        }
        if (rc != MLC_OK) {
            state_rollback(a->st);
        }
    }
    if (rc == MLC_OK) {
        rc = arc;
    }
out:
    for (int i = 0; i < n; i++) {
        if (res != NULL) {
            free(res[i].lists);
        }
        cJSON_Delete(fields[i]);
        outbox_row_release(&rows[i]);
    }
    free(res);
    return rc;
}

static enum mlc_rc deliver(struct agent *a, struct flow *f, struct sync_stats *ss,
                           struct mlc_errbuf *err)
{
    int done = 0;
    enum mlc_rc rc = MLC_OK;

    while (!done && rc == MLC_OK) {
        if (a->stop) {
            return MLC_E_STOPPED;
        }
        rc = deliver_batch(a, f, ss, &done, err);
        progress(a, f, ss, 0);
    }
    return rc;
}

/* Records first seen in this run (no outbox row before): store_page queues
 * them in flight at once and keeps their mapped content, and
 * deliver_fresh() sends them in batches straight from memory. Before each
 * batch leaves, one small durable write (the flow's sent mark) covers it,
 * instead of marking every row; the outcomes of the page's batches are
 * written in one transaction at the end. A crash in between leaves rows in
 * flight, which recover() settles by reading the target, as for any other
 * unanswered write. */
struct fresh {
    long long id;
    const char *key; /* the page's record key */
    char op[8];
    char target_key[64];
    char hash[65];
    char audit_id[33];
    char *payload;    /* moves to the outbox row when the record is taken */
    cJSON *fields;
    int done; /* sent, or adopted before sending */
};

struct fresh_set {
    struct fresh *v;
    size_t n, cap;
};

static void fresh_release(struct fresh_set *fs)
{
    for (size_t i = 0; i < fs->n; i++) {
        free(fs->v[i].payload);
        cJSON_Delete(fs->v[i].fields);
    }
    free(fs->v);
    memset(fs, 0, sizeof(*fs));
}

/* One sent batch, kept until the page's outcomes are written. */
struct sent {
    struct outbox_row *rows;
    struct result *res;
    int n, creates;
    enum mlc_rc arc;
    char why[768];
};

static void sent_release(struct sent *b)
{
    for (int i = 0; i < b->n; i++) {
        free(b->res[i].lists);
        outbox_row_release(&b->rows[i]);
    }
    free(b->rows);
    free(b->res);
    free(b);
}

/* Up to f->batch fresh records of one op, not yet taken, as outbox rows
 * (adopt_known and settle work on those); idx[] says which. */
static int fresh_take(struct flow *f, struct fresh_set *fs, size_t *from, int creates,
                      struct outbox_row *rows, cJSON **fields, size_t *idx)
{
    int n = 0;

    for (; *from < fs->n && n < f->batch; (*from)++) {
        struct fresh *e = &fs->v[*from];
        struct outbox_row *r = &rows[n];
        if (e->done || (strcmp(e->op, "create") == 0) != creates) {
            continue;
        }
        memset(r, 0, sizeof(*r));
        r->id = e->id;
        r->source_key = mlc_xstrdup(e->key);
        r->payload = e->payload; /* the row owns it from here (released with its batch) */
        e->payload = NULL;
        memcpy(r->hash, e->hash, sizeof(r->hash));
        memcpy(r->sent_hash, e->hash, sizeof(r->sent_hash));
        memcpy(r->audit_id, e->audit_id, sizeof(r->audit_id));
        memcpy(r->op, e->op, sizeof(r->op));
        memcpy(r->target_key, e->target_key, sizeof(r->target_key));
        snprintf(r->state, sizeof(r->state), "inflight");
        r->attempts = 1;
        fields[n] = e->fields;
        idx[n++] = *from;
    }
    return n;
}

/* Write the outcomes of the batches sent so far in one transaction and
 * let them go. */
static enum mlc_rc flush_sent(struct agent *a, struct flow *f, struct sent **sent, size_t *nsent,
                              struct sync_stats *ss, struct mlc_errbuf *err)
{
    struct mlc_errbuf serr = { 0 };
    enum mlc_rc rc = state_begin(a->st, &serr);

    for (size_t i = 0; i < *nsent && rc == MLC_OK; i++) {
        rc = settle(a, f, sent[i]->rows, sent[i]->res, sent[i]->n, sent[i]->creates, sent[i]->arc,
                    sent[i]->why, ss, &serr);
    }
    if (rc == MLC_OK) {
        rc = state_commit(a->st, &serr);
    }
    if (rc != MLC_OK) {
        state_rollback(a->st);
        mlc_errf(err, "flow %s: %s", f->name, mlc_err_msg(&serr));
    }
    for (size_t i = 0; i < *nsent; i++) {
        sent_release(sent[i]);
    }
    *nsent = 0;
    return rc;
}

static enum mlc_rc deliver_fresh(struct agent *a, struct flow *f, struct fresh_set *fs,
                                 struct sync_stats *ss, struct mlc_errbuf *err)
{
    struct sent **sent = NULL;
    size_t nsent = 0;
    long long flushed_ms = state_now_ms();
    enum mlc_rc rc = MLC_OK;

    for (int creates = 1; creates >= 0 && rc == MLC_OK; creates--) {
        size_t from = 0;
        for (;;) {
            struct sent *b = mlc_xcalloc(1, sizeof(*b));
            cJSON *fields[MAX_BATCH];
            b->rows = mlc_xcalloc((size_t)f->batch, sizeof(*b->rows));
            b->res = mlc_xcalloc((size_t)f->batch, sizeof(*b->res));
            size_t idx[MAX_BATCH];
            long long top = 0;
            int n = fresh_take(f, fs, &from, creates, b->rows, fields, idx);

            if (n > 0 && creates && !(f->dst->ops->caps & CONN_UPSERT)) {
                /* asked first, as for every create: adopted rows leave rows[] */
                int before = n, k = 0;
                long long ids[MAX_BATCH];
                for (int i = 0; i < n; i++) {
                    ids[i] = b->rows[i].id;
                }
                rc = adopt_known(a, f, b->rows, &n, ss, err);
                if (rc != MLC_OK) {
                    b->n = n;
                    sent_release(b);
                    break;
                }
                /* rows[] kept its order: line fields[] and idx[] up with it */
                for (int i = 0; i < before; i++) {
                    if (k < n && b->rows[k].id == ids[i]) {
                        fields[k] = fields[i];
                        idx[k++] = idx[i];
                    } else {
                        fs->v[idx[i]].done = 1; /* adopted: settled already */
                    }
                }
            }
            b->n = n;
            if (n == 0) {
                sent_release(b);
                if (from >= fs->n) {
                    break;
                }
                continue;
            }
            for (int i = 0; i < n; i++) {
                top = b->rows[i].id > top ? b->rows[i].id : top;
            }
            /* durable before the call: rows up to top may have left */
            if ((rc = state_begin_durable(a->st, err)) == MLC_OK &&
                (rc = state_sent_mark(a->st, f->name, top, err)) == MLC_OK) {
                rc = state_commit(a->st, err);
            }
            if (rc != MLC_OK) {
                state_rollback(a->st);
                sent_release(b);
                break;
            }
            for (int i = 0; i < n; i++) {
                fs->v[idx[i]].done = 1;
            }
            b->creates = creates;
            b->arc = send_rows(a, f, b->rows, fields, n, creates, b->res);
            sent = mlc_xrealloc(sent, (nsent + 1) * sizeof(*sent));
            sent[nsent++] = b;
            if (b->arc != MLC_OK) {
                snprintf(b->why, sizeof(b->why), "%s", mlc_err_msg(&f->dst->err));
                mlc_errf(err, "flow %s: delivering %d records to %s failed: %s", f->name, n,
                         f->dst->name, b->why);
                rc = b->arc;
                break;
            }
            progress(a, f, ss, 0);
            if (a->stop) {
                rc = MLC_E_STOPPED;
                break;
            }
            /* a slow target: outcomes are written at least once a second,
             * so a crash leaves little for recovery to look up */
            if (state_now_ms() - flushed_ms >= 1000) {
                if ((rc = flush_sent(a, f, sent, &nsent, ss, err)) != MLC_OK) {
                    break;
                }
                flushed_ms = state_now_ms();
            }
        }
    }
    /* the remaining outcomes; records never sent (a batch failed first)
     * wait in the outbox for a later try */
    {
        enum mlc_rc wrc = flush_sent(a, f, sent, &nsent, ss, err);
        struct mlc_errbuf serr = { 0 };
        int unsent = 0;

        for (size_t i = 0; i < fs->n; i++) {
            unsent += !fs->v[i].done;
        }
        if (wrc == MLC_OK && unsent > 0 && (wrc = state_begin(a->st, &serr)) == MLC_OK) {
            for (size_t i = 0; i < fs->n && wrc == MLC_OK; i++) {
                if (!fs->v[i].done) {
                    wrc = state_outbox_retry_later(a->st, fs->v[i].id, 0,
                                                   "not sent yet: an earlier batch of the run failed",
                                                   &serr);
                }
            }
            if (wrc == MLC_OK) {
                wrc = state_commit(a->st, &serr);
            }
            if (wrc != MLC_OK) {
                state_rollback(a->st);
                mlc_errf(err, "flow %s: %s", f->name, mlc_err_msg(&serr));
            }
        }
        rc = rc == MLC_OK ? wrc : rc;
    }
    free(sent);
    return rc;
}

/* A source record that cannot become an outbox row: keep its raw content as a
 * dead letter (once per content), so nothing is lost and it can be replayed. */
static void dead_letter_source(struct agent *a, struct flow *f, const struct record *r,
                               const char *why, int dry_run, struct mlc_errbuf *err)
{
    char *raw = mlc_json_print(r->data);
    char hash[65], key[96], aid[33];

    hash_of(raw, hash);
    if (r->key != NULL && r->key[0] != '\0') {
        snprintf(key, sizeof(key), "%s", r->key);
    } else {
        /* unkeyed rows are kept under a key derived from their content */
        snprintf(key, sizeof(key), "!row-%.16s", hash);
    }
    if (dry_run) {
        printf("would dead-letter %s: %s\n", key, why);
    } else if (state_dead_has(a->st, f->name, key, hash) != 0) {
        new_audit_id(aid);
        state_dead_put(a->st, f->name, key, raw, hash, why, aid, 0, err);
        state_audit(a->st, f->name, key, aid, "dead_letter", NULL, why);
        mlc_warn("flow %s: source record %s dead-lettered: %s", f->name, key, why);
    }
    free(raw);
}

/* --dry-run: what the target would make of records that would be written
 * (values it would leave out, records it would refuse), asked read-only. */
struct dry_set {
    struct tgt_item items[MAX_BATCH];
    cJSON *fields[MAX_BATCH];
    char *keys[MAX_BATCH];
    char *tkeys[MAX_BATCH];
    char mk[MAX_BATCH][128];
    int n;
};

static void dry_flush(struct flow *f, struct dry_set *d, struct sync_stats *ss)
{
    struct result res[MAX_BATCH];
    struct batch b = { 0 };
    enum mlc_rc rc;

    if (d->n == 0) {
        return;
    }
    memset(res, 0, sizeof(res));
    b.target = f->target;
    b.flow = f->name;
    b.items = d->items;
    b.n = (size_t)d->n;
    b.dry_run = 1;
    mlc_err_reset(&f->dst->err);
    rc = f->dst->ops->apply(f->dst, &b, res);
    f->apply_end_ms = state_now_ms();
    for (int i = 0; i < d->n; i++) {
        if (rc != MLC_OK) {
            if (i == 0) {
                printf("cannot check records at %s: %s\n", f->dst->name, mlc_err_msg(&f->dst->err));
            }
        } else if (res[i].rc != MLC_OK) {
            printf("would fail %s: %s\n", d->keys[i], res[i].err);
        } else if (res[i].warn[0] != '\0') {
            printf("warning %s: %s\n", d->keys[i], res[i].warn);
            ss->warnings++;
        }
        free(res[i].lists);
        cJSON_Delete(d->fields[i]);
        free(d->keys[i]);
        free(d->tkeys[i]);
    }
    d->n = 0;
}

static void dry_add(struct flow *f, struct dry_set *d, const char *key,
                    const char *target_key, const char *payload, struct sync_stats *ss)
{
    int i = d->n;

    if (f->dst->ops->apply == NULL) {
        return;
    }
    d->fields[i] = cJSON_Parse(payload);
    if (d->fields[i] == NULL) {
        return;
    }
    d->keys[i] = mlc_xstrdup(key);
    d->tkeys[i] = target_key ? mlc_xstrdup(target_key) : NULL;
    pipeline_marker(f, key, d->mk[i], sizeof(d->mk[i]));
    memset(&d->items[i], 0, sizeof(d->items[i]));
    d->items[i].marker = d->mk[i];
    d->items[i].source_key = d->keys[i];
    d->items[i].target_key = d->tkeys[i];
    d->items[i].fields = d->fields[i];
    d->n++;
    if (d->n == f->batch) {
        dry_flush(f, d, ss);
    }
}

/* Store one page: outbox rows for changed records, cursor, in one transaction. */
static enum mlc_rc store_page(struct agent *a, struct flow *f, struct page *pg, int dry_run,
                              struct fresh_set *fs, struct sync_stats *ss, struct mlc_errbuf *err)
{
    const char *cursor = NULL;
    struct dry_set *dry = dry_run ? mlc_xcalloc(1, sizeof(*dry)) : NULL;
    enum mlc_rc rc = MLC_OK;
    int outbox_empty;

    if (!dry_run && (rc = state_begin(a->st, err)) != MLC_OK) {
        return rc;
    }
    /* inside the transaction: while the flow's outbox is empty and this page
     * has queued nothing yet, no record can be waiting there (the common
     * case of a re-read), so the per-record outbox lookup is skipped */
    outbox_empty = state_outbox_count(a->st, f->name) == 0;
    for (size_t i = 0; i < pg->n && rc == MLC_OK; i++) {
        struct record *r = &pg->recs[i];
        struct mlc_errbuf merr = { 0 };
        struct ledger_row lr;
        char hash[65], qhash[65], aid[33];
        int in_ledger, queued;
        char *payload;
        cJSON *mapped;

        ss->read++;
        if (r->cursor != NULL) {
            cursor = r->cursor;
        }
        if (r->error != NULL || r->key == NULL) {
            dead_letter_source(a, f, r, r->error ? r->error : "row has no key", dry_run, err);
            ss->failed++;
            continue;
        }
        mapped = mapping_apply(f->map, r->data, &merr);
        if (mapped == NULL) {
            dead_letter_source(a, f, r, merr.msg, dry_run, err);
            ss->failed++;
            continue;
        }
        payload = mlc_json_print(mapped);
        hash_of(payload, hash);
        in_ledger = state_ledger_get(a->st, f->name, r->key, &lr, err) == MLC_OK;
        queued = !(outbox_empty && fs->n == 0) && state_outbox_hash(a->st, f->name, r->key, qhash) == 0;
        if (queued) {
            /* it waits in the outbox already: one record, one outcome (counted
             * when it is delivered or left pending), never "unchanged" */
            ss->overlap++;
            if (strcmp(qhash, hash) == 0 || dry_run) {
                free(payload);
                cJSON_Delete(mapped);
                continue;
            }
        } else if (in_ledger && strcmp(lr.hash, hash) == 0) {
            if (!dry_run && lr.updated_ms >= ss->start_ms) {
                ss->overlap++; /* written in this run and read again: counted once */
            } else {
                ss->unchanged++;
            }
            free(payload);
            cJSON_Delete(mapped);
            continue;
        } else if (state_dead_has(a->st, f->name, r->key, hash) == 0) {
            ss->failed++; /* a dead letter with this content: undelivered until replayed */
            free(payload);
            cJSON_Delete(mapped);
            continue;
        }
        if (dry_run) {
            printf("would %s %s%s%s: %s\n", in_ledger ? "update" : "create", r->key,
                   in_ledger ? " -> " : "", in_ledger ? lr.target_key : "", payload);
            if (in_ledger) {
                ss->updated++;
            } else {
                ss->created++;
            }
            dry_add(f, dry, r->key, in_ledger ? lr.target_key : NULL, payload, ss);
            free(payload);
            cJSON_Delete(mapped);
            continue;
        }
        new_audit_id(aid);
        ss->queued++;
        if (queued) {
            /* a newer version behind one that waits: it replaces that one's content */
            rc = state_outbox_put(a->st, f->name, r->key, in_ledger ? "update" : "create",
                                  in_ledger ? lr.target_key : NULL, payload, hash, aid, err);
            free(payload);
            cJSON_Delete(mapped);
            continue;
        }
        {
            struct fresh *e;
            long long id = 0;
            const char *op = in_ledger ? "update" : "create";

            rc = state_outbox_put_fresh(a->st, f->name, r->key, op, in_ledger ? lr.target_key : NULL,
                                        payload, hash, aid, &id, err);
            if (rc != MLC_OK) {
                free(payload);
                cJSON_Delete(mapped);
                continue;
            }
            if (fs->n == fs->cap) {
                fs->cap = fs->cap ? fs->cap * 2 : 64;
                fs->v = mlc_xrealloc(fs->v, fs->cap * sizeof(*fs->v));
            }
            e = &fs->v[fs->n++];
            memset(e, 0, sizeof(*e));
            e->id = id;
            e->key = r->key;
            snprintf(e->op, sizeof(e->op), "%s", op);
            snprintf(e->target_key, sizeof(e->target_key), "%s", in_ledger ? lr.target_key : "");
            memcpy(e->hash, hash, sizeof(e->hash));
            memcpy(e->audit_id, aid, sizeof(e->audit_id));
            e->payload = payload;
            e->fields = mapped;
        }
    }
    if (dry_run) {
        dry_flush(f, dry, ss);
        free(dry);
        return MLC_OK;
    }
    if (rc == MLC_OK && cursor != NULL) {
        rc = state_cursor_set(a->st, f->name, cursor, err);
    }
    if (rc == MLC_OK) {
        rc = state_commit(a->st, err);
    }
    if (rc != MLC_OK) {
        state_rollback(a->st);
    }
    return rc;
}

/* ---- after_load: tell other systems (a BI tool's cache) of a load ----
 * A durable "owed" mark per entry in state_kv is set before the run can
 * write anything and cleared only when the system took the call, so a crash
 * or a failure between the load and the call is made good by the next run,
 * whether or not that run loads anything. */

struct after_due {
    struct flow *f;
    int i;                /* the flow's after_load entry */
    struct run_totals t;  /* the run's */
};

static void after_key(const struct flow *f, int i, char *out, size_t n)
{
    snprintf(out, n, "after_load/%s/%d/%s", f->name, i, f->after[i].c->name);
}

int pipeline_after_owed(struct state *st, const struct flow *f, int i)
{
    struct mlc_errbuf err = { 0 };
    char key[256], *v = NULL;
    int owed;

    after_key(f, i, key, sizeof(key));
    owed = state_kv_get(st, key, &v, &err) == MLC_OK && v != NULL && strcmp(v, "1") == 0;
    free(v);
    return owed;
}

/* Before the run: which entries a past run still owes (owed[i] = 1), and
 * the mark set for the others. */
static enum mlc_rc after_begin(struct agent *a, struct flow *f, int *owed, struct mlc_errbuf *err)
{
    for (int i = 0; i < f->n_after; i++) {
        char key[256], why[256], *v = NULL;
        enum mlc_rc rc;

        after_key(f, i, key, sizeof(key));
        rc = state_kv_get(a->st, key, &v, err);
        if (rc != MLC_OK) {
            return rc;
        }
        owed[i] = v != NULL && strcmp(v, "1") == 0;
        free(v);
        if (!owed[i] && (rc = state_kv_set(a->st, key, "1", err)) != MLC_OK) {
            snprintf(why, sizeof(why), "%s", mlc_err_msg(err));
            mlc_err_reset(err);
            mlc_errf(err, "flow %s: cannot record the pending after_load call to '%s' in the state "
                          "database (%s): check the disk; nothing was loaded",
                     f->name, f->after[i].c->name, why);
            return rc;
        }
    }
    return MLC_OK;
}

/* After the run: call every entry when the run wrote rows or a past run
 * owes it; clear the mark when it succeeded (or nothing was owed). */
static void after_end(struct agent *a, struct flow *f, const struct sync_stats *ss, const int *owed)
{
    long wrote = ss->created + ss->updated + ss->adopted;

    for (int i = 0; i < f->n_after; i++) {
        struct conn *c = f->after[i].c;
        struct run_totals t = { .created = ss->created, .updated = ss->updated,
                                .unchanged = ss->unchanged, .failed = ss->failed,
                                .pending = ss->pending, .flow = f->name };
        struct mlc_errbuf e = { 0 };
        char key[256];
        enum mlc_rc rc = MLC_OK;

        after_key(f, i, key, sizeof(key));
        if ((wrote > 0 || owed[i]) && a->after_defer) {
            /* told at the end of the pass, once with the other flows' runs
             * that name the same entry; the mark stays until then */
            a->after_q = mlc_xrealloc(a->after_q, (size_t)(a->n_after_q + 1) * sizeof(*a->after_q));
            a->after_q[a->n_after_q++] = (struct after_due){ f, i, t };
            continue;
        }
        if (wrote > 0 || owed[i]) {
            mlc_err_reset(&c->err);
            rc = c->ops->end_run(c, f->after[i].conf, &t);
            if (rc != MLC_OK) {
                mlc_warn("flow %s: after the load, telling '%s' (after_load) failed: %s; the "
                         "next run of the flow tries again (audit: after_load_failed)",
                         f->name, c->name, mlc_err_msg(&c->err));
                state_audit(a->st, f->name, NULL, NULL, "after_load_failed", NULL,
                            mlc_err_msg(&c->err));
                continue;
            }
            if (wrote == 0) {
                mlc_info("flow %s: told '%s' of an earlier load (after_load was owed)", f->name,
                         c->name);
            }
        }
        if (state_kv_set(a->st, key, "0", &e) != MLC_OK) {
            /* the mark stays set: one call too many later, never one too few */
            mlc_warn("flow %s: cannot clear the after_load mark for '%s': %s", f->name, c->name,
                     mlc_err_msg(&e));
        }
    }
}

enum mlc_rc pipeline_sync(struct agent *a, struct flow *f, unsigned how, struct sync_stats *ss,
                          struct mlc_errbuf *err)
{
    int owed[FLOW_MAX_AFTER] = { 0 };
    int dry_run = (how & PIPELINE_DRY_RUN) != 0;
    struct run_stats rs = { 0 };
    long long run_id = -1;
    char *cursor = NULL;
    int first = 1, pages = 0;
    enum mlc_rc rc;

    memset(ss, 0, sizeof(*ss));
    ss->start_ms = state_now_ms();
    if (proc_start_ms == 0) {
        proc_start_ms = state_now_ms();
    }
    rc = pipeline_prepare(a, f, err);
    if (rc != MLC_OK) {
        return rc;
    }
    if (!dry_run && f->n_after > 0 && (rc = after_begin(a, f, owed, err)) != MLC_OK) {
        return rc;
    }
    if (!dry_run) {
        run_id = state_run_start(a->st, f->name);
        ss->carried = state_outbox_count(a->st, f->name);
        /* a new run tries every queued retry again; within a run, backoff holds */
        state_outbox_due_now(a->st, f->name);
        rc = recover(a, f, ss, err);
        if (rc == MLC_OK) {
            rc = deliver(a, f, ss, err);
        }
        if (rc != MLC_OK) {
            goto done;
        }
    }
    for (;;) {
        struct page pg = { 0 };
        struct fresh_set fs = { 0 };
        struct poll_req rq;

        if (a->stop) {
            rc = MLC_E_STOPPED;
            break;
        }
        free(cursor);
        cursor = NULL;
        if (first && (how & PIPELINE_FULL)) {
            /* from the start; the stored cursor follows the pages read */
        } else if ((rc = state_cursor_get(a->st, f->name, &cursor, err)) != MLC_OK) {
            break;
        }
        rq.source = f->source;
        rq.cursor = cursor;
        rq.first = first;
        mlc_err_reset(&f->src->err);
        rc = f->src->ops->poll(f->src, &rq, &pg);
        if (rc != MLC_OK) {
            mlc_errf(err, "flow %s: reading from %s failed after %d pages: %s", f->name, f->src->name,
                     pages, mlc_err_msg(&f->src->err));
            if (!dry_run) {
                /* recorded, never a crash; the cursor did not move, so nothing is lost */
                state_audit(a->st, f->name, NULL, NULL, "poll_error", NULL, mlc_err_msg(&f->src->err));
            }
            page_release(&pg);
            break;
        }
        pages++;
        rc = store_page(a, f, &pg, dry_run, &fs, ss, err);
        first = 0;
        if (rc == MLC_OK && fs.n > 0) {
            rc = deliver_fresh(a, f, &fs, ss, err);
        }
        fresh_release(&fs);
        if (rc == MLC_OK && !dry_run) {
            rc = deliver(a, f, ss, err);
        }
        progress(a, f, ss, 0);
        if (rc != MLC_OK || !pg.more) {
            page_release(&pg);
            break;
        }
        page_release(&pg);
    }
done:
    free(cursor);
    if (!dry_run) {
        long long left = state_outbox_count(a->st, f->name);
        ss->pending = left > 0 ? (long)left : 0;
        ss->seen = ss->read + ss->carried - ss->overlap;
        if (rc == MLC_OK && ss->pending > 0) {
            mlc_errf(err,
                     "flow %s: %ld record%s still undelivered to %s (in the outbox; the next run "
                     "tries them again; `mlc-agent status` shows the last error)",
                     f->name, ss->pending, ss->pending == 1 ? " is" : "s are", f->dst->name);
            rc = MLC_E_NET;
        }
    } else {
        ss->seen = ss->read;
    }
    progress(a, f, ss, 1);
    if (!dry_run && run_id >= 0) {
        rs.read = ss->read;
        rs.created = ss->created;
        rs.updated = ss->updated;
        rs.unchanged = ss->unchanged;
        rs.failed = ss->failed;
        rs.adopted = ss->adopted;
        rs.pending = ss->pending;
        rs.warnings = ss->warnings;
        state_run_finish(a->st, run_id, &rs, rc == MLC_OK ? "ok" : "error",
                         rc == MLC_OK ? NULL : mlc_err_msg(err));
    }
    if (!dry_run && f->dst->ops->end_run != NULL && ss->created + ss->updated + ss->adopted > 0) {
        struct run_totals t = { ss->created, ss->updated, ss->unchanged, ss->failed, ss->pending,
                                f->name };
        enum mlc_rc erc;

        mlc_err_reset(&f->dst->err);
        erc = f->dst->ops->end_run(f->dst, f->target, &t);
        if (erc != MLC_OK) {
            /* the records are delivered; only the follow-up failed */
            mlc_warn("flow %s: after the run, %s's end-of-run step failed: %s", f->name,
                     f->dst->name, mlc_err_msg(&f->dst->err));
            state_audit(a->st, f->name, NULL, NULL, "end_run_failed", NULL,
                        mlc_err_msg(&f->dst->err));
        }
    }
    if (!dry_run && f->n_after > 0) {
        after_end(a, f, ss, owed);
    }
    return rc;
}

void pipeline_after_flush(struct agent *a)
{
    int n = a->n_after_q;

    a->after_defer = 0;
    for (int k = 0; k < n; k++) {
        struct after_due *d = &a->after_q[k];
        struct conn *c;
        const cJSON *conf;
        struct run_totals t;
        char names[512] = "";
        int flows = 0;
        enum mlc_rc rc;

        if (d->f == NULL) {
            continue; /* told with an earlier one */
        }
        c = d->f->after[d->i].c;
        conf = d->f->after[d->i].conf;
        t = d->t;
        t.created = t.updated = t.unchanged = t.failed = t.pending = 0;
        for (int m = k; m < n; m++) {
            struct after_due *e = &a->after_q[m];
            if (e->f == NULL || e->i < 0 || e->f->after[e->i].c != c ||
                !cJSON_Compare(e->f->after[e->i].conf, conf, 1)) {
                continue;
            }
            t.created += e->t.created;
            t.updated += e->t.updated;
            t.unchanged += e->t.unchanged;
            t.failed += e->t.failed;
            t.pending += e->t.pending;
            snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", flows ? ", " : "",
                     e->f->name);
            flows++;
            e->i = -1 - e->i; /* in this group: decided below */
        }
        mlc_err_reset(&c->err);
        rc = c->ops->end_run(c, conf, &t);
        for (int m = k; m < n; m++) {
            struct after_due *e = &a->after_q[m];
            struct mlc_errbuf err = { 0 };
            char key[256];
            if (e->f == NULL || e->i >= 0) {
                continue;
            }
            e->i = -1 - e->i;
            if (rc != MLC_OK) {
                mlc_warn("flow %s: after the load, telling '%s' (after_load) failed: %s; the next "
                         "run of the flow tries again (audit: after_load_failed)",
                         e->f->name, c->name, mlc_err_msg(&c->err));
                state_audit(a->st, e->f->name, NULL, NULL, "after_load_failed", NULL,
                            mlc_err_msg(&c->err));
            } else {
                after_key(e->f, e->i, key, sizeof(key));
                if (state_kv_set(a->st, key, "0", &err) != MLC_OK) {
                    mlc_warn("flow %s: cannot clear the after_load mark for '%s': %s", e->f->name,
                             c->name, mlc_err_msg(&err));
                }
            }
            e->f = NULL;
        }
        if (rc == MLC_OK && flows > 1) {
            mlc_info("after_load: told '%s' once for the loads of %d flows (%s)", c->name, flows,
                     names);
        }
    }
    free(a->after_q);
    a->after_q = NULL;
    a->n_after_q = 0;
}
