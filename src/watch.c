/* Socket mode (see watch.h). libcurl tells us through CURLMOPT_SOCKETFUNCTION
 * which fd to watch for what, and through CURLMOPT_TIMERFUNCTION when it
 * wants to be called again. We store both as data:
 *   - one entry per watched fd, its pointer handed back to libcurl with
 *     curl_multi_assign, so a callback finds its entry without a search;
 *   - a list of the entries that changed since the host last asked, in the
 *     order they changed (an fd closed and reused shows "remove", then its
 *     new state);
 *   - libcurl's timer as an absolute due time.
 * Lua reads them with engine:watch_changes() and engine:timer_due(), and
 * reports back with engine:socket_action(fd, events) and
 * engine:socket_timeout(). engine:poll_sockets() does both for a host that
 * cannot watch fds itself (OpenResty): one poll(2) that never waits, and an
 * action for each ready fd only. */
#include "watch.h"

#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "platform.h"

typedef struct watch_entry {
    curl_socket_t fd;
    int what;      /* FISH_WATCH_* */
    int changed;   /* listed in w->changes */
    int extra;     /* added by fish_watch_fd, not by libcurl */
    size_t index;  /* in w->entries while watched; SIZE_MAX once removed */
} watch_entry;

struct fish_watch {
    watch_entry **entries; /* every fd watched now (or FISH_WATCH_NONE) */
    size_t count, cap;
    watch_entry **changes; /* changed since the last watch_changes() */
    size_t nchanges, ccap;
    long timer_ms;         /* libcurl's last timer; -1: none */
    double timer_set_at;   /* when it was set (fish_now) */
    unsigned long timer_calls;
    fish_pollsock *socks;  /* poll_sockets' scratch, one per entry */
    size_t socks_cap;
    fish_poller *poller;   /* the same fds in the kernel (epoll), or NULL */
};

static int poll_bits(int what) {
    return what == FISH_WATCH_REMOVE ? 0
                                     : ((what & FISH_WATCH_IN) ? FISH_POLL_IN : 0) |
                                           ((what & FISH_WATCH_OUT) ? FISH_POLL_OUT : 0);
}

/* Keep the kernel's set in step with an entry. A failure there only costs
 * the speed-up: poll_sockets then looks at every fd itself. */
static void mirror(fish_watch *w, watch_entry *entry) {
    if (w->poller && fish_poller_set(w->poller, entry->fd, poll_bits(entry->what)) != 0) {
        fish_poller_free(w->poller);
        w->poller = NULL;
    }
}

/* Room for `need` items of `size` bytes in *array (realloc'd, doubling).
 * Returns 0, or -1 when out of memory (the array is then unchanged). */
static int grow(void *arrayp, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need) n *= 2;
    void *old;
    memcpy(&old, arrayp, sizeof old);
    void *p = realloc(old, n * size);
    if (!p) return -1;
    memcpy(arrayp, &p, sizeof p);
    *cap = n;
    return 0;
}

static int note_change(fish_watch *w, watch_entry *entry) {
    if (entry->changed) return 0;
    if (grow(&w->changes, &w->ccap, w->nchanges + 1, sizeof *w->changes) != 0) return -1;
    w->changes[w->nchanges++] = entry;
    entry->changed = 1;
    return 0;
}

static watch_entry *add_entry(fish_watch *w, curl_socket_t fd, int extra) {
    if (grow(&w->entries, &w->cap, w->count + 1, sizeof *w->entries) != 0) return NULL;
    watch_entry *entry = malloc(sizeof *entry);
    if (!entry) return NULL;
    entry->fd = fd;
    entry->what = FISH_WATCH_NONE;
    entry->changed = 0;
    entry->extra = extra;
    entry->index = w->count;
    w->entries[w->count++] = entry;
    return entry;
}

/* Stop watching: out of `entries` at once; freed once reported (or now, if
 * it never needs to be). */
static void remove_entry(fish_watch *w, watch_entry *entry) {
    size_t last = w->count - 1;
    w->entries[entry->index] = w->entries[last];
    w->entries[entry->index]->index = entry->index;
    w->count = last;
    entry->index = SIZE_MAX;
    entry->what = FISH_WATCH_REMOVE;
    mirror(w, entry);
    if (note_change(w, entry) != 0) free(entry); /* the host misses a remove; libcurl is fine */
}

