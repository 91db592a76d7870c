/* SPDX-License-Identifier: Apache-2.0
 * listen: resolve the `listen` setting and check what was bound (listen.h).
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "relay/listen.h"
#include "shared/mlc_log.h"

void listen_addr_set(struct listen_addr *a, const struct sockaddr *sa)
{
    memset(a, 0, sizeof(*a));
    a->family = sa->sa_family;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        uint32_t ip = ntohl(s4->sin_addr.s_addr);
        memcpy(&a->sa, s4, sizeof(*s4));
        a->port = ntohs(s4->sin_port);
        a->wildcard = ip == INADDR_ANY;
        a->loopback = (ip >> 24) == 127;
        inet_ntop(AF_INET, &s4->sin_addr, a->host, sizeof(a->host));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *b = s6->sin6_addr.s6_addr;
        memcpy(&a->sa, s6, sizeof(*s6));
        a->port = ntohs(s6->sin6_port);
        a->wildcard = IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr);
        a->loopback = IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr) ||
                      (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) && b[12] == 127);
        inet_ntop(AF_INET6, &s6->sin6_addr, a->host, sizeof(a->host));
    }
}

enum mlc_rc listen_resolve(const char *spec, struct listen_addr *out, struct mlc_errbuf *err)
{
    char host[256];
    const char *colon, *hs = spec;
    size_t hl;
    char *end;
    long port;
    struct addrinfo hints, *res = NULL, *ai;
    int rc, n = 0;

    memset(out, 0, sizeof(*out));
    if (spec == NULL || spec[0] == '\0') {
        mlc_errf(err, "relay.listen is empty: write ADDRESS:PORT, e.g. 127.0.0.1:8443");
        return MLC_E_INVAL;
    }
    if (spec[0] == '[') {
        const char *rb = strchr(spec, ']');
        if (rb == NULL || rb[1] != ':') {
            mlc_errf(err, "relay.listen '%s': an IPv6 address is written [ADDRESS]:PORT, e.g. [::1]:8443",
                     spec);
            return MLC_E_INVAL;
        }
        hs = spec + 1;
        hl = (size_t)(rb - hs);
        colon = rb + 1;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL || memchr(spec, ':', (size_t)(colon - spec)) != NULL) {
            mlc_errf(err, "relay.listen '%s' is not ADDRESS:PORT (e.g. 127.0.0.1:8443; IPv6 as "
                     "[::1]:8443)", spec);
            return MLC_E_INVAL;
        }
        hl = (size_t)(colon - spec);
    }
    port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
        mlc_errf(err, "relay.listen '%s': the port must be a number from 0 to 65535", spec);
        return MLC_E_INVAL;
    }
    if (hl == 0 || (hl == 1 && hs[0] == '*')) {
        mlc_errf(err, "relay.listen '%s': no address; write the one to listen on (127.0.0.1:%ld), "
                 "or 0.0.0.0:%ld / [::]:%ld for every address of this machine", spec, port, port, port);
        return MLC_E_INVAL;
    }
    if (hl >= sizeof(host)) {
        mlc_errf(err, "relay.listen '%s': the address is too long", spec);
        return MLC_E_INVAL;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = spec[0] == '[' ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        mlc_errf(err, "relay.listen '%s': cannot resolve '%s': %s", spec, host, gai_strerror(rc));
        return MLC_E_INVAL;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) {
            continue;
        }
        if (n++ == 0) {
            listen_addr_set(out, ai->ai_addr);
        }
    }
    freeaddrinfo(res);
    if (n == 0) {
        mlc_errf(err, "relay.listen '%s': '%s' has no IPv4 or IPv6 address", spec, host);
        return MLC_E_INVAL;
    }
    if (n > 1) {
        mlc_warn("relay: listen host '%s' has %d addresses; listening on the first, %s only "
                 "(write an address to choose)", host, n, out->host);
    }
    out->port = (int)port;
    if (out->family == AF_INET) {
        ((struct sockaddr_in *)&out->sa)->sin_port = htons((uint16_t)port);
    } else {
        ((struct sockaddr_in6 *)&out->sa)->sin6_port = htons((uint16_t)port);
    }
    return MLC_OK;
}

enum mlc_rc listen_bound(int port, struct listen_addr *out)
{
    struct rlimit rl;
    int max = 1024;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (1u << 20)) {
        max = (int)rl.rlim_cur;
    }
    /* at start-up the listening socket is among the first descriptors */
    if (max > 4096) {
        max = 4096;
    }
    for (int fd = 0; fd < max; fd++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int acc = 0;
        socklen_t alen = sizeof(acc);
        struct listen_addr a;

        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &alen) != 0 || !acc) {
            continue;
        }
        if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
            continue;
        }
        if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) {
            continue;
        }
        listen_addr_set(&a, (struct sockaddr *)&ss);
        if (port == 0 || a.port == port) {
            *out = a;
            return MLC_OK;
        }
    }
    return MLC_E_NOTFOUND;
}

int listen_same(const struct listen_addr *want, const struct listen_addr *got)
{
    if (want->family != got->family || (want->port != 0 && want->port != got->port)) {
        return 0;
    }
    if (want->family == AF_INET) {
        return ((const struct sockaddr_in *)&want->sa)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)&got->sa)->sin_addr.s_addr;
    }
    return memcmp(&((const struct sockaddr_in6 *)&want->sa)->sin6_addr,
                  &((const struct sockaddr_in6 *)&got->sa)->sin6_addr, sizeof(struct in6_addr)) == 0;
}
