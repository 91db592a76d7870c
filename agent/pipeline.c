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

/* Resolve writes whose outcome is unknown (in flight when we stopped).
 * Updates are idempotent: they are simply sent again. A create is looked up
 * by its marker; found, it is recorded (or updated). Not found, it may still
 * be there: the target's search lags its writes, and on a busy site the id
 * hints miss. Such a create stays in flight, is looked up again on later
 * runs, and is sent again only once it has been unanswered for
 * f->recreate_after_s: a duplicate issue costs more than a late one. */
static enum mlc_rc recover(struct agent *a, struct flow *f, struct sync_stats *ss,
                           struct mlc_errbuf *err)
{
    struct outbox_row rows[MAX_BATCH];
    long long after = 0;
    enum mlc_rc rc = MLC_OK;

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
            } else if (fd[i].found && strcmp(r->sent_hash, r->hash) == 0) {
                /* the create landed with exactly this content: record it */
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
                /* it landed, but a newer version is queued: send that as an update */
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

/* Deliver one batch of due outbox rows; *done = 1 when nothing was due. */
static enum mlc_rc deliver_batch(struct agent *a, struct flow *f, struct sync_stats *ss, int *done,
                                 struct mlc_errbuf *err)
{
    struct outbox_row rows[MAX_BATCH];
    struct tgt_item items[MAX_BATCH];
    struct result res[MAX_BATCH];
    cJSON *fields[MAX_BATCH] = { 0 }, *prev[MAX_BATCH] = { 0 };
    char mk[MAX_BATCH][128];
    struct batch b = { 0 };
    long long now = state_now();
    int n, creates;
    enum mlc_rc rc;

    memset(res, 0, sizeof(res));
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
        pipeline_marker(f, rows[i].source_key, mk[i], sizeof(mk[i]));
        items[i].marker = mk[i];
        items[i].target_key = creates ? NULL : rows[i].target_key;
        if (fields[i] == NULL) {
            fields[i] = mlc_json_xobj(); /* the target rejects it; the row dead-letters */
        }
        items[i].fields = fields[i];
        items[i].audit_id = rows[i].audit_id;
        items[i].hash = rows[i].hash;
        items[i].prev = NULL;
        if (!creates) {
            char *lists = NULL;
            if (state_ledger_lists(a->st, f->name, rows[i].source_key, &lists, err) == MLC_OK &&
                lists != NULL) {
                prev[i] = cJSON_Parse(lists);
                items[i].prev = prev[i];
            }
            free(lists);
        }
    }
    b.target = f->target;
    b.items = items;
    b.n = (size_t)n;
    mlc_err_reset(&f->dst->err);
    rc = f->dst->ops->apply(f->dst, &b, res);
    if (rc != MLC_OK) {
        /* the whole batch failed without per-record verdicts */
        struct mlc_errbuf ignore = { 0 };
        mlc_errf(err, "flow %s: delivering %d records to %s failed: %s", f->name, n, f->dst->name,
                 mlc_err_msg(&f->dst->err));
        if (!creates || rc == MLC_E_AUTH || rc == MLC_E_INVAL) {
            /* nothing was created (auth/config), or updates (idempotent): retry later */
            state_begin(a->st, &ignore);
            for (int i = 0; i < n; i++) {
                state_outbox_retry_later(a->st, rows[i].id, creates ? 0 : retry_at(rows[i].attempts),
                                         mlc_err_msg(&f->dst->err), &ignore);
            }
            state_commit(a->st, &ignore);
        }
        /* creates after a network failure stay in flight: the next run asks
         * the target which of them exist before sending any again */
        goto out;
    }
    if ((rc = state_begin(a->st, err)) != MLC_OK) {
        goto out;
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
            state_audit(a->st, f->name, r->source_key, r->audit_id, creates ? "created" : "updated",
                        lr.target_key, NULL);
            if (res[i].warn[0] != '\0') {
                note_warning(a, f, r->source_key, r->audit_id, lr.target_key, res[i].warn, ss);
            }
            if (creates) {
                ss->created++;
            } else {
                ss->updated++;
            }
        } else if (res[i].rc == MLC_E_NOTFOUND && !creates) {
            char why[700];
            snprintf(why, sizeof(why), "target %s no longer exists (deleted?): %s", r->target_key,
                     res[i].err);
            dead_letter(a, f, r, why, ss);
        } else if (mlc_rc_transient(res[i].rc) && r->attempts < f->max_attempts) {
            rc = state_outbox_retry_later(a->st, r->id, retry_at(r->attempts), res[i].err, err);
        } else {
            dead_letter(a, f, r, res[i].err[0] ? res[i].err : mlc_strerror(res[i].rc), ss);
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
        free(res[i].lists);
        cJSON_Delete(fields[i]);
        cJSON_Delete(prev[i]);
        outbox_row_release(&rows[i]);
    }
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
    b.items = d->items;
    b.n = (size_t)d->n;
    b.dry_run = 1;
    mlc_err_reset(&f->dst->err);
    rc = f->dst->ops->apply(f->dst, &b, res);
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
    d->items[i].target_key = d->tkeys[i];
    d->items[i].fields = d->fields[i];
    d->n++;
    if (d->n == f->batch) {
        dry_flush(f, d, ss);
    }
}

