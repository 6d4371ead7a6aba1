# fish: build, test and demo. `make` builds build/5.4/fish/core.so;
# `make LUA=luajit` builds build/luajit/fish/core.so for the 5.1/LuaJIT ABI.
LUA ?= lua5.4

ifeq ($(LUA),luajit)
LUA_PC ?= luajit
LUA_ABI = 5.1
BUILD = build/luajit
else
LUA_PC ?= lua5.4
LUA_ABI = 5.4
BUILD = build/5.4
endif

PREFIX ?= /usr/local
DESTDIR ?=
LUADIR ?= $(PREFIX)/share/lua/$(LUA_ABI)
LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_ABI)

CC ?= cc
CFLAGS ?= -O2 -g
WARNINGS = -Wall -Wextra -Wshadow -std=c99
# Headers only: the module never links against liblua; the host provides it.
LUA_CFLAGS := $(shell pkg-config --cflags $(LUA_PC) 2>/dev/null)
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

.PHONY: all deps test test-lua54 test-luajit test-asan test-valgrind fuzz fuzz-smoke demo soak install clean

all: $(MODULE)

$(MODULE): $(C_SOURCES) $(C_HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARNINGS) -fPIC -shared $(LUA_CFLAGS) $(CURL_CFLAGS) $(C_SOURCES) -o $@ $(LDFLAGS) $(CURL_LIBS)

# Install the Debian packages that building and testing need, if missing.
deps:
	@sh .ci/deps

# The whole suite on Lua 5.4 and on LuaJIT (the 5.1 ABI), closing with one
# "N passed, N failed, N skipped" line for both.
test: deps
	$(MAKE) LUA=lua5.4 all
	$(MAKE) LUA=luajit all
	@sh spec/support/suite.sh lua5.4 luajit

test-lua54:
	$(MAKE) LUA=lua5.4 all
	LUA_CPATH='$(CURDIR)/build/5.4/?.so;;' $(BUSTED) --lua=lua5.4 spec

test-luajit:
	$(MAKE) LUA=luajit all
	LUA_CPATH='$(CURDIR)/build/luajit/?.so;;' $(BUSTED) --lua=luajit spec

# Memory safety. Both run the Lua 5.4 suite; FISH_TEST_SLOW tells specs to
# keep their functional checks but drop loose timing bounds. The host-loop
# specs run their own nvim/nginx processes and are left out.
ASAN_BUILD = build/asan
ASAN_FLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
$(ASAN_BUILD)/fish/core.so: $(C_SOURCES) $(C_HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_FLAGS) $(WARNINGS) -fPIC -shared $(shell pkg-config --cflags lua5.4) $(CURL_CFLAGS) $(C_SOURCES) -o $@ $(CURL_LIBS)

test-asan: deps $(ASAN_BUILD)/fish/core.so
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	FISH_TEST_SLOW=1 LUA_CPATH='$(CURDIR)/$(ASAN_BUILD)/?.so;;' \
	lua5.4 $(BUSTED_SCRIPT) --exclude-tags=hosts spec

test-valgrind: deps
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
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Isrc $(shell pkg-config --cflags lua5.4) $(CURL_CFLAGS)
FUZZ_TARGETS = msgpack_read msgpack_decode response
CORE_SOURCES = $(filter-out src/core.c,$(C_SOURCES))

$(FUZZ_BUILD)/msgpack_read_fuzz: spec/fuzz/msgpack_read_fuzz.c src/msgpack_read.c src/msgpack_write.c src/buffer.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $^ -o $@

$(FUZZ_BUILD)/msgpack_decode_fuzz: spec/fuzz/msgpack_decode_fuzz.c src/lmsgpack.c src/msgpack_read.c src/msgpack_write.c src/buffer.c src/compat.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $^ -o $@ -llua5.4

$(FUZZ_BUILD)/response_fuzz: spec/fuzz/response_fuzz.c $(C_SOURCES)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -DFISH_ROOT='"$(CURDIR)"' $^ -o $@ -llua5.4 $(CURL_LIBS)

fuzz: deps $(addprefix $(FUZZ_BUILD)/,$(addsuffix _fuzz,$(FUZZ_TARGETS)))
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

demo:
	@sh .ci/deps demo
	$(MAKE) LUA=lua5.4 all
	LUA_CPATH='$(CURDIR)/build/5.4/?.so;;' sh examples/demo.sh

# 20,000 requests with 10 % faults in one process; prints RSS growth.
soak: all
	LUA_CPATH='$(CURDIR)/build/5.4/?.so;;' lua5.4 spec/soak.lua $(SOAK_REQUESTS)

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

install: $(MODULE)
	install -d $(DESTDIR)$(LUADIR)/fish $(DESTDIR)$(LIBDIR)/fish
	install -m 644 $(LUA_SOURCES) $(DESTDIR)$(LUADIR)/fish/
	install -m 755 $(MODULE) $(DESTDIR)$(LIBDIR)/fish/core.so

clean:
	rm -rf build
