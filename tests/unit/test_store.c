/* SPDX-License-Identifier: Apache-2.0
 * Contract test of the relay store (relay/store.h), run against SQLite (a
 * temp file) and, when MLC_TEST_PG holds a conninfo, against PostgreSQL (each
 * test in a schema of its own). tests/integration/test_store_pg.py starts a
 * throwaway server and runs this binary with MLC_TEST_PG set.
 * MLC_BENCH_STORE=1 prints how long 10,000 2-KB deliveries take to store.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include "relay/store.h"
#include "tinytest.h"

/* where the current test's store lives */
static char tmpdir[64];
static const char *pg_base; /* MLC_TEST_PG */
static PGconn *pg_admin;    /* creates and drops the per-test schemas */
static int on_pg;
static char spec[1200];
static char sqlite_path[256];
static int nfresh;
static char cur_schema[64]; /* PostgreSQL: the current test's schema */

/* The tests' sealing key (a fresh copy per call: store_open writes back) */
static struct store_key *test_key(void)
{
    static _Thread_local struct store_key k;

    memset(&k, 0, sizeof(k));
    memset(k.key, 0x5a, sizeof(k.key));
    snprintf(k.source, sizeof(k.source), "the test key");
    return &k;
}

/* A new, empty store location for the next test. */
static void fresh(void)
{
    char schema[64];
    char sql[160];
    PGresult *r;

    nfresh++;
    if (!on_pg) {
        snprintf(sqlite_path, sizeof(sqlite_path), "%s/relay%d.db", tmpdir, nfresh);
        snprintf(spec, sizeof(spec), "sqlite:%s", sqlite_path);
        return;
    }
    snprintf(schema, sizeof(schema), "mlc_test_%d_%d", (int)getpid(), nfresh);
    snprintf(cur_schema, sizeof(cur_schema), "%s", schema);
    snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", schema);
    r = PQexec(pg_admin, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "  cannot create schema %s: %s", schema, PQerrorMessage(pg_admin));
    }
    PQclear(r);
    if (strncmp(pg_base, "postgres://", 11) == 0 || strncmp(pg_base, "postgresql://", 13) == 0) {
        snprintf(spec, sizeof(spec), "%s%coptions=-csearch_path%%3D%s", pg_base,
                 strchr(pg_base, '?') ? '&' : '?', schema);
    } else {
        snprintf(spec, sizeof(spec), "%s options='-csearch_path=%s'", pg_base, schema);
    }
}

static struct store *open_node(const char *node)
{
    struct store *s = NULL;
    struct mlc_errbuf e = { 0 };
    enum mlc_rc rc = store_open(&s, spec, node, test_key(), &e);

    if (rc != MLC_OK) {
        fprintf(stderr, "  cannot open the store: %s\n", mlc_err_msg(&e));
    }
    CHECK_INT(rc, MLC_OK);
    return s;
}

static void close_store(struct store *s)
{
    if (s != NULL) {
        s->ops->close(s);
    }
}

static void add_tenant(struct store *s, const char *name)
{
    struct tenant_rec t = { 0 };
    struct mlc_errbuf e = { 0 };

    snprintf(t.name, sizeof(t.name), "%s", name);
    memset(t.key_hash, 'a', 64);
    snprintf(t.hook_secret, sizeof(t.hook_secret), "secret-of-%s", name);
    t.created_ms = 1000;
    CHECK_INT(s->ops->tenant_add(s, &t, &e), MLC_OK);
}

static struct delivery_in item(const char *tenant, const char *kind, const char *ext_id,
                               const char *body, long long at)
{
    struct delivery_in d = { tenant, kind, ext_id, body, strlen(body), at, 0, 0 };

    return d;
}

static void tenants(void)
{
    struct store *s;
    struct tenant_rec t = { 0 }, got, *list = NULL;
    struct mlc_errbuf e = { 0 };
    size_t n = 0;

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    snprintf(t.name, sizeof(t.name), "acme");
    memset(t.key_hash, 'b', 64);
    snprintf(t.hook_secret, sizeof(t.hook_secret), "hook-secret");
    t.created_ms = 1700000000000LL;
    CHECK_INT(s->ops->tenant_add(s, &t, &e), MLC_OK);
    CHECK_INT(s->ops->tenant_add(s, &t, &e), MLC_E_INVAL);
    CHECK(strstr(mlc_err_msg(&e), "'acme' already exists") != NULL);

    CHECK_INT(s->ops->tenant_get(s, "acme", &got, &e), MLC_OK);
    CHECK_STR(got.name, "acme");
    CHECK_STR(got.key_hash, t.key_hash);
    CHECK_STR(got.hook_secret, "hook-secret");
    CHECK_STR(got.jira_client_secret, "");
    CHECK_STR(got.zoho_token, "");
    CHECK(got.created_ms == 1700000000000LL);
    CHECK_INT(got.rotated_ms, 0);

    memset(t.key_hash, 'c', 64);
    snprintf(t.jira_client_secret, sizeof(t.jira_client_secret), "oauth-client-secret");
    snprintf(t.zoho_token, sizeof(t.zoho_token), "zoho-token");
    t.rotated_ms = 1700000001000LL;
    CHECK_INT(s->ops->tenant_update(s, &t, &e), MLC_OK);
    CHECK_INT(s->ops->tenant_get(s, "acme", &got, &e), MLC_OK);
    CHECK_STR(got.key_hash, t.key_hash);
    CHECK_STR(got.jira_client_secret, "oauth-client-secret");
    CHECK_STR(got.zoho_token, "zoho-token");
    CHECK(got.rotated_ms == 1700000001000LL);

    mlc_err_reset(&e);
    CHECK_INT(s->ops->tenant_get(s, "nobody", &got, &e), MLC_E_NOTFOUND);
    snprintf(t.name, sizeof(t.name), "nobody");
    CHECK_INT(s->ops->tenant_update(s, &t, &e), MLC_E_NOTFOUND);
    snprintf(t.name, sizeof(t.name), "bad name");
    CHECK_INT(s->ops->tenant_add(s, &t, &e), MLC_E_INVAL);
    t.name[0] = '\0';
    CHECK_INT(s->ops->tenant_add(s, &t, &e), MLC_E_INVAL);
    memset(t.name, 'x', TENANT_NAME_MAX); /* the longest name */
    CHECK_INT(s->ops->tenant_add(s, &t, &e), MLC_OK);

    add_tenant(s, "beta");
    add_tenant(s, "Zed");
    add_tenant(s, "alpha-2");
    CHECK_INT(s->ops->tenant_list(s, &list, &n, &e), MLC_OK);
    CHECK_INT(n, 5);
    if (n == 5) {
        /* byte order on both back ends */
        CHECK_STR(list[0].name, "Zed");
        CHECK_STR(list[1].name, "acme");
        CHECK_STR(list[2].name, "alpha-2");
        CHECK_STR(list[3].name, "beta");
        CHECK_INT(strlen(list[4].name), TENANT_NAME_MAX);
        CHECK_STR(list[3].hook_secret, "secret-of-beta");
    }
    free(list);
    close_store(s);
}