/* Store one page: outbox rows for changed records, cursor, in one transaction. */
static enum mlc_rc store_page(struct agent *a, struct flow *f, struct page *pg, int dry_run,
                              struct sync_stats *ss, struct mlc_errbuf *err)
{
    const char *cursor = NULL;
    struct dry_set *dry = dry_run ? mlc_xcalloc(1, sizeof(*dry)) : NULL;
    enum mlc_rc rc = MLC_OK;

    if (!dry_run && (rc = state_begin(a->st, err)) != MLC_OK) {
        return rc;
    }
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
        cJSON_Delete(mapped);
        hash_of(payload, hash);
        in_ledger = state_ledger_get(a->st, f->name, r->key, &lr, err) == MLC_OK;
        queued = state_outbox_hash(a->st, f->name, r->key, qhash) == 0;
        if (queued) {
            /* it waits in the outbox already: one record, one outcome (counted
             * when it is delivered or left pending), never "unchanged" */
            ss->overlap++;
            if (strcmp(qhash, hash) == 0 || dry_run) {
                free(payload);
                continue;
            }
        } else if (in_ledger && strcmp(lr.hash, hash) == 0) {
            if (!dry_run && lr.updated_ms >= ss->start_ms) {
                ss->overlap++; /* written in this run and read again: counted once */
            } else {
                ss->unchanged++;
            }
            free(payload);
            continue;
        } else if (state_dead_has(a->st, f->name, r->key, hash) == 0) {
            ss->failed++; /* a dead letter with this content: undelivered until replayed */
            free(payload);
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
            continue;
        }
        new_audit_id(aid);
        rc = state_outbox_put(a->st, f->name, r->key, in_ledger ? "update" : "create",
                              in_ledger ? lr.target_key : NULL, payload, hash, aid, err);
        ss->queued++;
        free(payload);
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

enum mlc_rc pipeline_sync(struct agent *a, struct flow *f, int dry_run, struct sync_stats *ss,
                          struct mlc_errbuf *err)
{
    struct run_stats rs = { 0 };
    long long run_id = -1;
    char *cursor = NULL;
    int first = 1, pages = 0;
    enum mlc_rc rc;

    memset(ss, 0, sizeof(*ss));
    ss->start_ms = state_now_ms();
    rc = pipeline_prepare(a, f, err);
    if (rc != MLC_OK) {
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
        struct poll_req rq;

        if (a->stop) {
            rc = MLC_E_STOPPED;
            break;
        }
        free(cursor);
        cursor = NULL;
        if ((rc = state_cursor_get(a->st, f->name, &cursor, err)) != MLC_OK) {
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
        rc = store_page(a, f, &pg, dry_run, ss, err);
        first = 0;
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
        struct run_totals t = { ss->created, ss->updated, ss->unchanged, ss->failed, ss->pending };
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
    return rc;
}
