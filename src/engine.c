/* The engine drives transfers: `perform` is the non-blocking step, `poll`
 * the blocking wait (curl_multi_poll, so there is no FD_SETSIZE ceiling and
 * an idle process sleeps), `timeout` tells a host loop when to come back. */
#include "engine.h"

#include "class.h"
#include "platform.h"
#include "watch.h"

static fish_engine *check_engine(lua_State *L, int idx) {
    fish_engine *e = luaL_checkudata(L, idx, FISH_ENGINE_MT);
    if (e->closed) luaL_argerror(L, idx, "engine is closed");
    return e;
}

static void unlink_request(fish_request *r) {
    fish_engine *e = r->engine;
    if (r->prev) r->prev->next = r->next;
    else e->running = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->engine = NULL;
}

void fish_engine_detach(fish_request *r) {
    if (!r->engine) return;
    curl_multi_remove_handle(r->engine->multi, r->easy);
    unlink_request(r);
}

static int engine_new(lua_State *L) {
    fish_engine *e = lua_newuserdata(L, sizeof *e);
    e->multi = NULL;
    e->running = NULL;
    e->next_id = 0;
    e->closed = 1;
    e->watch = NULL;
    luaL_getmetatable(L, FISH_ENGINE_MT);
    lua_setmetatable(L, -2);
    e->multi = curl_multi_init();
    if (!e->multi) return luaL_error(L, "curl_multi_init failed");
    e->closed = 0;
    if (fish_watch_attach(e) != 0) return luaL_error(L, "out of memory");
    return 1;
}

/* e:add(request) -> id. The request keeps the engine alive through its
 * uservalue, so the engine is never collected under a running transfer. */
static int engine_add(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    fish_request *r = fish_check_request(L, 2);
    if (r->state != REQ_IDLE) return luaL_argerror(L, 2, "request was already started");
    CURLMcode rc = curl_multi_add_handle(e->multi, r->easy);
    if (rc != CURLM_OK) return luaL_error(L, "curl_multi_add_handle: %s", curl_multi_strerror(rc));
    lua_newtable(L);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_setuservalue(L, 2);
    r->engine = e;
    r->next = e->running;
    r->prev = NULL;
    if (e->running) e->running->prev = r;
    e->running = r;
    r->state = REQ_RUNNING;
    r->started_at = r->last_activity_at = fish_now();
    r->id = ++e->next_id;
    lua_pushinteger(L, r->id);
    return 1;
}

/* e:perform(finished) -> running count. Appends the id of every request that
 * finished during this step to the table `finished`. */
static int engine_perform(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int running = 0;
    CURLMcode rc = curl_multi_perform(e->multi, &running);
    if (rc != CURLM_OK) return luaL_error(L, "curl_multi_perform: %s", curl_multi_strerror(rc));
    fish_engine_collect(L, e, 2);
    lua_pushinteger(L, running);
    return 1;
}

void fish_engine_collect(lua_State *L, fish_engine *e, int idx) {
    int n = (int)lua_rawlen(L, idx);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(e->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) continue;
        fish_request *r = NULL;
        CURLcode result = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        /* msg is invalid once the handle is removed: read it first. */
        fish_engine_detach(r);
        fish_request_finish(r, result, 0);
        lua_pushinteger(L, r->id);
        lua_rawseti(L, idx, ++n);
    }
}

/* e:poll(seconds): sleep until a transfer has something to do, the time is
 * up, or e:wakeup() is called. With nothing running it is a plain sleep. */
static int engine_poll(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    double seconds = (double)luaL_checknumber(L, 2);
    /* NaN fails every comparison below and would reach the conversion. */
    if (seconds != seconds) return luaL_argerror(L, 2, "timeout is NaN");
    int ms = seconds <= 0 ? 0 : seconds > 3600 ? 3600000 : (int)(seconds * 1000 + 0.5);
    CURLMcode rc = curl_multi_poll(e->multi, NULL, 0, ms, NULL);
    if (rc != CURLM_OK) return luaL_error(L, "curl_multi_poll: %s", curl_multi_strerror(rc));
    return 0;
}

/* e:timeout() -> seconds until libcurl wants perform again, or nil. */
static int engine_timeout(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    long ms = -1;
    curl_multi_timeout(e->multi, &ms);
    if (ms < 0) return 0;
    lua_pushnumber(L, (lua_Number)ms / 1000.0);
    return 1;
}

/* e:limit_connections(total, per_host): at most this many connections in
 * all, and to one host (nil or 0: no limit). Transfers beyond it wait in
 * libcurl's queue for a connection to come free. The cache of idle
 * connections kept for reuse is bounded by `total` too. */
static int engine_limit_connections(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    long limit[2];
    for (int i = 0; i < 2; i++) {
        lua_Integer n = luaL_optinteger(L, 2 + i, 0);
        if (n < 0 || n > 1000000) return luaL_argerror(L, 2 + i, "must be nil or a count from 0 to 1000000");
        limit[i] = (long)n;
    }
    curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, limit[0]);
    curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, limit[1]);
    if (limit[0] > 0) curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, limit[0]);
    return 0;
}

/* e:count() -> how many requests are running in this engine. */
static int engine_count(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    lua_Integer n = 0;
    for (fish_request *r = e->running; r; r = r->next) n++;
    lua_pushinteger(L, n);
    return 1;
}

static int engine_wakeup(lua_State *L) {
    curl_multi_wakeup(check_engine(L, 1)->multi);
    return 0;
}

/* One close for __gc, __close and e:close(). Running requests are canceled:
 * they may outlive the engine's Lua object, never its multi handle. */
static int engine_close(lua_State *L) {
    fish_engine *e = luaL_checkudata(L, 1, FISH_ENGINE_MT);
    if (e->closed) return 0;
    while (e->running) {
        fish_request *r = e->running;
        fish_engine_detach(r);
        fish_request_finish(r, CURLE_ABORTED_BY_CALLBACK, 1);
    }
    curl_multi_cleanup(e->multi); /* may still report closing sockets to the watch */
    e->multi = NULL;
    fish_watch_free(e);
    e->closed = 1;
    return 0;
}

static int engine_tostring(lua_State *L) {
    fish_engine *e = luaL_checkudata(L, 1, FISH_ENGINE_MT);
    lua_pushfstring(L, "fish.engine (%s)", e->closed ? "closed" : "open");
    return 1;
}

int fish_open_engine(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"add", engine_add},       {"perform", engine_perform}, {"poll", engine_poll},
        {"timeout", engine_timeout}, {"wakeup", engine_wakeup}, {"count", engine_count},
        {"limit_connections", engine_limit_connections},
        {NULL, NULL},
    };
    fish_class_register(L, FISH_ENGINE_MT, methods, engine_close, engine_tostring);
    fish_watch_register(L);
    lua_pushcfunction(L, engine_new);
    lua_setfield(L, -2, "engine");
    return 0;
}