static void put_assigns_seqs_and_stores_duplicates_once(void)
{
    struct store *s;
    struct mlc_errbuf e = { 0 };
    struct delivery_in b1[4], b2[2], bad[2];
    struct delivery_out out[8];
    int n;

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    add_tenant(s, "acme");
    add_tenant(s, "beta");
    b1[0] = item("acme", "jira", "d1", "{\"first\":1}", 101);
    b1[1] = item("acme", "jira", "d2", "{\"second\":2}", 102);
    b1[2] = item("acme", "zoho", "d1", "{\"zoho\":3}", 103);    /* another kind: not a duplicate */
    b1[3] = item("acme", "jira", "d1", "{\"changed\":4}", 104); /* repeated in the batch */
    CHECK_INT(s->ops->deliveries_put(s, b1, 4, &e), MLC_OK);
    CHECK(b1[0].seq > 0);
    CHECK(b1[1].seq > b1[0].seq);
    CHECK(b1[2].seq > b1[1].seq);
    CHECK(b1[0].duplicate == 0 && b1[1].duplicate == 0 && b1[2].duplicate == 0);
    CHECK_INT(b1[3].duplicate, 1);
    CHECK(b1[3].seq == b1[0].seq);

    b2[0] = item("acme", "jira", "d2", "{\"again\":5}", 105); /* repeated in a later batch */
    b2[1] = item("beta", "jira", "d1", "{\"beta\":6}", 106);  /* another tenant: not a duplicate */
    CHECK_INT(s->ops->deliveries_put(s, b2, 2, &e), MLC_OK);
    CHECK_INT(b2[0].duplicate, 1);
    CHECK(b2[0].seq == b1[1].seq);
    CHECK_INT(b2[1].duplicate, 0);
    CHECK(b2[1].seq > b1[2].seq);

    /* the first body stays */
    n = s->ops->deliveries_claim(s, "acme", 8, 1000, 60000, out, &e);
    CHECK_INT(n, 3);
    if (n == 3) {
        CHECK(out[0].seq == b1[0].seq);
        CHECK_STR(out[0].kind, "jira");
        CHECK_STR(out[0].ext_id, "d1");
        CHECK_STR(out[0].body, "{\"first\":1}");
        CHECK_INT(out[0].body_len, strlen("{\"first\":1}"));
        CHECK_INT(out[0].received_ms, 101);
        CHECK_STR(out[1].body, "{\"second\":2}");
        CHECK_STR(out[2].kind, "zoho");
        CHECK_STR(out[2].body, "{\"zoho\":3}");
    }
    delivery_out_release(out, n > 0 ? (size_t)n : 0);

    /* an unknown tenant fails the whole batch, which stores nothing */
    bad[0] = item("acme", "jira", "d9", "{}", 107);
    bad[1] = item("ghost", "jira", "d9", "{}", 107);
    CHECK_INT(s->ops->deliveries_put(s, bad, 2, &e), MLC_E_NOTFOUND);
    CHECK(strstr(mlc_err_msg(&e), "'ghost'") != NULL);
    CHECK(bad[0].seq == 0);
    mlc_err_reset(&e);
    bad[1] = item("acme", "jira", "d10", "{}", 108);
    CHECK_INT(s->ops->deliveries_put(s, bad, 2, &e), MLC_OK);
    CHECK_INT(bad[0].duplicate, 0); /* d9 was not kept from the failed batch */
    bad[0] = item("acme", "jira-and-more", "d11", "{}", 108);
    CHECK_INT(s->ops->deliveries_put(s, bad, 1, &e), MLC_E_INVAL);
    CHECK_INT(s->ops->deliveries_put(s, bad, 0, &e), MLC_OK);
    close_store(s);
}

static int claim_seqs(struct store *s, const char *tenant, int max, long long now, long long *seqs)
{
    struct delivery_out out[64];
    struct mlc_errbuf e = { 0 };
    int n = s->ops->deliveries_claim(s, tenant, max, now, 30000, out, &e);

    if (n < 0) {
        fprintf(stderr, "  claim: %s\n", mlc_err_msg(&e));
    }
    for (int i = 0; i < n; i++) {
        seqs[i] = out[i].seq;
    }
    delivery_out_release(out, n > 0 ? (size_t)n : 0);
    return n;
}

static void claims_lease_oldest_first(void)
{
    struct store *s, *other;
    struct mlc_errbuf e = { 0 };
    struct delivery_in a[5], b[2];
    long long got[64];
    char ids[5][8];

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    add_tenant(s, "acme");
    add_tenant(s, "beta");
    for (int i = 0; i < 5; i++) {
        snprintf(ids[i], sizeof(ids[i]), "a%d", i);
        a[i] = item("acme", "jira", ids[i], "{}", 100 + i);
    }
    b[0] = item("beta", "jira", "b0", "{}", 100);
    b[1] = item("beta", "zoho", "b1", "{}", 100);
    CHECK_INT(s->ops->deliveries_put(s, a, 3, &e), MLC_OK);
    CHECK_INT(s->ops->deliveries_put(s, b, 2, &e), MLC_OK);
    CHECK_INT(s->ops->deliveries_put(s, a + 3, 2, &e), MLC_OK);

    /* oldest first, at most max, leased ones skipped */
    CHECK_INT(claim_seqs(s, "acme", 2, 10000, got), 2);
    CHECK(got[0] == a[0].seq && got[1] == a[1].seq);
    CHECK_INT(claim_seqs(s, "acme", 2, 10000, got), 2);
    CHECK(got[0] == a[2].seq && got[1] == a[3].seq);
    CHECK_INT(claim_seqs(s, "acme", 10, 10000, got), 1);
    CHECK(got[0] == a[4].seq);
    CHECK_INT(claim_seqs(s, "acme", 10, 39999, got), 0);
    CHECK_INT(s->ops->deliveries_claim(s, "acme", 0, 10000, 30000, NULL, &e), 0);

    /* another node neither gets them nor releases them */
    other = open_node("n2");
    if (other != NULL) {
        CHECK_INT(claim_seqs(other, "acme", 10, 20000, got), 0);
        CHECK_INT(other->ops->deliveries_release(other, "acme", &e), MLC_OK);
        CHECK_INT(claim_seqs(other, "acme", 10, 20000, got), 0);
    }

    /* expired leases come back, all of them, in order */
    CHECK_INT(claim_seqs(s, "acme", 10, 40000, got), 5);
    CHECK(got[0] == a[0].seq && got[4] == a[4].seq);
    CHECK_INT(claim_seqs(s, "acme", 10, 40001, got), 0);
    /* released leases come back at once */
    CHECK_INT(s->ops->deliveries_release(s, "acme", &e), MLC_OK);
    CHECK_INT(claim_seqs(s, "acme", 3, 40002, got), 3);
    CHECK(got[0] == a[0].seq);
    if (other != NULL) {
        /* released rows may go to another node: the rest are free */
        CHECK_INT(s->ops->deliveries_release(s, "acme", &e), MLC_OK);
        CHECK_INT(claim_seqs(other, "acme", 10, 40003, got), 5);
        CHECK_INT(claim_seqs(s, "acme", 10, 40003, got), 0);
    }

    /* acked rows are never claimed again */
    {
        long long acks[2] = { a[0].seq, a[1].seq };

        CHECK_INT(s->ops->deliveries_ack(s, "acme", acks, 2, 50000, &e), MLC_OK);
        CHECK_INT(s->ops->deliveries_ack(s, "acme", acks, 0, 50000, &e), MLC_OK);
    }
    CHECK_INT(claim_seqs(s, "acme", 10, 100000, got), 3);
    CHECK(got[0] == a[2].seq);

    /* a tenant sees only its own */
    CHECK_INT(claim_seqs(s, "beta", 10, 10000, got), 2);
    CHECK(got[0] == b[0].seq && got[1] == b[1].seq);
    CHECK_INT(claim_seqs(s, "ghost", 10, 10000, got), 0);
    close_store(other);
    close_store(s);
}

