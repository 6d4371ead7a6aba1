/* Lua face of the msgpack code: a writer object that the request schemas in
 * the Lua half drive field by field (so field order and int-vs-float are
 * decided by the schema, not guessed from Lua values), a generic w:value for
 * pass-through `extra` fields, and mp_decode for msgpack replies.
 *
 * Memory rule: the only heap memory is the writer's body (its buffer and
 * file references), reachable from the writer userdata from the moment it
 * exists, so any Lua error (argument error, out of memory) unwinds without
 * leaking; __gc lets go of it. Scratch space for sorting map keys is a
 * userdata too, for the same reason. */
#include "lmsgpack.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "compat.h"
#include "msgpack_read.h"
#include "msgpack_write.h"

#define WRITER_MT "fish.mp_writer"

/* w:value: deep enough for any real request, shallow enough that a cyclic
 * table fails fast instead of exhausting the C stack. */
#define VALUE_MAX_DEPTH 64
/* mp_decode: replies are shallow; the limit bounds C recursion on hostile
 * input. */
#define DECODE_MAX_DEPTH 128

/* The writer userdata holds only a pointer: its bytes are a shared body
 * (lmsgpack.h) that a request may still be sending after the writer is
 * closed or collected. */
typedef struct mp_writer {
    fish_mp_body *body;
    int closed;
} mp_writer;

/* ---------------------------------------------------------------- helpers */

/* The value at idx, known to satisfy fish_isinteger, as an int64. */
static int64_t to_int64(lua_State *L, int idx) {
#if LUA_VERSION_NUM >= 503
    return (int64_t)lua_tointeger(L, idx);
#else
    return (int64_t)lua_tonumber(L, idx);
#endif
}

static int type_error(lua_State *L, int arg, const char *expected) {
    const char *msg =
        lua_pushfstring(L, "%s expected, got %s", expected, luaL_typename(L, arg));
    return luaL_argerror(L, arg, msg);
}

/* Strict: a number, never a numeric string. Whole floats are accepted on
 * every Lua (3.0 is 3), fractional ones are an argument error. */
static int64_t check_int64(lua_State *L, int arg) {
    if (lua_type(L, arg) != LUA_TNUMBER) type_error(L, arg, "integer");
#if LUA_VERSION_NUM >= 503
    int ok = 0;
    lua_Integer v = lua_tointegerx(L, arg, &ok);
    if (!ok) luaL_argerror(L, arg, "number has no integer representation");
    return (int64_t)v;
#else
    if (!fish_isinteger(L, arg)) luaL_argerror(L, arg, "number has no integer representation");
    return (int64_t)lua_tonumber(L, arg);
#endif
}

static size_t check_count(lua_State *L, int arg) {
    int64_t n = check_int64(L, arg);
    if (n < 0 || n > (int64_t)UINT32_MAX)
        luaL_argerror(L, arg, "count out of range (0..4294967295)");
    return (size_t)n;
}

/* Strict: a string, never a number converted to one. */
static const char *check_bytes(lua_State *L, int arg, size_t *len) {
    if (lua_type(L, arg) != LUA_TSTRING) type_error(L, arg, "string");
    return lua_tolstring(L, arg, len);
}

static mp_writer *check_writer(lua_State *L) {
    mp_writer *w = luaL_checkudata(L, 1, WRITER_MT);
    if (w->closed) luaL_error(L, "msgpack: attempt to use a closed writer");
    return w;
}

/* Mutators: a body that a request sends must stay as it was declared
 * (Content-Length) and as every retry resends it. */
static mp_writer *check_writable(lua_State *L) {
    mp_writer *w = check_writer(L);
    if (w->body->frozen) luaL_error(L, "msgpack: the writer's bytes are being sent by a request");
    return w;
}

/* Turn a failed fish_mp_write_* status into a Lua error. */
static int raise_write(lua_State *L, int status, int arg) {
    if (status == FISH_MP_WRITE_ETOOBIG)
        return luaL_argerror(L, arg, "too long for msgpack (limit 4294967295)");
    return luaL_error(L, "msgpack: out of memory");
}

/* Mutators end here: raise on failure, else return the writer for chaining. */
static int chain(lua_State *L, int status, int arg) {
    if (status != FISH_MP_WRITE_OK) return raise_write(L, status, arg);
    lua_settop(L, 1);
    return 1;
}

