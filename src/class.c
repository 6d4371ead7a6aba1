#include "class.h"

void fish_class_register(lua_State *L, const char *name, const luaL_Reg *methods,
                         lua_CFunction close, lua_CFunction tostring) {
    luaL_newmetatable(L, name);
    lua_newtable(L); /* not luaL_newlib: it sizes by sizeof, and methods is a pointer */
    luaL_setfuncs(L, methods, 0);
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "close");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
