#include "msgpack_read.h"

#include <string.h>

/* Big-endian loads. Bytes are assembled arithmetically so the code is
 * independent of host byte order and of alignment. */
static uint32_t load16(const unsigned char *p) {
    return (uint32_t)p[0] << 8 | (uint32_t)p[1];
}

static uint32_t load32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static uint64_t load64(const unsigned char *p) {
    return (uint64_t)load32(p) << 32 | load32(p + 4);
}

/* Width 1, 2 or 4: the length field of str8/16/32, bin*, ext*, array*, map*. */
static uint32_t load_len(const unsigned char *p, int width) {
    return width == 1 ? p[0] : width == 2 ? load16(p) : load32(p);
}

/* Two's complement reinterpretation. Converting an out-of-range unsigned
 * value to a signed type is implementation-defined in C, so go through the
 * arithmetic instead; intN_t is guaranteed two's complement. */
static int64_t sign_extend(uint64_t v, int bits) {
    if (bits == 64) {
        int64_t out;
        memcpy(&out, &v, sizeof out);
        return out;
    }
    uint64_t sign = (uint64_t)1 << (bits - 1);
    if (v & sign) return -(int64_t)(((uint64_t)1 << bits) - v);
    return (int64_t)v;
}

static size_t avail(const fish_mp_reader *r) { return (size_t)(r->end - r->pos); }

void fish_mp_reader_init(fish_mp_reader *r, const void *data, size_t len) {
    r->start = data;
    r->pos = r->start;
    r->end = r->start + len;
}

size_t fish_mp_reader_offset(const fish_mp_reader *r) {
    return (size_t)(r->pos - r->start);
}

size_t fish_mp_reader_remaining(const fish_mp_reader *r) { return avail(r); }

/* The item is `hdr` header bytes followed by `len` payload bytes. */
static fish_mp_status take_payload(fish_mp_reader *r, fish_mp_item *it,
                                   fish_mp_type type, size_t hdr, uint32_t len) {
    if (avail(r) < hdr || avail(r) - hdr < len) return FISH_MP_ETRUNC;
    it->type = type;
    it->len = len;
    it->data = len ? (const char *)r->pos + hdr : NULL;
    r->pos += hdr + len;
    return FISH_MP_OK;
}

/* str8/16/32 and bin8/16/32: a length field of `width` bytes after the tag. */
static fish_mp_status read_sized(fish_mp_reader *r, fish_mp_item *it,
                                 fish_mp_type type, int width) {
    if (avail(r) < 1 + (size_t)width) return FISH_MP_ETRUNC;
    return take_payload(r, it, type, 1 + (size_t)width, load_len(r->pos + 1, width));
}

/* ext8/16/32: tag, length, type byte, payload. */
static fish_mp_status read_ext(fish_mp_reader *r, fish_mp_item *it, int width) {
    size_t hdr = 1 + (size_t)width + 1;
    if (avail(r) < hdr) return FISH_MP_ETRUNC;
    it->ext_type = (int8_t)sign_extend(r->pos[hdr - 1], 8);
    return take_payload(r, it, FISH_MP_EXT, hdr, load_len(r->pos + 1, width));
}

/* fixext1/2/4/8/16: tag, type byte, payload of a fixed size. */
static fish_mp_status read_fixext(fish_mp_reader *r, fish_mp_item *it, uint32_t len) {
    if (avail(r) < 2) return FISH_MP_ETRUNC;
    it->ext_type = (int8_t)sign_extend(r->pos[1], 8);
    return take_payload(r, it, FISH_MP_EXT, 2, len);
}

/* Array/map header. Each element needs at least one byte (a map entry two),
 * so a count beyond that is rejected here, before any caller allocates. */
static fish_mp_status take_container(fish_mp_reader *r, fish_mp_item *it,
                                     fish_mp_type type, size_t hdr, uint32_t count) {
    if (avail(r) < hdr) return FISH_MP_ETRUNC;
    uint64_t min_bytes = (uint64_t)count * (type == FISH_MP_MAP ? 2 : 1);
    if (min_bytes > avail(r) - hdr) return FISH_MP_ELENGTH;
    it->type = type;
    it->len = count;
    it->data = NULL;
    r->pos += hdr;
    return FISH_MP_OK;
}

static fish_mp_status read_container(fish_mp_reader *r, fish_mp_item *it,
                                     fish_mp_type type, int width) {
    if (avail(r) < 1 + (size_t)width) return FISH_MP_ETRUNC;
    return take_container(r, it, type, 1 + (size_t)width, load_len(r->pos + 1, width));
}

/* A fixed-size scalar of `width` bytes after the tag; returns its raw bits. */
static fish_mp_status take_fixed(fish_mp_reader *r, int width, uint64_t *bits) {
    if (avail(r) < 1 + (size_t)width) return FISH_MP_ETRUNC;
    const unsigned char *p = r->pos + 1;
    *bits = width == 1 ? p[0] : width == 2 ? load16(p) : width == 4 ? load32(p) : load64(p);
    r->pos += 1 + (size_t)width;
    return FISH_MP_OK;
}

static fish_mp_status read_uint(fish_mp_reader *r, fish_mp_item *it, int width) {
    uint64_t v;
    fish_mp_status st = take_fixed(r, width, &v);
    if (st != FISH_MP_OK) return st;
    if (v > INT64_MAX) {
        it->type = FISH_MP_UINT;
        it->u = v;
    } else {
        it->type = FISH_MP_INT;
        it->i = (int64_t)v;
    }
    return FISH_MP_OK;
}