/* Only records; never calls Lua. 0 goes on, -1 fails the transfer. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)easy;
    fish_engine *e = userp;
    fish_watch *w = e->watch;
    watch_entry *entry = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (entry) remove_entry(w, entry);
        return 0;
    }
    if (!entry) {
        entry = add_entry(w, fd, 0);
        if (!entry) return -1;
        curl_multi_assign(e->multi, fd, entry);
    }
    int want = what == CURL_POLL_IN ? FISH_WATCH_IN
               : what == CURL_POLL_OUT ? FISH_WATCH_OUT
               : what == CURL_POLL_INOUT ? FISH_WATCH_INOUT
                                         : FISH_WATCH_NONE;
    if (entry->what != want) {
        entry->what = want;
        mirror(w, entry);
        if (note_change(w, entry) != 0) return -1;
    }
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    fish_watch *w = ((fish_engine *)userp)->watch;
    w->timer_ms = timeout_ms;
    w->timer_set_at = fish_now();
    w->timer_calls++;
    return 0;
}

int fish_watch_attach(fish_engine *e) {
    fish_watch *w = calloc(1, sizeof *w);
    if (!w) return -1;
    w->timer_ms = -1;
    w->poller = fish_poller_new(); /* NULL where there is none: poll(2) then */
    e->watch = w;
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
    return 0;
}

void fish_watch_free(fish_engine *e) {
    fish_watch *w = e->watch;
    if (!w) return;
    for (size_t i = 0; i < w->nchanges; i++) {
        if (w->changes[i]->index == SIZE_MAX) free(w->changes[i]); /* removed, not yet reported */
    }
    for (size_t i = 0; i < w->count; i++) free(w->entries[i]);
    free(w->entries);
    free(w->changes);
    free(w->socks);
    fish_poller_free(w->poller);
    free(w);
    e->watch = NULL;
}

int fish_watch_fd(fish_engine *e, curl_socket_t fd, int what) {
    fish_watch *w = e->watch;
    if (!w) return 0;
    watch_entry *entry = NULL;
    for (size_t i = 0; i < w->count; i++) {
        if (w->entries[i]->extra && w->entries[i]->fd == fd) {
            entry = w->entries[i];
            break;
        }
    }
    if (what == FISH_WATCH_REMOVE) {
        if (entry) remove_entry(w, entry);
        return 0;
    }
    if (!entry) {
        entry = add_entry(w, fd, 1);
        if (!entry) return -1;
    }
    if (entry->what == what && entry->changed) return 0;
    entry->what = what;
    mirror(w, entry);
    return note_change(w, entry);
}

/* ---- Lua methods ------------------------------------------------------------ */

static fish_engine *check_open(lua_State *L) {
    fish_engine *e = luaL_checkudata(L, 1, FISH_ENGINE_MT);
    if (e->closed) luaL_argerror(L, 1, "engine is closed");
    return e;
}

static void push_fd(lua_State *L, curl_socket_t fd) {
    lua_pushinteger(L, (lua_Integer)fd);
}

static curl_socket_t check_fd(lua_State *L, int idx) {
    lua_Integer fd = luaL_checkinteger(L, idx);
    if (fd < 0) luaL_argerror(L, idx, "fd must not be negative");
    return (curl_socket_t)fd;
}

/* e:watch_changes(out) -> n. Fills out[1..2n] with fd, what pairs, what
 * being "in", "out", "inout" (watch for these), "none" (still open, do not
 * watch now) or "remove" (gone), for every fd whose state changed since the
 * last call, oldest change first. Entries past 2n are cleared. */
