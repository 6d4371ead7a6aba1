/* The engine drives transfers: `perform` is the non-blocking step, `poll`
 * the blocking wait (curl_multi_poll, so there is no FD_SETSIZE ceiling and
 * an idle process sleeps), `timeout` tells a host loop when to come back. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

#include "class.h"
#include "live.h"
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
    e->live = NULL;
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
 * uservalue ([1]; beside the body's strings at [2], if it holds any), so
 * the engine is never collected under a running transfer. The Lua side is
 * done before the handle joins the multi: a Lua allocation may raise, and
 * must not leave a handle in the multi that no request of the engine's
 * owns. */
static int engine_add(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    fish_request *r = fish_check_request(L, 2);
    if (r->state != REQ_IDLE) return luaL_argerror(L, 2, "request was already started");
    if (!r->holds_strings) {
        lua_newtable(L);
        lua_setuservalue(L, 2);
    }
    lua_getuservalue(L, 2);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pop(L, 1);
    CURLMcode rc = curl_multi_add_handle(e->multi, r->easy);
    if (rc != CURLM_OK) return luaL_error(L, "curl_multi_add_handle: %s", curl_multi_strerror(rc));
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

/* e:add_live(socket) -> id, from the requests' id space. The socket starts
 * connecting inside the multi handle; like a request it holds the engine
 * through its uservalue, set first for the same reason as e:add's. */
static int engine_add_live(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    fish_live *s = fish_live_check(L, 2);
    if (s->engine || s->state != LIVE_CONNECTING || !s->easy)
        return luaL_argerror(L, 2, "live socket was already started");
    lua_newtable(L);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_setuservalue(L, 2);
    CURLMcode rc = curl_multi_add_handle(e->multi, s->easy);
    if (rc != CURLM_OK) return luaL_error(L, "curl_multi_add_handle: %s", curl_multi_strerror(rc));
    fish_live_attach(s, e, ++e->next_id);
    lua_pushinteger(L, s->id);
    return 1;
}

static fish_live *live_of(fish_engine *e, CURL *easy) {
    for (fish_live *s = e->live; s; s = s->next)
        if (s->easy == easy) return s;
    return NULL;
}

/* e:perform(finished [, changed]) -> running count. Appends the id of every request that
 * finished during this step to the table `finished`, and the id of every
 * live socket that got messages or changed state to `changed`. The count
 * is of requests only: live sockets still connecting are left out. */
static int engine_perform(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_changed = !lua_isnoneornil(L, 3);
    if (has_changed) luaL_checktype(L, 3, LUA_TTABLE);
    int running = 0;
    CURLMcode rc = curl_multi_perform(e->multi, &running);
    if (rc != CURLM_OK) return luaL_error(L, "curl_multi_perform: %s", curl_multi_strerror(rc));
    /* libcurl counts live sockets still connecting; Lua counts requests. */
    running -= fish_engine_collect(L, e, 2, has_changed ? 3 : 0);
    lua_pushinteger(L, running > 0 ? running : 0);
    return 1;
}

int fish_engine_collect(lua_State *L, fish_engine *e, int idx, int changed_idx) {
    int n = (int)lua_rawlen(L, idx);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(e->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) continue;
        fish_request *r = NULL;
        CURLcode result = msg->data.result;
        /* For a live socket, done means connected: its handle stays in the
         * multi, which owns the connection until the socket closes. */
        fish_live *s = live_of(e, msg->easy_handle);
        if (s) {
            fish_live_connected(s, result);
            continue;
        }
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        /* msg is invalid once the handle is removed: read it first. */
        fish_engine_detach(r);
        fish_request_finish(r, result, 0);
        lua_pushinteger(L, r->id);
        lua_rawseti(L, idx, ++n);
    }
    /* Then every live socket moves as far as it can without waiting: the
     * same pass whichever way the engine was moved (perform, or a host's
     * socket action on any fd, live ones included). Without a `changed`
     * table, a socket keeps its news for the next pass that has one. */
    int changed = changed_idx ? (int)lua_rawlen(L, changed_idx) : 0;
    int connecting = 0;
    fish_live *next;
    for (fish_live *s = e->live; s; s = next) {
        next = s->next;
        if (s->state == LIVE_CONNECTING && s->in_multi) connecting++;
        if (fish_live_step(s, changed_idx != 0)) {
            lua_pushinteger(L, s->id);
            lua_rawseti(L, changed_idx, ++changed);
        }
    }
    return connecting;
}

