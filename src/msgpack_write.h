/* A msgpack encoder that appends to a fish_buffer. Pure C, no Lua.
 *
 * Every choice of encoding copies ormsgpack, the encoder behind the Python
 * SDK whose bytes fish reproduces (fish-api.md §2.3): ints take the
 * shortest form, floats are always float64, str and bin never mix.
 *
 * Every function returns FISH_MP_WRITE_OK or a negative fish_mp_write_status.
 * On failure the buffer holds exactly the bytes it held before the call. */
#ifndef FISH_MSGPACK_WRITE_H
#define FISH_MSGPACK_WRITE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "buffer.h"

typedef enum fish_mp_write_status {
    FISH_MP_WRITE_OK = 0,
    FISH_MP_WRITE_ENOMEM = -1,  /* the buffer could not grow */
    FISH_MP_WRITE_ETOOBIG = -2, /* a length or count above 2^32-1 */
    FISH_MP_WRITE_EIO = -3      /* a file could not be opened or read */
} fish_mp_write_status;

/* Room for a file error message: "cannot read '<path>': <reason>" with a
 * PATH_MAX-sized path. Longer messages are truncated, never overrun. */
#define FISH_MP_FILE_ERRMAX 4352

int fish_mp_write_nil(fish_buffer *b);
int fish_mp_write_bool(fish_buffer *b, int value);

/* Shortest form: positive fixint, uint8..uint64 (cc..cf) when value >= 0;
 * negative fixint, int8..int64 (d0..d3) when value < 0. */
int fish_mp_write_int(fish_buffer *b, int64_t value);
/* The same unsigned ladder for the full uint64 range. */
int fish_mp_write_uint(fish_buffer *b, uint64_t value);

/* Always float64 (cb), even for whole numbers: a schema's float field stays
 * a float on the wire. */
int fish_mp_write_float64(fish_buffer *b, double value);

/* fixstr / str8 (d9) / str16 (da) / str32 (db), then the bytes. */
int fish_mp_write_str(fish_buffer *b, const char *s, size_t len);
/* bin8 (c4) / bin16 (c5) / bin32 (c6), then the bytes. */
int fish_mp_write_bin(fish_buffer *b, const void *bytes, size_t len);

/* Headers only, for callers that append the payload or elements themselves.
 * str/bin headers are the shortest forms above; array and map headers are
 * fixarray/fixmap (< 16), else 16-bit (dc/de), else 32-bit (dd/df). */
int fish_mp_write_str_header(fish_buffer *b, size_t len);
int fish_mp_write_bin_header(fish_buffer *b, size_t len);
int fish_mp_write_array_header(fish_buffer *b, size_t count);
int fish_mp_write_map_header(fish_buffer *b, size_t count);

/* Append a bin holding every remaining byte of `f`, read until EOF. The
 * stream need not be seekable: the bytes are read first and the shortest
 * header is written afterwards. `name` (may be NULL) names the stream in
 * error messages. On FISH_MP_WRITE_EIO or _ETOOBIG a message is written
 * to err (errlen bytes, NUL-terminated) when err is not NULL. */
int fish_mp_write_bin_stream(fish_buffer *b, FILE *f, const char *name, char *err,
                             size_t errlen);

/* What fish_mp_write_bin_file checks before reading, without opening the
 * file: a regular file, of `expected` bytes when expected >= 0, at most
 * 2^32-1 bytes (else FISH_MP_WRITE_ETOOBIG). Sets *size (may be NULL) on
 * success; the messages are those of fish_mp_write_bin_file. */
int fish_mp_check_file(const char *path, int64_t expected, int64_t *size, char *err,
                       size_t errlen);

/* fish_mp_write_bin_stream on the file at `path`, opened and closed here.
 * Only a regular file is read ("cannot read '<path>': not a regular file";
 * a FIFO is refused before it is opened, so this never blocks). With
 * expected >= 0 the file must hold exactly that many bytes: "<path> is N
 * bytes, expected M", or "... changed size while being read". Other errors
 * read "cannot open '<path>': <strerror text>" or "cannot read ...". */
int fish_mp_write_bin_file(fish_buffer *b, const char *path, int64_t expected, char *err,
                           size_t errlen);

#endif
