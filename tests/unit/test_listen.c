/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: the relay's `listen` setting (relay/listen.c). Resolves only
 * literals and "localhost" (from /etc/hosts): no DNS traffic.
 */
#include <string.h>
#include "relay/listen.h"
#include "tinytest.h"

static void literals(void)
{
    struct listen_addr a;
    struct mlc_errbuf e = { 0 };

    CHECK_INT(listen_resolve("127.0.0.1:8443", &a, &e), MLC_OK);
    CHECK_INT(a.family, AF_INET);
    CHECK_STR(a.host, "127.0.0.1");
    CHECK_INT(a.port, 8443);
    CHECK(a.loopback && !a.wildcard);
    CHECK_INT(listen_resolve("127.8.9.10:1", &a, &e), MLC_OK);
    CHECK(a.loopback);
    CHECK_INT(listen_resolve("[::1]:8443", &a, &e), MLC_OK);
    CHECK_INT(a.family, AF_INET6);
    CHECK_STR(a.host, "::1");
    CHECK(a.loopback && !a.wildcard);
    CHECK_INT(listen_resolve("0.0.0.0:443", &a, &e), MLC_OK);
    CHECK(a.wildcard && !a.loopback);
    CHECK_INT(listen_resolve("[::]:443", &a, &e), MLC_OK);
    CHECK(a.wildcard && a.family == AF_INET6);
    CHECK_INT(listen_resolve("10.232.0.1:443", &a, &e), MLC_OK);
    CHECK(!a.wildcard && !a.loopback);
    CHECK_INT(listen_resolve("[::ffff:127.0.0.1]:80", &a, &e), MLC_OK);
    CHECK(a.loopback);
    CHECK_INT(listen_resolve("localhost:8443", &a, &e), MLC_OK);
    CHECK(a.loopback);
}

static void refused_with_a_reason(void)
{
    static const char *const bad[] = { "", "8443", "*:8443", ":8443", "::1:8443", "[::1]8443",
                                       "[::1:8443", "127.0.0.1:", "127.0.0.1:70000",
                                       "127.0.0.1:-1", "127.0.0.1:80x", "[127.0.0.1]:80" };
    struct listen_addr a;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct mlc_errbuf e = { 0 };
        if (listen_resolve(bad[i], &a, &e) != MLC_E_INVAL) {
            fprintf(stderr, "  listen '%s' was accepted\n", bad[i]);
            CHECK(0);
        }
        CHECK(strstr(mlc_err_msg(&e), "listen") != NULL);
    }
}

static void same_address(void)
{
    struct listen_addr want, got;
    struct mlc_errbuf e = { 0 };

    CHECK_INT(listen_resolve("127.0.0.1:8443", &want, &e), MLC_OK);
    CHECK_INT(listen_resolve("127.0.0.1:8443", &got, &e), MLC_OK);
    CHECK(listen_same(&want, &got));
    CHECK_INT(listen_resolve("[::]:8443", &got, &e), MLC_OK);
    CHECK(!listen_same(&want, &got)); /* the bug of issue 10: [::] is not 127.0.0.1 */
    CHECK_INT(listen_resolve("127.0.0.1:8444", &got, &e), MLC_OK);
    CHECK(!listen_same(&want, &got));
    CHECK_INT(listen_resolve("127.0.0.1:0", &want, &e), MLC_OK);
    CHECK(listen_same(&want, &got)); /* port 0: any port the OS chose */
}

int main(void)
{
    RUN(literals);
    RUN(refused_with_a_reason);
    RUN(same_address);
    return TT_DONE();
}
