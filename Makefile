# SPDX-License-Identifier: Apache-2.0
# ml-connector: one Makefile, pkg-config. `make help` lists the targets.

VERSION    := 0.1.0
PKG_CONFIG ?= pkg-config
PYTHON     ?= python3
O          ?= build

# Debian packages. Install policy: `make` (and every build target) installs
# nothing and, when something is missing, says what and to run `make deps`;
# `make demo` installs DEB_DEMO (what building and running tests/demo.py
# needs); `make deps` and `make check` install everything (DEB_BUILD,
# DEB_TEST, DEB_PKG, and the browser tests' npm package).
DEB_BUILD  := build-essential pkg-config libcurl4-openssl-dev libcjson-dev libmbedtls-dev \
              libwebsockets-dev libsqlite3-dev libzstd-dev libpq-dev
DEB_TEST   := python3 ca-certificates postgresql openssl chromium nodejs iproute2
# the demo runs the simulators (python3 alone), a plain-HTTP relay and a throwaway
# PostgreSQL server (the warehouse flows) on loopback
DEB_DEMO   := $(DEB_BUILD) python3 postgresql

PKGS       := libcurl libcjson sqlite3 libzstd libwebsockets libpq
HAVE_PKGS  := $(shell $(PKG_CONFIG) --exists $(PKGS) 2>/dev/null && echo ok)

CC         ?= cc
CFLAGS     ?= -O2 -g
CFLAGS     += -std=c11 -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wvla -pthread
CFLAGS     += $(if $(DEVELOPER),-Werror)
CPPFLAGS   += -I. -D_GNU_SOURCE -DMLC_VERSION='"$(VERSION)"'
ifeq ($(HAVE_PKGS),ok)
CPPFLAGS   += $(shell $(PKG_CONFIG) --cflags $(PKGS))
LDLIBS     += $(shell $(PKG_CONFIG) --libs $(PKGS))
else
# before `make deps` has run (pkg-config may not even exist yet): Debian's names
LDLIBS     += -lcurl -lcjson -lsqlite3 -lzstd -lwebsockets -lpq
endif
# Debian 12's libmbedtls-dev has no .pc file; mbedTLS 3 ships mbedcrypto.pc
MBEDTLS_LIBS ?= $(shell $(PKG_CONFIG) --libs mbedcrypto 2>/dev/null || echo -lmbedcrypto)
LDLIBS     += $(MBEDTLS_LIBS) -lpthread -lm

ifdef SANITIZE
CFLAGS     += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS    += -fsanitize=$(SANITIZE)
endif

