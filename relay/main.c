/* SPDX-License-Identifier: Apache-2.0
 * mlc-relay: command line.
 */
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "relay/hooks.h"
#include "relay/relay.h"
#include "relay/store.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "shared/mlc_sig.h"

#define DEFAULT_CONFIG "/etc/ml-connector/relay.json"

static volatile sig_atomic_t stop_flag;
void relay_wake(void);

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
    relay_wake();
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mlc-relay [-c CONFIG] [--store SPEC] [--listen HOST:PORT] [--node ID] COMMAND\n"
            "\n"
            "  run                         serve webhooks and agent tunnels until SIGINT/SIGTERM\n"
            "  tenant add NAME [--json]    create a tenant; prints its agent key, Jira webhook\n"
            "                              secret and Zoho channel token ONCE (only hashes of\n"
            "                              agent keys are stored)\n"
            "  tenant rotate NAME [--all] [--json]\n"
            "                              new agent key (--all: new webhook secret and Zoho token\n"
            "                              too); queued deliveries are kept\n"
            "  tenant set-secret NAME      read the Jira OAuth app's client secret from stdin\n"
            "                              (verifies JWTs on dynamic-webhook deliveries)\n"
            "  tenant list                 tenants, without secrets\n"
            "  command TENANT ping|sync-now [FLOW] [--wait SECONDS]\n"
            "                              send an operator command down the tenant's tunnel and\n"
            "                              print the agent's answer\n"
            "  version\n"
            "\n"
            "CONFIG defaults to " DEFAULT_CONFIG " when it exists; every setting has a default\n"
            "(listen 127.0.0.1:8443, store sqlite:/var/lib/ml-connector/relay.db).\n");
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *random_token(const char *prefix, size_t bytes)
{
    uint8_t raw[48];
    char *b64, *out;

    if (bytes > sizeof(raw) || mlc_random(raw, bytes) != MLC_OK) {
        return NULL;
    }
    b64 = mlc_b64url_encode(raw, bytes);
    out = mlc_xasprintf("%s%s", prefix, b64);
    free(b64);
    memset(raw, 0, sizeof(raw));
    return out;
}

static void key_hash(const char *key, char hex[65])
{
    uint8_t h[MLC_SHA256_LEN];

    mlc_sha256(key, strlen(key), h);
    mlc_hex(h, sizeof(h), hex);
}

static void print_secrets(const char *tenant, const char *key, const struct tenant_rec *t, int json,
                          int with_hooks)
{
    if (json) {
        cJSON *o = mlc_json_xobj();
        char *s;
        mlc_json_xadd_str(o, "tenant", tenant);
        mlc_json_xadd_str(o, "agent_key", key);
        if (with_hooks) {
            mlc_json_xadd_str(o, "jira_webhook_secret", t->hook_secret);
            mlc_json_xadd_str(o, "zoho_token", t->zoho_token);
        }
        s = mlc_json_print(o);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
        return;
    }
    printf("Tenant %s. These values are shown once; put them in the agent's secret store now:\n"
           "  agent key            %s\n",
           tenant, key);
    if (with_hooks) {
        printf("  Jira webhook secret  %s\n"
               "  Zoho channel token   %s\n",
               t->hook_secret, t->zoho_token);
    }
    printf("On the agent: printf %%s 'KEY' | mlc-agent secret set relay_key\n");
}

