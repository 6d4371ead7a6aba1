#include "msgpack_write.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h> /* stat: in POSIX and in MinGW's and MSVC's C runtimes */

/* Bytes asked of each fread when streaming a file into a bin. */
#define FILE_CHUNK ((size_t)64 * 1024)

/* The longest header any item needs: a tag plus an 8-byte value. */
#define MAX_HEADER 9

static void store16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void store32(unsigned char *p, uint32_t v) {
    store16(p, (uint16_t)(v >> 16));
    store16(p + 2, (uint16_t)v);
}

static void store64(unsigned char *p, uint64_t v) {
    store32(p, (uint32_t)(v >> 32));
    store32(p + 4, (uint32_t)v);
}

static int put(fish_buffer *b, const unsigned char *bytes, size_t n) {
    return fish_buffer_append(b, bytes, n) == 0 ? FISH_MP_WRITE_OK : FISH_MP_WRITE_ENOMEM;
}

/* Compose a length-prefixed header: the `small` form when small_tag is
 * non-zero and len <= small_max (length folded into the tag), else the
 * 8-bit form when tag8 is non-zero, else 16-bit, else 32-bit. Returns the
 * header size, or 0 when len does not fit in 32 bits. */
static size_t make_header(unsigned char *out, uint64_t len, unsigned char small_tag,
                          uint64_t small_max, unsigned char tag8, unsigned char tag16,
                          unsigned char tag32) {
    if (small_tag && len <= small_max) {
        out[0] = (unsigned char)(small_tag | len);
        return 1;
    }
    if (tag8 && len <= UINT8_MAX) {
        out[0] = tag8;
        out[1] = (unsigned char)len;
        return 2;
    }
    if (len <= UINT16_MAX) {
        out[0] = tag16;
        store16(out + 1, (uint16_t)len);
        return 3;
    }
    if (len <= UINT32_MAX) {
        out[0] = tag32;
        store32(out + 1, (uint32_t)len);
        return 5;
    }
    return 0;
}

static size_t str_header(unsigned char *out, uint64_t len) {
    return make_header(out, len, 0xa0, 31, 0xd9, 0xda, 0xdb);
}

/* bin has no fix form; a zero small_tag skips it. */
static size_t bin_header(unsigned char *out, uint64_t len) {
    return make_header(out, len, 0, 0, 0xc4, 0xc5, 0xc6);
}

static int put_header(fish_buffer *b, size_t (*make)(unsigned char *, uint64_t),
                      size_t len) {
    unsigned char h[MAX_HEADER];
    size_t n = make(h, (uint64_t)len);
    return n ? put(b, h, n) : FISH_MP_WRITE_ETOOBIG;
}

/* Header and payload in one reservation so a failure leaves no header. */
static int put_sized(fish_buffer *b, size_t (*make)(unsigned char *, uint64_t),
                     const void *bytes, size_t len) {
    unsigned char h[MAX_HEADER];
    size_t n = make(h, (uint64_t)len);
    if (!n) return FISH_MP_WRITE_ETOOBIG;
    if (len > SIZE_MAX - n || fish_buffer_reserve(b, n + len) != 0)
        return FISH_MP_WRITE_ENOMEM;
    fish_buffer_append(b, h, n);
    fish_buffer_append(b, bytes, len);
    return FISH_MP_WRITE_OK;
}

int fish_mp_write_nil(fish_buffer *b) {
    static const unsigned char nil = 0xc0;
    return put(b, &nil, 1);
}

int fish_mp_write_bool(fish_buffer *b, int value) {
    const unsigned char tag = value ? 0xc3 : 0xc2;
    return put(b, &tag, 1);
}

int fish_mp_write_uint(fish_buffer *b, uint64_t value) {
    unsigned char h[MAX_HEADER];
    size_t n;
    if (value <= 0x7f) {
        h[0] = (unsigned char)value;
        n = 1;
    } else if (value <= UINT8_MAX) {
        h[0] = 0xcc;
        h[1] = (unsigned char)value;
        n = 2;
    } else if (value <= UINT16_MAX) {
        h[0] = 0xcd;
        store16(h + 1, (uint16_t)value);
        n = 3;
    } else if (value <= UINT32_MAX) {
        h[0] = 0xce;
        store32(h + 1, (uint32_t)value);
        n = 5;
    } else {
        h[0] = 0xcf;
        store64(h + 1, value);
        n = 9;
    }
    return put(b, h, n);
}

