/* SPDX-License-Identifier: Apache-2.0
 * store_key: the key that seals tenant secrets, from a systemd credential or
 * a 0600 key file (see struct store_key in store.h). The same file format as
 * the agent's secret.key: 32 raw bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "relay/store.h"
#include "shared/mlc_log.h"

#define CREDENTIAL_NAME "relay-key"

/* 32 bytes from path into k->key; MLC_E_NOTFOUND when the file is absent. */
static enum mlc_rc key_read(struct store_key *k, const char *path, struct mlc_errbuf *err)
{
    struct stat sb;
    uint8_t extra;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        if (errno == ENOENT) {
            return MLC_E_NOTFOUND;
        }
        mlc_errf(err, "cannot open the relay key file '%s': %s (it must be readable by the relay)",
                 path, strerror(errno));
        return MLC_E_IO;
    }
    if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) != 0 && !k->credential) {
        mlc_warn("relay key file '%s' is readable by group or others: run chmod 600 '%s'", path, path);
    }
    n = read(fd, k->key, sizeof(k->key));
    if (n == (ssize_t)sizeof(k->key) && read(fd, &extra, 1) != 0) {
        n = -1; /* longer than a key */
    }
    close(fd);
    if (n != (ssize_t)sizeof(k->key)) {
        mlc_errf(err, "relay key file '%s' is damaged (expected exactly %d bytes): restore it from "
                 "backup; without it the tenants' secrets cannot be read", path, MLC_AES_KEY_LEN);
        return MLC_E_INVAL;
    }
    return MLC_OK;
}

enum mlc_rc store_key_load(struct store_key *k, const char *key_file, struct mlc_errbuf *err)
{
    const char *cred = getenv("CREDENTIALS_DIRECTORY");
    enum mlc_rc rc;

    memset(k, 0, sizeof(*k));
    if (cred != NULL && cred[0] != '\0') {
        snprintf(k->source, sizeof(k->source), "%s/" CREDENTIAL_NAME, cred);
        k->credential = 1;
        rc = key_read(k, k->source, err);
        if (rc != MLC_E_NOTFOUND) {
            return rc;
        }
        k->credential = 0;
    }
    if (key_file == NULL || key_file[0] == '\0') {
        mlc_errf(err, "relay.key_file is empty: set it to a path such as "
                      "/var/lib/ml-connector/relay-secret.key (or give systemd credential '"
                      CREDENTIAL_NAME "')");
        return MLC_E_INVAL;
    }
    snprintf(k->source, sizeof(k->source), "%s", key_file);
    rc = key_read(k, key_file, err);
    if (rc != MLC_E_NOTFOUND) {
        return rc;
    }
    if (mlc_random(k->key, sizeof(k->key)) != MLC_OK) {
        mlc_errf(err, "cannot get random bytes for a new relay key '%s'", key_file);
        return MLC_E_IO;
    }
    k->unsaved = 1;
    return MLC_OK;
}

enum mlc_rc store_key_save(struct store_key *k, struct mlc_errbuf *err)
{
    char tmp[sizeof(k->source) + 32], dir[sizeof(k->source)];
    struct stat ds;
    int fd, dfd;

    if (!k->unsaved) {
        return MLC_OK;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", k->source, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        mlc_errf(err, "cannot create the relay key file '%s': %s (does its directory exist, "
                 "writable by the relay?)", tmp, strerror(errno));
        return MLC_E_IO;
    }
    /* umask may only take bits away from 0600; make sure of it anyway */
    if (fchmod(fd, 0600) != 0 || write(fd, k->key, sizeof(k->key)) != (ssize_t)sizeof(k->key) ||
        fsync(fd) != 0) {
        mlc_errf(err, "cannot write the relay key file '%s': %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return MLC_E_IO;
    }
    snprintf(dir, sizeof(dir), "%s", k->source);
    /* root (a CLI run by hand) hands the file to the directory's owner, the service user */
    if (geteuid() == 0 && stat(dirname(dir), &ds) == 0 && ds.st_uid != 0 &&
        fchown(fd, ds.st_uid, ds.st_gid) != 0) {
        mlc_warn("cannot give the relay key file '%s' to uid %u: %s", k->source, (unsigned)ds.st_uid,
                 strerror(errno));
    }
    close(fd);
    /* link() fails when another process created the key meanwhile: theirs wins */
    if (link(tmp, k->source) != 0) {
        int e = errno;
        unlink(tmp);
        if (e == EEXIST) {
            k->unsaved = 0;
            return key_read(k, k->source, err);
        }
        mlc_errf(err, "cannot install the relay key file '%s': %s", k->source, strerror(e));
        return MLC_E_IO;
    }
    unlink(tmp);
    snprintf(dir, sizeof(dir), "%s", k->source);
    dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    k->unsaved = 0;
    mlc_info("created relay key file '%s' (mode 0600): back it up with the store; without it the "
             "tenants' secrets cannot be read", k->source);
    return MLC_OK;
}

void store_key_wipe(struct store_key *k)
{
    if (k != NULL) {
        volatile uint8_t *p = k->key;
        for (size_t i = 0; i < sizeof(k->key); i++) {
            p[i] = 0;
        }
    }
}