static int tenant_cmd(struct store *s, int argc, char **argv)
{
    struct mlc_errbuf err = { 0 };
    struct tenant_rec t;
    const char *sub = argc > 0 ? argv[0] : "";
    const char *name = argc > 1 ? argv[1] : NULL;
    int json = 0, all = 0;
    char *key = NULL, *hs = NULL, *zt = NULL;
    enum mlc_rc rc;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--all") == 0) {
            all = 1;
        } else {
            fprintf(stderr, "mlc-relay tenant %s: unknown option %s\n", sub, argv[i]);
            return 2;
        }
    }
    if (strcmp(sub, "list") == 0) {
        struct tenant_rec *ts = NULL;
        size_t n = 0;
        if (s->ops->tenant_list(s, &ts, &n, &err) != MLC_OK) {
            fprintf(stderr, "mlc-relay tenant list: %s\n", mlc_err_msg(&err));
            return 1;
        }
        printf("%-24s %-20s %-20s %-10s %s\n", "TENANT", "CREATED (UTC)", "KEY ROTATED (UTC)",
               "KEY HASH", "JIRA CLIENT SECRET");
        for (size_t i = 0; i < n; i++) {
            char c[32] = "-", r[32] = "-";
            time_t tc = (time_t)(ts[i].created_ms / 1000), tr = (time_t)(ts[i].rotated_ms / 1000);
            struct tm tm;
            strftime(c, sizeof(c), "%Y-%m-%d %H:%M:%S", gmtime_r(&tc, &tm));
            if (ts[i].rotated_ms) {
                strftime(r, sizeof(r), "%Y-%m-%d %H:%M:%S", gmtime_r(&tr, &tm));
            }
            printf("%-24s %-20s %-20s %.8s…  %s\n", ts[i].name, c, r, ts[i].key_hash,
                   ts[i].jira_client_secret[0] ? "set" : "not set");
        }
        memset(ts, 0, n * sizeof(*ts));
        free(ts);
        return 0;
    }
    if (name == NULL || !tenant_name_ok(name)) {
        fprintf(stderr, "mlc-relay tenant %s: a tenant NAME of 1-64 letters, digits, '_' or '-' is "
                        "required (see mlc-relay --help)\n", sub);
        return 2;
    }
    if (strcmp(sub, "add") == 0) {
        memset(&t, 0, sizeof(t));
        key = random_token("mlck_", 32);
        hs = random_token("", 32);
        zt = random_token("z", 30);
        if (key == NULL || hs == NULL || zt == NULL) {
            fprintf(stderr, "mlc-relay tenant add: no randomness from the kernel (getrandom failed)\n");
            return 1;
        }
        snprintf(t.name, sizeof(t.name), "%s", name);
        key_hash(key, t.key_hash);
        snprintf(t.hook_secret, sizeof(t.hook_secret), "%s", hs);
        snprintf(t.zoho_token, sizeof(t.zoho_token), "%s", zt);
        t.created_ms = now_ms();
        rc = s->ops->tenant_add(s, &t, &err);
        if (rc != MLC_OK) {
            fprintf(stderr, "mlc-relay tenant add %s: %s\n", name, mlc_err_msg(&err));
        } else {
            print_secrets(name, key, &t, json, 1);
        }
    } else if (strcmp(sub, "rotate") == 0 || strcmp(sub, "set-secret") == 0) {
        rc = s->ops->tenant_get(s, name, &t, &err);
        if (rc != MLC_OK) {
            fprintf(stderr, "mlc-relay tenant %s %s: %s\n", sub, name,
                    rc == MLC_E_NOTFOUND ? "no such tenant (see 'mlc-relay tenant list')" : mlc_err_msg(&err));
            return 1;
        }
        if (strcmp(sub, "rotate") == 0) {
            key = random_token("mlck_", 32);
            if (key == NULL) {
                fprintf(stderr, "mlc-relay tenant rotate: no randomness from the kernel\n");
                return 1;
            }
            key_hash(key, t.key_hash);
            if (all) {
                hs = random_token("", 32);
                zt = random_token("z", 30);
                snprintf(t.hook_secret, sizeof(t.hook_secret), "%s", hs);
                snprintf(t.zoho_token, sizeof(t.zoho_token), "%s", zt);
            }
            t.rotated_ms = now_ms();
        } else {
            char buf[sizeof(t.jira_client_secret) + 2];
            size_t n = fread(buf, 1, sizeof(buf) - 1, stdin);
            buf[n] = '\0';
            while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
                buf[--n] = '\0';
            }
            if (n == 0 || n >= sizeof(t.jira_client_secret)) {
                fprintf(stderr, "mlc-relay tenant set-secret: expected the client secret (1-%zu "
                                "bytes) on standard input\n", sizeof(t.jira_client_secret) - 1);
                memset(buf, 0, sizeof(buf));
                return 2;
            }
            memcpy(t.jira_client_secret, buf, n + 1);
            memset(buf, 0, sizeof(buf));
        }
        rc = s->ops->tenant_update(s, &t, &err);
        if (rc != MLC_OK) {
            fprintf(stderr, "mlc-relay tenant %s %s: %s\n", sub, name, mlc_err_msg(&err));
        } else if (key != NULL) {
            print_secrets(name, key, &t, json, all);
        } else {
            printf("tenant %s: Jira client secret stored\n", name);
        }
    } else {
        fprintf(stderr, "mlc-relay tenant: unknown subcommand '%s' (add, rotate, set-secret, list)\n", sub);
        return 2;
    }
    memset(&t, 0, sizeof(t));
    free(key);
    free(hs);
    free(zt);
    return rc == MLC_OK ? 0 : 1;
}

