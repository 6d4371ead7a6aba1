/* libFuzzer target for fish's argument checking: random option tables go
 * into fish.convert and voices.create, through the real Lua modules and the
 * real C core (msgpack writer, request constructor), over a stub transport
 * that never touches the network. The bytecode that builds the table, the
 * stub and the rule for allowed outcomes live in spec/fuzz/args_fuzz.lua;
 * this file only hosts the Lua state and turns a verdict into abort().
 *
 *   make build/fuzz/args_fuzz && build/fuzz/args_fuzz spec/fuzz/corpus/args
 */
#define _POSIX_C_SOURCE 200809L /* setenv, mkdtemp */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int fish_core_open(lua_State *L);

static lua_State *state;

/* libFuzzer only sees C edges, and the checks under test are Lua. A line
 * hook turns each step from one line of src/fish/NAME.lua to the next into a
 * hit in libFuzzer's extra counters, so inputs that reach new Lua branches
 * are kept too. The source pointer is stable per function: cache it. */
#define LUA_EDGES (1 << 14)
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[LUA_EDGES];

/* A run that steps through this many lines of fish is stuck (a busy wait
 * or a loop that does not end): report where, rather than libFuzzer's
 * wall-clock timeout, which shows only C frames. A normal run takes a few
 * thousand. */
#define LINE_BUDGET 20000000
static unsigned long lines_this_run;

static void on_line(lua_State *L, lua_Debug *ar) {
    static const char *last_source;
    static uint32_t last_hash, prev;
    if (!lua_getinfo(L, "S", ar)) return;
    if (ar->source != last_source) {
        last_source = ar->source;
        last_hash = 0;
        if (strstr(ar->source, "/src/fish/"))
            for (const char *c = ar->source; *c; c++) last_hash = last_hash * 31 + (uint8_t)*c;
    }
    if (!last_hash) return;
    if (++lines_this_run == LINE_BUDGET) {
        luaL_traceback(L, L, "args_fuzz: a run ran away in fish's Lua", 0);
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        abort();
    }
    uint32_t here = last_hash ^ ((uint32_t)ar->currentline * 2654435761u);
    lua_edges[(here ^ prev) % LUA_EDGES]++;
    prev = here >> 1;
}

static void fail(const char *what) {
    fprintf(stderr, "args_fuzz: %s\n", what ? what : "(no message)");
    abort();
}

static char scratch[] = "/tmp/fish-args-fuzz-XXXXXX";

/* After a normal exit; a crash leaves the directory for a look. */
static void remove_scratch(void) {
    char command[sizeof scratch + 16];
    snprintf(command, sizeof command, "rm -rf '%s'", scratch);
    if (system(command) != 0) fprintf(stderr, "args_fuzz: could not remove %s\n", scratch);
}

static void setup(void) {
    /* fish.convert and fish.voices.create use the default client, which
     * reads these; .invalid never resolves, should anything slip past. */
    setenv("FISH_API_KEY", "fuzz-key", 1);
    setenv("FISH_BASE_URL", "https://fuzz.invalid", 1);
    if (!mkdtemp(scratch)) fail("mkdtemp failed");
    atexit(remove_scratch);

    state = luaL_newstate();
    luaL_openlibs(state);
    lua_sethook(state, on_line, LUA_MASKLINE, 0);
    if (luaL_loadfile(state, FISH_ROOT "/spec/fuzz/args_fuzz.lua") != LUA_OK)
        fail(lua_tostring(state, -1));
    lua_pushstring(state, FISH_ROOT);
    lua_pushcfunction(state, fish_core_open);
    lua_call(state, 0, 1);
    lua_pushstring(state, scratch);
    /* Values only C can make: fish must refuse the full and the non-NULL
     * light userdata (w:value cannot encode them); NULL is mp_null. */
    lua_newuserdata(state, 8);
    lua_pushlightuserdata(state, NULL);
    lua_pushlightuserdata(state, (void *)&state);
    if (lua_pcall(state, 6, 1, 0) != LUA_OK) fail(lua_tostring(state, -1));
    lua_setfield(state, LUA_REGISTRYINDEX, "fish.fuzz");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!state) setup();
    lines_this_run = 0;
    lua_getfield(state, LUA_REGISTRYINDEX, "fish.fuzz");
    lua_pushlstring(state, (const char *)data, size);
    if (lua_pcall(state, 1, 1, 0) != LUA_OK) fail(lua_tostring(state, -1));
    if (!lua_isnil(state, -1)) fail(lua_tostring(state, -1));
    lua_settop(state, 0);
    return 0;
}
