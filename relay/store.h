/* SPDX-License-Identifier: Apache-2.0
 * store: where the relay keeps tenants, webhook deliveries and operator
 * commands. Two back ends behind one table of functions:
 *   - store_sqlite.c: one node, one file (the default);
 *   - store_pg.c: several relay nodes sharing one PostgreSQL; LISTEN/NOTIFY
 *     wakes the node that holds a tenant's tunnel, FOR UPDATE SKIP LOCKED
 *     hands each delivery to one node at a time.
 * Every call is blocking and runs on the relay's event-loop thread; a store
 * handle is not shared between threads.
 *
 * Delivery life: put (durable before the webhook gets its 2xx) -> claim (this
 * node sends it down a tunnel; the claim is a lease) -> ack (the agent has it
 * in its inbox; never sent again). An unacked delivery whose lease expired,
 * or whose tenant says HELLO again, is claimed and sent again; the agent
 * drops sequence numbers it already holds.
 */
#ifndef MLC_RELAY_STORE_H
#define MLC_RELAY_STORE_H

#include <stddef.h>
#include <stdint.h>
#include "shared/mlc_crypto.h"
#include "shared/mlc_err.h"

#define TENANT_NAME_MAX 64 /* [A-Za-z0-9_-]{1,64} */

/* The key that seals tenant secrets (hook_secret, jira_client_secret,
 * zoho_token) at rest with AES-256-GCM. It lives outside the database: a
 * systemd credential ($CREDENTIALS_DIRECTORY/relay-key) or a 0600 key file.
 * The store records only a check value (an HMAC under the key), so it can
 * tell the wrong key or a missing key file from damage. */
struct store_key {
    uint8_t key[MLC_AES_KEY_LEN];
    char source[512]; /* the file it came from (or will be saved to), for messages */
    int unsaved;      /* the key file did not exist: a fresh key, saved on first use */
    int credential;   /* came from systemd's $CREDENTIALS_DIRECTORY: never written */
};

/* Load the key: $CREDENTIALS_DIRECTORY/relay-key when that exists, else
 * key_file. A missing key_file gives a fresh random key (unsaved = 1) that
 * store_open() writes 0600 only when the store has no secrets sealed with
 * another key. MLC_E_INVAL for a damaged key (not 32 bytes). */
enum mlc_rc store_key_load(struct store_key *k, const char *key_file, struct mlc_errbuf *err);
/* Write an unsaved key (temp file, fsync, link: a key file another process
 * created meanwhile wins and is loaded instead). */
enum mlc_rc store_key_save(struct store_key *k, struct mlc_errbuf *err);
void store_key_wipe(struct store_key *k);

/* In memory the secrets are clear (the verifier needs them); in the store
 * they are sealed (see struct store_key). */
struct tenant_rec {
    char name[TENANT_NAME_MAX + 1];
    char key_hash[65];          /* hex SHA-256 of the agent key; the key itself is never stored */
    char hook_secret[80];       /* Jira admin-webhook HMAC secret (needed in clear to verify) */
    char jira_client_secret[256]; /* OAuth app client secret for dynamic-webhook JWTs; "" = none */
    char zoho_token[51];        /* Zoho notification channel token (<= 50 chars) */
    long long created_ms;
    long long rotated_ms;       /* 0 = never */
};

struct delivery_in {
    const char *tenant;
    const char *kind;    /* "jira" or "zoho" */
    const char *ext_id;  /* sender's delivery identifier (idempotency key) */
    const char *body;    /* raw JSON body as received */
    size_t body_len;
    long long received_ms;
    /* out: */
    long long seq;       /* assigned sequence number (also for a duplicate) */
    int duplicate;       /* 1: (tenant, kind, ext_id) was already stored */
};

/* first <= seq <= last */
struct seq_range {
    long long first, last;
};

struct delivery_out {
    long long seq;
    char kind[8];
    char *ext_id;        /* heap */
    char *body;          /* heap, NUL-terminated */
    size_t body_len;
    long long received_ms;
};
void delivery_out_release(struct delivery_out *d, size_t n);

struct command_rec {
    long long id;
    char tenant[TENANT_NAME_MAX + 1];
    char *body;          /* heap JSON: {"command":"sync-now","flow":"..."} */
    long long created_ms;
    long long answered_ms; /* 0 = not yet */
    char *answer;        /* heap JSON STATUS body, NULL until answered */
};
void command_rec_release(struct command_rec *c);