/* ------------------------------------------------------- writer methods */

static int w_map(lua_State *L) {
    mp_writer *w = check_writable(L);
    return chain(L, fish_mp_write_map_header(&w->body->buf, check_count(L, 2)), 2);
}

static int w_array(lua_State *L) {
    mp_writer *w = check_writable(L);
    return chain(L, fish_mp_write_array_header(&w->body->buf, check_count(L, 2)), 2);
}

static int w_str(lua_State *L) {
    mp_writer *w = check_writable(L);
    size_t len;
    const char *s = check_bytes(L, 2, &len);
    return chain(L, fish_mp_write_str(&w->body->buf, s, len), 2);
}

/* Room for one more reference, or raise. */
static fish_mp_file_ref *new_ref(lua_State *L, fish_mp_body *b) {
    if (b->nrefs == b->refs_cap) {
        size_t cap = b->refs_cap ? b->refs_cap * 2 : 4;
        fish_mp_file_ref *grown = realloc(b->refs, cap * sizeof *grown);
        if (!grown) luaL_error(L, "msgpack: out of memory");
        b->refs = grown;
        b->refs_cap = cap;
    }
    return &b->refs[b->nrefs];
}

/* w:bin(bytes). A large string is not copied: the body refers to it (a
 * reference with data), and the writer's uservalue keeps it alive. A
 * request sends it from the Lua string itself. */
static int w_bin(lua_State *L) {
    mp_writer *w = check_writable(L);
    fish_mp_body *b = w->body;
    size_t len;
    const char *s = check_bytes(L, 2, &len);
    if (len < FISH_MP_INLINE_MAX || len > UINT32_MAX)
        return chain(L, fish_mp_write_bin(&b->buf, s, len), 2);
    fish_mp_file_ref *ref = new_ref(L, b);
    /* The strings referred to are kept in the uservalue table, at the
     * index of their count (b->nstrings), made with the first one: 5.1
     * gives a new userdata its creator's environment, so only the count
     * says the table is ours. A string is held even if its header cannot
     * be written: harmless, the next one takes its place. */
    if (b->nstrings == 0) {
        lua_newtable(L);
        lua_setuservalue(L, 1);
    }
    lua_getuservalue(L, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (int)b->nstrings + 1);
    lua_pop(L, 1);
    int st = fish_mp_write_bin_header(&b->buf, len);
    if (st != FISH_MP_WRITE_OK) return raise_write(L, st, 2);
    ref->at = b->buf.len;
    ref->size = (int64_t)len;
    ref->path = NULL;
    ref->data = s;
    b->nrefs++;
    b->nstrings++;
    lua_settop(L, 1);
    return 1;
}

static int w_int(lua_State *L) {
    mp_writer *w = check_writable(L);
    return chain(L, fish_mp_write_int(&w->body->buf, check_int64(L, 2)), 2);
}

static int w_float(lua_State *L) {
    mp_writer *w = check_writable(L);
    if (lua_type(L, 2) != LUA_TNUMBER) type_error(L, 2, "number");
    return chain(L, fish_mp_write_float64(&w->body->buf, (double)lua_tonumber(L, 2)), 2);
}

static int w_bool(lua_State *L) {
    mp_writer *w = check_writable(L);
    if (lua_type(L, 2) != LUA_TBOOLEAN) type_error(L, 2, "boolean");
    return chain(L, fish_mp_write_bool(&w->body->buf, lua_toboolean(L, 2)), 2);
}

static int w_null(lua_State *L) {
    mp_writer *w = check_writable(L);
    return chain(L, fish_mp_write_nil(&w->body->buf), 1);
}

/* w:bin_file(path [, size]) -> true | nil, message. A missing, unreadable
 * or non-regular file is a runtime condition the caller reports, not a
 * programming error; so is one whose size is not `size` (what fish.file
 * saw: the body must hold the file the user named, as it was then). */
