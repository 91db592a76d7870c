/* SPDX-License-Identifier: Apache-2.0
 * pipeline: one flow's cycle: recover, poll every page, map, hash, outbox,
 * deliver to the target, ledger.
 */
#ifndef MLC_PIPELINE_H
#define MLC_PIPELINE_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "shared/mlc_err.h"

struct agent;
struct flow;
struct state;

/* The largest batch the pipeline sends (a connector's max_batch above it is
 * cut to it). */
#define PIPELINE_MAX_BATCH 256

/* A run's summary adds up: created + updated + unchanged + adopted + failed +
 * pending = seen, where seen = records read + undelivered records carried
 * over from earlier runs (each counted once). */
struct sync_stats {
    long read, created, updated, unchanged, failed, queued;
    long adopted;  /* found at the target by marker, the ledger did not know them */
    long pending;  /* still undelivered at the end (in the outbox, retried next run) */
    long seen;
    long warnings; /* values left out of a record (e.g. an unknown assignee) */
    long carried;  /* outbox rows at the start of the run */
    long overlap;  /* records read that this run counts already (queued, or written in this run) */
    long long start_ms;
};
/* How a sync runs: PIPELINE_DRY_RUN changes nothing and prints what it
 * would do; PIPELINE_FULL reads the source from its start instead of from
 * the stored cursor (records the target has already cost no call). */
#define PIPELINE_DRY_RUN 1u
#define PIPELINE_FULL 2u
/* One full cycle of a flow: recover, poll every page, deliver. */
enum mlc_rc pipeline_sync(struct agent *a, struct flow *f, unsigned how, struct sync_stats *ss,
                          struct mlc_errbuf *err);
/* Validate the target against the live system (custom fields, project, priorities). */
enum mlc_rc pipeline_prepare(struct agent *a, struct flow *f, struct mlc_errbuf *err);
/* Marker label for a source key ("mlc-wo-100001"). */
void pipeline_marker(const struct flow *f, const char *key, char *out, size_t n);
/* The content hash of a mapped record, as the ledger and the target keep it
 * (hex SHA-256 of its compact JSON text). */
void pipeline_hash(const cJSON *mapped, char out[65]);
/* The one retry policy after a transient failure (a record, a write-back):
 * a ceiling of 5 s, 10 s, 20 s ... 1 h for attempt 1, 2, 3 ..., and a wait
 * drawn between half the ceiling and the ceiling ("equal jitter"). A durable
 * retry is never due at once: that would be the same failing call again. */
long long pipeline_retry_delay_ms(int attempts);
/* 1 when after_load entry i of the flow is still owed a call (a run wrote
 * rows and the call has not succeeded yet; also during every run). */
int pipeline_after_owed(struct state *st, const struct flow *f, int i);
/* One pass over several flows (sync --all, a scheduler tick) ends here: the
 * after_load calls its runs owe, with a->after_defer set, are made once per
 * system and identical entry (six flows loading one warehouse refresh its
 * BI cache once), with the runs' totals summed. */
void pipeline_after_flush(struct agent *a);

#endif
