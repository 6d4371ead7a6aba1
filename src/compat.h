/* One source for every Lua ABI we ship: 5.1/LuaJIT, 5.2, 5.3 and 5.4.
 * Only renames and tiny shims live here, as in luasocket's compat.h. */
#ifndef FISH_COMPAT_H
#define FISH_COMPAT_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#if LUA_VERSION_NUM == 501
#define luaL_setfuncs fish_setfuncs
void fish_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
#ifndef luaL_newlib /* LuaJIT 2.1 has it */
#define luaL_newlib(L, l) (lua_newtable(L), luaL_setfuncs(L, l, 0))
#endif
#define lua_rawlen lua_objlen
#define luaL_testudata fish_testudata
void *fish_testudata(lua_State *L, int i, const char *tname);
/* 5.1 has one uservalue slot: the environment table. */
#define lua_setuservalue lua_setfenv
#define lua_getuservalue lua_getfenv
#endif

/* True when the number at `idx` is an integer in the Lua sense. On 5.1,
 * which has no integer subtype, a whole number counts as one. */
int fish_isinteger(lua_State *L, int idx);

/* Push a count, size or epoch second: an integer on 5.3+, where 4170 and
 * 4170.0 print differently. Before 5.3 lua_Integer is ptrdiff_t, 32 bits on
 * 32-bit hosts, so a double (exact to 2^53) carries it instead. */
void fish_pushint64(lua_State *L, int64_t v);

#endif