static void ack_ignores_foreign_and_unknown_seqs(void)
{
    struct store *s;
    struct mlc_errbuf e = { 0 };
    struct delivery_in a = item("acme", "jira", "x1", "{\"acme\":1}", 1);
    struct delivery_in b = item("beta", "jira", "y1", "{\"beta\":1}", 1);
    struct store_stats st;
    long long got[8], acks[3];

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    add_tenant(s, "acme");
    add_tenant(s, "beta");
    CHECK_INT(s->ops->deliveries_put(s, &a, 1, &e), MLC_OK);
    CHECK_INT(s->ops->deliveries_put(s, &b, 1, &e), MLC_OK);
    /* beta's tunnel acks acme's seq (and nonsense): nothing happens */
    acks[0] = a.seq;
    acks[1] = 987654321;
    acks[2] = -1;
    CHECK_INT(s->ops->deliveries_ack(s, "beta", acks, 3, 5, &e), MLC_OK);
    CHECK_INT(claim_seqs(s, "acme", 8, 10, got), 1);
    CHECK(got[0] == a.seq);
    CHECK_INT(s->ops->stats(s, &st, &e), MLC_OK);
    CHECK_INT(st.pending, 2);
    CHECK_INT(st.acked, 0);

    CHECK_INT(s->ops->deliveries_ack(s, "acme", &a.seq, 1, 20, &e), MLC_OK);
    CHECK_INT(s->ops->deliveries_ack(s, "acme", &a.seq, 1, 30, &e), MLC_OK); /* twice is fine */
    CHECK_INT(s->ops->deliveries_release(s, "acme", &e), MLC_OK);
    CHECK_INT(claim_seqs(s, "acme", 8, 1000000, got), 0);
    CHECK_INT(claim_seqs(s, "beta", 8, 1000000, got), 1);
    CHECK_INT(s->ops->stats(s, &st, &e), MLC_OK);
    CHECK_INT(st.pending, 1);
    CHECK_INT(st.acked, 1);
    close_store(s);
}

/* Two nodes claiming from one pool at the same time. */
#define POOL 600

struct claimer {
    const char *node;
    pthread_barrier_t *go;
    long long got[POOL];
    int n;
    int failed;
};

/* Ranges cover other tenants' seqs and gaps: only the tenant's own
 * unacked deliveries in them are acked, and the count says how many. */
static void ack_ranges_mark_exactly_the_tenants_own(void)
{
    struct store *s;
    struct mlc_errbuf e = { 0 };
    struct delivery_in d[8];
    struct seq_range r[2];
    struct store_stats st;
    long long got[16], acked = -1;
    char id[16];

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    add_tenant(s, "acme");
    add_tenant(s, "beta");
    /* acme, beta, acme, beta, ...: interleaved seqs */
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof(id), "r%d", i);
        d[i] = item(i % 2 ? "beta" : "acme", "jira", id, "{}", 1);
        CHECK_INT(s->ops->deliveries_put(s, &d[i], 1, &e), MLC_OK);
    }
    /* acme acks from its first to its third seq, and a range of beta's alone */
    r[0].first = d[0].seq;
    r[0].last = d[4].seq;
    r[1].first = d[7].seq;
    r[1].last = d[7].seq;
    CHECK_INT(s->ops->deliveries_ack_ranges(s, "acme", r, 2, 5, &acked, &e), MLC_OK);
    CHECK_INT(acked, 3);
    CHECK_INT(s->ops->deliveries_ack_ranges(s, "acme", r, 1, 6, &acked, &e), MLC_OK);
    CHECK_INT(acked, 0); /* twice is fine, and counts nothing */
    CHECK_INT(claim_seqs(s, "acme", 16, 10, got), 1);
    CHECK(got[0] == d[6].seq);
    CHECK_INT(claim_seqs(s, "beta", 16, 10, got), 4);
    CHECK_INT(s->ops->stats(s, &st, &e), MLC_OK);
    CHECK_INT(st.pending, 5);
    CHECK_INT(st.acked, 3);
    CHECK_INT(s->ops->deliveries_ack_ranges(s, "beta", r, 0, 7, NULL, &e), MLC_OK);
    close_store(s);
}

/* Lazy puts (where the back end has them) are visible at once; claims
 * stop below claim_below until the caller has synced. */
static void lazy_puts_wait_for_sync_before_claims(void)
{
    struct store *s;
    struct mlc_errbuf e = { 0 };
    struct delivery_in a = item("acme", "jira", "z1", "{\"z\":1}", 1);
    struct delivery_in b = item("acme", "jira", "z2", "{\"z\":2}", 1);
    long long got[8];

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    if (s->ops->deliveries_put_lazy == NULL) {
        close_store(s);
        return;
    }
    add_tenant(s, "acme");
    CHECK_INT(s->ops->sync_start(s, &e), MLC_OK);
    CHECK_INT(s->ops->deliveries_put(s, &a, 1, &e), MLC_OK);
    CHECK_INT(s->ops->deliveries_put_lazy(s, &b, 1, &e), MLC_OK);
    CHECK(b.seq > a.seq && !b.duplicate);
    s->claim_below = b.seq;
    CHECK_INT(claim_seqs(s, "acme", 8, 10, got), 1);
    CHECK(got[0] == a.seq);
    CHECK_INT(s->ops->sync(s), 0);
    s->claim_below = 0;
    CHECK_INT(claim_seqs(s, "acme", 8, 10, got), 1);
    CHECK(got[0] == b.seq);
    close_store(s);
}

static void *claimer_main(void *arg)
{
    struct claimer *c = arg;
    struct store *s = NULL;
    struct mlc_errbuf e = { 0 };
    struct delivery_out out[7];
    struct timespec sending = { 0, 1000 * 1000 };

    if (store_open(&s, spec, c->node, test_key(), &e) != MLC_OK) {
        fprintf(stderr, "  %s: %s\n", c->node, mlc_err_msg(&e));
        c->failed = 1;
        pthread_barrier_wait(c->go);
        return NULL;
    }
    pthread_barrier_wait(c->go);
    for (;;) {
        int k = s->ops->deliveries_claim(s, "acme", 7, 5000, 600000, out, &e);

        if (k < 0) {
            fprintf(stderr, "  %s: %s\n", c->node, mlc_err_msg(&e));
            c->failed = 1;
            break;
        }
        if (k == 0) {
            break;
        }
        for (int i = 0; i < k && c->n < POOL; i++) {
            c->got[c->n++] = out[i].seq;
        }
        nanosleep(&sending, NULL); /* gives the other node its turns */
        /* ack half of them: writes mixed with the claims */
        if (k > 1 && s->ops->deliveries_ack(s, "acme", &out[0].seq, 1, 5001, &e) != MLC_OK) {
            fprintf(stderr, "  %s: %s\n", c->node, mlc_err_msg(&e));
            c->failed = 1;
        }
        delivery_out_release(out, (size_t)k);
    }
    s->ops->close(s);
    return NULL;
}