static int w_bin_file(lua_State *L) {
    mp_writer *w = check_writable(L);
    size_t len;
    const char *path = check_bytes(L, 2, &len);
    if (strlen(path) != len) luaL_argerror(L, 2, "path contains a NUL byte");
    int64_t expected = -1;
    if (!lua_isnoneornil(L, 3)) {
        expected = check_int64(L, 3);
        if (expected < 0) luaL_argerror(L, 3, "size must be >= 0");
    }
    char err[FISH_MP_FILE_ERRMAX];
    int st = fish_mp_write_bin_file(&w->body->buf, path, expected, err, sizeof err);
    if (st == FISH_MP_WRITE_ENOMEM) return raise_write(L, st, 2);
    if (st != FISH_MP_WRITE_OK) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* w:bin_file_ref(path [, size]) -> true | nil, message. The same checks
 * and messages as w:bin_file, but only the bin header is written: the
 * file's bytes are read from disk by the request that sends the body. */
static int w_bin_file_ref(lua_State *L) {
    mp_writer *w = check_writable(L);
    fish_mp_body *b = w->body;
    size_t len;
    const char *path = check_bytes(L, 2, &len);
    if (strlen(path) != len) luaL_argerror(L, 2, "path contains a NUL byte");
    int64_t expected = -1;
    if (!lua_isnoneornil(L, 3)) {
        expected = check_int64(L, 3);
        if (expected < 0) luaL_argerror(L, 3, "size must be >= 0");
    }
    char err[FISH_MP_FILE_ERRMAX];
    int64_t size = 0;
    if (fish_mp_check_file(path, expected, &size, err, sizeof err) != FISH_MP_WRITE_OK) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    /* Everything that can fail comes before the header is written, so a
     * failure leaves the writer as it was. */
    fish_mp_file_ref *ref = new_ref(L, b);
    char *copy = malloc(len + 1);
    if (!copy) return luaL_error(L, "msgpack: out of memory");
    memcpy(copy, path, len + 1);
    int st = fish_mp_write_bin_header(&b->buf, (size_t)size);
    if (st != FISH_MP_WRITE_OK) {
        free(copy);
        return raise_write(L, st, 2);
    }
    b->nrefs++;
    ref->at = b->buf.len;
    ref->size = size;
    ref->path = copy;
    ref->data = NULL;
    lua_pushboolean(L, 1);
    return 1;
}

enum { FILE_READ, FILE_UNOPENED, FILE_RESIZED };

/* Read the `ref->size` bytes of a referenced file into dst: FILE_READ, or
 * why not. For tests and w:result only: a request streams the file
 * instead. It calls no Lua function, so nothing can raise while the file
 * is open (a raise would leak it). */
static int read_file_bytes(char *dst, const fish_mp_file_ref *ref) {
    FILE *f = fopen(ref->path, "rb");
    if (!f) return FILE_UNOPENED;
    size_t want = (size_t)ref->size;
    size_t got = want ? fread(dst, 1, want, f) : 0;
    int grew = got == want && getc(f) != EOF;
    fclose(f);
    return got != want || grew ? FILE_RESIZED : FILE_READ;
}

/* w:result() -> the body as one string, references filled in. The whole
 * body is sized first, in a userdata, so that every Lua allocation is done
 * before any file is opened. */
static int w_result(lua_State *L) {
    mp_writer *w = check_writer(L);
    const fish_mp_body *b = w->body;
    const char *data = b->buf.data ? b->buf.data : "";
    if (b->nrefs == 0) {
        lua_pushlstring(L, data, b->buf.len);
        return 1;
    }
    int64_t total = fish_mp_body_length(b);
    if ((uint64_t)total > (uint64_t)SIZE_MAX) return luaL_error(L, "msgpack: the body is too large for memory");
    char *out = lua_newuserdata(L, (size_t)total);
    size_t at = 0, pos = 0;
    for (size_t i = 0; i < b->nrefs; i++) {
        const fish_mp_file_ref *ref = &b->refs[i];
        memcpy(out + pos, data + at, ref->at - at);
        pos += ref->at - at;
        at = ref->at;
        if (ref->data) {
            memcpy(out + pos, ref->data, (size_t)ref->size);
        } else {
            int outcome = read_file_bytes(out + pos, ref);
            if (outcome == FILE_UNOPENED) return luaL_error(L, "cannot open '%s'", ref->path);
            if (outcome == FILE_RESIZED) return luaL_error(L, "%s changed size since it was referenced", ref->path);
        }
        pos += (size_t)ref->size;
    }
    memcpy(out + pos, data + at, b->buf.len - at);
    lua_pushlstring(L, out, (size_t)total);
    return 1;
}

/* w:size() -> the bytes w:result() returns (and a request sends). */
static int w_size(lua_State *L) {
    mp_writer *w = check_writer(L);
    fish_pushint64(L, fish_mp_body_length(w->body));
    return 1;
}

/* One idempotent close for close(), __gc and __close. A request still
 * sending the body keeps it. */
static int w_close(lua_State *L) {
    mp_writer *w = luaL_checkudata(L, 1, WRITER_MT);
    if (!w->closed) {
        fish_mp_body_release(w->body);
        w->body = NULL;
        w->closed = 1;
    }
    return 0;
}

/* ------------------------------------------------------- shared body */

fish_mp_body *fish_mp_body_of(lua_State *L, int idx) {
    mp_writer *w = luaL_testudata(L, idx, WRITER_MT);
    if (!w) return NULL;
    if (w->closed) luaL_error(L, "msgpack: attempt to use a closed writer");
    return w->body;
}

void fish_mp_push_strings(lua_State *L, int idx) {
    mp_writer *w = luaL_checkudata(L, idx, WRITER_MT);
    if (!w->body || w->body->nstrings == 0)
        lua_pushnil(L);
    else
        lua_getuservalue(L, idx);
}

int64_t fish_mp_body_length(const fish_mp_body *b) {
    int64_t n = (int64_t)b->buf.len;
    for (size_t i = 0; i < b->nrefs; i++) n += b->refs[i].size;
    return n;
}

void fish_mp_body_retain(fish_mp_body *b) { b->users++; }

void fish_mp_body_release(fish_mp_body *b) {
    if (!b || --b->users > 0) return;
    for (size_t i = 0; i < b->nrefs; i++) free(b->refs[i].path);
    free(b->refs);
    fish_buffer_free(&b->buf);
    free(b);
}

static int w_tostring(lua_State *L) {
    mp_writer *w = luaL_checkudata(L, 1, WRITER_MT);
    lua_pushfstring(L, "fish.mp_writer: %p%s", (void *)w, w->closed ? " (closed)" : "");
    return 1;
}

/* ------------------------------------------------ w:value, generic encode */

/* Encoders return ENC_OK, or ENC_BAD with a message pushed on the stack, or
 * ENC_NOMEM. They never raise themselves, so w:value can drop the partial
 * bytes before raising and a caught error leaves the writer unchanged. */
enum { ENC_OK = 0, ENC_BAD, ENC_NOMEM };

static int enc_value(lua_State *L, fish_buffer *b, int idx, int depth);

static int enc_bad(lua_State *L, const char *msg) {
    lua_pushstring(L, msg);
    return ENC_BAD;
}

static int enc_status(lua_State *L, int write_status) {
    switch (write_status) {
    case FISH_MP_WRITE_OK: return ENC_OK;
    case FISH_MP_WRITE_ETOOBIG: return enc_bad(L, "string or table too long for msgpack");
    default: return ENC_NOMEM;
    }
}

/* What a table looks like, from one pass over its keys. */
typedef struct table_shape {
    size_t count;
    int is_sequence;     /* keys are exactly 1..count */
    int all_strings;     /* every key is a string */
    const char *bad_key; /* type name of the first non-string key */
} table_shape;

static int positive_int_key(lua_State *L, int idx, int64_t *k) {
    if (!fish_isinteger(L, idx)) return 0;
    *k = to_int64(L, idx);
    return *k >= 1;
}

static void scan_table(lua_State *L, int t, table_shape *s) {
    int64_t max = 0, k;
    s->count = 0;
    s->is_sequence = 1;
    s->all_strings = 1;
    s->bad_key = NULL;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        s->count++;
        int kt = lua_type(L, -1);
        if (kt != LUA_TSTRING && s->all_strings) {
            s->all_strings = 0;
            s->bad_key = lua_typename(L, kt);
        }
        if (s->is_sequence && positive_int_key(L, -1, &k))
            max = k > max ? k : max;
        else
            s->is_sequence = 0;
    }
    /* Distinct positive integer keys, count of them equal to the largest:
     * that is exactly 1..count. */
    s->is_sequence = s->is_sequence && s->count > 0 && (uint64_t)max == s->count;
}

