/* benchclock: the clocks the Lua side of `make bench` needs and plain Lua
 * lacks, read the same way raw.c reads them. Built for each Lua by
 * spec/bench/run.lua; never part of fish.
 *
 *   now()            monotonic seconds
 *   cpu()            CPU seconds of this process (user + system)
 *   sleep_until(t)   sleep until now() >= t, whatever sockets do meanwhile
 *                    (a frame loop's vsync wait, not fish's poll) */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <lua.h>
#include <time.h>

static double clock_seconds(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int l_now(lua_State *L) {
    lua_pushnumber(L, clock_seconds(CLOCK_MONOTONIC));
    return 1;
}

static int l_cpu(lua_State *L) {
    lua_pushnumber(L, clock_seconds(CLOCK_PROCESS_CPUTIME_ID));
    return 1;
}

static int l_sleep_until(lua_State *L) {
    double t = (double)luaL_checknumber(L, 1);
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {}
    return 0;
}

int luaopen_benchclock(lua_State *L) {
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, l_cpu);
    lua_setfield(L, -2, "cpu");
    lua_pushcfunction(L, l_sleep_until);
    lua_setfield(L, -2, "sleep_until");
    return 1;
}
