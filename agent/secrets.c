/* SPDX-License-Identifier: Apache-2.0
 * secrets: AES-256-GCM sealed values in the state database; the 32-byte key
 * lives in a 0600 key file created on install (or on first use).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "agent/secrets.h"
#include "agent/connectors/connector.h"
#include "agent/state.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_log.h"

struct secret_store {
    struct state *st;
    uint8_t key[MLC_AES_KEY_LEN];
};

static enum mlc_rc key_create(const char *path, uint8_t *key, struct mlc_errbuf *err)
{
    char tmp[4096];
    int fd;

    if (mlc_random(key, MLC_AES_KEY_LEN) != MLC_OK) {
        mlc_errf(err, "cannot get random bytes for the key file '%s'", path);
        return MLC_E_IO;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        mlc_errf(err, "cannot create key file '%s': %s", tmp, strerror(errno));
        return MLC_E_IO;
    }
    if (write(fd, key, MLC_AES_KEY_LEN) != MLC_AES_KEY_LEN || fsync(fd) != 0) {
        mlc_errf(err, "cannot write key file '%s': %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return MLC_E_IO;
    }
    close(fd);
    /* link() fails if another process created the key meanwhile: keep theirs */
    if (link(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        if (e == EEXIST) {
            return MLC_E_NOTFOUND; /* caller re-reads */
        }
        mlc_errf(err, "cannot install key file '%s': %s", path, strerror(e));
        return MLC_E_IO;
    }
    unlink(tmp);
    mlc_info("created key file '%s' (mode 0600)", path);
    return MLC_OK;
}

static enum mlc_rc key_load(const char *path, uint8_t *key, struct mlc_errbuf *err)
{
    struct stat sb;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        if (errno == ENOENT) {
            return MLC_E_NOTFOUND;
        }
        mlc_errf(err, "cannot open key file '%s': %s", path, strerror(errno));
        return MLC_E_IO;
    }
    if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) != 0) {
        mlc_warn("key file '%s' is readable by group or others: run chmod 600 '%s'", path, path);
    }
    n = read(fd, key, MLC_AES_KEY_LEN);
    close(fd);
    if (n != MLC_AES_KEY_LEN) {
        mlc_errf(err, "key file '%s' is damaged (expected %d bytes); restore it from backup, or "
                 "delete it and set every secret again", path, MLC_AES_KEY_LEN);
        return MLC_E_INVAL;
    }
    return MLC_OK;
}

enum mlc_rc secrets_open(struct secret_store **out, struct state *st, const char *key_file,
                         int create, struct mlc_errbuf *err)
{
    struct secret_store *s = mlc_xcalloc(1, sizeof(*s));
    enum mlc_rc rc = key_load(key_file, s->key, err);

    if (rc == MLC_E_NOTFOUND && create) {
        rc = key_create(key_file, s->key, err);
        if (rc == MLC_E_NOTFOUND) {
            rc = key_load(key_file, s->key, err);
        }
    } else if (rc == MLC_E_NOTFOUND) {
        mlc_errf(err, "key file '%s' does not exist: run 'mlc-agent secret set NAME' once to create it",
                 key_file);
    }
    if (rc != MLC_OK) {
        free(s);
        return rc;
    }
    s->st = st;
    *out = s;
    return MLC_OK;
}

void secrets_close(struct secret_store *s)
{
    if (s != NULL) {
        memset(s->key, 0, sizeof(s->key));
        free(s);
    }
}

enum mlc_rc secrets_get(struct secret_store *s, const char *name, char **out, struct mlc_errbuf *err)
{
    void *blob = NULL;
    uint8_t *plain = NULL;
    size_t plen = 0;
    int len = 0;
    enum mlc_rc rc;

    if (s == NULL) {
        mlc_errf(err, "secret '%s': no secret store is open (set agent.key_file)", name);
        return MLC_E_INVAL;
    }
    rc = state_secret_get(s->st, name, &blob, &len, err);
    if (rc == MLC_E_NOTFOUND) {
        mlc_errf(err, "secret '%s' is not set: run 'mlc-agent secret set %s' and type the value", name,
                 name);
        return rc;
    }
    if (rc != MLC_OK) {
        return rc;
    }
    rc = mlc_open(s->key, name, strlen(name), blob, (size_t)len, &plain, &plen);
    free(blob);
    if (rc != MLC_OK) {
        mlc_errf(err, "secret '%s' cannot be decrypted with the current key file: set it again "
                 "with 'mlc-agent secret set %s'", name, name);
        return rc;
    }
    mlc_log_add_secret((const char *)plain);
    *out = (char *)plain;
    return MLC_OK;
}

enum mlc_rc secrets_put(struct secret_store *s, const char *name, const char *value,
                        struct mlc_errbuf *err)
{
    uint8_t *sealed = NULL;
    size_t slen = 0;
    enum mlc_rc rc;

    rc = mlc_seal(s->key, name, strlen(name), value, strlen(value), &sealed, &slen);
    if (rc != MLC_OK) {
        mlc_errf(err, "cannot encrypt secret '%s'", name);
        return rc;
    }
    rc = state_secret_put(s->st, name, sealed, (int)slen, err);
    free(sealed);
    if (rc == MLC_OK) {
        mlc_log_add_secret(value);
    }
    return rc;
}

enum mlc_rc secrets_resolve(struct secret_store *s, const char *ref, char **out,
                            struct mlc_errbuf *err)
{
    if (ref == NULL || ref[0] == '\0') {
        *out = mlc_xstrdup("");
        return MLC_OK;
    }
    if (strncmp(ref, "secret:", 7) == 0) {
        return secrets_get(s, ref + 7, out, err);
    }
    if (strstr(ref, "${") != NULL) {
        *out = mlc_conf_expand_env(ref, "secret reference", err);
        if (*out == NULL) {
            return MLC_E_INVAL;
        }
    } else {
        *out = mlc_xstrdup(ref);
    }
    mlc_log_add_secret(*out);
    return MLC_OK;
}

static enum mlc_rc v_resolve(void *ctx, const char *ref, char **out, struct mlc_errbuf *err)
{
    return secrets_resolve(ctx, ref, out, err);
}

static enum mlc_rc v_get(void *ctx, const char *name, char **out, struct mlc_errbuf *err)
{
    return secrets_get(ctx, name, out, err);
}

static enum mlc_rc v_put(void *ctx, const char *name, const char *value, struct mlc_errbuf *err)
{
    return secrets_put(ctx, name, value, err);
}

void secrets_vault(struct secret_store *s, struct vault *out)
{
    out->ctx = s;
    out->resolve = v_resolve;
    out->get = v_get;
    out->put = v_put;
}
