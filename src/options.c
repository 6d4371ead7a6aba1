/* The option readers shared by the C constructors (options.h). */
#include "options.h"

#include <string.h>

int fish_opt_error(lua_State *L, const char *owner, const char *key, const char *problem) {
    return luaL_argerror(L, 1, lua_pushfstring(L, "%s option '%s' %s", owner, key, problem));
}

const char *fish_opt_string(lua_State *L, const char *owner, int opts, const char *key, size_t *len) {
    lua_getfield(L, opts, key);
    const char *s = NULL;
    size_t n = 0;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) fish_opt_error(L, owner, key, "must be a string");
        s = lua_tolstring(L, -1, &n);
        if (strlen(s) != n) fish_opt_error(L, owner, key, "contains a NUL byte");
    }
    lua_pop(L, 1); /* the string stays alive in the options table */
    if (len) *len = n;
    return s;
}

double fish_opt_number(lua_State *L, const char *owner, int opts, const char *key, double fallback) {
    lua_getfield(L, opts, key);
    double v = fallback;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER) fish_opt_error(L, owner, key, "must be a number");
        v = (double)lua_tonumber(L, -1);
        if (v != v) fish_opt_error(L, owner, key, "is NaN");
    }
    lua_pop(L, 1);
    return v;
}
