/* A bounds-checked msgpack cursor over untrusted bytes. Pure C, no Lua.
 *
 * It reads one item *header* at a time: a scalar comes back whole, a str,
 * bin or ext comes back as a pointer into the input plus a length, and an
 * array or map comes back as its element count, leaving the cursor on its
 * first element. The caller recurses; the cursor never does, so it has no
 * depth limit of its own (fish_mp_skip takes one).
 *
 * Every read checks the remaining bytes first, so no input can make it read
 * past the end. On any error the cursor does not move, and
 * fish_mp_reader_offset still names the first byte of the bad item. */
#ifndef FISH_MSGPACK_READ_H
#define FISH_MSGPACK_READ_H

#include <stddef.h>
#include <stdint.h>

typedef enum fish_mp_type {
    FISH_MP_NIL,
    FISH_MP_BOOL,
    FISH_MP_INT,     /* any int family member whose value fits int64_t: .i */
    FISH_MP_UINT,    /* uint64 (0xcf) above INT64_MAX: .u */
    FISH_MP_FLOAT32, /* .f (widened to double, exactly) */
    FISH_MP_FLOAT64, /* .f */
    FISH_MP_STR,     /* .data, .len */
    FISH_MP_BIN,     /* .data, .len */
    FISH_MP_ARRAY,   /* .len elements follow */
    FISH_MP_MAP,     /* .len key/value pairs follow */
    FISH_MP_EXT      /* .ext_type, .data, .len (fixext and ext8/16/32) */
} fish_mp_type;

typedef enum fish_mp_status {
    FISH_MP_OK = 0,
    FISH_MP_ETRUNC,   /* the input ends inside this item */
    FISH_MP_EINVALID, /* 0xc1, the one byte msgpack never uses */
    FISH_MP_ELENGTH,  /* an array/map count larger than the bytes left */
    FISH_MP_EDEPTH    /* fish_mp_skip only: nested deeper than allowed */
} fish_mp_status;

typedef struct fish_mp_item {
    fish_mp_type type;
    int boolean;
    int64_t i;
    uint64_t u;
    double f;
    uint32_t len;
    int8_t ext_type;
    const char *data; /* points into the reader's input; NULL when len is 0 */
} fish_mp_item;

typedef struct fish_mp_reader {
    const unsigned char *start;
    const unsigned char *pos;
    const unsigned char *end;
} fish_mp_reader;

void fish_mp_reader_init(fish_mp_reader *r, const void *data, size_t len);

/* Read the next item header into *item and step past it (for str/bin/ext,
 * past the payload too). An array or map whose count exceeds the bytes left
 * fails with FISH_MP_ELENGTH, because every element takes at least one
 * byte: a caller may therefore size an allocation by .len without trusting
 * the input any further. */
fish_mp_status fish_mp_read(fish_mp_reader *r, fish_mp_item *item);

/* Step past one complete value, containers included, allowing at most
 * max_depth levels of nested arrays/maps (the outermost counts as one). On
 * error the cursor is left on the failing item, which may be inside a
 * container, so fish_mp_reader_offset reports where the damage is. */
fish_mp_status fish_mp_skip(fish_mp_reader *r, int max_depth);

size_t fish_mp_reader_offset(const fish_mp_reader *r);
size_t fish_mp_reader_remaining(const fish_mp_reader *r);

/* A short English reason, e.g. "truncated input". Never NULL. */
const char *fish_mp_strerror(fish_mp_status status);

#endif
