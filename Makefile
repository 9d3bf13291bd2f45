# chronicle: development build. Users install with the rockspec (see README).
#   make deps     install the Debian packages that are missing (apt-get, as root or via sudo)
#   make          build build/chronicle/core.so
#   make test     deps + build + every spec/**/*_spec.lua, ending with `N passed, N failed, N skipped`
#   make check    the suite against an ASan+UBSan build, then under valgrind memcheck
#   make install  PREFIX=/usr/local; make bench; make demo; make clean
#   make rockspec list every csrc/**/*.c and lua/chronicle/**/*.lua in the rockspec
#   make docs     the API pages of the Lua layer with LDoc (config.ld) into build/docs/
#   make env      eval "$(make -s env)": use this tree from any folder (LUA_PATH_5_4, LUA_CPATH_5_4, PATH)
# SPECS=spec/x_spec.lua limits test and check to some spec files.
LUA_VERSION ?= 5.4
LUA ?= lua$(LUA_VERSION)
LUA_INC ?= /usr/include/lua$(LUA_VERSION)
CC ?= cc
CFLAGS ?= -O2 -g
WARN = -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE
# Each module exports its luaopen_* only (CHRONICLE_EXPORT, csrc/common/export.h).
VIS = -fvisibility=hidden
LIBS = -llmdb -lxxhash -lpthread    # msgpack-c is used through its headers only (csrc/common/codec.c)
# csrc/common: what both backends compile in (buffers, errors, ids, codec, records, options);
# csrc/lmdb: the LMDB backend and luaopen_chronicle_core.
SRC = $(wildcard csrc/common/*.c csrc/lmdb/*.c)
HDR = $(wildcard csrc/common/*.h csrc/lmdb/*.h)
INC = -Icsrc
BUILD = build
SO = $(BUILD)/chronicle/core.so
# chronicle.postgres: the PostgreSQL backend, its own module so core.so needs no libpq.
PG_SRC = $(wildcard csrc/postgres/*.c csrc/common/*.c)
PG_HDR = $(wildcard csrc/postgres/*.h csrc/common/*.h)
PG_INC = -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
PG_LIBS = -lpq -lxxhash -lpthread
PG_SO = $(BUILD)/chronicle/postgres.so
# chronicle.common: uuid, now, hash, error values and name limits without LMDB or libpq.
COMMON_SRC = $(wildcard csrc/common/*.c)
COMMON_HDR = $(wildcard csrc/common/*.h)
COMMON_LIBS = -lxxhash
COMMON_SO = $(BUILD)/chronicle/common.so
# chronicle.crypto: sealing events' personal data with libsodium (Debian libsodium-dev), so that
# store:forget(subject) can erase it; its own module so the backends need no libsodium.
CRYPTO_SRC = $(wildcard csrc/crypto/*.c csrc/common/*.c)
CRYPTO_HDR = $(wildcard csrc/crypto/*.h csrc/common/*.h)
CRYPTO_LIBS = -lsodium -lxxhash
CRYPTO_SO = $(BUILD)/chronicle/crypto.so
# chronicle.sandbox: untrusted scripts in their own Lua states (csrc/sandbox), without LMDB or libpq.
SANDBOX_SRC = $(wildcard csrc/sandbox/*.c csrc/common/*.c)
SANDBOX_HDR = $(wildcard csrc/sandbox/*.h csrc/common/*.h)
SANDBOX_LIBS = -lxxhash
SANDBOX_SO = $(BUILD)/chronicle/sandbox.so

PREFIX ?= /usr/local
LUA_LIBDIR = $(PREFIX)/lib/lua/$(LUA_VERSION)
LUA_SHAREDIR = $(PREFIX)/share/lua/$(LUA_VERSION)
ROOT := $(CURDIR)
SPECS ?=

# Specs, benchmarks and the demo run against the tree, and so do the lua5.4 processes they start.
TREE_LUA_PATH = $(ROOT)/lua/?.lua;$(ROOT)/lua/?/init.lua;$(ROOT)/spec/?.lua;;
# (LUA_PATH_5_4 would win over LUA_PATH in lua5.4: set both.)
RUN_ENV = LUA_PATH='$(TREE_LUA_PATH)' LUA_PATH_5_4='$(TREE_LUA_PATH)' \
	LUA_CPATH='$(ROOT)/$(BUILD)/?.so;;' LUA_CPATH_5_4='$(ROOT)/$(BUILD)/?.so;;'
# Seconds one spec file may run before it is killed and counted as failed.
SPEC_TIMEOUT ?= 900

# make check, part 1: chronicle.core with AddressSanitizer and UBSan. lua5.4 is not instrumented,
# so build-asan/bin/lua5.4 (first on PATH) preloads the runtime into every lua5.4 a spec starts.
ASAN_BUILD = build-asan
ASAN_SO = $(ASAN_BUILD)/chronicle/core.so
ASAN_PG_SO = $(ASAN_BUILD)/chronicle/postgres.so
ASAN_COMMON_SO = $(ASAN_BUILD)/chronicle/common.so
ASAN_CRYPTO_SO = $(ASAN_BUILD)/chronicle/crypto.so
ASAN_SANDBOX_SO = $(ASAN_BUILD)/chronicle/sandbox.so
ASAN_CC = gcc
ASAN_CFLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_LIB = $(shell $(ASAN_CC) -print-file-name=libasan.so)
ASAN_GUARD = $(ASAN_BUILD)/asan_preload.so
ASAN_LUA = $(ASAN_BUILD)/bin/lua$(LUA_VERSION)
# intercept_tls_get_addr=0: GCC 12's sanitizer runtime sometimes takes a malloc'd dynamic-TLS
# block for an old glibc's TLS header, and LeakSanitizer's tracer then dies at exit with SIGSEGV
# ("Tracer caught signal 11") in a process whose tests all passed: seen here in groups_spec and
# personal_spec on PostgreSQL. See github.com/google/sanitizers/issues/1322.
ASAN_ENV = PATH='$(ROOT)/$(ASAN_BUILD)/bin':"$$PATH" \
	LUA_PATH='$(TREE_LUA_PATH)' LUA_PATH_5_4='$(TREE_LUA_PATH)' \
	LUA_CPATH='$(ROOT)/$(ASAN_BUILD)/?.so;;' LUA_CPATH_5_4='$(ROOT)/$(ASAN_BUILD)/?.so;;' \
	ASAN_OPTIONS='detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:intercept_tls_get_addr=0' \
	LSAN_OPTIONS='suppressions=$(ROOT)/scripts/lsan.supp:print_suppressions=0' \
	UBSAN_OPTIONS='print_stacktrace=1:halt_on_error=1'

# make check, part 2: valgrind memcheck on the normal build (the busted process; the lua5.4
# processes that specs start run natively). VALGRIND_SPECS limits it to some files. The LMDB and
# PostgreSQL passes run side by side, since valgrind keeps only one core busy. The PostgreSQL pass
# has a cluster of its own (spec/backend/postgres/ in the LMDB pass restarts and kills the first),
# and its output is printed after the LMDB pass's.
VALGRIND = valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
	--show-leak-kinds=definite --keep-debuginfo=yes --num-callers=30 --quiet
# Without SPECS or VALGRIND_SPECS it leaves out the specs whose work runs in the processes they
# start (the CLI, the server, luarocks, README snippets, crash runners): valgrind follows only the
# busted process, and those run under ASan, children included. crash_spec kills fewer times
# under valgrind (the ASan pass and make test run every kill). ALL_SPECS is the list run_specs.lua
# finds by itself when given none.
VALGRIND_SKIP = $(wildcard spec/cli/*_spec.lua spec/server/*_spec.lua) spec/rockspec_spec.lua \
	spec/readme_spec.lua spec/reliability/projection_crash_spec.lua
ALL_SPECS = $(shell find spec -name '*_spec.lua' -not -path '*/.*' | LC_ALL=C sort)
VALGRIND_SPECS ?= $(if $(SPECS),$(SPECS),$(filter-out $(VALGRIND_SKIP),$(ALL_SPECS)))
VALGRIND_RUN_ENV = CHRONICLE_CRASH_KILLS=3
VALGRIND_TIMEOUT ?= 1800

.PHONY: all build asan test check deps install bench demo clean rockspec env crash fuzz fuzz-long reliability-long docs

all: build
build: $(SO) $(PG_SO) $(COMMON_SO) $(CRYPTO_SO) $(SANDBOX_SO)

$(SO): $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(VIS) -fPIC -shared $(INC) -I$(LUA_INC) $(SRC) -o $@ $(LIBS)

$(PG_SO): $(PG_SRC) $(PG_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(VIS) -DCERR_NO_LMDB -fPIC -shared $(INC) -I$(LUA_INC) $(PG_INC) $(PG_SRC) -o $@ $(PG_LIBS)

$(COMMON_SO): $(COMMON_SRC) $(COMMON_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(VIS) -DCERR_NO_LMDB -DCHRONICLE_COMMON_MODULE -fPIC -shared $(INC) -I$(LUA_INC) $(COMMON_SRC) -o $@ $(COMMON_LIBS)

asan: $(ASAN_SO) $(ASAN_PG_SO) $(ASAN_COMMON_SO) $(ASAN_CRYPTO_SO) $(ASAN_SANDBOX_SO) $(ASAN_GUARD) $(ASAN_LUA)

$(SANDBOX_SO): $(SANDBOX_SRC) $(SANDBOX_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(VIS) -DCERR_NO_LMDB -fPIC -shared $(INC) -I$(LUA_INC) $(SANDBOX_SRC) -o $@ $(SANDBOX_LIBS)

$(ASAN_SANDBOX_SO): $(SANDBOX_SRC) $(SANDBOX_HDR)
	@mkdir -p $(dir $@)
	$(ASAN_CC) $(ASAN_CFLAGS) $(WARN) $(VIS) -DCERR_NO_LMDB -fPIC -shared $(INC) -I$(LUA_INC) $(SANDBOX_SRC) -o $@ $(SANDBOX_LIBS)

$(CRYPTO_SO): $(CRYPTO_SRC) $(CRYPTO_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(VIS) -DCERR_NO_LMDB -fPIC -shared $(INC) -I$(LUA_INC) $(CRYPTO_SRC) -o $@ $(CRYPTO_LIBS)

$(ASAN_CRYPTO_SO): $(CRYPTO_SRC) $(CRYPTO_HDR)
	@mkdir -p $(dir $@)
	$(ASAN_CC) $(ASAN_CFLAGS) $(WARN) $(VIS) -DCERR_NO_LMDB -fPIC -shared $(INC) -I$(LUA_INC) $(CRYPTO_SRC) -o $@ $(CRYPTO_LIBS)

$(ASAN_COMMON_SO): $(COMMON_SRC) $(COMMON_HDR)
	@mkdir -p $(dir $@)
	$(ASAN_CC) $(ASAN_CFLAGS) $(WARN) $(VIS) -DCERR_NO_LMDB -DCHRONICLE_COMMON_MODULE -fPIC -shared $(INC) -I$(LUA_INC) $(COMMON_SRC) -o $@ $(COMMON_LIBS)

$(ASAN_PG_SO): $(PG_SRC) $(PG_HDR)
	@mkdir -p $(dir $@)
	$(ASAN_CC) $(ASAN_CFLAGS) $(WARN) $(VIS) -DCERR_NO_LMDB -fPIC -shared $(INC) -I$(LUA_INC) $(PG_INC) $(PG_SRC) -o $@ $(PG_LIBS)

$(ASAN_SO): $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(ASAN_CC) $(ASAN_CFLAGS) $(WARN) $(VIS) -fPIC -shared $(INC) -I$(LUA_INC) $(SRC) -o $@ $(LIBS)

$(ASAN_GUARD): scripts/asan_preload.c
	@mkdir -p $(dir $@)
	$(ASAN_CC) -O2 $(WARN) -fPIC -shared $< -o $@

$(ASAN_LUA): scripts/asan-lua.sh Makefile
	@mkdir -p $(dir $@)
	@test -f '$(ASAN_LIB)' || { echo "no ASan runtime: $(ASAN_CC) -print-file-name=libasan.so gave '$(ASAN_LIB)'"; exit 1; }
	sed -e 's|@ASAN_LIB@|$(ASAN_LIB)|' -e 's|@GUARD@|$(ROOT)/$(ASAN_GUARD)|' \
	    -e "s|@LUA@|$$(command -v $(LUA))|" $< > $@
	chmod +x $@

deps:
	@bash scripts/deps.sh

# The specs that run a second time on PostgreSQL (CHRONICLE_SPEC_BACKEND=postgres makes
# helpers.open give a fresh schema): every spec/backend/*_spec.lua (the storage contract; what is
# one backend's own is in spec/backend/lmdb/ and spec/backend/postgres/), and the specs of the
# layers above that use helpers.open. With SPECS, only those of them that SPECS names.
CONTRACT_SPECS = $(wildcard spec/backend/*_spec.lua)
PG_SPECS ?= $(CONTRACT_SPECS) \
	spec/write/aggregate_spec.lua spec/write/repository_spec.lua spec/write/snapshot_spec.lua \
	spec/write/unit_of_work_spec.lua spec/write/upcast_spec.lua spec/write/time_travel_spec.lua \
	spec/read/projection_spec.lua spec/read/handler_spec.lua spec/read/reactor_spec.lua \
	spec/read/runner_spec.lua spec/scripts/scripts_spec.lua spec/scripts/sandbox_scripts_spec.lua \
	spec/reliability/concurrency_spec.lua spec/cli/cli_spec.lua \
	spec/write/aggregate_multiprocess_spec.lua spec/reliability/crash_spec.lua \
	spec/reliability/projection_crash_spec.lua spec/server/api_spec.lua spec/server/subscribe_spec.lua \
	spec/cli/cli_lifecycle_spec.lua spec/read/groups_spec.lua spec/read/subscription_spec.lua \
	spec/read/subscription_multiprocess_spec.lua spec/cli/forget_spec.lua
PG_PASS_SPECS = $(if $(SPECS),$(filter $(PG_SPECS),$(SPECS)),$(PG_SPECS))
PG_VALGRIND_SPECS = $(filter $(PG_SPECS),$(VALGRIND_SPECS))
# Starts a throwaway PostgreSQL for the recipe's shell and stops and deletes it on exit, pass or fail.
PG_CLUSTER = pgdir=$$(bash scripts/pg_cluster.sh start) || exit 1; \
	trap 'bash scripts/pg_cluster.sh stop "$$pgdir"' EXIT INT TERM; \
	export CHRONICLE_PG_URL="$$(cat "$$pgdir/url")" CHRONICLE_PG_DIR="$$pgdir"

test: deps
	@$(MAKE) --no-print-directory build
	@$(PG_CLUSTER); status=0; tally=$$(mktemp); trap 'rm -f "$$tally"; bash scripts/pg_cluster.sh stop "$$pgdir"' EXIT INT TERM; \
	$(RUN_ENV) $(LUA) scripts/run_specs.lua --timeout $(SPEC_TIMEOUT) --tally "$$tally" $(SPECS) || status=1; \
	if [ -n "$(PG_PASS_SPECS)" ]; then echo "== the backend contract on PostgreSQL: $(PG_PASS_SPECS)"; \
	  CHRONICLE_SPEC_BACKEND=postgres $(RUN_ENV) $(LUA) scripts/run_specs.lua --timeout $(SPEC_TIMEOUT) \
	    --tally "$$tally" $(PG_PASS_SPECS) || status=1; fi; \
	exit $$status

check: deps
	@$(MAKE) --no-print-directory build asan
	@$(PG_CLUSTER); status=0; \
	echo "== make check 1/2: the suite against the ASan+UBSan build ($(ASAN_SO))"; \
	$(ASAN_ENV) $(LUA) scripts/run_specs.lua --timeout $(SPEC_TIMEOUT) \
	    --cpath '$(ROOT)/$(ASAN_BUILD)/?.so' $(SPECS) || status=1; \
	if [ -n "$(PG_PASS_SPECS)" ]; then CHRONICLE_SPEC_BACKEND=postgres $(ASAN_ENV) $(LUA) scripts/run_specs.lua \
	    --timeout $(SPEC_TIMEOUT) --cpath '$(ROOT)/$(ASAN_BUILD)/?.so' $(PG_PASS_SPECS) || status=1; fi; \
	echo "== make check 2/2: the suite under valgrind memcheck ($(SO)), LMDB and PostgreSQL side by side"; \
	pglog=$$(mktemp); pgpid=; \
	if [ -n "$(PG_VALGRIND_SPECS)" ]; then ( $(PG_CLUSTER); \
	    CHRONICLE_SPEC_BACKEND=postgres $(VALGRIND_RUN_ENV) $(RUN_ENV) $(LUA) scripts/run_specs.lua \
	    --timeout $(VALGRIND_TIMEOUT) --wrap '$(VALGRIND)' $(PG_VALGRIND_SPECS) ) > "$$pglog" 2>&1 & pgpid=$$!; fi; \
	$(VALGRIND_RUN_ENV) $(RUN_ENV) $(LUA) scripts/run_specs.lua --timeout $(VALGRIND_TIMEOUT) \
	    --wrap '$(VALGRIND)' $(VALGRIND_SPECS) || status=1; \
	if [ -n "$$pgpid" ]; then wait $$pgpid || status=1; \
	  echo "== valgrind on PostgreSQL (run beside the pass above): $(PG_VALGRIND_SPECS)"; cat "$$pglog"; fi; \
	rm -f "$$pglog"; \
	if [ $$status -eq 0 ]; then echo "make check: ASan, UBSan and valgrind clean"; \
	else echo "make check: FAILED (see the failures above)"; fi; \
	exit $$status

install: build
	install -d '$(DESTDIR)$(LUA_LIBDIR)/chronicle' '$(DESTDIR)$(LUA_SHAREDIR)/chronicle'
	install -m 755 $(SO) '$(DESTDIR)$(LUA_LIBDIR)/chronicle/core.so'
	install -m 755 $(COMMON_SO) '$(DESTDIR)$(LUA_LIBDIR)/chronicle/common.so'
	install -m 755 $(CRYPTO_SO) '$(DESTDIR)$(LUA_LIBDIR)/chronicle/crypto.so'
	install -m 755 $(SANDBOX_SO) '$(DESTDIR)$(LUA_LIBDIR)/chronicle/sandbox.so'
	cd lua && find chronicle -name '*.lua' -exec install -D -m 644 {} '$(DESTDIR)$(LUA_SHAREDIR)/{}' \;
	if [ -f bin/chronicle ]; then install -D -m 755 bin/chronicle '$(DESTDIR)$(PREFIX)/bin/chronicle'; fi

bench: deps
	@$(MAKE) --no-print-directory build
	@if [ -f bench/run.sh ]; then $(RUN_ENV) bash bench/run.sh; \
	else echo "bench: no bench/run.sh yet"; fi

demo: deps
	@$(MAKE) --no-print-directory build
	@rm -rf data/bank.jsonl data/bank-import data/bank-copy   # what the README's CLI session makes
	@if [ -f examples/bank/main.lua ]; then $(RUN_ENV) $(LUA) examples/bank/main.lua; \
	else echo "demo: examples/bank/main.lua is not there yet"; fi

# The embedding example: a C host that embeds Lua and runs chronicle's rules (examples/embed).
EMBED_HOST = $(BUILD)/embed/chronicle-host
.PHONY: demo-embed

$(EMBED_HOST): examples/embed/host.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -I$(LUA_INC) $< -o $@ -llua$(LUA_VERSION)

# The host finds chronicle through --lua-path/--lua-cpath (it ignores LUA_PATH): the tree's build.
demo-embed: deps
	@$(MAKE) --no-print-directory build $(EMBED_HOST)
	@rm -rf data/embed
	$(EMBED_HOST) --store data/embed --rules examples/bank/rules --sandboxed examples/embed/sandboxed \
	    --driver examples/embed/driver.lua \
	    --lua-path '$(ROOT)/lua/?.lua;$(ROOT)/lua/?/init.lua' --lua-cpath '$(ROOT)/$(BUILD)/?.so' \
	    < examples/embed/session.jsonl

# The long reliability runs (the default suite runs short versions of each).
crash: deps
	@$(MAKE) --no-print-directory build
	@CHRONICLE_CRASH_KILLS=200 CHRONICLE_CRASH_ROUNDS=50 CHRONICLE_CONCURRENT_APPENDS=1000 \
	    CHRONICLE_POWERCUT_STATES=1200 CHRONICLE_POWERCUT_APPENDS=60 \
	    $(RUN_ENV) $(LUA) scripts/run_specs.lua --timeout 3600 \
	    spec/reliability/crash_spec.lua spec/reliability/projection_crash_spec.lua spec/reliability/concurrency_spec.lua spec/reliability/powercut_spec.lua

# libFuzzer targets for the value decoder and the event record (fuzz/run.sh).
fuzz: deps
	@bash fuzz/run.sh

fuzz-long: deps
	@FUZZ_SECONDS=600 bash fuzz/run.sh

# Every N of a longer workload, in every durability mode, with EIO, ENOSPC and a failing disk.
reliability-long: deps
	@$(MAKE) --no-print-directory build
	@CHRONICLE_LONG=1 $(RUN_ENV) $(LUA) scripts/run_specs.lua --timeout 3600 spec/reliability/faults_spec.lua

# eval "$$(make -s env)": this shell's lua5.4 finds chronicle in this tree, and bin/ is on PATH.
env:
	@echo "export LUA_PATH_5_4='$(ROOT)/lua/?.lua;$(ROOT)/lua/?/init.lua;;'"
	@echo "export LUA_CPATH_5_4='$(ROOT)/$(BUILD)/?.so;;'"
	@echo "export PATH='$(ROOT)/bin':\"\$$PATH\""

# Debian's lua-ldoc and lua-discount (its Markdown, with tables; LDoc has none of its own here). Any
# line LDoc prints beyond its configuration line is a warning, and fails the target.
docs:
	@command -v ldoc >/dev/null || { echo "docs: ldoc not found (apt-get install lua-ldoc lua-discount)"; exit 1; }
	@out=$$(ldoc -q . 2>&1) || { printf '%s\n' "$$out"; exit 1; }; \
	warnings=$$(printf '%s\n' "$$out" | grep -v '^reading configuration from ' || true); \
	if [ -n "$$warnings" ]; then printf '%s\n' "$$warnings"; \
	  echo "docs: LDoc warned (above; for 'discount not found': apt-get install lua-discount)"; exit 1; fi
	@echo "docs: build/docs/index.html"

rockspec:
	@$(LUA) scripts/sync_rockspec.lua rockspec/chronicle-scm-1.rockspec

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
