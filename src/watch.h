/* Socket mode: libcurl's socket and timer callbacks, kept as data for a
 * host event loop (Neovim's libuv, OpenResty's driver) to read from Lua.
 * The callbacks only record what libcurl asked for (which fd, for which
 * events; when its timer is due). They never call Lua and never keep a
 * lua_State. The host watches those fds itself and reports events back with
 * curl_multi_socket_action, which moves only the transfers on that fd.
 *
 * Perform mode (curl_multi_perform, curl_multi_poll) keeps working on the
 * same multi handle: both run the same transfers, so a blocking call in a
 * Lua state whose host drives the engine by sockets still works. */
#ifndef FISH_WATCH_H
#define FISH_WATCH_H

#include <curl/curl.h>

#include "compat.h"

struct fish_engine;

/* What an fd is watched for. FISH_WATCH_NONE: still open, not watched now;
 * FISH_WATCH_REMOVE: gone for good. */
#define FISH_WATCH_NONE 0
#define FISH_WATCH_IN 1
#define FISH_WATCH_OUT 2
#define FISH_WATCH_INOUT 3
#define FISH_WATCH_REMOVE 4

typedef struct fish_watch fish_watch;

/* Install the callbacks on e->multi and allocate e->watch. 0 on success. */
int fish_watch_attach(struct fish_engine *e);

/* Free e->watch; the multi handle is cleaned up by its owner. Idempotent. */
void fish_watch_free(struct fish_engine *e);

/* For other C code with a socket of its own in the engine (the live
 * WebSocket connections): watch `fd` for `what` (FISH_WATCH_IN, _OUT,
 * _INOUT, _NONE), or stop with FISH_WATCH_REMOVE. The host sees it in
 * engine:watch_changes() like libcurl's fds, and reports its events with
 * engine:socket_action(fd, ...), which finds no libcurl transfer on it and
 * only collects what finished. Returns 0, or -1 when out of memory. */
int fish_watch_fd(struct fish_engine *e, curl_socket_t fd, int what);

/* Add the socket mode methods (watch_changes, timer_due, socket_action,
 * socket_timeout, poll_sockets) to the engine's metatable, which must be
 * registered already. Leaves the stack as it was. */
void fish_watch_register(lua_State *L);

#endif
