/* Reading the options table of a C constructor (core.request,
 * core.live_socket): each option is checked as it is read, and a bad one
 * is an argument error on the table (argument 1) that names the option.
 * `owner` names the table in the message ("request option 'url' ..."). */
#ifndef FISH_OPTIONS_H
#define FISH_OPTIONS_H

#include <stddef.h>

#include "compat.h"

/* Raises "<owner> option '<key>' <problem>"; never returns. */
int fish_opt_error(lua_State *L, const char *owner, const char *key, const char *problem);

/* A string that C hands to libcurl or the OS as a C string: a NUL inside
 * would silently cut it, so it is refused. NULL when absent. The string
 * stays alive in the options table. `len` may be NULL. */
const char *fish_opt_string(lua_State *L, const char *owner, int opts, const char *key, size_t *len);

/* A number, never NaN (it passes every comparison as false, and converting
 * it to an integer is undefined); `fallback` when absent. Callers clamp
 * before converting. */
double fish_opt_number(lua_State *L, const char *owner, int opts, const char *key, double fallback);

#endif