/* Sleep up to ms until a transfer has something to do or e:wakeup() is
 * called; *ready (if not NULL) gets how many fds were ready (0: the time
 * was up, or a signal came). Live sockets are watched beside libcurl's own sockets. */
static CURLMcode poll_engine(fish_engine *e, int ms, int *ready) {
    struct curl_waitfd few[8], *fds = few;
    unsigned n = 0, cap = 8;
    for (fish_live *s = e->live; s; s = s->next) {
        curl_socket_t fd;
        int events = fish_live_wait(s, &fd);
        if (events < 0) ms = 0; /* it has bytes to read already */
        if (events <= 0) continue;
        if (n == cap) {
            struct curl_waitfd *grown = malloc(sizeof *grown * cap * 2);
            if (!grown) break; /* the rest are still stepped, only later */
            memcpy(grown, fds, sizeof *fds * n);
            if (fds != few) free(fds);
            fds = grown;
            cap *= 2;
        }
        fds[n].fd = fd;
        fds[n].events = (short)events;
        fds[n].revents = 0;
        n++;
    }
    CURLMcode rc = curl_multi_poll(e->multi, n ? fds : NULL, n, ms, ready);
    if (fds != few) free(fds);
    return rc;
}

/* Milliseconds until libcurl wants perform again, or -1 for never; 0 too
 * while a live socket stopped reading at its step budget: its bytes may
 * wait inside TLS, where no fd readiness will announce them. */
static long curl_in_ms(fish_engine *e) {
    long ms = -1;
    curl_multi_timeout(e->multi, &ms);
    for (fish_live *s = e->live; s; s = s->next) {
        curl_socket_t fd;
        if (fish_live_wait(s, &fd) < 0) ms = 0;
    }
    return ms;
}

static int to_ms(double seconds) {
    return seconds <= 0 ? 0 : seconds > 3600 ? 3600000 : (int)(seconds * 1000 + 0.5);
}

/* e:poll(seconds): sleep until a transfer has something to do, the time is
 * up, or e:wakeup() is called. With nothing running it is a plain sleep. */
static int engine_poll(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    double seconds = (double)luaL_checknumber(L, 2);
    /* NaN fails every comparison below and would reach the conversion. */
    if (seconds != seconds) return luaL_argerror(L, 2, "timeout is NaN");
    CURLMcode rc = poll_engine(e, to_ms(seconds), NULL);
    if (rc != CURLM_OK) return luaL_error(L, "curl_multi_poll: %s", curl_multi_strerror(rc));
    return 0;
}

/* The earliest time one of the request's limits (seconds, <= 0: none)
 * ends it, and which; 0 when none can. Mirrors deadlines.lua. */
static double limit_due(const fish_request *r, double first_byte, double idle, double total,
                        const char **why) {
    double at = 0;
    *why = NULL;
    if (total > 0) at = r->started_at + total, *why = "total";
    double t = 0;
    const char *which = NULL;
    if (r->first_byte_at == 0 && first_byte > 0)
        t = r->started_at + first_byte, which = "first_byte";
    else if (r->first_byte_at > 0 && idle > 0)
        t = r->last_activity_at + idle, which = "idle";
    if (which && (at == 0 || t < at)) at = t, *why = which;
    return at;
}

static double opt_seconds(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return 0;
    double v = (double)luaL_checknumber(L, idx);
    return v == v && v > 0 ? v : 0;
}

