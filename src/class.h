/* Userdata classes: a metatable with methods, and one close function that
 * serves as __gc, __close (5.4) and :close(), so every object is freed once
 * whichever way it goes. */
#ifndef FISH_CLASS_H
#define FISH_CLASS_H

#include "compat.h"

void fish_class_register(lua_State *L, const char *name, const luaL_Reg *methods,
                         lua_CFunction close, lua_CFunction tostring);

#endif