static int enc_array(lua_State *L, fish_buffer *b, int t, size_t n, int depth) {
    if (n > INT_MAX) return enc_bad(L, "array too long");
    int st = enc_status(L, fish_mp_write_array_header(b, n));
    for (int i = 1; st == ENC_OK && i <= (int)n; i++) {
        lua_rawgeti(L, t, i);
        st = enc_value(L, b, lua_gettop(L), depth + 1);
        if (st == ENC_OK) lua_pop(L, 1);
    }
    return st;
}

typedef struct map_key {
    const char *s;
    size_t len;
    int slot; /* index of the key in the anchor table */
} map_key;

/* Byte order, shorter first on a common prefix: the order of Python's
 * sorted() on str for ASCII keys, and deterministic for any bytes. */
static int compare_keys(const void *pa, const void *pb) {
    const map_key *a = pa, *b = pb;
    int c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
    if (c) return c;
    return (a->len > b->len) - (a->len < b->len);
}

/* A string-keyed map, keys sorted so the bytes do not depend on hash
 * order. The key strings are anchored in a fresh table while their
 * pointers sit in the scratch array, so nothing can collect them. */
static int enc_map(lua_State *L, fish_buffer *b, int t, size_t n, int depth) {
    if (n > INT_MAX / sizeof(map_key)) return enc_bad(L, "map too large");
    lua_createtable(L, (int)n, 0);
    int anchor = lua_gettop(L);
    map_key *keys = lua_newuserdata(L, n * sizeof *keys);
    size_t got = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (got == n || lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            return enc_bad(L, "table changed while being encoded");
        }
        lua_pushvalue(L, -1);
        lua_rawseti(L, anchor, (int)got + 1);
        keys[got].s = lua_tolstring(L, -1, &keys[got].len);
        keys[got].slot = (int)got + 1;
        got++;
    }
    qsort(keys, got, sizeof *keys, compare_keys);
    int st = enc_status(L, fish_mp_write_map_header(b, got));
    for (size_t i = 0; st == ENC_OK && i < got; i++) {
        st = enc_status(L, fish_mp_write_str(b, keys[i].s, keys[i].len));
        if (st != ENC_OK) break;
        lua_rawgeti(L, anchor, keys[i].slot);
        lua_rawget(L, t);
        st = enc_value(L, b, lua_gettop(L), depth + 1);
        if (st == ENC_OK) lua_pop(L, 1);
    }
    if (st == ENC_OK) lua_pop(L, 2);
    return st;
}

