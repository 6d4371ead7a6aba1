/* fish.core: the C half of fish. It moves bytes (libcurl), encodes and
 * decodes msgpack, and tells time; everything that decides what to send or
 * what an answer means lives in the Lua half. */
#include <curl/curl.h>
#include <string.h>
#include <time.h>

#include "compat.h"
#include "engine.h"
#include "live.h"
#include "lmsgpack.h"
#include "platform.h"
#include "request.h"
#include "utf8.h"
#include "ws_test.h"

#define FISH_CORE_VERSION "0.1.0"

static int core_now(lua_State *L) {
    lua_pushnumber(L, fish_now());
    return 1;
}

/* core.utf8_bad(s) -> nil if s is well-formed UTF-8, else the position of
 * the first bad sequence (util.utf8_valid's answer, without a Lua loop). */
static int core_utf8_bad(lua_State *L) {
    size_t len = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    size_t at = fish_utf8_bad((const unsigned char *)s, len);
    if (at == 0) return 0;
    lua_pushinteger(L, (lua_Integer)at);
    return 1;
}

static int core_curl_version(lua_State *L) {
    const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    lua_pushstring(L, info->version);
    return 1;
}

/* core.http_date(text) -> epoch seconds, or nil. libcurl's parser, not ours:
 * Retry-After may carry an HTTP date. */
static int core_http_date(lua_State *L) {
    time_t t = curl_getdate(luaL_checkstring(L, 1), NULL);
    if (t == -1) return 0;
    fish_pushint64(L, (int64_t)t);
    return 1;
}

static int core_epoch(lua_State *L) {
    fish_pushint64(L, (int64_t)time(NULL));
    return 1;
}

/* core.stat(path [, link_itself]) -> { type=, size=, mode=, writable= } |
 * nil, message, errno. Follows symbolic links unless link_itself (lstat).
 * The Lua half decides with it whether a path may be written or uploaded. */
static int core_stat(lua_State *L) {
    /* In fish_file_type's order. */
    static const char *const types[] = {"file",  "directory", "fifo", "char",
                                        "block", "socket",    "link", "other"};
    size_t len = 0;
    const char *path = luaL_checklstring(L, 1, &len);
    if (strlen(path) != len) return luaL_argerror(L, 1, "path contains a NUL byte");
    fish_stat_info st;
    int err = fish_stat(path, lua_toboolean(L, 2), &st);
    if (err) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(err));
        lua_pushinteger(L, err);
        return 3;
    }
    lua_createtable(L, 0, 4);
    lua_pushstring(L, types[st.type]);
    lua_setfield(L, -2, "type");
    fish_pushint64(L, st.size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.mode);
    lua_setfield(L, -2, "mode");
    lua_pushboolean(L, st.writable);
    lua_setfield(L, -2, "writable");
    return 1;
}

/* core.ignore_sigpipe(): for the fish-audio command only, never called by
 * the library (a host's signals are the host's). With SIGPIPE ignored, a
 * player that quits makes the next write to stdout fail with EPIPE, which
 * the command reports and cleans up after, instead of the process dying
 * with a temporary file and a stdin relay left behind. */
static int core_ignore_sigpipe(lua_State *L) {
    (void)L;
    fish_ignore_sigpipe();
    return 0;
}

/* Exported beside luaopen_fish_core so engines that link modules statically
 * (Defold, custom hosts) can register it under any name. */
int fish_core_open(lua_State *L) {
    /* Once per process; thread-safe in the libcurl versions we need. */
    static int curl_ready = 0;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return luaL_error(L, "curl_global_init failed");
        fish_request_init_process();
        curl_ready = 1;
    }
    static const luaL_Reg functions[] = {
        {"now", core_now},
        {"epoch", core_epoch},
        {"curl_version", core_curl_version},
        {"http_date", core_http_date},
        {"stat", core_stat},
        {"utf8_bad", core_utf8_bad},
        {"ignore_sigpipe", core_ignore_sigpipe},
        {NULL, NULL},
    };
    luaL_newlib(L, functions);
    lua_pushliteral(L, FISH_CORE_VERSION);
    lua_setfield(L, -2, "version");
    fish_open_request(L);
    fish_open_engine(L);
    fish_open_msgpack(L);
    fish_live_open(L);
    fish_ws_test_open(L);
    return 1;
}

int luaopen_fish_core(lua_State *L) { return fish_core_open(L); }