# Three libraries: libshared.a (shared/, what both programs use), libagent.a
# (the agent's own objects) and librelay.a. mlc-relay links only librelay.a
# and libshared.a; tests, benches and fuzz replays may link all three.
SHARED_SRC := $(wildcard shared/*.c)
SHARED_OBJ := $(patsubst %.c,$(O)/%.o,$(SHARED_SRC))
AGENT_LIB  := $(filter-out agent/main.c,$(wildcard agent/*.c agent/connectors/*.c agent/connectors/*/*.c))
WEB_SRC    := agent/web/index.html agent/web/app.js agent/web/style.css
AGENT_OBJ  := $(patsubst %.c,$(O)/%.o,$(AGENT_LIB)) $(O)/gen/web_assets.o
ALL_LIBS   := $(O)/librelay.a $(O)/libagent.a $(O)/libshared.a
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(patsubst tests/unit/%.c,$(O)/tests/%,$(UNIT_SRC))
RELAY_LIB  := $(filter-out relay/main.c,$(wildcard relay/*.c))
RELAY_OBJ  := $(patsubst %.c,$(O)/%.o,$(RELAY_LIB))
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN   := $(patsubst tests/fuzz/fuzz_%.c,$(O)/fuzz/replay_%,$(FUZZ_SRC))

.PHONY: all help deps demo-deps have-deps check check-build demo bench fuzz fuzz-long style clean

all: $(O)/mlc-agent $(O)/mlc-relay

help:
	@echo "make           build $(O)/mlc-agent and $(O)/mlc-relay; installs nothing: when build"
	@echo "               libraries are missing it names them and stops (run make deps)"
	@echo "make deps      install every missing Debian package (build, tests, packaging) and the"
	@echo "               browser tests' npm package (apt-get, npm ci; needs root or sudo)"
	@echo "make check     make deps, then unit, fuzz-replay, simulator, integration and browser"
	@echo "               tests, plain and under ASan+UBSan, and the packages"
	@echo "make demo      installs only what the demo needs (build packages, python3, postgresql),"
	@echo "               then simulators + relay + PostgreSQL + agent, one sync (work orders, orders,\n               finance tables into the warehouse), status; ONCE=1 runs one cycle and exits"
	@echo "make bench     agent: 50,000 work orders (CPU, API calls, RSS), PeopleSoft and IFS Cloud"
	@echo "               orders, IFS write-back latency; relay: webhooks/s, webhook->agent"
	@echo "               latency, memory per idle tunnel; warehouse: 50,000 F0411 rows into PostgreSQL"
	@echo "               (rows/s, agent CPU per row) (ONLY=agent|relay|ifs|warehouse)"
	@echo "make fuzz      libFuzzer builds of the fuzz targets (clang)"
	@echo "make fuzz-long each fuzz target for FUZZ_SECONDS (default 600) in turn; prints executions"
	@echo "               per target (FUZZ_TARGETS=\"hooks sig\" for some only)"
	@echo "make clean"

# Installs (apt-get, as root or through sudo) those of the Debian packages $(1)
# that are missing; $(2) names the target in its messages.
define apt_install
missing=""; for p in $(1); do \
    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
done; \
if [ -z "$$missing" ]; then echo "$(2): all Debian packages present"; else \
echo "$(2): installing$$missing"; \
SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing || exit 1; fi
endef

deps:
	@$(call apt_install,$(DEB_BUILD) $(DEB_TEST) $(DEB_PKG),deps)
	@# the browser tests' one npm package (playwright-core), exactly as locked
	@[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --no-audit --no-fund)

demo-deps:
	@$(call apt_install,$(DEB_DEMO),demo)

# Every compile waits for this check (an order-only prerequisite), so a
# machine without the build libraries gets one message, not a page of
# compiler errors. It never installs anything.
have-deps:
	@missing=""; debs=""; \
	command -v $(firstword $(CC)) >/dev/null 2>&1 || { missing="$$missing $(firstword $(CC))"; debs="$$debs build-essential"; }; \
	command -v $(PKG_CONFIG) >/dev/null 2>&1 || { missing="$$missing $(PKG_CONFIG)"; debs="$$debs pkg-config"; }; \
	for m in $(PKGS); do \
	    $(PKG_CONFIG) --exists $$m 2>/dev/null && continue; \
	    case $$m in libcurl) d=libcurl4-openssl-dev;; sqlite3) d=libsqlite3-dev;; *) d=$$m-dev;; esac; \
	    missing="$$missing $$m"; debs="$$debs $$d"; \
	done; \
	echo '#include <mbedtls/gcm.h>' | $(CC) $(CPPFLAGS) -E -x c - >/dev/null 2>&1 || \
	    { missing="$$missing mbedtls"; debs="$$debs libmbedtls-dev"; }; \
	if [ -n "$$missing" ]; then \
	    echo "make: cannot build, missing:$$missing (Debian packages:$$debs)" >&2; \
	    echo "make: run 'make deps' as root (or 'sudo make deps') to install them; make itself installs nothing" >&2; \
	    exit 1; \
	fi

$(O)/%.o: %.c | have-deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# the status page's files, compiled in (the appliance has no internet)
$(O)/gen/web_assets.c: tools/embed_web.py $(WEB_SRC)
	@mkdir -p $(dir $@)
	$(PYTHON) tools/embed_web.py $@ $(WEB_SRC)

$(O)/gen/web_assets.o: $(O)/gen/web_assets.c agent/web_assets.h
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(O)/libshared.a: $(SHARED_OBJ)
	$(AR) rcs $@ $^

$(O)/libagent.a: $(AGENT_OBJ)
	$(AR) rcs $@ $^

$(O)/mlc-agent: $(O)/agent/main.o $(O)/libagent.a $(O)/libshared.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/librelay.a: $(RELAY_OBJ)
	$(AR) rcs $@ $^

$(O)/mlc-relay: $(O)/relay/main.o $(O)/librelay.a $(O)/libshared.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/tests/%: $(O)/tests/unit/%.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/bench/%: $(O)/tests/bench/%.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/fuzz/replay_%: $(O)/tests/fuzz/fuzz_%.o $(O)/tests/fuzz/replay.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The whole suite: a developer build, then the same under ASan+UBSan.
check: deps
	@$(PYTHON) tests/run_checks.py --make "$(MAKE)"

# One configuration (used by run_checks.py): build everything into $(O).
check-build: $(O)/mlc-agent $(O)/mlc-relay $(UNIT_BIN) $(FUZZ_BIN)

# the build runs in a fresh make, which sees what demo-deps installed
demo: demo-deps
	@$(MAKE) --no-print-directory $(O)/mlc-agent $(O)/mlc-relay
	@$(PYTHON) tests/demo.py --agent $(O)/mlc-agent --relay $(O)/mlc-relay $(if $(ONCE),--once)

bench:
	@$(MAKE) --no-print-directory O=build/bench build/bench/mlc-agent build/bench/mlc-relay \
	    build/bench/bench/hookload build/bench/bench/tunnelswarm
	@$(PYTHON) tests/bench.py --build build/bench $(if $(RECORDS),--records $(RECORDS)) $(if $(ONLY),--only $(ONLY))

fuzz: $(O)/gen/web_assets.c | have-deps
	@mkdir -p $(O)/libfuzzer
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  echo "clang -fsanitize=fuzzer,address,undefined $$f -> $(O)/libfuzzer/$$n"; \
	  clang -g -O1 -fsanitize=fuzzer,address,undefined $(CPPFLAGS) -std=c11 $$f \
	    $(SHARED_SRC) $(AGENT_LIB) $(RELAY_LIB) $(O)/gen/web_assets.c -o $(O)/libfuzzer/$$n $(LDLIBS) || exit 1; done
	@echo "run e.g.: $(O)/libfuzzer/fuzz_jde tests/fuzz/corpus/jde -max_total_time=60"

# Long runs, one target at a time (the seeds in tests/fuzz/corpus/<name> stay
# as they are; the grown corpora, logs and crashes go to $(O)/fuzz-work).
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?=
fuzz-long: fuzz
	@$(PYTHON) tests/fuzz/fuzz_long.py --bin $(O)/libfuzzer --work $(O)/fuzz-work \
	    --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

style:
	@git clang-format --diff 2>/dev/null || echo "style: advisory only"

clean:
	rm -rf build

# tests/integration/test_jira_watch.py calls the Jira connector's watch() and
# changes() through this small program (it needs no agent run loop); make
# check builds it with the rest.
JIRA_WATCH_DRIVER := $(O)/tests/jira_watch_driver
$(JIRA_WATCH_DRIVER): $(O)/tests/integration/jira_watch_driver.o $(O)/libagent.a $(O)/libshared.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
check-build: $(JIRA_WATCH_DRIVER)

-include $(shell find $(O) \( -path $(O)/image -o -path $(O)/cache -o -path $(O)/packages \) -prune -o -name '*.d' -type f -print 2>/dev/null)

# ---- packages (issue 5): make deb | rpm | package-check; see packaging/README.md
# the tools that build and test the packages (installed by `make pkg-deps`)
DEB_PKG    := debhelper devscripts lintian rpm rpmlint mmdebstrap
PREFIX     ?= /usr/local
PKG_OUT    := build/packages
PKG_SRC    := agent shared relay tools Makefile packaging README.md

.PHONY: install pkg-deps deb rpm package-check

# binaries only; configuration, units and users come from the packages
install: $(O)/mlc-agent $(O)/mlc-relay
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(O)/mlc-agent $(O)/mlc-relay $(DESTDIR)$(PREFIX)/bin/

pkg-deps:
	@missing=""; for p in $(DEB_BUILD) $(DEB_PKG); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "pkg-deps: all packaging tools present"; else \
	echo "pkg-deps: installing$$missing"; \
	SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing || exit 1; fi

# dpkg-buildpackage runs in a copy of the sources (build/deb-src), so the work
# tree stays clean; packaging/debian becomes debian/ there (symlinks resolved)
deb: pkg-deps
	@rm -rf build/deb-src && mkdir -p build/deb-src/ml-connector-$(VERSION) $(PKG_OUT)
	@cp -a $(PKG_SRC) build/deb-src/ml-connector-$(VERSION)/
	@cp -rL packaging/debian build/deb-src/ml-connector-$(VERSION)/debian
	cd build/deb-src/ml-connector-$(VERSION) && dpkg-buildpackage -us -uc -b
	@mv build/deb-src/*.deb build/deb-src/*.buildinfo build/deb-src/*.changes $(PKG_OUT)/
	@ls -l $(PKG_OUT)/*.deb

# rpmbuild on Debian: --nodeps (Debian's rpm database knows none of the
# BuildRequires) and the spec turns automatic Requires off (see the spec)
rpm: pkg-deps
	@rm -rf build/rpm && mkdir -p build/rpm/SOURCES build/rpm/src/ml-connector-$(VERSION) $(PKG_OUT)
	@cp -a $(PKG_SRC) build/rpm/src/ml-connector-$(VERSION)/
	@tar -C build/rpm/src -czf build/rpm/SOURCES/ml-connector-$(VERSION).tar.gz ml-connector-$(VERSION)
	rpmbuild -bb --nodeps --define "_topdir $(CURDIR)/build/rpm" --define "pkgversion $(VERSION)" \
	    packaging/rpm/ml-connector.spec
	@cp build/rpm/RPMS/*/*.rpm $(PKG_OUT)/
	@ls -l $(PKG_OUT)/*.rpm
	@if command -v rpmlint >/dev/null; then rpmlint -r packaging/rpm/ml-connector.rpmlintrc $(PKG_OUT)/*.rpm || true; \
	else echo "rpm: rpmlint is not installed; skipping it"; fi

# builds both, then: lintian on the .debs, an install/purge round trip of the
# agent package in a fresh Debian 12 chroot (mmdebstrap, cached in build/cache)
package-check: deb rpm
	@$(PYTHON) tests/packaging/run.py --debs $(PKG_OUT) --rpms $(PKG_OUT)

# --- the appliance image (firmware-image/, issue 5) ---------------------------
# make image          build/image/ml-connector-appliance.img: Debian 12, our agent .deb
#                     (built first with `make deb`; IMAGE_DEB=FILE uses that package instead)
# make image-test     boot a copy under qemu with a seed, log in to the status page, sync
#                     against the simulators on the host, power off (QEMU_ACCEL=kvm if it works)
IMAGE      := build/image/ml-connector-appliance.img
DEB_IMAGE  := mmdebstrap qemu-system-x86 qemu-utils dosfstools e2fsprogs mtools syslinux \
              syslinux-common fdisk jq python3

.PHONY: image image-deps image-test

image-deps:
	@missing=""; for p in $(DEB_IMAGE); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then echo "image-deps: installing$$missing"; \
	SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $$missing || exit 1; fi

image: image-deps
ifeq ($(IMAGE_DEB),)
	@$(MAKE) --no-print-directory deb
endif
	@SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	$$SUDO firmware-image/build-image.sh --out $(IMAGE) $(if $(IMAGE_DEB),--deb $(IMAGE_DEB))

image-test: image-deps
	@[ -f $(IMAGE) ] || $(MAKE) --no-print-directory image
	@$(PYTHON) firmware-image/test_image.py --image $(IMAGE) $(if $(QEMU_ACCEL),--accel $(QEMU_ACCEL))