/* e:wait(request, seconds, first_byte, idle, total, finished, changed)
 *   -> running, curl_in, expired
 * A blocking call's wait, in C: perform and poll until the request is
 * over, another request finished or a live socket has news (in `finished`
 * and `changed`, as e:perform reports them), `seconds` have passed (nil:
 * no limit; fish's other deadlines and timers), or a poll woke with nothing
 * ready (libcurl's own timer, or a signal: Lua's Ctrl-C hook runs only
 * once C returns). The request's own time limits (seconds; nil: none) are
 * enforced here: `expired` names the one that passed ("first_byte",
 * "idle", "total") and the caller cancels the request. `running` is
 * e:perform's; `curl_in` e:timeout()'s. */
static int engine_wait(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    fish_request *r = fish_check_request(L, 2);
    double seconds = lua_isnoneornil(L, 3) ? -1 : (double)luaL_checknumber(L, 3);
    if (seconds != seconds) return luaL_argerror(L, 3, "timeout is NaN");
    double first_byte = opt_seconds(L, 4), idle = opt_seconds(L, 5), total = opt_seconds(L, 6);
    luaL_checktype(L, 7, LUA_TTABLE);
    luaL_checktype(L, 8, LUA_TTABLE);
    double until = seconds >= 0 ? fish_now() + seconds : 0;
    const char *expired = NULL;
    int running = 0;
    int woke_empty = 0;
    for (;;) {
        CURLMcode rc = curl_multi_perform(e->multi, &running);
        if (rc != CURLM_OK) return luaL_error(L, "curl_multi_perform: %s", curl_multi_strerror(rc));
        running -= fish_engine_collect(L, e, 7, 8);
        if (r->state != REQ_RUNNING || lua_rawlen(L, 7) > 0 || lua_rawlen(L, 8) > 0) break;
        /* The last poll woke with nothing ready: libcurl's timer has had its
         * perform; let Lua look (a signal's hook runs now). */
        if (woke_empty) break;
        double now = fish_now();
        const char *why;
        double due = limit_due(r, first_byte, idle, total, &why);
        if (due > 0 && due <= now) {
            expired = why;
            break;
        }
        if (until > 0 && until <= now) break; /* seconds == 0 too */
        double sleep = 1.0; /* a slice: deadlines are checked again */
        if (due > 0 && due - now < sleep) sleep = due - now;
        if (until > 0 && until - now < sleep) sleep = until - now;
        int ready = 0;
        rc = poll_engine(e, to_ms(sleep), &ready);
        if (rc != CURLM_OK) return luaL_error(L, "curl_multi_poll: %s", curl_multi_strerror(rc));
        woke_empty = ready == 0;
    }
    lua_pushinteger(L, running > 0 ? running : 0);
    long ms = curl_in_ms(e);
    if (ms < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, (lua_Number)ms / 1000.0);
    if (expired)
        lua_pushstring(L, expired);
    else
        lua_pushnil(L);
    return 3;
}

/* e:timeout() -> seconds until libcurl wants perform again (curl_in_ms),
 * or nil. */
static int engine_timeout(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    long ms = curl_in_ms(e);
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

/* e:live_count() -> how many live sockets in this engine are not closed. */
static int engine_live_count(lua_State *L) {
    fish_engine *e = check_engine(L, 1);
    lua_Integer n = 0;
    for (fish_live *s = e->live; s; s = s->next)
        if (s->state != LIVE_CLOSED) n++;
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
    while (e->live) fish_live_engine_closed(e->live);
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
        {"add", engine_add},       {"perform", engine_perform}, {"poll", engine_poll}, {"wait", engine_wait},
        {"timeout", engine_timeout}, {"wakeup", engine_wakeup}, {"count", engine_count},
        {"limit_connections", engine_limit_connections},
        {"add_live", engine_add_live}, {"live_count", engine_live_count},
        {NULL, NULL},
    };
    fish_class_register(L, FISH_ENGINE_MT, methods, engine_close, engine_tostring);
    fish_watch_register(L);
    lua_pushcfunction(L, engine_new);
    lua_setfield(L, -2, "engine");
    return 0;
}