/* setmetatable({bytes}, {__fish_bin = true}) marks a Lua string as bin:
 * the only way w:value can tell bytes from text. Returns 1 when t is such
 * a wrapper and its [1] has been pushed. Raw access only: encoding must
 * run no Lua code. */
static int bin_wrapper(lua_State *L, int t) {
    if (!lua_getmetatable(L, t)) return 0;
    lua_pushliteral(L, "__fish_bin");
    lua_rawget(L, -2);
    int marked = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
    lua_pop(L, 2);
    if (!marked) return 0;
    lua_rawgeti(L, t, 1);
    return 1;
}

static int enc_table(lua_State *L, fish_buffer *b, int t, int depth) {
    if (depth >= VALUE_MAX_DEPTH)
        return enc_bad(L, "tables nested more than 64 deep (is there a cycle?)");
    if (!lua_checkstack(L, 8)) return enc_bad(L, "Lua stack overflow");
    if (bin_wrapper(L, t)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            return enc_bad(L, "a __fish_bin table needs a string at [1]");
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        int st = enc_status(L, fish_mp_write_bin(b, s, len));
        if (st == ENC_OK) lua_pop(L, 1);
        return st;
    }
    table_shape shape;
    scan_table(L, t, &shape);
    if (shape.count == 0) return enc_status(L, fish_mp_write_map_header(b, 0));
    if (shape.is_sequence) return enc_array(L, b, t, shape.count, depth);
    if (!shape.all_strings) {
        lua_pushfstring(L, "table is neither a sequence nor a map with string keys "
                           "(found a %s key)", shape.bad_key);
        return ENC_BAD;
    }
    return enc_map(L, b, t, shape.count, depth);
}

