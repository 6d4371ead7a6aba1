# fish: build, test and demo. `make` builds build/5.4/fish/core.so;
# `make LUA=lua5.1|lua5.2|lua5.3|lua5.4|luajit` builds build/<dir>/fish/core.so
# for that Lua ABI (<dir> is 5.1 ... 5.4, or luajit for LuaJIT's 5.1 ABI).
LUA ?= lua5.4

# Every Lua we build for: the Debian interpreter's name, which is also its
# pkg-config name. Per Lua: the ABI (install dirs), the build directory, the
# Debian include dir used when pkg-config has no answer, and the -dev package.
LUAS = lua5.1 lua5.2 lua5.3 lua5.4 luajit
abi_lua5.1 = 5.1
abi_lua5.2 = 5.2
abi_lua5.3 = 5.3
abi_lua5.4 = 5.4
abi_luajit = 5.1
dir_luajit = luajit
inc_luajit = /usr/include/luajit-2.1
dev_lua5.1 = liblua5.1-0-dev
dev_luajit = libluajit2-5.1-dev
lua_dir = $(or $(dir_$(1)),$(abi_$(1)))
lua_inc = $(or $(inc_$(1)),/usr/include/$(1))
lua_dev = $(or $(dev_$(1)),lib$(1)-dev)
# $(call lua_cflags,pkg-config name,Lua): the -I flag for that Lua's headers.
lua_cflags = $(shell pkg-config --cflags $(1) 2>/dev/null || echo -I$(call lua_inc,$(2)))

ifeq ($(filter $(LUA),$(LUAS)),)
$(error LUA=$(LUA) is not a Lua fish builds for; use one of: $(LUAS))
endif
LUA_PC ?= $(LUA)
LUA_ABI = $(abi_$(LUA))
BUILD = build/$(call lua_dir,$(LUA))

PREFIX ?= /usr/local
DESTDIR ?=
LUADIR ?= $(PREFIX)/share/lua/$(LUA_ABI)
LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_ABI)

CC ?= cc
CFLAGS ?= -O2 -g
WARNINGS = -Wall -Wextra -Wshadow -std=c99
# Headers only: the module never links against liblua; the host provides it.
LUA_CFLAGS := $(call lua_cflags,$(LUA_PC),$(LUA))
CURL_CFLAGS := $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS := $(shell pkg-config --libs libcurl 2>/dev/null)