int fish_mp_write_int(fish_buffer *b, int64_t value) {
    if (value >= 0) return fish_mp_write_uint(b, (uint64_t)value);
    /* Negative: converting to an unsigned type is defined as modulo 2^N,
     * which is exactly the two's complement bytes msgpack wants. */
    unsigned char h[MAX_HEADER];
    size_t n;
    if (value >= -32) {
        h[0] = (unsigned char)value; /* 0xe0..0xff */
        n = 1;
    } else if (value >= INT8_MIN) {
        h[0] = 0xd0;
        h[1] = (unsigned char)value;
        n = 2;
    } else if (value >= INT16_MIN) {
        h[0] = 0xd1;
        store16(h + 1, (uint16_t)value);
        n = 3;
    } else if (value >= INT32_MIN) {
        h[0] = 0xd2;
        store32(h + 1, (uint32_t)value);
        n = 5;
    } else {
        h[0] = 0xd3;
        store64(h + 1, (uint64_t)value);
        n = 9;
    }
    return put(b, h, n);
}

int fish_mp_write_float64(fish_buffer *b, double value) {
    unsigned char h[MAX_HEADER];
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    h[0] = 0xcb;
    store64(h + 1, bits);
    return put(b, h, 9);
}

int fish_mp_write_str(fish_buffer *b, const char *s, size_t len) {
    return put_sized(b, str_header, s, len);
}

int fish_mp_write_bin(fish_buffer *b, const void *bytes, size_t len) {
    return put_sized(b, bin_header, bytes, len);
}

int fish_mp_write_str_header(fish_buffer *b, size_t len) {
    return put_header(b, str_header, len);
}

int fish_mp_write_bin_header(fish_buffer *b, size_t len) {
    return put_header(b, bin_header, len);
}

static size_t array_header(unsigned char *out, uint64_t count) {
    return make_header(out, count, 0x90, 15, 0, 0xdc, 0xdd);
}

static size_t map_header(unsigned char *out, uint64_t count) {
    return make_header(out, count, 0x80, 15, 0, 0xde, 0xdf);
}

int fish_mp_write_array_header(fish_buffer *b, size_t count) {
    return put_header(b, array_header, count);
}

int fish_mp_write_map_header(fish_buffer *b, size_t count) {
    return put_header(b, map_header, count);
}

static int file_error(char *err, size_t errlen, const char *what, const char *name,
                      int errnum) {
    if (err && errlen)
        snprintf(err, errlen, "cannot %s '%s': %s", what, name ? name : "(stream)",
                 errnum ? strerror(errnum) : "read error");
    return FISH_MP_WRITE_EIO;
}

/* Read f to EOF, appending to b, but never more than one byte past
 * `limit` (a length of b): returns FISH_MP_WRITE_ETOOBIG without a message
 * when there was more, since only the caller knows why it set the limit. */
static int slurp(fish_buffer *b, FILE *f, size_t limit, const char *name, char *err,
                 size_t errlen) {
    for (;;) {
        size_t ask = FILE_CHUNK;
        if (limit - b->len < ask) ask = limit - b->len + 1;
        if (fish_buffer_reserve(b, ask) != 0) return FISH_MP_WRITE_ENOMEM;
        errno = 0;
        size_t got = fread(b->data + b->len, 1, ask, f);
        int errnum = errno;
        b->len += got;
        if (b->len > limit) return FISH_MP_WRITE_ETOOBIG;
        if (got < ask) {
            if (ferror(f)) return file_error(err, errlen, "read", name, errnum);
            return FISH_MP_WRITE_OK; /* EOF */
        }
    }
}

/* A bin of f's remaining bytes; expected >= 0: exactly that many, or it
 * fails (the caller has checked the size before, so a difference means the
 * file changed while being read). */