static void two_nodes_never_hold_one_row(void)
{
    struct store *s;
    struct mlc_errbuf e = { 0 };
    static struct claimer c1, c2;
    static struct delivery_in batch[50];
    static char ids[POOL][16];
    static unsigned char owner[POOL];
    pthread_barrier_t go;
    pthread_t t1, t2;
    long long first = 0, got[64];
    int both = 0, total = 0, n;

    fresh();
    s = open_node("n0");
    if (s == NULL) {
        return;
    }
    add_tenant(s, "acme");
    for (int i = 0; i < POOL; i += 50) {
        for (int j = 0; j < 50; j++) {
            snprintf(ids[i + j], sizeof(ids[i + j]), "pool-%d", i + j);
            batch[j] = item("acme", "jira", ids[i + j], "{\"pool\":true}", 1);
        }
        CHECK_INT(s->ops->deliveries_put(s, batch, 50, &e), MLC_OK);
        if (i == 0) {
            first = batch[0].seq;
        }
    }
    memset(&c1, 0, sizeof(c1));
    memset(&c2, 0, sizeof(c2));
    memset(owner, 0, sizeof(owner));
    c1.node = "node-a";
    c2.node = "node-b";
    pthread_barrier_init(&go, NULL, 2);
    c1.go = c2.go = &go;
    pthread_create(&t1, NULL, claimer_main, &c1);
    pthread_create(&t2, NULL, claimer_main, &c2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    pthread_barrier_destroy(&go);
    CHECK_INT(c1.failed, 0);
    CHECK_INT(c2.failed, 0);
    for (int k = 0; k < 2; k++) {
        struct claimer *c = k ? &c2 : &c1;

        for (int i = 0; i < c->n; i++) {
            long long at = c->got[i] - first;

            if (at < 0 || at >= POOL) {
                CHECK(!"claimed a seq outside the pool");
                continue;
            }
            both += owner[at] != 0;
            owner[at] |= (unsigned char)(1 << k);
            total++;
        }
    }
    CHECK_INT(both, 0);
    CHECK_INT(total, POOL);
    printf("# two nodes claimed %d and %d of %d rows\n", c1.n, c2.n, POOL);
    /* when node-a's leases run out, the unacked rows go to whoever asks */
    n = claim_seqs(s, "acme", 64, 5000 + 600000, got);
    CHECK(n > 0);
    close_store(s);
}

static void commands(void)
{
    struct store *s;
    struct mlc_errbuf e = { 0 };
    struct command_rec out[4], c;
    char names[8][TENANT_NAME_MAX + 1];
    long long id1 = 0, id2 = 0, id3 = 0;
    int n;

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    add_tenant(s, "acme");
    add_tenant(s, "beta");
    CHECK_INT(
        s->ops->command_put(s, "acme", "{\"command\":\"sync-now\",\"flow\":\"wo\"}", 100, &id1, &e),
        MLC_OK);
    CHECK_INT(s->ops->command_put(s, "acme", "{\"command\":\"ping\"}", 101, &id2, &e), MLC_OK);
    CHECK_INT(s->ops->command_put(s, "beta", "{\"command\":\"ping\"}", 102, &id3, &e), MLC_OK);
    CHECK(id1 > 0 && id2 > id1 && id3 > id2);
    CHECK_INT(s->ops->command_put(s, "ghost", "{}", 103, &id3, &e), MLC_E_NOTFOUND);

    /* who has unsent commands: polled by the nodes (the CLI cannot wake SQLite) */
    CHECK(s->ops->command_tenants != NULL);
    CHECK_INT(s->ops->command_tenants(s, names, 8, &e), 2);
    CHECK_STR(names[0], "acme");
    CHECK_STR(names[1], "beta");
    CHECK_INT(s->ops->command_tenants(s, names, 1, &e), 1);
    CHECK_STR(names[0], "acme");
    CHECK_INT(s->ops->command_tenants(s, names, 0, &e), 0);

    n = s->ops->command_claim(s, "acme", 4, 200, out, &e);
    CHECK_INT(n, 2);
    if (n == 2) {
        CHECK(out[0].id == id1 && out[1].id == id2);
        CHECK_STR(out[0].tenant, "acme");
        CHECK_STR(out[0].body, "{\"command\":\"sync-now\",\"flow\":\"wo\"}");
        CHECK_INT(out[0].created_ms, 100);
        CHECK_INT(out[0].answered_ms, 0);
        CHECK(out[0].answer == NULL);
    }
    for (int i = 0; i < n; i++) {
        command_rec_release(&out[i]);
    }
    CHECK_INT(s->ops->command_claim(s, "acme", 4, 201, out, &e), 0); /* sent once */
    CHECK_INT(s->ops->command_tenants(s, names, 8, &e), 1);
    CHECK_STR(names[0], "beta");
    n = s->ops->command_claim(s, "beta", 4, 202, out, &e);
    CHECK_INT(n, 1);
    for (int i = 0; i < n; i++) {
        command_rec_release(&out[i]);
    }
    CHECK_INT(s->ops->command_tenants(s, names, 8, &e), 0);

    CHECK_INT(s->ops->command_answer(s, id1, "{\"ok\":true}", 300, &e), MLC_OK);
    CHECK_INT(s->ops->command_answer(s, id1, "{\"ok\":\"again\"}", 301, &e), MLC_OK);
    CHECK_INT(s->ops->command_get(s, id1, &c, &e), MLC_OK);
    CHECK_INT(c.answered_ms, 300);
    CHECK_STR(c.answer, "{\"ok\":true}"); /* the first answer stays */
    CHECK_STR(c.body, "{\"command\":\"sync-now\",\"flow\":\"wo\"}");
    command_rec_release(&c);
    command_rec_release(&c); /* twice is harmless */
    CHECK_INT(s->ops->command_get(s, id2, &c, &e), MLC_OK);
    CHECK_INT(c.answered_ms, 0);
    CHECK(c.answer == NULL);
    command_rec_release(&c);
    CHECK_INT(s->ops->command_get(s, 987654321, &c, &e), MLC_E_NOTFOUND);
    CHECK_INT(s->ops->command_answer(s, 987654321, "{}", 1, &e), MLC_E_NOTFOUND);
    command_rec_release(NULL);
    delivery_out_release(NULL, 3);
    close_store(s);
}

static void stats_count(void)
{
    struct store *s;
    struct mlc_errbuf e = { 0 };
    struct store_stats st;
    struct delivery_in d[3];
    long long id;

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    CHECK_INT(s->ops->stats(s, &st, &e), MLC_OK);
    CHECK(st.tenants == 0 && st.pending == 0 && st.acked == 0 && st.commands_pending == 0);
    add_tenant(s, "acme");
    add_tenant(s, "beta");
    d[0] = item("acme", "jira", "1", "{}", 1);
    d[1] = item("acme", "jira", "2", "{}", 1);
    d[2] = item("beta", "zoho", "1", "{}", 1);
    CHECK_INT(s->ops->deliveries_put(s, d, 3, &e), MLC_OK);
    CHECK_INT(s->ops->deliveries_put(s, d, 3, &e), MLC_OK); /* duplicates count once */
    CHECK_INT(s->ops->deliveries_ack(s, "acme", &d[0].seq, 1, 2, &e), MLC_OK);
    CHECK_INT(s->ops->command_put(s, "acme", "{}", 1, &id, &e), MLC_OK);
    CHECK_INT(s->ops->command_put(s, "beta", "{}", 1, &id, &e), MLC_OK);
    CHECK_INT(s->ops->command_answer(s, id, "{}", 2, &e), MLC_OK);
    CHECK_INT(s->ops->stats(s, &st, &e), MLC_OK);
    CHECK_INT(st.tenants, 2);
    CHECK_INT(st.pending, 2);
    CHECK_INT(st.acked, 1);
    CHECK_INT(st.commands_pending, 1);
    close_store(s);
}

/* Durability, the part a test can check: what a call reported stored is
 * there for a new handle, even when the process that stored it was killed
 * at once (kill -9). Power loss is the fsync's job (SQLite
 * synchronous=FULL; PostgreSQL fsync=on, synchronous_commit=on). */
static void reopen_finds_everything(void)
{
    struct store *s;
    struct mlc_errbuf e = { 0 };
    struct delivery_in d[20];
    struct delivery_out out[32];
    struct tenant_rec t;
    struct command_rec c;
    char ids[20][8], bodies[20][32];
    long long id = 0;
    int n;

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    add_tenant(s, "acme");
    for (int i = 0; i < 20; i++) {
        snprintf(ids[i], sizeof(ids[i]), "r%d", i);
        snprintf(bodies[i], sizeof(bodies[i]), "{\"n\":%d}", i);
        d[i] = item("acme", i % 2 ? "zoho" : "jira", ids[i], bodies[i], 1000 + i);
    }
    CHECK_INT(s->ops->deliveries_put(s, d, 20, &e), MLC_OK);
    CHECK_INT(s->ops->command_put(s, "acme", "{\"command\":\"ping\"}", 5, &id, &e), MLC_OK);
    close_store(s);

    s = open_node("n2");
    if (s == NULL) {
        return;
    }
    CHECK_INT(s->ops->tenant_get(s, "acme", &t, &e), MLC_OK);
    CHECK_STR(t.hook_secret, "secret-of-acme");
    n = s->ops->deliveries_claim(s, "acme", 32, 1, 1000, out, &e);
    CHECK_INT(n, 20);
    for (int i = 0; i < n && i < 20; i++) {
        CHECK(out[i].seq == d[i].seq);
        CHECK_STR(out[i].ext_id, ids[i]);
        CHECK_STR(out[i].body, bodies[i]);
        CHECK_STR(out[i].kind, i % 2 ? "zoho" : "jira");
        CHECK_INT(out[i].received_ms, 1000 + i);
    }
    delivery_out_release(out, n > 0 ? (size_t)n : 0);
    CHECK_INT(s->ops->command_get(s, id, &c, &e), MLC_OK);
    CHECK_STR(c.body, "{\"command\":\"ping\"}");
    command_rec_release(&c);
    close_store(s);
}

#define KILL_BATCH 20

/* The child stores batches and reports each one the store confirmed, until killed. */
static void writer_child(int fd)
{
    struct store *s = NULL;
    struct mlc_errbuf e = { 0 };
    struct delivery_in d[KILL_BATCH];
    char ids[KILL_BATCH][24];

    if (store_open(&s, spec, "doomed", test_key(), &e) != MLC_OK) {
        fprintf(stderr, "  child: %s\n", mlc_err_msg(&e));
        _exit(2);
    }
    for (int b = 0; b < 100000; b++) {
        int done;

        for (int i = 0; i < KILL_BATCH; i++) {
            snprintf(ids[i], sizeof(ids[i]), "k%d-%d", b, i);
            d[i] = item("acme", "jira", ids[i], "{\"kill\":9}", b);
        }
        if (s->ops->deliveries_put(s, d, KILL_BATCH, &e) != MLC_OK) {
            fprintf(stderr, "  child: %s\n", mlc_err_msg(&e));
            _exit(3);
        }
        done = b;
        if (write(fd, &done, sizeof(done)) != sizeof(done)) {
            _exit(4);
        }
    }
    _exit(0);
}

static void killed_writer_loses_nothing(void)
{
    struct store *s;
    struct mlc_errbuf e = { 0 };
    struct delivery_in d[KILL_BATCH];
    char ids[KILL_BATCH][24];
    int fds[2], last = -1, got, status, lost = 0;
    pid_t pid;

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    add_tenant(s, "acme");
    close_store(s);
    if (pipe(fds) != 0) {
        CHECK(!"pipe");
        return;
    }
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        close(fds[0]);
        writer_child(fds[1]);
    }
    close(fds[1]);
    while (last < 5 && read(fds[0], &got, sizeof(got)) == sizeof(got)) {
        last = got;
    }
    kill(pid, SIGKILL);
    while (read(fds[0], &got, sizeof(got)) == sizeof(got)) {
        last = got; /* confirmed before the kill */
    }
    close(fds[0]);
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK(last >= 5);

    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    /* storing again finds every confirmed one already there; the batch the
     * kill interrupted is all there or not at all */
    for (int b = 0; b <= last + 1; b++) {
        int dup = 0;

        for (int i = 0; i < KILL_BATCH; i++) {
            snprintf(ids[i], sizeof(ids[i]), "k%d-%d", b, i);
            d[i] = item("acme", "jira", ids[i], "{\"kill\":9}", b);
        }
        CHECK_INT(s->ops->deliveries_put(s, d, KILL_BATCH, &e), MLC_OK);
        for (int i = 0; i < KILL_BATCH; i++) {
            dup += d[i].duplicate;
        }
        if (b <= last) {
            lost += KILL_BATCH - dup;
        } else {
            CHECK(dup == 0 || dup == KILL_BATCH);
        }
    }
    CHECK_INT(lost, 0);
    close_store(s);
}

