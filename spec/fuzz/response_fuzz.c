/* libFuzzer target for the parsers of HTTP answers that fish hand-wrote:
 * Retry-After (delta-seconds or an HTTP date, via libcurl's curl_getdate)
 * and error bodies (JSON object, {detail}, 422 arrays or plain text, via
 * lua-cjson). Both live in Lua, so this target runs them in a real Lua 5.4
 * state with fish.core linked in, exactly as the module loads them.
 *
 *   make build/fuzz/response_fuzz && build/fuzz/response_fuzz spec/fuzz/corpus/response
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int fish_core_open(lua_State *L);

static const char *const SETUP =
    "package.path = FISH_ROOT .. '/src/?.lua;' .. FISH_ROOT .. '/src/?/init.lua;' .. package.path\n"
    "local http = require('fish.http')\n"
    "local errors = require('fish.errors')\n"
    "return function(bytes)\n"
    "  local wait = http.parse_retry_after(bytes, 1700000000)\n"
    "  assert(wait == nil or (wait >= 0 and wait <= 60), 'retry-after out of range')\n"
    "  local message = errors.message_from_body(bytes)\n"
    "  assert(message == nil or type(message) == 'string')\n"
    "  local err = errors.from_http(500, bytes, false)\n"
    "  local line = tostring(err)\n"
    "  assert(not line:find('\\n'), 'multi-line tostring')\n"
    "  errors.scrub(bytes, 'secret-key')\n"
    "end\n";

static lua_State *state;

static void setup(void) {
    state = luaL_newstate();
    luaL_openlibs(state);
    lua_getglobal(state, "package");
    lua_getfield(state, -1, "preload");
    lua_pushcfunction(state, fish_core_open);
    lua_setfield(state, -2, "fish.core");
    lua_pop(state, 2);
    lua_pushstring(state, FISH_ROOT);
    lua_setglobal(state, "FISH_ROOT");
    if (luaL_dostring(state, SETUP) != LUA_OK) abort();
    lua_setfield(state, LUA_REGISTRYINDEX, "fish.fuzz");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!state) setup();
    lua_getfield(state, LUA_REGISTRYINDEX, "fish.fuzz");
    lua_pushlstring(state, (const char *)data, size);
    if (lua_pcall(state, 1, 0, 0) != LUA_OK) {
        /* Our parsers must never raise on outside bytes. */
        abort();
    }
    lua_settop(state, 0);
    return 0;
}