static int command_cmd(struct store *s, int argc, char **argv)
{
    struct mlc_errbuf err = { 0 };
    struct tenant_rec t;
    const char *tenant = argc > 0 ? argv[0] : NULL, *what = argc > 1 ? argv[1] : NULL;
    const char *flow = NULL;
    double wait_s = 30;
    long long id;
    cJSON *o;
    char *body;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--wait") == 0 && i + 1 < argc) {
            wait_s = atof(argv[++i]);
        } else if (flow == NULL && argv[i][0] != '-') {
            flow = argv[i];
        } else {
            fprintf(stderr, "mlc-relay command: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (tenant == NULL || what == NULL || (strcmp(what, "ping") != 0 && strcmp(what, "sync-now") != 0)) {
        fprintf(stderr, "usage: mlc-relay command TENANT ping|sync-now [FLOW] [--wait SECONDS]\n");
        return 2;
    }
    if (s->ops->tenant_get(s, tenant, &t, &err) != MLC_OK) {
        fprintf(stderr, "mlc-relay command: tenant '%s': %s\n", tenant,
                mlc_err_msg(&err)[0] ? mlc_err_msg(&err) : "no such tenant");
        return 1;
    }
    o = mlc_json_xobj();
    mlc_json_xadd_str(o, "command", what);
    if (flow) {
        mlc_json_xadd_str(o, "flow", flow);
    }
    body = mlc_json_print(o);
    cJSON_Delete(o);
    if (s->ops->command_put(s, tenant, body, now_ms(), &id, &err) != MLC_OK) {
        fprintf(stderr, "mlc-relay command: storing the command failed: %s\n", mlc_err_msg(&err));
        free(body);
        return 1;
    }
    free(body);
    for (long long deadline = now_ms() + (long long)(wait_s * 1000);;) {
        struct command_rec c = { 0 };
        if (s->ops->command_get(s, id, &c, &err) == MLC_OK && c.answered_ms) {
            printf("%s\n", c.answer ? c.answer : "{}");
            command_rec_release(&c);
            return 0;
        }
        command_rec_release(&c);
        if (now_ms() > deadline) {
            fprintf(stderr, "mlc-relay command %lld: no answer from tenant %s's agent within %.0fs "
                            "(is its tunnel up? see /metrics mlc_relay_tunnels); it stays queued\n",
                    id, tenant, wait_s);
            return 3;
        }
        usleep(100 * 1000);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' }, { "store", required_argument, NULL, 's' },
        { "listen", required_argument, NULL, 'l' }, { "node", required_argument, NULL, 'n' },
        { "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
    };
    const char *config = NULL, *store_o = NULL, *listen_o = NULL, *node_o = NULL, *cmd;
    struct relay_cfg cfg;
    struct mlc_errbuf err = { 0 };
    struct store *s = NULL;
    struct store_key key;
    int c, rc, lvl;

    while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 's': store_o = optarg; break;
        case 'l': listen_o = optarg; break;
        case 'n': node_o = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    cmd = argv[optind];
    if (strcmp(cmd, "version") == 0) {
        printf("mlc-relay %s\n", MLC_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (config == NULL && access(DEFAULT_CONFIG, R_OK) == 0) {
        config = DEFAULT_CONFIG;
    }
    if (relay_cfg_load(&cfg, config, &err) != MLC_OK) {
        fprintf(stderr, "mlc-relay: %s\n", mlc_err_msg(&err));
        return 2;
    }
#define OVERRIDE(field, val)             \
    if (val) {                           \
        free(cfg.field);                 \
        cfg.field = mlc_xstrdup(val);    \
    }
    OVERRIDE(store, store_o)
    OVERRIDE(listen, listen_o)
    OVERRIDE(node, node_o)
#undef OVERRIDE
    if (cfg.node[0] == '\0') {
        char host[64] = "relay";
        const char *port = strrchr(cfg.listen, ':');
        gethostname(host, sizeof(host) - 1);
        free(cfg.node);
        cfg.node = mlc_xasprintf("%s:%s", host, port ? port + 1 : "0");
    }
    lvl = mlc_log_parse_level(cfg.log_level);
    if (lvl < 0) {
        fprintf(stderr, "mlc-relay: log_level '%s' is not one of error, warn, info, debug\n", cfg.log_level);
        relay_cfg_release(&cfg);
        return 2;
    }
    if (getenv("MLC_LOG_LEVEL") == NULL) {
        mlc_log_level = lvl;
    }
    if (strcmp(cmd, "run") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
        /* the loop frees and takes the same sizes again all day: keep freed
         * memory instead of returning it (sbrk, munmap) and faulting it back
         * in, each return a TLB shootdown across the relay's threads */
        mallopt(M_TRIM_THRESHOLD, 64 << 20);
        mallopt(M_MMAP_THRESHOLD, 8 << 20);
        rc = relay_run(&cfg, &stop_flag);
        relay_cfg_release(&cfg);
        return rc;
    }
    if (strcmp(cmd, "tenant") != 0 && strcmp(cmd, "command") != 0) {
        fprintf(stderr, "mlc-relay: unknown command '%s'\n", cmd);
        usage(stderr);
        relay_cfg_release(&cfg);
        return 2;
    }
    rc = store_key_load(&key, cfg.key_file, &err) == MLC_OK &&
         store_open(&s, cfg.store, cfg.node, &key, &err) == MLC_OK;
    store_key_wipe(&key);
    if (!rc) {
        fprintf(stderr, "mlc-relay: %s\n", mlc_err_msg(&err));
        relay_cfg_release(&cfg);
        return 1;
    }
    if (strcmp(cmd, "tenant") == 0) {
        rc = tenant_cmd(s, argc - optind - 1, argv + optind + 1);
    } else {
        rc = command_cmd(s, argc - optind - 1, argv + optind + 1);
    }
    s->ops->close(s);
    relay_cfg_release(&cfg);
    return rc;
}
