/* SPDX-License-Identifier: Apache-2.0
 * listen: the relay's `listen` setting, resolved to the one address the
 * server binds, and the check that it bound exactly that.
 *
 * libwebsockets 4.1 (Debian 12) takes the address as a string ("iface") and,
 * with IPv6 compiled in, binds an AF_INET6 socket: an IPv4 literal such as
 * 127.0.0.1 is then parsed into the wrong field of the sockaddr_in6 and the
 * socket ends up on [::], every address of the machine. So the relay resolves
 * the setting itself, tells lws the family (LWS_SERVER_OPTION_DISABLE_IPV6
 * for IPv4) and the numeric address, and afterwards reads the listening
 * socket's own address (getsockname) before serving anything.
 */
#ifndef MLC_RELAY_LISTEN_H
#define MLC_RELAY_LISTEN_H

#include <netinet/in.h>
#include <sys/socket.h>
#include "shared/mlc_err.h"

struct listen_addr {
    struct sockaddr_storage sa;
    int family;             /* AF_INET or AF_INET6 */
    int port;
    int wildcard;           /* 0.0.0.0 or :: (only when written so) */
    int loopback;           /* 127.0.0.0/8, ::1, ::ffff:127.x */
    char host[64];          /* numeric: "127.0.0.1", "::1" */
};

/* "127.0.0.1:8443", "[::1]:8443", "relay.example:443", "0.0.0.0:443",
 * "[::]:443". A host name is resolved and its first address is used (a
 * warning is logged when it has several). MLC_E_INVAL with a message naming
 * the setting otherwise (no port, "*:P", ":P", an unknown name). */
enum mlc_rc listen_resolve(const char *spec, struct listen_addr *out, struct mlc_errbuf *err);

/* Fill in family, port, host, wildcard and loopback from a sockaddr. */
void listen_addr_set(struct listen_addr *a, const struct sockaddr *sa);

/* The listening TCP socket of this process on port (0: any), as bound.
 * MLC_E_NOTFOUND when there is none. */
enum mlc_rc listen_bound(int port, struct listen_addr *out);

/* 1 when got is the address want asked for (same family and address; same
 * port unless want->port is 0). */
int listen_same(const struct listen_addr *want, const struct listen_addr *got);

#endif