C_SOURCES = $(wildcard src/*.c)
C_HEADERS = $(wildcard src/*.h)
LUA_SOURCES = $(wildcard src/fish/*.lua)
MODULE = $(BUILD)/fish/core.so

BUSTED ?= busted
export LUA_PATH := $(CURDIR)/src/?.lua;$(CURDIR)/src/?/init.lua;$(CURDIR)/spec/?.lua;;
# busted's runner as a script, so valgrind and ASan can wrap the interpreter.
BUSTED_SCRIPT ?= /usr/bin/busted

.PHONY: all deps test $(addprefix test-,$(LUAS)) test-asan test-valgrind lint check-windows fuzz fuzz-smoke demo soak install clean

all: $(MODULE)

$(MODULE): $(C_SOURCES) $(C_HEADERS)
	@echo '#include <lua.h>' | $(CC) $(LUA_CFLAGS) -E - >/dev/null 2>&1 || \
	  { echo "no Lua headers for $(LUA) (Debian: apt-get install $(call lua_dev,$(LUA)))" >&2; exit 1; }
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARNINGS) -fPIC -shared $(LUA_CFLAGS) $(CURL_CFLAGS) $(C_SOURCES) -o $@ $(LDFLAGS) $(CURL_LIBS)

# Install the Debian packages that building and `make test` need, if
# missing. The other targets ask .ci/deps for their own group.
deps:
	@sh .ci/deps test
DEPS = $(addprefix deps-,demo asan valgrind fuzz lint windows ci)
.PHONY: $(DEPS)
$(DEPS): deps-%:
	@sh .ci/deps $*

# The whole suite on every Lua in LUAS, the runs side by side (each spends
# most of its time waiting on its own local servers), each run's output
# printed whole, closing with one "N passed, N failed, N skipped" line.
test: deps
	@for l in $(LUAS); do $(MAKE) --no-print-directory LUA=$$l all || exit 1; done
	@sh spec/support/suite.sh $(LUAS)

# One Lua's suite alone: make test-lua5.1, ... make test-luajit.
$(addprefix test-,$(LUAS)): test-%:
	$(MAKE) LUA=$* all
	LUA_CPATH='$(CURDIR)/build/$(call lua_dir,$*)/?.so;;' $(BUSTED) --lua=$* spec

# The C with -Werror under gcc and clang against each Lua's headers, linked
# as the module is; then luacheck over the Lua (.luacheckrc says how).
LINT_CCS = gcc clang
define lint_c
$(1) -O2 $(WARNINGS) -Werror -fPIC -shared $(call lua_cflags,$(2),$(2)) $(CURL_CFLAGS) $(C_SOURCES) -o build/lint/$(1)-$(call lua_dir,$(2)).so $(CURL_LIBS)

endef
lint: deps-lint
	@mkdir -p build/lint
	$(foreach cc,$(LINT_CCS),$(foreach l,$(LUAS),$(call lint_c,$(cc),$(l))))
	luacheck -q --codes src spec examples

# Windows, compile only: every src/*.c with Debian's MinGW-w64 against the
# same Lua and libcurl headers, for each Lua (make -j2 check-windows runs two
# compilers at once). Linking would need Windows builds of libcurl and Lua,
# which Debian does not ship (README: MSYS2). Only curl/ is linked into the
# include path: all of -I/usr/include/<triplet> would hand MinGW glibc's
# sys/ headers.
WIN_CC = x86_64-w64-mingw32-gcc
WIN_CFLAGS = -O2
WIN_BUILD = build/windows
CURL_H = $(firstword $(wildcard $(patsubst -I%,%/curl/curl.h,$(filter -I%,$(CURL_CFLAGS))) /usr/include/curl/curl.h))
WIN_OBJECTS = $(foreach l,$(LUAS),$(patsubst src/%.c,$(WIN_BUILD)/$(call lua_dir,$(l))/%.o,$(C_SOURCES)))
define windows_objects
$(WIN_BUILD)/$(call lua_dir,$(1))/%.o: src/%.c $(C_HEADERS) | $(WIN_BUILD)/include/curl
	@mkdir -p $$(dir $$@)
	$(WIN_CC) -c $(WIN_CFLAGS) $(WARNINGS) -Werror -I$(WIN_BUILD)/include $$(call lua_cflags,$(1),$(1)) $$< -o $$@
endef
$(foreach l,$(LUAS),$(eval $(call windows_objects,$(l))))

$(WIN_BUILD)/include/curl:
	@test -n "$(CURL_H)" || { echo "check-windows: no curl/curl.h (Debian: libcurl4-openssl-dev)" >&2; exit 1; }
	@mkdir -p $(dir $@) && ln -sfn $(patsubst %/,%,$(dir $(CURL_H))) $@

check-windows: deps-windows
	@$(MAKE) --no-print-directory $(WIN_OBJECTS)
	@echo "check-windows: $(words $(C_SOURCES)) files compile for Windows against each of $(LUAS)"

# Memory safety. Both run the Lua 5.4 suite; FISH_TEST_SLOW tells specs to
# keep their functional checks but drop loose timing bounds. The host-loop
# specs run their own nvim/nginx processes and are left out.
ASAN_BUILD = build/asan
ASAN_FLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
$(ASAN_BUILD)/fish/core.so: $(C_SOURCES) $(C_HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_FLAGS) $(WARNINGS) -fPIC -shared $(call lua_cflags,lua5.4,lua5.4) $(CURL_CFLAGS) $(C_SOURCES) -o $@ $(CURL_LIBS)

test-asan: deps-asan $(ASAN_BUILD)/fish/core.so
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	FISH_TEST_SLOW=1 LUA_CPATH='$(CURDIR)/$(ASAN_BUILD)/?.so;;' \
	lua5.4 $(BUSTED_SCRIPT) --exclude-tags=hosts spec

test-valgrind: deps-valgrind
	$(MAKE) LUA=lua5.4 all
	FISH_TEST_SLOW=1 LUA_CPATH='$(CURDIR)/build/5.4/?.so;;' \
	valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	  --show-leak-kinds=definite,indirect \
	  lua5.4 $(BUSTED_SCRIPT) --exclude-tags=hosts spec

# libFuzzer targets for every parser of outside bytes. `make fuzz` runs
# each for FUZZ_SECONDS; new inputs go to build/fuzz, the checked-in corpus
# in spec/fuzz/corpus stays as it is.
FUZZ_SECONDS ?= 60
FUZZ_BUILD = build/fuzz
FUZZ_CC = clang
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Isrc $(call lua_cflags,lua5.4,lua5.4) $(CURL_CFLAGS)
FUZZ_TARGETS = msgpack_read msgpack_decode response args ws_frame ws_handshake
CORE_SOURCES = $(filter-out src/core.c,$(C_SOURCES))

$(FUZZ_BUILD)/msgpack_read_fuzz: spec/fuzz/msgpack_read_fuzz.c src/msgpack_read.c src/msgpack_write.c src/buffer.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $^ -o $@

# The WebSocket codec is pure C, linked without Lua or libcurl.
$(FUZZ_BUILD)/ws_frame_fuzz: spec/fuzz/ws_frame_fuzz.c src/ws.c src/utf8.c src/buffer.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $^ -o $@

$(FUZZ_BUILD)/ws_handshake_fuzz: spec/fuzz/ws_handshake_fuzz.c src/ws.c src/utf8.c src/buffer.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $^ -o $@

$(FUZZ_BUILD)/msgpack_decode_fuzz: spec/fuzz/msgpack_decode_fuzz.c src/lmsgpack.c src/msgpack_read.c src/msgpack_write.c src/buffer.c src/compat.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $^ -o $@ -llua5.4

$(FUZZ_BUILD)/response_fuzz: spec/fuzz/response_fuzz.c $(C_SOURCES)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -DFISH_ROOT='"$(CURDIR)"' $^ -o $@ -llua5.4 $(CURL_LIBS)

# The Lua half (stub transport, input bytecode, verdict) is args_fuzz.lua,
# read at start-up like src/fish/*.lua: a rebuild is needed only for the C.
$(FUZZ_BUILD)/args_fuzz: spec/fuzz/args_fuzz.c $(C_SOURCES)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -DFISH_ROOT='"$(CURDIR)"' $^ -o $@ -llua5.4 $(CURL_LIBS)

fuzz: deps-fuzz $(addprefix $(FUZZ_BUILD)/,$(addsuffix _fuzz,$(FUZZ_TARGETS)))
	@for t in $(FUZZ_TARGETS); do \
	  corpus=spec/fuzz/corpus/$$t; [ -d $$corpus ] || corpus=spec/fuzz/corpus/msgpack; \
	  mkdir -p $(FUZZ_BUILD)/new-$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
	  $(FUZZ_BUILD)/$${t}_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/ $(FUZZ_BUILD)/new-$$t $$corpus >$(FUZZ_BUILD)/$$t.log 2>&1; \
	  code=$$?; grep -aE '^(Done |==[0-9]+==|SUMMARY)' $(FUZZ_BUILD)/$$t.log; \
	  [ $$code = 0 ] || { echo "fuzz: $$t failed (exit $$code), see $(FUZZ_BUILD)/$$t.log"; exit 1; }; \
	done

fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=10

demo: deps-demo
	$(MAKE) LUA=lua5.4 all
	LUA_CPATH='$(CURDIR)/build/5.4/?.so;;' sh examples/demo.sh

# 20,000 requests with 10 % faults in one process; prints RSS growth.
soak: all
	LUA_CPATH='$(CURDIR)/build/5.4/?.so;;' lua5.4 spec/soak.lua $(SOAK_REQUESTS)

# fish beside a minimal C client on raw libcurl (spec/bench/raw.c): the same
# work in the same run against a local nginx, on Lua 5.4 and LuaJIT; prints
# medians of BENCH_RUNS runs (default 5) and the ratios. Not run by CI.
.PHONY: bench
bench: deps
	lua5.4 spec/bench/run.lua

# The HTML API reference in DOCS_DIR, made by LDoc from the LuaLS definition
# file src/types/fish.lua (src/types/config.ld says how). Any LDoc warning
# fails the target; lua-discount renders the Markdown, else LDoc shows text.
DOCS_DIR ?= build/docs
.PHONY: docs
docs:
	@command -v ldoc >/dev/null 2>&1 || \
	  { echo "docs: ldoc is missing (Debian: apt-get install lua-ldoc lua-discount)" >&2; exit 1; }
	@mkdir -p $(DOCS_DIR)
	ldoc --fatalwarnings --testing -c src/types/config.ld -d $(abspath $(DOCS_DIR)) .
	@test -f $(DOCS_DIR)/index.html && echo "docs: $(DOCS_DIR)/index.html"

# The fish-audio command goes to $(BINDIR), its first line naming the Lua
# it was installed for and its INSTALL line the directories above, so it
# runs without LUA_PATH.
BINDIR ?= $(PREFIX)/bin
CLI_SOURCES = $(wildcard src/fish/cli/*.lua)

install: $(MODULE)
	install -d $(DESTDIR)$(LUADIR)/fish/cli $(DESTDIR)$(LIBDIR)/fish $(DESTDIR)$(BINDIR)
	install -m 644 $(LUA_SOURCES) $(DESTDIR)$(LUADIR)/fish/
	install -m 644 $(CLI_SOURCES) $(DESTDIR)$(LUADIR)/fish/cli/
	install -m 755 $(MODULE) $(DESTDIR)$(LIBDIR)/fish/core.so
	sed -e '1s|.*|#!/usr/bin/env $(LUA)|' \
	    -e 's|^local INSTALL = nil.*|local INSTALL = { lua = [==[$(LUADIR)]==], lib = [==[$(LIBDIR)]==] }|' \
	    src/bin/fish-audio > $(DESTDIR)$(BINDIR)/fish-audio
	chmod 755 $(DESTDIR)$(BINDIR)/fish-audio

clean:
	rm -rf build
