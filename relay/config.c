/* SPDX-License-Identifier: Apache-2.0
 * config: mlc-relay's settings (a JSON object; every key optional).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "relay/relay.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_json.h"

static const struct conf_key relay_keys[] = {
    { "listen", CONF_STR, offsetof(struct relay_cfg, listen), "127.0.0.1:8443",
      "ADDRESS:PORT to listen on, exactly: 127.0.0.1:8443, [::1]:8443, relay.example:443; "
      "every address only as 0.0.0.0:P or [::]:P; plain HTTP only on loopback", 0, 0, NULL },
    { "store", CONF_STR, offsetof(struct relay_cfg, store), "sqlite:/var/lib/ml-connector/relay.db",
      "sqlite:PATH, or a PostgreSQL conninfo for several nodes", 0, 0, NULL },
    { "node", CONF_STR, offsetof(struct relay_cfg, node), "",
      "this node's id (default: hostname:port)", 0, 0, NULL },
    { "tls_cert", CONF_STR, offsetof(struct relay_cfg, tls_cert), "", "PEM certificate chain", 0, 0, NULL },
    { "tls_key", CONF_STR, offsetof(struct relay_cfg, tls_key), "", "PEM private key", 0, 0, NULL },
    { "log_level", CONF_STR, offsetof(struct relay_cfg, log_level), "info",
      "error, warn, info or debug", 0, 0, NULL },
    { "max_body", CONF_INT, offsetof(struct relay_cfg, max_body), "1048576",
      "largest webhook body in bytes (larger: 413)", 1024, 64L << 20, NULL },
    { "lease", CONF_DURATION, offsetof(struct relay_cfg, lease_s), "30s",
      "an unacked delivery is sent again after this", 1, 3600, NULL },
    { "heartbeat", CONF_DURATION, offsetof(struct relay_cfg, heartbeat_s), "20s",
      "tunnel PING interval; silent for 3x closes it", 1, 3600, NULL },
    { "window", CONF_INT, offsetof(struct relay_cfg, window), "256",
      "deliveries in flight per tunnel", 1, 65536, NULL },
    { "max_conns", CONF_INT, offsetof(struct relay_cfg, max_conns), "65536",
      "connections (file descriptors) the server may use", 64, 1L << 20, NULL },
    { "body_timeout", CONF_DURATION, offsetof(struct relay_cfg, body_timeout_s), "20s",
      "a webhook body must arrive in full within this after its headers (else 408 and close)",
      1, 600, NULL },
    { "key_file", CONF_STR, offsetof(struct relay_cfg, key_file), "/var/lib/ml-connector/relay-secret.key",
      "32-byte key (0600, created on first use) sealing tenant secrets in the store; "
      "$CREDENTIALS_DIRECTORY/relay-key wins when present", 0, 0, NULL },
    { 0 },
};

enum mlc_rc relay_cfg_load(struct relay_cfg *c, const char *path, struct mlc_errbuf *err)
{
    cJSON *doc = NULL, *empty = NULL;
    enum mlc_rc rc;

    memset(c, 0, sizeof(*c));
    if (path != NULL) {
        size_t len;
        char *text = mlc_read_file(path, 1u << 20, &len, err);
        if (text == NULL) {
            return MLC_E_INVAL;
        }
        doc = mlc_json_parse(text, len, path, err);
        free(text);
        if (doc == NULL) {
            return MLC_E_INVAL;
        }
        if (!cJSON_IsObject(doc)) {
            cJSON_Delete(doc);
            mlc_errf(err, "%s: expected a JSON object of relay settings", path);
            return MLC_E_INVAL;
        }
    }
    rc = mlc_conf_load(doc ? doc : (empty = mlc_json_xobj()), "relay", relay_keys, NULL, c, err);
    cJSON_Delete(doc);
    cJSON_Delete(empty);
    if (rc != MLC_OK) {
        return rc;
    }
    if ((c->tls_cert[0] != '\0') != (c->tls_key[0] != '\0')) {
        mlc_errf(err, "relay.tls_cert and relay.tls_key go together: set both or neither");
        return MLC_E_INVAL;
    }
    return MLC_OK;
}

void relay_cfg_release(struct relay_cfg *c)
{
    mlc_conf_release(relay_keys, c);
}
