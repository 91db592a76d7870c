/* SPDX-License-Identifier: Apache-2.0
 * secrets: credentials encrypted at rest (AES-256-GCM) in the state database,
 * with the key in a 0600 key file. Connectors resolve config references:
 *   "secret:NAME"  -> the store;   "${VAR}" -> the environment;
 *   anything else  -> a literal (accepted, with a warning at check-config).
 */
#ifndef MLC_SECRETS_H
#define MLC_SECRETS_H

#include "shared/mlc_err.h"

struct secret_store;
struct state;

/* Loads (or, when create is nonzero, creates with mode 0600) the key file. */
enum mlc_rc secrets_open(struct secret_store **out, struct state *st, const char *key_file,
                         int create, struct mlc_errbuf *err);
void secrets_close(struct secret_store *s);

/* *out is a heap copy (caller frees and should wipe). MLC_E_NOTFOUND when absent.
 * Every value returned is registered with the log redactor. */
enum mlc_rc secrets_get(struct secret_store *s, const char *name, char **out, struct mlc_errbuf *err);
/* Durable when it returns MLC_OK (committed). */
enum mlc_rc secrets_put(struct secret_store *s, const char *name, const char *value,
                        struct mlc_errbuf *err);
/* Resolve a config reference as described above. */
enum mlc_rc secrets_resolve(struct secret_store *s, const char *ref, char **out,
                            struct mlc_errbuf *err);

/* The store as connectors see it (agent/connectors/connector.h). */
struct vault;
void secrets_vault(struct secret_store *s, struct vault *out);

#endif
