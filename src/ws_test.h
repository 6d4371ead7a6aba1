/* Test-only Lua bindings of the WebSocket codec (ws.c), so that
 * spec/ws_codec_spec.lua can check it byte for byte without a socket.
 * Internal: core.ws_test_* is not part of fish's API. */
#ifndef FISH_WS_TEST_H
#define FISH_WS_TEST_H

#include "compat.h"

/* Add the ws_test_* functions to the table on top of the stack. */
int fish_ws_test_open(lua_State *L);

#endif
