/* oom_host: a Lua 5.4 host whose allocator can be told to fail, for
 * oom_spec.lua. Out of memory is the one error every Lua allocation in the
 * C core may raise at any point, and no stock interpreter can make it
 * happen on purpose.
 *
 *   oom_host SCRIPT ARGS...   runs SCRIPT with arg[1..] = ARGS and a global
 *                             fail_allocation(n): the n-th allocation that
 *                             grows memory from now on fails, once (0: none)
 *
 * Exits 0 when SCRIPT ran to its end, 1 when it raised. Built by the spec:
 * cc oom_host.c $(pkg-config --cflags --libs lua5.4). */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

static long allocations_left = 0; /* 0: never fail */
static int retries_to_fail = 0;

static void *allocate(void *ud, void *block, size_t old_size, size_t new_size) {
    (void)ud;
    if (new_size == 0) {
        free(block);
        return NULL;
    }
    /* Only growth may fail: Lua assumes shrinking always succeeds. (A new
     * block's old_size is a type tag, not a size.) */
    int grows = block == NULL || new_size > old_size;
    if (grows && retries_to_fail > 0) {
        retries_to_fail--;
        return NULL;
    }
    if (grows && allocations_left > 0 && --allocations_left == 0) {
        /* Lua 5.4 runs an emergency collection and tries once more before
         * it raises: that try must fail too. */
        retries_to_fail = 1;
        return NULL;
    }
    return realloc(block, new_size);
}

static int fail_allocation(lua_State *L) {
    allocations_left = (long)luaL_checkinteger(L, 1);
    retries_to_fail = 0;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: oom_host SCRIPT ARGS...\n");
        return 2;
    }
    lua_State *L = lua_newstate(allocate, NULL);
    if (!L) return 2;
    luaL_openlibs(L);
    lua_register(L, "fail_allocation", fail_allocation);
    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    int status = luaL_loadfile(L, argv[1]);
    if (status == LUA_OK) {
        for (int i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
        status = lua_pcall(L, argc - 2, 0, 0);
    }
    if (status != LUA_OK) fprintf(stderr, "oom_host: %s\n", lua_tostring(L, -1));
    allocations_left = 0;
    retries_to_fail = 0;
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
