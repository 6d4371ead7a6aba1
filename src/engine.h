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
} fish_engine;

int fish_open_engine(lua_State *L);

/* Take a running request out of its engine's multi handle. */
void fish_engine_detach(fish_request *r);

#endif