struct store_stats {
    long long tenants;
    long long pending;   /* stored, not yet acked */
    long long acked;
    long long commands_pending;
};

struct store;

struct store_ops {
    const char *name; /* "sqlite" / "postgres" */
    void (*close)(struct store *s);

    /* tenants */
    enum mlc_rc (*tenant_add)(struct store *s, const struct tenant_rec *t, struct mlc_errbuf *err);
    /* Replace every field of an existing tenant (rotate, set secrets). */
    enum mlc_rc (*tenant_update)(struct store *s, const struct tenant_rec *t, struct mlc_errbuf *err);
    /* MLC_E_NOTFOUND when absent. */
    enum mlc_rc (*tenant_get)(struct store *s, const char *name, struct tenant_rec *out,
                              struct mlc_errbuf *err);
    /* *out heap array of *n tenants ordered by name. */
    enum mlc_rc (*tenant_list)(struct store *s, struct tenant_rec **out, size_t *n,
                               struct mlc_errbuf *err);

    /* deliveries: all n in one transaction (group commit); sets seq/duplicate
     * of each. On return MLC_OK every non-duplicate item is durable. A
     * duplicate keeps the first body. Wakes the nodes listening for each
     * tenant (NOTIFY) as part of the commit. */
    enum mlc_rc (*deliveries_put)(struct store *s, struct delivery_in *items, size_t n,
                                  struct mlc_errbuf *err);
    /* optional (SQLite), for a loop that must not wait for the disk: as
     * deliveries_put, but on MLC_OK the items are stored and visible and
     * become durable only when a sync() started after the return has
     * returned. Until then nothing of them may leave the relay: the caller
     * answers their senders afterwards and sets claim_below. */
    enum mlc_rc (*deliveries_put_lazy)(struct store *s, struct delivery_in *items, size_t n,
                                       struct mlc_errbuf *err);
    /* Lazy puts need sync_start() (on the store's thread, once) to return
     * MLC_OK; then sync() runs on one other thread only (it has what it
     * needs of its own) and returns 0 or an errno. */
    enum mlc_rc (*sync_start)(struct store *s, struct mlc_errbuf *err);
    int (*sync)(struct store *s);
    /* Claim for this node up to max unacked deliveries of tenant, oldest
     * first, that are not leased to anyone (never sent, lease expired, or
     * released), leasing them for lease_ms. Returns the count (>= 0) or -1. */
    int (*deliveries_claim)(struct store *s, const char *tenant, int max, long long now_ms,
                            long long lease_ms, struct delivery_out *out, struct mlc_errbuf *err);
    /* (claims hand out seqs below s->claim_below only, when it is not 0) */
    /* Release this node's leases of tenant (its tunnel went away or said
     * HELLO again), so the next claim hands them out at once. */
    enum mlc_rc (*deliveries_release)(struct store *s, const char *tenant, struct mlc_errbuf *err);
    /* Mark acked; unknown or foreign (other tenant) seqs are ignored. */
    enum mlc_rc (*deliveries_ack)(struct store *s, const char *tenant, const long long *seqs,
                                  size_t n, long long now_ms, struct mlc_errbuf *err);
    /* The same for every seq of the n ranges (one transaction): what agents
     * acknowledge in ACKS frames, and single ACKs merged. *acked (may be
     * NULL): how many deliveries this marked acked. */
    enum mlc_rc (*deliveries_ack_ranges)(struct store *s, const char *tenant,
                                         const struct seq_range *r, size_t n, long long now_ms,
                                         long long *acked, struct mlc_errbuf *err);

    /* operator commands (mlc-relay command ...), answered over the tunnel */
    enum mlc_rc (*command_put)(struct store *s, const char *tenant, const char *body,
                               long long now_ms, long long *id, struct mlc_errbuf *err);
    /* Unsent commands of tenant, oldest first, marked sent. Count or -1. */
    int (*command_claim)(struct store *s, const char *tenant, int max, long long now_ms,
                         struct command_rec *out, struct mlc_errbuf *err);
    enum mlc_rc (*command_answer)(struct store *s, long long id, const char *answer,
                                  long long now_ms, struct mlc_errbuf *err);
    enum mlc_rc (*command_get)(struct store *s, long long id, struct command_rec *out,
                               struct mlc_errbuf *err);
    /* Names of tenants with unsent commands (cheap: polled by every node a
     * few times a second). Count (<= max) or -1. */
    int (*command_tenants)(struct store *s, char (*names)[TENANT_NAME_MAX + 1], int max,
                           struct mlc_errbuf *err);