static fish_mp_status read_sint(fish_mp_reader *r, fish_mp_item *it, int width) {
    uint64_t v;
    fish_mp_status st = take_fixed(r, width, &v);
    if (st != FISH_MP_OK) return st;
    it->type = FISH_MP_INT;
    it->i = sign_extend(v, width * 8);
    return FISH_MP_OK;
}

static fish_mp_status read_float(fish_mp_reader *r, fish_mp_item *it, int width) {
    uint64_t v;
    fish_mp_status st = take_fixed(r, width, &v);
    if (st != FISH_MP_OK) return st;
    if (width == 4) {
        uint32_t bits = (uint32_t)v;
        float f;
        memcpy(&f, &bits, sizeof f);
        it->type = FISH_MP_FLOAT32;
        it->f = (double)f;
    } else {
        double d;
        memcpy(&d, &v, sizeof d);
        it->type = FISH_MP_FLOAT64;
        it->f = d;
    }
    return FISH_MP_OK;
}

/* A one-byte item whose value lives in the tag itself. */
static fish_mp_status take_tag(fish_mp_reader *r, fish_mp_item *it, fish_mp_type type) {
    it->type = type;
    r->pos += 1;
    return FISH_MP_OK;
}

/* The 0xc0..0xdf range: every tag that is followed by more bytes. */
static fish_mp_status read_tagged(fish_mp_reader *r, fish_mp_item *it, unsigned char tag) {
    switch (tag) {
    case 0xc0: return take_tag(r, it, FISH_MP_NIL);
    case 0xc1: return FISH_MP_EINVALID;
    case 0xc2:
    case 0xc3: it->boolean = tag == 0xc3; return take_tag(r, it, FISH_MP_BOOL);
    case 0xc4: return read_sized(r, it, FISH_MP_BIN, 1);
    case 0xc5: return read_sized(r, it, FISH_MP_BIN, 2);
    case 0xc6: return read_sized(r, it, FISH_MP_BIN, 4);
    case 0xc7: return read_ext(r, it, 1);
    case 0xc8: return read_ext(r, it, 2);
    case 0xc9: return read_ext(r, it, 4);
    case 0xca: return read_float(r, it, 4);
    case 0xcb: return read_float(r, it, 8);
    case 0xcc: return read_uint(r, it, 1);
    case 0xcd: return read_uint(r, it, 2);
    case 0xce: return read_uint(r, it, 4);
    case 0xcf: return read_uint(r, it, 8);
    case 0xd0: return read_sint(r, it, 1);
    case 0xd1: return read_sint(r, it, 2);
    case 0xd2: return read_sint(r, it, 4);
    case 0xd3: return read_sint(r, it, 8);
    case 0xd4: return read_fixext(r, it, 1);
    case 0xd5: return read_fixext(r, it, 2);
    case 0xd6: return read_fixext(r, it, 4);
    case 0xd7: return read_fixext(r, it, 8);
    case 0xd8: return read_fixext(r, it, 16);
    case 0xd9: return read_sized(r, it, FISH_MP_STR, 1);
    case 0xda: return read_sized(r, it, FISH_MP_STR, 2);
    case 0xdb: return read_sized(r, it, FISH_MP_STR, 4);
    case 0xdc: return read_container(r, it, FISH_MP_ARRAY, 2);
    case 0xdd: return read_container(r, it, FISH_MP_ARRAY, 4);
    case 0xde: return read_container(r, it, FISH_MP_MAP, 2);
    default: /* 0xdf */ return read_container(r, it, FISH_MP_MAP, 4);
    }
}

fish_mp_status fish_mp_read(fish_mp_reader *r, fish_mp_item *it) {
    memset(it, 0, sizeof *it);
    if (avail(r) < 1) return FISH_MP_ETRUNC;
    unsigned char tag = r->pos[0];
    if (tag <= 0x7f) {
        it->i = tag;
        return take_tag(r, it, FISH_MP_INT);
    }
    if (tag >= 0xe0) {
        it->i = (int64_t)tag - 256;
        return take_tag(r, it, FISH_MP_INT);
    }
    if (tag <= 0x8f) return take_container(r, it, FISH_MP_MAP, 1, tag & 0x0fu);
    if (tag <= 0x9f) return take_container(r, it, FISH_MP_ARRAY, 1, tag & 0x0fu);
    if (tag <= 0xbf) return take_payload(r, it, FISH_MP_STR, 1, tag & 0x1fu);
    return read_tagged(r, it, tag);
}

fish_mp_status fish_mp_skip(fish_mp_reader *r, int max_depth) {
    fish_mp_item it;
    const unsigned char *at = r->pos;
    fish_mp_status st = fish_mp_read(r, &it);
    if (st != FISH_MP_OK) return st;
    if (it.type != FISH_MP_ARRAY && it.type != FISH_MP_MAP) return FISH_MP_OK;
    if (max_depth < 1) {
        r->pos = at;
        return FISH_MP_EDEPTH;
    }
    uint64_t n = (uint64_t)it.len * (it.type == FISH_MP_MAP ? 2 : 1);
    for (uint64_t k = 0; k < n; k++) {
        st = fish_mp_skip(r, max_depth - 1);
        if (st != FISH_MP_OK) return st;
    }
    return FISH_MP_OK;
}

const char *fish_mp_strerror(fish_mp_status status) {
    switch (status) {
    case FISH_MP_OK: return "no error";
    case FISH_MP_ETRUNC: return "truncated input";
    case FISH_MP_EINVALID: return "invalid byte 0xc1";
    case FISH_MP_ELENGTH: return "declared length exceeds input";
    case FISH_MP_EDEPTH: return "nesting too deep";
    }
    return "unknown error";
}