static int watch_changes(lua_State *L) {
    static const char *const names[] = {"none", "in", "out", "inout", "remove"};
    fish_engine *e = check_open(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    fish_watch *w = e->watch;
    int n = 0;
    /* Everything into Lua first: a Lua allocation may raise, and the list
     * must then still hold every change (reported again next time), none
     * of them freed. */
    for (size_t i = 0; i < w->nchanges; i++) {
        const watch_entry *entry = w->changes[i];
        push_fd(L, entry->fd);
        lua_rawseti(L, 2, ++n);
        lua_pushstring(L, names[entry->what]);
        lua_rawseti(L, 2, ++n);
    }
    for (size_t i = 0; i < w->nchanges; i++) {
        watch_entry *entry = w->changes[i];
        entry->changed = 0;
        if (entry->index == SIZE_MAX) free(entry);
    }
    w->nchanges = 0;
    for (int i = n + 1; i <= (int)lua_rawlen(L, 2); i++) {
        lua_pushnil(L);
        lua_rawseti(L, 2, i);
    }
    lua_pushinteger(L, n / 2);
    return 1;
}

/* e:timer_due() -> seconds until libcurl's timer is due (0: now), or nil. */
static int watch_timer_due(lua_State *L) {
    fish_watch *w = check_open(L)->watch;
    if (w->timer_ms < 0) return 0;
    double left = w->timer_set_at + (double)w->timer_ms / 1000.0 - fish_now();
    lua_pushnumber(L, left > 0 ? left : 0);
    return 1;
}

/* `changed`: the stack index of the table for live sockets' news (the
 * argument after `finished`), or 0 when the caller gave none. */
static int action(lua_State *L, fish_engine *e, curl_socket_t fd, int events, int finished) {
    int running = 0;
    CURLMcode rc = curl_multi_socket_action(e->multi, fd, events, &running);
    if (rc != CURLM_OK) return luaL_error(L, "curl_multi_socket_action: %s", curl_multi_strerror(rc));
    int changed = lua_istable(L, finished + 1) ? finished + 1 : 0;
    running -= fish_engine_collect(L, e, finished, changed);
    return running > 0 ? running : 0;
}

/* The timer has fired: it is spent, unless libcurl sets it again. libcurl
 * calls the timer callback only when its earliest timeout changes, so ask it
 * directly when the action set none. */
static int fire_timer(lua_State *L, fish_engine *e, int finished) {
    fish_watch *w = e->watch;
    unsigned long calls = w->timer_calls;
    w->timer_ms = -1;
    int running = action(L, e, CURL_SOCKET_TIMEOUT, 0, finished);
    if (w->timer_calls == calls) {
        long ms = -1;
        curl_multi_timeout(e->multi, &ms);
        w->timer_ms = ms;
        w->timer_set_at = fish_now();
    }
    return running;
}

/* e:socket_action(fd, events, finished [, changed]) -> running. `events` is
 * what the host saw on fd: "in", "out", "inout", "err" or nil (libcurl
 * looks for itself). Moves the transfers on that fd; appends the ids of the
 * requests that finished to `finished` and of the live sockets with news to
 * `changed`, as perform does. */
static int watch_socket_action(lua_State *L) {
    static const char *const names[] = {"in", "out", "inout", "err", NULL};
    static const int bits[] = {CURL_CSELECT_IN, CURL_CSELECT_OUT, CURL_CSELECT_IN | CURL_CSELECT_OUT,
                               CURL_CSELECT_ERR};
    fish_engine *e = check_open(L);
    curl_socket_t fd = check_fd(L, 2);
    int events = lua_isnoneornil(L, 3) ? 0 : bits[luaL_checkoption(L, 3, NULL, names)];
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_pushinteger(L, action(L, e, fd, events, 4));
    return 1;
}

/* e:socket_timeout(finished [, changed]) -> running: libcurl's timer fired. */
static int watch_socket_timeout(lua_State *L) {
    fish_engine *e = check_open(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushinteger(L, fire_timer(L, e, 2));
    return 1;
}

/* e:poll_sockets(finished [, changed]) -> running, active. For a host that cannot
 * watch fds: look at every watched fd at once without waiting (one poll(2)),
 * act on the ready ones only, and on the timer if it is due. `active` is
 * how many fds were ready. The cost follows the fds, not the Lua side. */
static int watch_poll_sockets(lua_State *L) {
    fish_engine *e = check_open(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    fish_watch *w = e->watch;
    size_t n = 0;
    if (grow(&w->socks, &w->socks_cap, w->count, sizeof *w->socks) != 0) return luaL_error(L, "out of memory");
    int ready;
    if (w->poller) {
        /* The kernel keeps the set: the cost follows the ready fds only. */
        ready = fish_poller_ready(w->poller, w->socks, w->count);
        n = ready > 0 ? (size_t)ready : 0;
    } else {
        for (size_t i = 0; i < w->count; i++) {
            watch_entry *entry = w->entries[i];
            /* Extra fds too: libcurl ignores an fd it does not know, and the
             * action still collects what their owner finished. */
            if (entry->what == FISH_WATCH_NONE) continue;
            w->socks[n].fd = entry->fd;
            w->socks[n].want = poll_bits(entry->what);
            n++;
        }
        ready = fish_poll_now(w->socks, n);
    }
    if (ready < 0) ready = 0; /* EINTR and the like: look again next time */
    int running = -1;
    for (size_t i = 0; i < n && ready > 0; i++) {
        int got = w->socks[i].got;
        if (!got) continue;
        int events = (got & FISH_POLL_IN ? CURL_CSELECT_IN : 0) | (got & FISH_POLL_OUT ? CURL_CSELECT_OUT : 0) |
                     (got & FISH_POLL_ERR ? CURL_CSELECT_ERR : 0);
        /* An action may close or reuse later fds in the scratch list: libcurl
         * ignores an fd it no longer knows, and a reused one is looked at
         * again next time. */
        running = action(L, e, w->socks[i].fd, events, 2);
    }
    if (w->timer_ms >= 0 && w->timer_set_at + (double)w->timer_ms / 1000.0 <= fish_now())
        running = fire_timer(L, e, 2);
    if (running < 0) { /* nothing happened: count without moving anything */
        running = 0;
        for (fish_request *r = e->running; r; r = r->next) running++;
        /* Live sockets may have bytes to write that no fd event announces
         * yet (messages queued since the last pass): give them their pass. */
        if (e->live) fish_engine_collect(L, e, 2, lua_istable(L, 3) ? 3 : 0);
    }
    lua_pushinteger(L, running);
    lua_pushinteger(L, ready);
    return 2;
}

void fish_watch_register(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"watch_changes", watch_changes},
        {"timer_due", watch_timer_due},
        {"socket_action", watch_socket_action},
        {"socket_timeout", watch_socket_timeout},
        {"poll_sockets", watch_poll_sockets},
        {NULL, NULL},
    };
    luaL_getmetatable(L, FISH_ENGINE_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);
}
