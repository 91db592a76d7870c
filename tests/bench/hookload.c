/* SPDX-License-Identifier: Apache-2.0
 * hookload: a webhook load generator for `make bench` (a second process on
 * loopback). Posts signed ~2 KB Jira webhooks to one relay over keep-alive
 * HTTP/1.1 connections, either as fast as the relay answers (closed loop,
 * --rate 0) or paced at --rate per second, and prints one JSON line:
 *   {"sent":N,"ok":N,"failed":N,"seconds":S,"per_s":R,"p50_ms":..,"p99_ms":..,"start_ms":T}
 * start_ms is the wall clock (ms since the epoch) just before the first send,
 * for measures that end in another process (the agent's inbox).
 * One thread, poll(); every request has its own X-Atlassian-Webhook-Identifier
 * so each is stored (the signature covers the body only).
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_crypto.h"

struct conn {
    int fd;
    int busy;
    double sent_at;
    char rbuf[4096];
    size_t rlen;
};

static double mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int dial(int port)
{
    struct sockaddr_in a = { 0 };
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("hookload: connect to the relay");
        exit(2);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 1: a whole response is in c->rbuf (status in *st); 0: need more; -1: closed/bad */
static int response_done(struct conn *c, int *st)
{
    char *end, *cl;
    size_t hdr, body = 0;

    c->rbuf[c->rlen] = '\0';
    end = strstr(c->rbuf, "\r\n\r\n");
    if (end == NULL) {
        return c->rlen >= sizeof(c->rbuf) - 1 ? -1 : 0;
    }
    hdr = (size_t)(end - c->rbuf) + 4;
    cl = strcasestr(c->rbuf, "content-length:");
    if (cl != NULL && cl < end) {
        body = (size_t)strtoul(cl + 15, NULL, 10);
    }
    if (c->rlen < hdr + body) {
        return 0;
    }
    *st = atoi(c->rbuf + 9);
    memmove(c->rbuf, c->rbuf + hdr + body, c->rlen - hdr - body);
    c->rlen -= hdr + body;
    return 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "port", required_argument, NULL, 'p' }, { "tenant", required_argument, NULL, 't' },
        { "secret", required_argument, NULL, 's' }, { "count", required_argument, NULL, 'n' },
        { "conns", required_argument, NULL, 'c' }, { "rate", required_argument, NULL, 'r' },
        { "size", required_argument, NULL, 'z' }, { "prefix", required_argument, NULL, 'x' },
        { NULL, 0, NULL, 0 },
    };
    int port = 0, count = 10000, nconns = 32, size = 2048, o;
    double rate = 0;
    const char *tenant = "bench", *secret = NULL, *prefix = "load";
    struct mlc_buf body = MLC_BUF_INIT;
    uint8_t mac[MLC_SHA256_LEN];
    char hex[2 * MLC_SHA256_LEN + 1], head[512];
    struct conn *cs;
    struct pollfd *pf;
    double *lat, t0, t1;
    long long start_ms;
    int sent = 0, done = 0, ok = 0, failed = 0;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 't': tenant = optarg; break;
        case 's': secret = optarg; break;
        case 'n': count = atoi(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'z': size = atoi(optarg); break;
        case 'x': prefix = optarg; break;
        default:
            fprintf(stderr, "usage: hookload --port P --secret S [--tenant T] [--count N] [--conns C] "
                            "[--rate PER_S (0 = closed loop)] [--size BYTES] [--prefix ID]\n");
            return 2;
        }
    }
    if (port <= 0 || secret == NULL || count <= 0 || nconns <= 0) {
        fprintf(stderr, "hookload: --port and --secret are required (see --help)\n");
        return 2;
    }
    mlc_buf_adds(&body, "{\"timestamp\":1718000000000,\"webhookEvent\":\"jira:issue_updated\","
                        "\"issue_event_type_name\":\"issue_generic\",\"user\":{\"accountId\":\"5b10bench\"},"
                        "\"issue\":{\"id\":\"10001\",\"key\":\"MFG-1\",\"fields\":{\"labels\":[\"bench\"],"
                        "\"status\":{\"id\":\"3\",\"name\":\"In Progress\"},\"description\":\"");
    while ((int)body.len < size - 120) {
        mlc_buf_adds(&body, "lorem ipsum ");
    }
    mlc_buf_adds(&body, "\"}},\"changelog\":{\"id\":\"1\",\"items\":[{\"field\":\"status\",\"fromString\":"
                        "\"To Do\",\"toString\":\"In Progress\"}]}}");
    mlc_hmac_sha256(secret, strlen(secret), body.ptr, body.len, mac);
    mlc_hex(mac, sizeof(mac), hex);
    cs = calloc((size_t)nconns, sizeof(*cs));
    pf = calloc((size_t)nconns, sizeof(*pf));
    lat = calloc((size_t)count, sizeof(*lat));
    for (int i = 0; i < nconns; i++) {
        cs[i].fd = dial(port);
    }
    start_ms = wall_ms();
    t0 = mono();
    while (done < count) {
        double now = mono(), next_due = 0;
        int timeout = 100;
        /* send on idle connections when due */
        for (int i = 0; i < nconns && sent < count; i++) {
            if (cs[i].busy) {
                continue;
            }
            if (rate > 0) {
                next_due = t0 + sent / rate;
                if (now < next_due) {
                    break;
                }
            }
            int hn = snprintf(head, sizeof(head),
                              "POST /hooks/jira/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                              "X-Hub-Signature: sha256=%s\r\nX-Atlassian-Webhook-Identifier: %s-%d\r\n\r\n",
                              tenant, body.len, hex, prefix, sent);
            if (write_all(cs[i].fd, head, (size_t)hn) || write_all(cs[i].fd, body.ptr, body.len)) {
                fprintf(stderr, "hookload: write failed: %s\n", strerror(errno));
                return 1;
            }
            cs[i].busy = 1;
            cs[i].sent_at = now;
            sent++;
        }
        if (rate > 0 && sent < count) {
            double wait = (t0 + sent / rate - mono()) * 1000;
            timeout = wait < 0 ? 0 : (int)wait + 1;
        }
        for (int i = 0; i < nconns; i++) {
            pf[i].fd = cs[i].busy ? cs[i].fd : -1;
            pf[i].events = POLLIN;
            pf[i].revents = 0;
        }
        if (poll(pf, (nfds_t)nconns, timeout) < 0 && errno != EINTR) {
            perror("hookload: poll");
            return 1;
        }
        for (int i = 0; i < nconns; i++) {
            int st;
            ssize_t r;
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            r = read(cs[i].fd, cs[i].rbuf + cs[i].rlen, sizeof(cs[i].rbuf) - 1 - cs[i].rlen);
            if (r <= 0) {
                fprintf(stderr, "hookload: the relay closed a connection after %d answers\n", done);
                return 1;
            }
            cs[i].rlen += (size_t)r;
            if (response_done(&cs[i], &st) == 1) {
                lat[done++] = (mono() - cs[i].sent_at) * 1000;
                if (st >= 200 && st < 300) {
                    ok++;
                } else {
                    failed++;
                }
                cs[i].busy = 0;
            }
        }
    }
    t1 = mono();
    qsort(lat, (size_t)done, sizeof(*lat), cmp_d);
    printf("{\"sent\":%d,\"ok\":%d,\"failed\":%d,\"seconds\":%.3f,\"per_s\":%.1f,\"p50_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"start_ms\":%lld}\n",
           sent, ok, failed, t1 - t0, done / (t1 - t0), lat[done / 2], lat[(int)(done * 0.99)], start_ms);
    for (int i = 0; i < nconns; i++) {
        close(cs[i].fd);
    }
    free(cs);
    free(pf);
    free(lat);
    mlc_buf_release(&body);
    return failed ? 1 : 0;
}