static int write_bin_from(fish_buffer *b, FILE *f, const char *name, int64_t expected,
                          char *err, size_t errlen) {
    /* The size is known only at EOF, so leave room for the largest header
     * (bin32: 5 bytes), read, then slide the payload down behind the
     * shortest header. The slide is one memmove, cheaper than a second pass
     * and correct for pipes and files that change size under us. */
    const size_t start = b->len;
    const size_t room = 5;
    const char *shown = name ? name : "(stream)";
    if (fish_buffer_reserve(b, room) != 0) return FISH_MP_WRITE_ENOMEM;
    b->len += room;
    uint64_t most = UINT32_MAX;
    if (expected >= 0 && (uint64_t)expected < most) most = (uint64_t)expected;
    size_t limit = b->len + (size_t)most;
    if (limit < b->len) limit = (size_t)-1; /* 32-bit size_t: the heap caps it first */
    int st = slurp(b, f, limit, name, err, errlen);
    size_t payload = b->len - start - room;
    if (st == FISH_MP_WRITE_ETOOBIG && err && errlen) {
        if (most == UINT32_MAX)
            snprintf(err, errlen, "cannot read '%s': larger than 4 GiB, too big for msgpack bin",
                     shown);
        else
            snprintf(err, errlen, "%s changed size while being read (expected %lld bytes)",
                     shown, (long long)expected);
    }
    if (st == FISH_MP_WRITE_OK && expected >= 0 && (uint64_t)payload != (uint64_t)expected) {
        if (err && errlen)
            snprintf(err, errlen, "%s changed size while being read (expected %lld bytes)",
                     shown, (long long)expected);
        st = FISH_MP_WRITE_EIO;
    }
    if (st != FISH_MP_WRITE_OK) {
        b->len = start;
        return st;
    }
    unsigned char h[MAX_HEADER];
    size_t n = bin_header(h, (uint64_t)payload);
    memmove(b->data + start + n, b->data + start + room, payload);
    memcpy(b->data + start, h, n);
    b->len = start + n + payload;
    return FISH_MP_WRITE_OK;
}

int fish_mp_write_bin_stream(fish_buffer *b, FILE *f, const char *name, char *err,
                             size_t errlen) {
    return write_bin_from(b, f, name, -1, err, errlen);
}

int fish_mp_check_file(const char *path, int64_t expected, int64_t *size, char *err,
                       size_t errlen) {
    /* stat, never open: opening a FIFO would block until a writer came, and
     * a directory or device is never what a caller meant to send. */
    struct stat st;
    errno = 0;
    if (stat(path, &st) != 0) return file_error(err, errlen, "open", path, errno);
    if (!S_ISREG(st.st_mode)) {
        if (err && errlen) snprintf(err, errlen, "cannot read '%s': not a regular file", path);
        return FISH_MP_WRITE_EIO;
    }
    if (expected >= 0 && (int64_t)st.st_size != expected) {
        if (err && errlen)
            snprintf(err, errlen, "%s is %lld bytes, expected %lld", path,
                     (long long)st.st_size, (long long)expected);
        return FISH_MP_WRITE_EIO;
    }
    if ((uint64_t)st.st_size > UINT32_MAX) {
        if (err && errlen)
            snprintf(err, errlen, "cannot read '%s': larger than 4 GiB, too big for msgpack bin",
                     path);
        return FISH_MP_WRITE_ETOOBIG;
    }
    if (size) *size = (int64_t)st.st_size;
    return FISH_MP_WRITE_OK;
}

int fish_mp_write_bin_file(fish_buffer *b, const char *path, int64_t expected, char *err,
                           size_t errlen) {
    int checked = fish_mp_check_file(path, expected, NULL, err, errlen);
    /* Over 4 GiB is found while reading, as for a stream. */
    if (checked != FISH_MP_WRITE_OK && checked != FISH_MP_WRITE_ETOOBIG) return checked;
    FILE *f = fopen(path, "rb");
    if (!f) return file_error(err, errlen, "open", path, errno);
    int status = write_bin_from(b, f, path, expected, err, errlen);
    fclose(f);
    return status;
}