static int enc_value(lua_State *L, fish_buffer *b, int idx, int depth) {
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return enc_status(L, fish_mp_write_nil(b));
    case LUA_TBOOLEAN: return enc_status(L, fish_mp_write_bool(b, lua_toboolean(L, idx)));
    case LUA_TNUMBER:
        if (fish_isinteger(L, idx)) return enc_status(L, fish_mp_write_int(b, to_int64(L, idx)));
        return enc_status(L, fish_mp_write_float64(b, (double)lua_tonumber(L, idx)));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return enc_status(L, fish_mp_write_str(b, s, len));
    }
    case LUA_TTABLE: return enc_table(L, b, idx, depth);
    case LUA_TLIGHTUSERDATA:
        /* mp_null (the same value as cjson.null) round-trips as nil. */
        if (lua_touserdata(L, idx) == NULL) return enc_status(L, fish_mp_write_nil(b));
        return enc_bad(L, "cannot encode a light userdata other than mp_null");
    default:
        lua_pushfstring(L, "cannot encode a %s", luaL_typename(L, idx));
        return ENC_BAD;
    }
}

static int w_value(lua_State *L) {
    mp_writer *w = check_writable(L);
    luaL_checkany(L, 2);
    lua_settop(L, 2);
    size_t mark = w->body->buf.len;
    int st = enc_value(L, &w->body->buf, 2, 0);
    if (st == ENC_OK) {
        lua_settop(L, 1);
        return 1;
    }
    w->body->buf.len = mark;
    if (st == ENC_NOMEM) return luaL_error(L, "msgpack: out of memory");
    return luaL_argerror(L, 2, lua_tostring(L, -1));
}

static int l_writer(lua_State *L) {
    mp_writer *w = lua_newuserdata(L, sizeof *w);
    w->body = NULL;
    w->closed = 1; /* until it has a body: __gc has nothing to free */
    luaL_getmetatable(L, WRITER_MT);
    lua_setmetatable(L, -2);
    fish_mp_body *b = calloc(1, sizeof *b);
    if (!b) return luaL_error(L, "msgpack: out of memory");
    fish_buffer_init(&b->buf);
    b->users = 1;
    w->body = b;
    w->closed = 0;
    return 1;
}

/* --------------------------------------------------------------- decode */

typedef struct decoder {
    fish_mp_reader r;
    const char *reason; /* set on failure */
    size_t at;          /* offset of the offending item */
} decoder;

/* Decoders return 1 with one value pushed, or 0 after recording why. */
static int dec_fail(decoder *d, const char *reason, size_t at) {
    d->reason = reason;
    d->at = at;
    return 0;
}

static int dec_value(lua_State *L, decoder *d, int depth);

