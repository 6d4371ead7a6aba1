/* Lua bindings for the msgpack encoder and decoder (fish.core), and the
 * body a writer leaves for a request to send. */
#ifndef FISH_LMSGPACK_H
#define FISH_LMSGPACK_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"

/* Bytes that belong in the body at `at` (an offset in buf) but are not in
 * buf: the bin header for `size` bytes was written and the writer stopped
 * there. Either a file (`path`), read from disk only when sent
 * (w:bin_file_ref), or a large Lua string (`data`, path NULL) that w:bin
 * did not copy: the writer's uservalue holds the string, and so does every
 * request that sends the body, so it outlives each of them. */
typedef struct fish_mp_file_ref {
    size_t at;
    int64_t size;
    char *path;
    const char *data;
} fish_mp_file_ref;

/* w:bin copies a string shorter than this into the buffer: a small copy
 * costs less than a read callback, and keeps a small body in one piece
 * that libcurl can send with the headers (POSTFIELDS). */
#define FISH_MP_INLINE_MAX (64 * 1024)

/* What a writer has written: the encoded bytes with file references cut
 * into them. It is shared, not copied, by the writer and every request that
 * sends it (retries send one body several times), so it lives on the C heap
 * with a count of its users rather than in the writer userdata: neither the
 * writer nor a request may outlive it, whatever order the GC takes them in.
 * Once a request sends it, it is frozen: the writer refuses more writes, so
 * every attempt sends the same bytes. */
typedef struct fish_mp_body {
    fish_buffer buf;
    fish_mp_file_ref *refs;
    size_t nrefs, refs_cap;
    size_t nstrings; /* how many refs are Lua strings (data, not path) */
    int users;
    int frozen;
} fish_mp_body;

/* The body of the writer at idx, or NULL when the value is not a writer.
 * Raises when the writer is closed. */
fish_mp_body *fish_mp_body_of(lua_State *L, int idx);
/* Push the table of Lua strings the body at idx (a writer) refers to, for
 * a request to hold while it sends them; nil when there are none. */
void fish_mp_push_strings(lua_State *L, int idx);
/* Bytes on the wire: buf.len plus every reference's size. */
int64_t fish_mp_body_length(const fish_mp_body *b);
void fish_mp_body_retain(fish_mp_body *b);
/* Drops a user; the last one frees the body. NULL is allowed. */
void fish_mp_body_release(fish_mp_body *b);

/* Expects the module table on top of the stack. Sets mp_writer, mp_decode
 * and mp_null in it, registers the "fish.mp_writer" metatable, and leaves
 * the stack as it found it. Returns 0. */
int fish_open_msgpack(lua_State *L);

#endif
