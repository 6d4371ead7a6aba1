/* Lua bindings for the msgpack encoder and decoder (fish.core). */
#ifndef FISH_LMSGPACK_H
#define FISH_LMSGPACK_H

#include <lua.h>

/* Expects the module table on top of the stack. Sets mp_writer, mp_decode
 * and mp_null in it, registers the "fish.mp_writer" metatable, and leaves
 * the stack as it found it. Returns 0. */
int fish_open_msgpack(lua_State *L);

#endif
