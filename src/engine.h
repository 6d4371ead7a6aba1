/* The engine: one curl multi handle that runs every transfer of a Lua state,
 * whatever client started it, so that one poll can wait on all of them. */
#ifndef FISH_ENGINE_H
#define FISH_ENGINE_H

#include <curl/curl.h>

#include "compat.h"
#include "request.h"

#define FISH_ENGINE_MT "fish.engine"

struct fish_live;

typedef struct fish_engine {
    CURLM *multi;
    fish_request *running; /* doubly linked list of attached requests */
    struct fish_live *live; /* live sockets added and not yet closed (live.c links them) */
    lua_Integer next_id;
    int closed;
    struct fish_watch *watch; /* socket mode's data (watch.c) */
} fish_engine;

int fish_open_engine(lua_State *L);

/* Detach and finish every transfer libcurl reports done, appending each
 * one's id to the table at `idx`; then move every live socket, appending
 * the id of each that has news to the table at `changed_idx` (0: none, the
 * news waits). Every way of moving the engine (perform, socket_action) ends
 * here. Returns how many live sockets libcurl still counts as running
 * (connecting), for the caller to take off libcurl's running count. */
int fish_engine_collect(lua_State *L, fish_engine *e, int idx, int changed_idx);

/* Take a running request out of its engine's multi handle. */
void fish_engine_detach(fish_request *r);

#endif