/* SQLite: a CLI process holding the write lock makes the relay wait, not fail. */
struct held_put {
    struct store *s;
    int rc;
};

static void *held_put_main(void *arg)
{
    struct held_put *h = arg;
    struct mlc_errbuf e = { 0 };
    struct delivery_in d = item("acme", "jira", "while-locked", "{}", 1);

    h->rc = h->s->ops->deliveries_put(h->s, &d, 1, &e);
    if (h->rc != MLC_OK) {
        fprintf(stderr, "  put while locked: %s\n", mlc_err_msg(&e));
    }
    return NULL;
}

static void busy_database_waits(void)
{
    struct held_put h = { NULL, -1 };
    sqlite3 *db = NULL;
    pthread_t t;
    struct timespec pause = { 0, 300 * 1000 * 1000 };

    fresh();
    h.s = open_node("n1");
    if (h.s == NULL) {
        return;
    }
    add_tenant(h.s, "acme");
    CHECK_INT(sqlite3_open(sqlite_path, &db), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    pthread_create(&t, NULL, held_put_main, &h);
    nanosleep(&pause, NULL);
    CHECK_INT(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    pthread_join(t, NULL);
    CHECK_INT(h.rc, MLC_OK);
    sqlite3_close(db);
    close_store(h.s);
}

/* wake-ups */
struct seen {
    int delivery, command, other;
};

static void on_wake(void *arg, const char *tenant, const char *what)
{
    struct seen *w = arg;

    if (strcmp(tenant, "acme") != 0) {
        w->other++;
    } else if (strcmp(what, "delivery") == 0) {
        w->delivery++;
    } else if (strcmp(what, "command") == 0) {
        w->command++;
    } else {
        w->other++;
    }
}

/* Polls s's wake fd until cond holds or 5 s pass. */
static void wait_wake(struct store *s, struct seen *w, int want_delivery, int want_command)
{
    for (int i = 0; i < 50 && (w->delivery < want_delivery || w->command < want_command); i++) {
        struct pollfd pfd = { s->ops->wake_fd(s), POLLIN, 0 };

        if (pfd.fd >= 0 && poll(&pfd, 1, 100) < 0 && errno != EINTR) {
            break;
        }
        s->ops->wake_drain(s, on_wake, w);
    }
}

static void wake_ups(void)
{
    struct store *a, *b;
    struct mlc_errbuf e = { 0 };
    struct seen w = { 0 };
    struct delivery_in d = item("acme", "jira", "w1", "{}", 1);
    long long id;

    fresh();
    a = open_node("n1");
    b = open_node("n2");
    if (a == NULL || b == NULL) {
        close_store(a);
        close_store(b);
        return;
    }
    if (!on_pg) {
        CHECK_INT(a->ops->wake_fd(a), -1);
        a->ops->wake_drain(a, on_wake, &w); /* nothing, harmlessly */
        CHECK_INT(w.delivery + w.command + w.other, 0);
        close_store(a);
        close_store(b);
        return;
    }
    CHECK(a->ops->wake_fd(a) >= 0);
    add_tenant(b, "acme");
    CHECK_INT(b->ops->deliveries_put(b, &d, 1, &e), MLC_OK);
    CHECK_INT(b->ops->command_put(b, "acme", "{}", 1, &id, &e), MLC_OK);
    wait_wake(a, &w, 1, 1);
    CHECK_INT(w.delivery, 1);
    CHECK_INT(w.command, 1);
    CHECK_INT(w.other, 0);
    close_store(a);
    close_store(b);
}

/* PostgreSQL: a killed server connection fails one call clearly; the next reconnects. */
static int terminate(const char *app)
{
    const char *vals[1] = { app };
    PGresult *r = PQexecParams(pg_admin,
                               "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                               " WHERE application_name = $1",
                               1, NULL, vals, NULL, NULL, 0);
    int n = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : -1;
    struct timespec pause = { 0, 200 * 1000 * 1000 };

    PQclear(r);
    nanosleep(&pause, NULL); /* let the backend go */
    return n;
}

static void lost_connection_reconnects(void)
{
    struct store *s, *b;
    struct mlc_errbuf e = { 0 };
    struct tenant_rec t;
    struct seen w = { 0 };
    struct delivery_in d[3];
    char node[32], app[64];

    if (!on_pg) {
        return;
    }
    fresh();
    snprintf(node, sizeof(node), "recon-%d", (int)getpid());
    s = open_node(node);
    b = open_node("n2");
    if (s == NULL || b == NULL) {
        close_store(s);
        close_store(b);
        return;
    }
    add_tenant(s, "acme");
    snprintf(app, sizeof(app), "mlc-relay %s", node);
    CHECK_INT(terminate(app), 1);
    CHECK_INT(s->ops->tenant_get(s, "acme", &t, &e), MLC_E_NET);
    CHECK(strstr(mlc_err_msg(&e), "lost the connection to PostgreSQL server '127.0.0.1:") != NULL ||
          strstr(mlc_err_msg(&e), "lost the connection to PostgreSQL server '/") != NULL);
    CHECK(strstr(mlc_err_msg(&e), "reconnects") != NULL);
    printf("# %s\n", mlc_err_msg(&e));
    mlc_err_reset(&e);
    CHECK_INT(s->ops->tenant_get(s, "acme", &t, &e), MLC_OK);

    /* in the middle of a pipelined batch */
    d[0] = item("acme", "jira", "p1", "{}", 1);
    d[1] = item("acme", "jira", "p2", "{}", 1);
    d[2] = item("acme", "jira", "p1", "{}", 1);
    CHECK_INT(terminate(app), 1);
    CHECK_INT(s->ops->deliveries_put(s, d, 3, &e), MLC_E_NET);
    printf("# %s\n", mlc_err_msg(&e));
    CHECK(d[0].seq == 0);
    mlc_err_reset(&e);
    CHECK_INT(s->ops->deliveries_put(s, d, 3, &e), MLC_OK);
    CHECK(d[0].seq > 0 && d[2].duplicate == 1 && d[2].seq == d[0].seq);

    /* the wake-up connection: its fd turns readable at EOF; draining, as
     * the event loop does while it stays readable, reconnects */
    snprintf(app, sizeof(app), "mlc-relay %s listen", node);
    wait_wake(s, &w, 1, 0); /* s's own put woke it */
    CHECK_INT(w.delivery, 1);
    memset(&w, 0, sizeof(w));
    CHECK(s->ops->wake_fd(s) >= 0);
    CHECK_INT(terminate(app), 1);
    for (int i = 0; i < 20; i++) {
        struct pollfd pfd = { s->ops->wake_fd(s), POLLIN, 0 };

        if (pfd.fd >= 0 && poll(&pfd, 1, 100) == 0) {
            break; /* quiet: a live connection with nothing to say */
        }
        s->ops->wake_drain(s, on_wake, &w);
    }
    CHECK(s->ops->wake_fd(s) >= 0);
    CHECK_INT(w.delivery + w.command, 0);
    d[0] = item("acme", "jira", "p3", "{}", 1);
    CHECK_INT(b->ops->deliveries_put(b, d, 1, &e), MLC_OK);
    wait_wake(s, &w, 1, 0);
    CHECK_INT(w.delivery, 1);
    close_store(s);
    close_store(b);
}

static void bad_specs_are_explained(void)
{
    struct store *s = NULL;
    struct mlc_errbuf e = { 0 };

    CHECK_INT(store_open(&s, "mysql://x", "n1", test_key(), &e), MLC_E_INVAL);
    CHECK(strstr(mlc_err_msg(&e), "sqlite:") != NULL);
    CHECK(s == NULL);
    mlc_err_reset(&e);
    CHECK_INT(store_open(&s, "", "n1", test_key(), &e), MLC_E_INVAL);
    mlc_err_reset(&e);
    CHECK_INT(store_open(&s, "sqlite:/nonexistent-mlc-dir/relay.db", "n1", test_key(), &e), MLC_E_IO);
    CHECK(strstr(mlc_err_msg(&e), "'/nonexistent-mlc-dir/relay.db'") != NULL);
    mlc_err_reset(&e);
    CHECK_INT(store_open(&s, "/nonexistent-mlc-dir/relay.db", "n1", test_key(), &e), MLC_E_IO);
    mlc_err_reset(&e);
    CHECK_INT(store_open(&s, "sqlite:/tmp/x.db", "", test_key(), &e), MLC_E_INVAL);
    mlc_err_reset(&e);
    /* nothing listens on port 1 */
    CHECK_INT(store_open(&s, "host=127.0.0.1 port=1 dbname=relay connect_timeout=3", "n1", test_key(), &e),
              MLC_E_NET);
    CHECK(strstr(mlc_err_msg(&e), "'127.0.0.1:1/relay'") != NULL);
    CHECK(s == NULL);
    mlc_err_reset(&e);
    CHECK_INT(store_open(&s, "postgresql://127.0.0.1:1/relay?connect_timeout=3", "n1", test_key(), &e),
              MLC_E_NET);
    CHECK(s == NULL);
}

static double mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* 10,000 2-KB deliveries in batches of 100; timing printed only with MLC_BENCH_STORE. */
static void bulk_put_and_drain(void)
{
    enum { TOTAL = 10000, BATCH = 100, BODY = 2048 };
    struct store *s;
    struct mlc_errbuf e = { 0 };
    static struct delivery_in d[BATCH];
    static char ids[BATCH][24];
    static struct delivery_out out[BATCH];
    char *body = malloc(BODY + 1);
    long long prev = 0;
    double t0, t1, t2;
    int claimed = 0, ok = 1;

    fresh();
    s = open_node("bench");
    if (s == NULL || body == NULL) {
        free(body);
        close_store(s);
        return;
    }
    add_tenant(s, "acme");
    for (int i = 0; i < BODY; i++) {
        body[i] = "{\"webhookEvent\":\"jira:issue_updated\",\"issue\":{\"key\":\"WO-1\"}}"[i % 58];
    }
    body[BODY] = '\0';
    t0 = mono();
    for (int b = 0; b < TOTAL / BATCH && ok; b++) {
        for (int i = 0; i < BATCH; i++) {
            snprintf(ids[i], sizeof(ids[i]), "bulk-%d", b * BATCH + i);
            d[i] = item("acme", "jira", ids[i], body, b);
        }
        ok = s->ops->deliveries_put(s, d, BATCH, &e) == MLC_OK;
        for (int i = 0; i < BATCH && ok; i++) {
            ok = d[i].seq > prev && !d[i].duplicate;
            prev = d[i].seq;
        }
    }
    CHECK(ok);
    t1 = mono();
    for (;;) {
        int n = s->ops->deliveries_claim(s, "acme", BATCH, 1, 60000, out, &e);
        long long seqs[BATCH];

        if (n <= 0) {
            CHECK_INT(n, 0);
            break;
        }
        for (int i = 0; i < n; i++) {
            seqs[i] = out[i].seq;
            ok = ok && out[i].body_len == BODY;
        }
        claimed += n;
        delivery_out_release(out, (size_t)n);
        CHECK_INT(s->ops->deliveries_ack(s, "acme", seqs, (size_t)n, 2, &e), MLC_OK);
    }
    t2 = mono();
    CHECK(ok);
    CHECK_INT(claimed, TOTAL);
    if (!ok) {
        fprintf(stderr, "  %s\n", mlc_err_msg(&e));
    }
    if (getenv("MLC_BENCH_STORE") != NULL) {
        printf("# bench %s: put %d x %d B in batches of %d: %.3f s (%.0f/s); "
               "claim+ack them in batches of %d: %.3f s (%.0f/s)\n",
               s->ops->name, TOTAL, BODY, BATCH, t1 - t0, TOTAL / (t1 - t0), BATCH, t2 - t1,
               TOTAL / (t2 - t1));
    }
    free(body);
    close_store(s);
}

#define RUN_ON(fn)                                                                            \
    do {                                                                                      \
        int tt_before = tt_failed_checks;                                                     \
        fn();                                                                                 \
        if (tt_failed_checks == tt_before) {                                                  \
            tt_passed++;                                                                      \
            printf("ok %d %s %s\n", tt_passed + tt_failed, on_pg ? "pg" : "sqlite", #fn);     \
        } else {                                                                              \
            tt_failed++;                                                                      \
            printf("not ok %d %s %s\n", tt_passed + tt_failed, on_pg ? "pg" : "sqlite", #fn); \
        }                                                                                     \
        fflush(stdout);                                                                       \
    } while (0)

/* One column of one tenant as it sits in the store (sealed or not); heap. */
static char *raw_column(const char *tenant, const char *col)
{
    char sql[256], *out = NULL;

    if (!on_pg) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        snprintf(sql, sizeof(sql), "SELECT %s FROM relay_tenant WHERE name = ?", col);
        if (sqlite3_open(sqlite_path, &db) == SQLITE_OK &&
            sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, tenant, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(st) == SQLITE_ROW) {
                out = strdup((const char *)sqlite3_column_text(st, 0));
            }
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
    } else {
        const char *vals[1] = { tenant };
        PGresult *r;
        snprintf(sql, sizeof(sql), "SELECT %s FROM %s.relay_tenant WHERE name = $1", col, cur_schema);
        r = PQexecParams(pg_admin, sql, 1, NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            out = strdup(PQgetvalue(r, 0, 0));
        }
        PQclear(r);
    }
    return out ? out : strdup("(no row)");
}

/* Write a column as an older relay did (in clear), bypassing the store. */
static void raw_set(const char *tenant, const char *col, const char *value)
{
    char sql[256];

    if (!on_pg) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        snprintf(sql, sizeof(sql), "UPDATE relay_tenant SET %s = ? WHERE name = ?", col);
        CHECK(sqlite3_open(sqlite_path, &db) == SQLITE_OK &&
              sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
        sqlite3_bind_text(st, 1, value, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, tenant, -1, SQLITE_TRANSIENT);
        CHECK_INT(sqlite3_step(st), SQLITE_DONE);
        sqlite3_finalize(st);
        sqlite3_close(db);
    } else {
        const char *vals[2] = { value, tenant };
        PGresult *r;
        snprintf(sql, sizeof(sql), "UPDATE %s.relay_tenant SET %s = $1 WHERE name = $2", cur_schema, col);
        r = PQexecParams(pg_admin, sql, 2, NULL, vals, NULL, NULL, 0);
        CHECK_INT(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
    }
}

/* issue 10: tenant secrets are sealed at rest, with a key kept outside the store */
static void tenant_secrets_sealed_at_rest(void)
{
    struct store *s;
    struct tenant_rec t = { 0 }, got;
    struct mlc_errbuf e = { 0 };
    struct store_key other;
    char keyfile[300], *raw;
    struct stat sb;

    fresh();
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    snprintf(t.name, sizeof(t.name), "acme");
    memset(t.key_hash, 'b', 64);
    snprintf(t.hook_secret, sizeof(t.hook_secret), "hook-SECRET-1");
    snprintf(t.jira_client_secret, sizeof(t.jira_client_secret), "%s", "");
    snprintf(t.zoho_token, sizeof(t.zoho_token), "zoho-TOKEN-1");
    CHECK_INT(s->ops->tenant_add(s, &t, &e), MLC_OK);
    /* the longest client secret still fits once sealed */
    memset(t.jira_client_secret, 'c', sizeof(t.jira_client_secret) - 1);
    CHECK_INT(s->ops->tenant_update(s, &t, &e), MLC_OK);
    raw = raw_column("acme", "hook_secret");
    CHECK(strncmp(raw, "enc1:", 5) == 0 && strstr(raw, "SECRET") == NULL);
    free(raw);
    raw = raw_column("acme", "zoho_token");
    CHECK(strncmp(raw, "enc1:", 5) == 0 && strstr(raw, "TOKEN") == NULL);
    free(raw);
    raw = raw_column("acme", "jira_client_secret");
    CHECK(strncmp(raw, "enc1:", 5) == 0 && strstr(raw, "cccccccc") == NULL);
    free(raw);
    CHECK_INT(s->ops->tenant_get(s, "acme", &got, &e), MLC_OK);
    CHECK_STR(got.hook_secret, "hook-SECRET-1");
    CHECK_STR(got.zoho_token, "zoho-TOKEN-1");
    CHECK_STR(got.jira_client_secret, t.jira_client_secret);
    /* a sealed value moved to another tenant does not open (bound to its row) */
    add_tenant(s, "beta");
    raw = raw_column("acme", "hook_secret");
    raw_set("beta", "hook_secret", raw);
    free(raw);
    mlc_err_reset(&e);
    CHECK_INT(s->ops->tenant_get(s, "beta", &got, &e), MLC_E_AUTH);
    CHECK(strstr(mlc_err_msg(&e), "does not decrypt") != NULL);
    raw_set("beta", "hook_secret", "");
    close_store(s);

    /* another key: refused at open, with what to do */
    memset(&other, 0, sizeof(other));
    memset(other.key, 0x33, sizeof(other.key));
    snprintf(other.source, sizeof(other.source), "/etc/other.key");
    mlc_err_reset(&e);
    s = NULL;
    CHECK_INT(store_open(&s, spec, "n1", &other, &e), MLC_E_AUTH);
    CHECK(s == NULL && strstr(mlc_err_msg(&e), "/etc/other.key") != NULL &&
          strstr(mlc_err_msg(&e), "restore the key file") != NULL);
    /* no key file: refused, and no new key file is made */
    /* not in tmpdir: the SQLite cases remove it before the PostgreSQL ones */
    snprintf(keyfile, sizeof(keyfile), "/tmp/mlc-test-store-%d-%d.key", (int)getpid(), nfresh);
    mlc_err_reset(&e);
    CHECK_INT(store_key_load(&other, keyfile, &e), MLC_OK);
    CHECK_INT(other.unsaved, 1);
    CHECK_INT(store_open(&s, spec, "n1", &other, &e), MLC_E_AUTH);
    CHECK(strstr(mlc_err_msg(&e), "does not exist") != NULL);
    CHECK(access(keyfile, F_OK) != 0);

    /* rows an older relay wrote in clear are sealed at the next open */
    raw_set("acme", "hook_secret", "old-clear-secret");
    raw_set("acme", "zoho_token", "old-clear-token");
    s = open_node("n1");
    if (s == NULL) {
        return;
    }
    raw = raw_column("acme", "hook_secret");
    CHECK(strncmp(raw, "enc1:", 5) == 0);
    free(raw);
    raw = raw_column("acme", "zoho_token");
    CHECK(strncmp(raw, "enc1:", 5) == 0);
    free(raw);
    CHECK_INT(s->ops->tenant_get(s, "acme", &got, &e), MLC_OK);
    CHECK_STR(got.hook_secret, "old-clear-secret");
    CHECK_STR(got.zoho_token, "old-clear-token");
    close_store(s);

    /* a new store with no key file yet: the key is created 0600 on first use */
    fresh();
    mlc_err_reset(&e);
    CHECK_INT(store_key_load(&other, keyfile, &e), MLC_OK);
    s = NULL;
    {
        mode_t old = umask(022);
        CHECK_INT(store_open(&s, spec, "n1", &other, &e), MLC_OK);
        umask(old);
        if (s == NULL) {
            fprintf(stderr, "  store_open: %s\n", mlc_err_msg(&e));
        }
    }
    CHECK_INT(other.unsaved, 0);
    CHECK(stat(keyfile, &sb) == 0 && (sb.st_mode & 0777) == 0600 && sb.st_size == MLC_AES_KEY_LEN);
    close_store(s);
    CHECK_INT(store_key_load(&other, keyfile, &e), MLC_OK);
    CHECK_INT(other.unsaved, 0);
    CHECK_INT(store_open(&s, spec, "n1", &other, &e), MLC_OK);
    close_store(s);
    unlink(keyfile);
}

/* issue 10: a systemd credential (LoadCredential=relay-key:...) wins over key_file */
static void key_from_systemd_credential(void)
{
    char dir[] = "/tmp/mlc-test-cred-XXXXXX", path[64];
    struct store_key k;
    struct mlc_errbuf e = { 0 };
    uint8_t want[MLC_AES_KEY_LEN];
    FILE *f;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/relay-key", dir);
    memset(want, 0x42, sizeof(want));
    f = fopen(path, "wb");
    CHECK(f != NULL && fwrite(want, 1, sizeof(want), f) == sizeof(want));
    fclose(f);
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    CHECK_INT(store_key_load(&k, "/nonexistent-mlc-dir/relay-secret.key", &e), MLC_OK);
    CHECK(k.credential && !k.unsaved && memcmp(k.key, want, sizeof(want)) == 0);
    CHECK_STR(k.source, path);
    f = fopen(path, "wb"); /* a damaged credential is an error, not a reason to make a key */
    CHECK(f != NULL && fwrite(want, 1, 31, f) == 31);
    fclose(f);
    CHECK_INT(store_key_load(&k, "/nonexistent-mlc-dir/relay-secret.key", &e), MLC_E_INVAL);
    CHECK(strstr(mlc_err_msg(&e), "damaged") != NULL);
    unlink(path);
    mlc_err_reset(&e);
    CHECK_INT(store_key_load(&k, "/nonexistent-mlc-dir/relay-secret.key", &e), MLC_OK);
    CHECK(!k.credential && k.unsaved); /* no credential: key_file (missing: a fresh key) */
    unsetenv("CREDENTIALS_DIRECTORY");
    rmdir(dir);
}

/* issue 10: relay.db, -wal and -shm are 0600 whatever the umask */
static void sqlite_files_are_private(void)
{
    static const char *const ext[] = { "", "-wal", "-shm" };
    struct store *s;
    mode_t old = umask(022);
    char p[300];
    struct stat sb;

    fresh();
    s = open_node("n1");
    umask(old);
    if (s == NULL) {
        return;
    }
    add_tenant(s, "acme");
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", sqlite_path, ext[i]);
        CHECK(stat(p, &sb) == 0);
        if ((sb.st_mode & 0777) != 0600) {
            fprintf(stderr, "  %s has mode %03o, expected 0600\n", p, (unsigned)(sb.st_mode & 0777));
        }
        CHECK_INT(sb.st_mode & 0777, 0600);
    }
    close_store(s);
    /* an older relay's 0644 files are tightened at open */
    chmod(sqlite_path, 0644);
    s = open_node("n1");
    CHECK(stat(sqlite_path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    close_store(s);
}

static void contract(void)
{
    RUN_ON(tenants);
    RUN_ON(tenant_secrets_sealed_at_rest);
    if (!on_pg) {
        RUN_ON(sqlite_files_are_private);
    }
    RUN_ON(put_assigns_seqs_and_stores_duplicates_once);
    RUN_ON(claims_lease_oldest_first);
    RUN_ON(ack_ignores_foreign_and_unknown_seqs);
    RUN_ON(ack_ranges_mark_exactly_the_tenants_own);
    RUN_ON(lazy_puts_wait_for_sync_before_claims);
    RUN_ON(two_nodes_never_hold_one_row);
    RUN_ON(commands);
    RUN_ON(stats_count);
    RUN_ON(reopen_finds_everything);
    RUN_ON(killed_writer_loses_nothing);
    RUN_ON(wake_ups);
    if (on_pg) {
        RUN_ON(lost_connection_reconnects);
    } else {
        RUN_ON(busy_database_waits);
    }
    RUN_ON(bulk_put_and_drain);
}

static void cleanup_sqlite(void)
{
    for (int i = 1; i <= nfresh; i++) {
        static const char *const ext[] = { "", "-wal", "-shm", "-journal" };

        for (size_t k = 0; k < sizeof(ext) / sizeof(ext[0]); k++) {
            char path[300];

            snprintf(path, sizeof(path), "%s/relay%d.db%s", tmpdir, i, ext[k]);
            unlink(path);
        }
    }
    rmdir(tmpdir);
}

static void cleanup_pg(int first, int last)
{
    for (int i = first; i <= last; i++) {
        char sql[128];

        snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS mlc_test_%d_%d CASCADE", (int)getpid(),
                 i);
        PQclear(PQexec(pg_admin, sql));
    }
}

int main(void)
{
    int sqlite_last;

    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mlc-test-store-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(bad_specs_are_explained);
    RUN(key_from_systemd_credential);
    on_pg = 0;
    contract();
    sqlite_last = nfresh;
    cleanup_sqlite();

    pg_base = getenv("MLC_TEST_PG");
    if (pg_base == NULL || pg_base[0] == '\0') {
        printf("# skipped the PostgreSQL cases: MLC_TEST_PG is not set "
               "(tests/integration/test_store_pg.py sets it)\n");
    } else {
        pg_admin = PQconnectdb(pg_base);
        if (PQstatus(pg_admin) != CONNECTION_OK) {
            fprintf(stderr, "cannot connect to MLC_TEST_PG: %s", PQerrorMessage(pg_admin));
            tt_failed++;
        } else {
            PQclear(PQexec(pg_admin, "SET client_min_messages = warning"));
            on_pg = 1;
            contract();
            cleanup_pg(sqlite_last + 1, nfresh);
        }
        PQfinish(pg_admin);
    }
    return TT_DONE();
}
