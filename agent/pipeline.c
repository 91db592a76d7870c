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
#include "shared/mlc_buf.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

#define MAX_BATCH 50

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
    rc = f->dst->ops->prepare(f->dst, f->target);
    if (rc != MLC_OK) {
        mlc_errf(err, "flow %s: %s", f->name, mlc_err_msg(&f->dst->err));
        return rc;
    }
    f->prepared = 1;
    return MLC_OK;
}

/* Next try for a record that failed transiently: 5 s, 10 s, 20 s ... 1 h. */
static long long retry_at(int attempts)
{
    long long d = 5;

    for (int i = 1; i < attempts && d < 3600; i++) {
        d *= 2;
    }
    return state_now() + (d > 3600 ? 3600 : d);
}

/* Candidate ids for read-after-write: the newest ids we know, and the ids
 * just after the highest one (Jira numbers issues upwards), which covers
 * creates whose answer a crash swallowed. */
static int recent_hints(struct agent *a, struct flow *f, char **ids, int max)
{
    char *known[10];
    int n = state_ledger_recent_ids(a->st, f->name, known, 10), o = 0;
    long long top = 0;

    for (int i = 0; i < n; i++) {
        long long v = atoll(known[i]);
        if (v > top) {
            top = v;
        }
        free(known[i]);
    }
    for (int i = 1; top > 0 && o < max; i++) {
        ids[o++] = mlc_xasprintf("%lld", top + i);
    }
    return o;
}

/* Resolve creates whose outcome is unknown (in flight when we stopped). */
static enum mlc_rc recover(struct agent *a, struct flow *f, struct sync_stats *ss,
                           struct mlc_errbuf *err)
{
    struct outbox_row rows[MAX_BATCH];
    enum mlc_rc rc = MLC_OK;

    for (;;) {
        const char *markers[MAX_BATCH];
        char mk[MAX_BATCH][128], *keys[MAX_BATCH] = { 0 }, *hints[MAX_BATCH];
        int n = state_outbox_next(a->st, f->name, "inflight", NULL, rows, MAX_BATCH, 1LL << 62);
        int nh = 0, creates = 0;

        if (n == 0) {
            return MLC_OK;
        }
        for (int i = 0; i < n; i++) {
            pipeline_marker(f, rows[i].source_key, mk[i], sizeof(mk[i]));
            markers[i] = mk[i];
            creates += strcmp(rows[i].op, "create") == 0;
        }
        if (creates > 0) {
            nh = recent_hints(a, f, hints, MAX_BATCH);
            mlc_err_reset(&f->dst->err);
            rc = f->dst->ops->find(f->dst, f->target, markers, (size_t)n, (const char *const *)hints,
                                   (size_t)nh, keys);
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
            char tkey[64] = "", tid[32] = "";
            if (keys[i] != NULL) {
                sscanf(keys[i], "%63s %31s", tkey, tid);
            }
            if (strcmp(r->op, "update") == 0) {
                rc = state_outbox_resolve(a->st, r->id, "update", r->target_key, err);
            } else if (tkey[0] != '\0' && strcmp(r->sent_hash, r->hash) == 0) {
                /* the create landed with exactly this content: record it */
                struct ledger_row lr = { 0 };
                snprintf(lr.hash, sizeof(lr.hash), "%s", r->hash);
                snprintf(lr.target_key, sizeof(lr.target_key), "%s", tkey);
                snprintf(lr.target_id, sizeof(lr.target_id), "%s", tid);
                snprintf(lr.audit_id, sizeof(lr.audit_id), "%s", r->audit_id);
                rc = state_ledger_put(a->st, f->name, r->source_key, &lr, err);
                if (rc == MLC_OK) {
                    rc = state_outbox_delete(a->st, r->id, err);
                }
                state_audit(a->st, f->name, r->source_key, r->audit_id, "recovered", tkey,
                            "create confirmed at the target after a restart");
                ss->created++;
            } else if (tkey[0] != '\0') {
                /* it landed, but a newer version is queued: send that as an update */
                rc = state_outbox_resolve(a->st, r->id, "update", tkey, err);
                state_audit(a->st, f->name, r->source_key, r->audit_id, "recovered", tkey,
                            "create confirmed at the target; newer version queued as an update");
            } else {
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
            free(keys[i]);
            outbox_row_release(&rows[i]);
        }
        if (rc != MLC_OK) {
            return rc;
        }
    }
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

/* Deliver one batch of due outbox rows; *done = 1 when nothing was due. */
static enum mlc_rc deliver_batch(struct agent *a, struct flow *f, struct sync_stats *ss, int *done,
                                 struct mlc_errbuf *err)
{
    struct outbox_row rows[MAX_BATCH];
    struct tgt_item items[MAX_BATCH];
    struct result res[MAX_BATCH];
    cJSON *fields[MAX_BATCH] = { 0 };
    char mk[MAX_BATCH][128];
    struct batch b = { 0 };
    long long now = state_now();
    int n, creates;
    enum mlc_rc rc;

    n = state_outbox_next(a->st, f->name, "pending", "create", rows, f->batch, now);
    creates = n > 0;
    if (n == 0) {
        n = state_outbox_next(a->st, f->name, "pending", "update", rows, f->batch, now);
    }
    *done = n == 0;
    if (n == 0) {
        return MLC_OK;
    }
    /* mark in flight first: from here a crash leaves an unknown outcome to recover */
    if ((rc = state_begin(a->st, err)) != MLC_OK) {
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
    memset(res, 0, sizeof(res));
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
            rc = state_ledger_put(a->st, f->name, r->source_key, &lr, err);
            if (rc == MLC_OK) {
                rc = state_outbox_delete(a->st, r->id, err);
            }
            state_audit(a->st, f->name, r->source_key, r->audit_id, creates ? "created" : "updated",
                        lr.target_key, NULL);
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
        cJSON_Delete(fields[i]);
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

/* Store one page: outbox rows for changed records, cursor, in one transaction. */
static enum mlc_rc store_page(struct agent *a, struct flow *f, struct page *pg, int dry_run,
                              struct sync_stats *ss, struct mlc_errbuf *err)
{
    const char *cursor = NULL;
    enum mlc_rc rc = MLC_OK;

    if (!dry_run && (rc = state_begin(a->st, err)) != MLC_OK) {
        return rc;
    }
    for (size_t i = 0; i < pg->n && rc == MLC_OK; i++) {
        struct record *r = &pg->recs[i];
        struct mlc_errbuf merr = { 0 };
        struct ledger_row lr;
        char hash[65], qhash[65], aid[33];
        int in_ledger;
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
        if ((in_ledger && strcmp(lr.hash, hash) == 0) ||
            (state_outbox_hash(a->st, f->name, r->key, qhash) == 0 && strcmp(qhash, hash) == 0) ||
            state_dead_has(a->st, f->name, r->key, hash) == 0) {
            ss->unchanged++;
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
    rc = pipeline_prepare(a, f, err);
    if (rc != MLC_OK) {
        return rc;
    }
    if (!dry_run) {
        run_id = state_run_start(a->st, f->name);
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
    progress(a, f, ss, 1);
    if (!dry_run && run_id >= 0) {
        rs.read = ss->read;
        rs.created = ss->created;
        rs.updated = ss->updated;
        rs.unchanged = ss->unchanged;
        rs.failed = ss->failed;
        state_run_finish(a->st, run_id, &rs, rc == MLC_OK ? "ok" : "error",
                         rc == MLC_OK ? NULL : mlc_err_msg(err));
    }
    return rc;
}
