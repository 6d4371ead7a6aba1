/* libFuzzer target: the Lua binding fish.core.mp_decode on arbitrary bytes,
 * in a real Lua 5.4 state, then the decoded value back through w:value.
 *
 * Build (from the project root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *     -Isrc $(pkg-config --cflags lua5.4) \
 *     spec/fuzz/msgpack_decode_fuzz.c src/lmsgpack.c src/msgpack_read.c \
 *     src/msgpack_write.c src/buffer.c src/compat.c -llua5.4 -lm \
 *     -o build/msgpack_decode_fuzz
 * Run (new inputs go to the first, scratch, directory; the seeds stay clean):
 *   mkdir -p build/fuzz-msgpack-decode
 *   build/msgpack_decode_fuzz -max_total_time=60 build/fuzz-msgpack-decode spec/fuzz/corpus/msgpack
 *
 * Checked on every input:
 *   - mp_decode never raises: it returns a value or nil plus a message of
 *     the form "msgpack: <reason> at byte N";
 *   - a decoded value either re-encodes through w:value or is refused with
 *     an ordinary Lua error (non-string keys, nesting beyond 64);
 *   - what w:value writes always decodes, and decoding then re-encoding it
 *     gives the same bytes (the writer's output is canonical). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lmsgpack.h"

static void check(int ok) {
    if (!ok) abort();
}

/* Stack: module table at 1. Pushes decode(bytes): one value, or nil + msg. */
static int decode(lua_State *L, const char *bytes, size_t len) {
    lua_getfield(L, 1, "mp_decode");
    lua_pushlstring(L, bytes, len);
    check(lua_pcall(L, 1, 2, 0) == LUA_OK); /* must never raise */
    if (lua_isnil(L, -2)) {
        const char *msg = lua_tostring(L, -1);
        check(msg != NULL && strncmp(msg, "msgpack: ", 9) == 0 && strstr(msg, " at byte "));
        lua_pop(L, 2);
        return 0;
    }
    check(lua_isnil(L, -1)); /* success returns a single value */
    lua_pop(L, 1);
    return 1;
}

/* Stack: module table at 1, value on top (popped). Pushes the encoded
 * string and returns 1, or returns 0 when w:value refused the value. */
static int encode(lua_State *L) {
    int value = lua_gettop(L);
    lua_getfield(L, 1, "mp_writer");
    check(lua_pcall(L, 0, 1, 0) == LUA_OK);
    int writer = lua_gettop(L);
    lua_getfield(L, writer, "value");
    lua_pushvalue(L, writer);
    lua_pushvalue(L, value);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        check(lua_type(L, -1) == LUA_TSTRING);
        lua_settop(L, value - 1);
        return 0;
    }
    lua_pop(L, 1);
    lua_getfield(L, writer, "result");
    lua_pushvalue(L, writer);
    check(lua_pcall(L, 1, 1, 0) == LUA_OK);
    lua_replace(L, value);
    lua_settop(L, value);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lua_State *L = luaL_newstate();
    check(L != NULL);
    lua_newtable(L);
    fish_open_msgpack(L);
    check(lua_gettop(L) == 1);

    if (decode(L, (const char *)data, size) && encode(L)) {
        size_t len1, len2;
        const char *once = lua_tolstring(L, -1, &len1);
        check(decode(L, once, len1)); /* the writer's bytes always decode */
        check(encode(L));             /* and what they decode to encodes */
        const char *twice = lua_tolstring(L, -1, &len2);
        check(len1 == len2 && memcmp(once, twice, len1) == 0);
    }
    lua_close(L);
    return 0;
}
