/* libFuzzer target: the pure C msgpack cursor (src/msgpack_read.c) walking
 * arbitrary bytes, plus the encoder (src/msgpack_write.c) re-emitting what
 * it read.
 *
 * Build (from the project root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *     -Isrc $(pkg-config --cflags lua5.4) \
 *     spec/fuzz/msgpack_read_fuzz.c src/msgpack_read.c src/msgpack_write.c src/buffer.c \
 *     -o build/msgpack_read_fuzz
 * Run (new inputs go to the first, scratch, directory; the seeds stay clean):
 *   mkdir -p build/fuzz-msgpack-read
 *   build/msgpack_read_fuzz -max_total_time=60 build/fuzz-msgpack-read spec/fuzz/corpus/msgpack
 *
 * Checked on every input:
 *   - no read outside the input (ASan), no UB (UBSan);
 *   - payload pointers and container counts stay inside the input;
 *   - the recursive walk and fish_mp_skip agree on status and end offset;
 *   - re-emitting a walked value in canonical form is idempotent: emitting
 *     what the canonical bytes decode to gives the same bytes again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "msgpack_read.h"
#include "msgpack_write.h"

#define MAX_DEPTH 64

static void check(int ok) {
    if (!ok) abort();
}

/* Walk one value, re-emitting it canonically into out (NULL: walk only).
 * Returns the reader status. */
static fish_mp_status walk(fish_mp_reader *r, int depth, fish_buffer *out) {
    fish_mp_item it;
    const unsigned char *before = r->pos;
    fish_mp_status st = fish_mp_read(r, &it);
    if (st != FISH_MP_OK) {
        check(r->pos == before); /* a failed read does not move */
        return st;
    }
    check(r->pos > before && r->pos <= r->end);
    if (it.type == FISH_MP_STR || it.type == FISH_MP_BIN || it.type == FISH_MP_EXT) {
        if (it.len) {
            const unsigned char *p = (const unsigned char *)it.data;
            check(p > before && p + it.len == r->pos);
        } else {
            check(it.data == NULL);
        }
    }
    int wst = FISH_MP_WRITE_OK;
    switch (it.type) {
    case FISH_MP_NIL: if (out) wst = fish_mp_write_nil(out); break;
    case FISH_MP_BOOL: if (out) wst = fish_mp_write_bool(out, it.boolean); break;
    case FISH_MP_INT: if (out) wst = fish_mp_write_int(out, it.i); break;
    case FISH_MP_UINT:
        check(it.u > INT64_MAX);
        if (out) wst = fish_mp_write_uint(out, it.u);
        break;
    case FISH_MP_FLOAT32:
    case FISH_MP_FLOAT64: if (out) wst = fish_mp_write_float64(out, it.f); break;
    case FISH_MP_STR: if (out) wst = fish_mp_write_str(out, it.data, it.len); break;
    case FISH_MP_BIN:
    case FISH_MP_EXT: /* no ext writer: bin keeps the payload */
        if (out) wst = fish_mp_write_bin(out, it.data, it.len);
        break;
    case FISH_MP_ARRAY:
    case FISH_MP_MAP: {
        uint64_t n = (uint64_t)it.len * (it.type == FISH_MP_MAP ? 2 : 1);
        check(n <= fish_mp_reader_remaining(r)); /* the length guard */
        if (depth >= MAX_DEPTH) return FISH_MP_EDEPTH;
        if (out)
            wst = it.type == FISH_MP_MAP ? fish_mp_write_map_header(out, it.len)
                                         : fish_mp_write_array_header(out, it.len);
        check(wst == FISH_MP_WRITE_OK);
        for (uint64_t k = 0; k < n; k++) {
            st = walk(r, depth + 1, out);
            if (st != FISH_MP_OK) return st;
        }
        return FISH_MP_OK;
    }
    }
    check(wst == FISH_MP_WRITE_OK);
    return FISH_MP_OK;
}

/* Canonical bytes of the first value of data, or -1 when it does not walk. */
static int canonical(const void *data, size_t size, fish_buffer *out, size_t *end) {
    fish_mp_reader r;
    fish_mp_reader_init(&r, data, size);
    if (walk(&r, 0, out) != FISH_MP_OK) return -1;
    *end = fish_mp_reader_offset(&r);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Walk every top-level value in sequence, as a stream reader would. */
    fish_mp_reader r, s;
    fish_mp_reader_init(&r, data, size);
    fish_mp_reader_init(&s, data, size);
    while (fish_mp_reader_remaining(&r) > 0) {
        fish_mp_status a = walk(&r, 0, NULL);
        /* Both allow MAX_DEPTH levels of containers. */
        fish_mp_status b = fish_mp_skip(&s, MAX_DEPTH);
        check(a == b);
        if (a != FISH_MP_OK) break;
        check(fish_mp_reader_offset(&r) == fish_mp_reader_offset(&s));
    }
    (void)fish_mp_strerror(FISH_MP_ETRUNC);

    fish_buffer once, twice;
    fish_buffer_init(&once);
    fish_buffer_init(&twice);
    size_t end1, end2;
    if (canonical(data, size, &once, &end1) == 0) {
        check(canonical(once.data, once.len, &twice, &end2) == 0);
        check(end2 == once.len);
        check(twice.len == once.len && memcmp(once.data, twice.data, once.len) == 0);
    }
    fish_buffer_free(&once);
    fish_buffer_free(&twice);
    return 0;
}
