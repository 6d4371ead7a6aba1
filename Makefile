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

.PHONY: all deps test test-lua test-luajit demo install clean

all: $(MODULE)

$(MODULE): $(C_SOURCES) $(C_HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARNINGS) -fPIC -shared $(LUA_CFLAGS) $(CURL_CFLAGS) $(C_SOURCES) -o $@ $(LDFLAGS) $(CURL_LIBS)

# Install the Debian packages that building and testing need, if missing.
deps:
	@sh .ci/deps

test: deps
	$(MAKE) LUA=lua5.4 all
	LUA_CPATH='$(CURDIR)/build/5.4/?.so;;' $(BUSTED) --lua=lua5.4 spec

demo: deps
	$(MAKE) LUA=lua5.4 all
	LUA_CPATH='$(CURDIR)/build/5.4/?.so;;' sh examples/demo.sh

install: $(MODULE)
	install -d $(DESTDIR)$(LUADIR)/fish $(DESTDIR)$(LIBDIR)/fish
	install -m 644 $(LUA_SOURCES) $(DESTDIR)$(LUADIR)/fish/
	install -m 755 $(MODULE) $(DESTDIR)$(LIBDIR)/fish/core.so

clean:
	rm -rf build