static int dec_array(lua_State *L, decoder *d, uint32_t n, int depth, size_t at) {
    if (depth >= DECODE_MAX_DEPTH) return dec_fail(d, "nesting deeper than 128", at);
    if ((uint64_t)n > INT_MAX) return dec_fail(d, "array too long", at);
    /* This table, then a child: an ext value pushes its table and a field. */
    luaL_checkstack(L, 3, "msgpack: nesting too deep");
    /* n is at most the bytes left (fish_mp_read checked), so this
     * allocation is bounded by the input's size. */
    lua_createtable(L, (int)n, 0);
    for (int i = 1; i <= (int)n; i++) {
        if (!dec_value(L, d, depth + 1)) return 0;
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* Keys must be usable as Lua table keys and mean something: no nil, no
 * NaN, no containers. Checked on the header before decoding the key. */
static int check_key(decoder *d) {
    fish_mp_reader peek = d->r;
    fish_mp_item it;
    size_t at = fish_mp_reader_offset(&d->r);
    if (fish_mp_read(&peek, &it) != FISH_MP_OK) return 1; /* dec_value reports it */
    switch (it.type) {
    case FISH_MP_NIL: return dec_fail(d, "nil map key", at);
    case FISH_MP_ARRAY:
    case FISH_MP_MAP:
    case FISH_MP_EXT: return dec_fail(d, "map key is not a scalar", at);
    case FISH_MP_FLOAT32:
    case FISH_MP_FLOAT64:
        if (it.f != it.f) return dec_fail(d, "NaN map key", at);
        return 1;
    default: return 1;
    }
}

static int dec_map(lua_State *L, decoder *d, uint32_t n, int depth, size_t at) {
    if (depth >= DECODE_MAX_DEPTH) return dec_fail(d, "nesting deeper than 128", at);
    if ((uint64_t)n > INT_MAX) return dec_fail(d, "map too long", at);
    /* This table, a key, then a value: an ext value pushes its table and a field. */
    luaL_checkstack(L, 4, "msgpack: nesting too deep");
    lua_createtable(L, 0, (int)n);
    for (uint32_t i = 0; i < n; i++) {
        if (!check_key(d) || !dec_value(L, d, depth + 1)) return 0;
        if (!dec_value(L, d, depth + 1)) return 0;
        lua_rawset(L, -3); /* a repeated key: the last one wins */
    }
    return 1;
}

static void push_bytes(lua_State *L, const fish_mp_item *it) {
    lua_pushlstring(L, it->data ? it->data : "", it->len);
}

static int dec_value(lua_State *L, decoder *d, int depth) {
    size_t at = fish_mp_reader_offset(&d->r);
    fish_mp_item it;
    fish_mp_status st = fish_mp_read(&d->r, &it);
    if (st != FISH_MP_OK) return dec_fail(d, fish_mp_strerror(st), at);
    switch (it.type) {
    case FISH_MP_NIL: lua_pushlightuserdata(L, NULL); return 1;
    case FISH_MP_BOOL: lua_pushboolean(L, it.boolean); return 1;
    case FISH_MP_INT: fish_pushint64(L, it.i); return 1;
    /* Above INT64_MAX no Lua integer fits; a float keeps sign and size. */
    case FISH_MP_UINT: lua_pushnumber(L, (lua_Number)it.u); return 1;
    case FISH_MP_FLOAT32:
    case FISH_MP_FLOAT64: lua_pushnumber(L, (lua_Number)it.f); return 1;
    case FISH_MP_STR:
    case FISH_MP_BIN: push_bytes(L, &it); return 1;
    case FISH_MP_EXT:
        lua_createtable(L, 0, 2);
        fish_pushint64(L, it.ext_type);
        lua_setfield(L, -2, "ext");
        push_bytes(L, &it);
        lua_setfield(L, -2, "data");
        return 1;
    case FISH_MP_ARRAY: return dec_array(L, d, it.len, depth, at);
    case FISH_MP_MAP: return dec_map(L, d, it.len, depth, at);
    }
    return dec_fail(d, "unknown item", at);
}

/* mp_decode(s) -> value | nil, "msgpack: <reason> at byte N", where N is
 * the 0-based offset of the offending item. Malformed input is data, not a
 * programming error, so it never raises. */
static int l_decode(lua_State *L) {
    size_t len;
    const char *s = check_bytes(L, 1, &len);
    lua_settop(L, 1);
    decoder d;
    fish_mp_reader_init(&d.r, s, len);
    d.reason = NULL;
    d.at = 0;
    if (dec_value(L, &d, 0)) {
        if (fish_mp_reader_remaining(&d.r) == 0) return 1;
        dec_fail(&d, "trailing bytes", fish_mp_reader_offset(&d.r));
    }
    char msg[96];
    snprintf(msg, sizeof msg, "msgpack: %s at byte %zu", d.reason, d.at);
    lua_settop(L, 1);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* ----------------------------------------------------------- registration */

static const luaL_Reg writer_methods[] = {
    {"map", w_map},       {"array", w_array},   {"str", w_str},
    {"bin", w_bin},       {"bin_file", w_bin_file}, {"bin_file_ref", w_bin_file_ref},
    {"int", w_int},
    {"float", w_float},   {"bool", w_bool},     {"null", w_null},
    {"value", w_value},   {"result", w_result}, {"size", w_size},
    {"close", w_close},   {NULL, NULL},
};

static const luaL_Reg writer_meta[] = {
    {"__gc", w_close},
#if LUA_VERSION_NUM >= 504
    {"__close", w_close},
#endif
    {"__tostring", w_tostring},
    {NULL, NULL},
};

static const luaL_Reg module_functions[] = {
    {"mp_writer", l_writer},
    {"mp_decode", l_decode},
    {NULL, NULL},
};

int fish_open_msgpack(lua_State *L) {
    luaL_checkstack(L, 4, "fish_open_msgpack");
    luaL_newmetatable(L, WRITER_MT);
    luaL_setfuncs(L, writer_meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, writer_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    luaL_setfuncs(L, module_functions, 0);
    /* A NULL light userdata, like cjson.null: the two compare equal, so a
     * null from either decoder means the same thing to the Lua half. */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "mp_null");
    return 0;
}