    /* cross-node wake-ups: a file descriptor to poll for readability (-1 =
     * none, e.g. SQLite), and a drain that calls cb once per tenant named
     * in the notifications received (what = "delivery" or "command"). */
    int (*wake_fd)(struct store *s);
    void (*wake_drain)(struct store *s, void (*cb)(void *arg, const char *tenant, const char *what),
                       void *arg);

    enum mlc_rc (*stats)(struct store *s, struct store_stats *out, struct mlc_errbuf *err);

    /* small settings of the store itself (relay_meta): get copies the value
     * (MLC_E_NOTFOUND when absent); put_new inserts it unless the name
     * exists (the first writer wins). */
    enum mlc_rc (*meta_get)(struct store *s, const char *name, char *out, size_t n,
                            struct mlc_errbuf *err);
    enum mlc_rc (*meta_put_new)(struct store *s, const char *name, const char *value,
                                struct mlc_errbuf *err);
    /* optional: make rewritten rows' old versions unreadable from the files
     * (SQLite: checkpoint and truncate the WAL) */
    void (*scrub)(struct store *s);
};

/* A secret opened lately, kept with exactly what it was opened from: the
 * verifier reads its tenant's secrets for every webhook, and the same
 * sealed text opens to the same secret (a new secret is sealed anew). */
#define UNSEAL_CACHE 16
struct unseal_entry {
    char tenant[TENANT_NAME_MAX + 1];
    char field[24];
    char stored[400]; /* longer sealed values are not kept */
    char clear[256];
};

struct store {
    const struct store_ops *ops;
    char node[64];        /* this relay node's id, recorded on leases */
    struct store_key key; /* seals tenant secrets */
    unsigned long clear_read; /* secrets read back unsealed (rows of an older relay) */
    /* 0, or the first seq of the oldest lazy put not yet synced: claims
     * stop below it (back ends with deliveries_put_lazy honour it) */
    long long claim_below;
    struct unseal_entry unsealed[UNSEAL_CACHE];
    unsigned unsealed_next;
};

/* Zero the key and the opened secrets (the back ends' close calls this). */
void store_wipe(struct store *s);

/* For the back ends: a secret as stored ("" stays "", else "enc1:" and the
 * base64 of the AES-GCM box, bound to tenant and field); heap. */
char *store_seal(const struct store *s, const char *tenant, const char *field, const char *clear);
/* ... and back into dst (n bytes). A value without the prefix is an older
 * relay's clear text: copied, and counted in s->clear_read (store_open
 * seals those rows). MLC_E_AUTH when it does not open with s->key. */
enum mlc_rc store_unseal(struct store *s, const char *tenant, const char *field, const char *stored,
                         char *dst, size_t n, struct mlc_errbuf *err);

/* Tenant names: [A-Za-z0-9_-]{1,64}; reads no more than the field holds. */
int tenant_name_ok(const char *name);

/* The checks every back end makes on a deliveries_put batch before storing
 * anything (tenant, kind, id and body present; kind 1-7 characters; body
 * under 2 GiB); clears each item's seq and duplicate. */
enum mlc_rc store_check_batch(struct delivery_in *items, size_t n, struct mlc_errbuf *err);

/* Open by URL-ish spec: "sqlite:/path/relay.db" or a PostgreSQL conninfo
 * ("postgres://..." / "postgresql://..." / "host=... dbname=..."). Creates
 * the schema when missing. Checks key against the store's check value (the
 * wrong key, or a missing key file for a store that has sealed secrets, is
 * MLC_E_AUTH with a message saying what to restore), saves an unsaved key
 * when the store needs one, and seals the clear secrets an older relay left. */
enum mlc_rc store_open(struct store **out, const char *spec, const char *node,
                       struct store_key *key, struct mlc_errbuf *err);
/* The back ends alone (no key check, no sealing of old rows). */
enum mlc_rc store_sqlite_open(struct store **out, const char *path, const char *node,
                              struct mlc_errbuf *err);
enum mlc_rc store_pg_open(struct store **out, const char *conninfo, const char *node,
                          struct mlc_errbuf *err);

#endif
