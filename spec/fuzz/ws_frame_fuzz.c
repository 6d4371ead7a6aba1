/* libFuzzer target: the WebSocket frame decoder (src/ws.c) reading
 * arbitrary server bytes, in pieces of sizes the input picks, under a
 * small message cap.
 *
 *   make build/fuzz/ws_frame_fuzz
 *   build/fuzz/ws_frame_fuzz build/fuzz/new-ws_frame spec/fuzz/corpus/ws_frame
 *
 * Input: byte 0 sets the cap (1 + 16 * byte), byte 1 seeds the piece sizes,
 * the rest is what the server sent. Checked on every input:
 *   - no read outside the input (ASan), no UB (UBSan);
 *   - the decoder never claims more bytes than it was given, and after a
 *     close or an error it takes nothing more and repeats that event;
 *   - no message exceeds the cap, no control payload exceeds 125 bytes;
 *   - the events (kinds and bytes) are the same whether the input comes
 *     whole or in pieces: the decoder keeps all the state it needs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "ws.h"

static void check(int ok) {
    if (!ok) abort();
}

/* Run the decoder over data in pieces; every event is written to log as
 * its kind and bytes. Returns the bytes consumed. */
static size_t run(const unsigned char *data, size_t len, uint64_t cap, unsigned seed,
                  fish_buffer *log) {
    fish_ws_decoder d;
    fish_ws_decoder_init(&d, cap);
    size_t at = 0;
    int stopped = 0;
    while (at < len && !stopped) {
        size_t piece = len - at;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            size_t want = 1 + (seed >> 16) % 23;
            if (want < piece) piece = want;
        }
        const unsigned char *p = data + at;
        size_t left = piece;
        for (;;) {
            size_t used = 0;
            fish_ws_event ev = fish_ws_decode(&d, p, left, &used);
            check(used <= left);
            p += used;
            left -= used;
            at += used;
            if (ev == FISH_WS_NEED_MORE) {
                check(left == 0);
                break;
            }
            unsigned char kind = (unsigned char)ev;
            check(fish_buffer_append(log, &kind, 1) == 0);
            switch (ev) {
            case FISH_WS_MESSAGE:
                check(d.message.len <= cap);
                check(fish_buffer_append(log, d.message.data, d.message.len) == 0);
                if (d.message.len & 1) { /* sometimes taken, sometimes left */
                    fish_buffer taken;
                    fish_ws_decoder_take(&d, &taken);
                    fish_buffer_free(&taken);
                }
                break;
            case FISH_WS_PING:
            case FISH_WS_PONG:
                check(d.control_len <= FISH_WS_CONTROL_MAX);
                check(fish_buffer_append(log, d.control, d.control_len) == 0);
                break;
            case FISH_WS_CLOSE:
            case FISH_WS_ERROR: {
                check(d.close_reason_len <= FISH_WS_CONTROL_MAX - 2);
                /* Done for good: nothing more is taken. */
                size_t again = 1;
                check(fish_ws_decode(&d, p, left, &again) == ev && again == 0);
                if (ev == FISH_WS_CLOSE)
                    check(fish_buffer_append(log, d.close_reason, d.close_reason_len) == 0);
                else
                    check(fish_buffer_append(log, &d.error_kind, 1) == 0);
                stopped = 1;
                break;
            }
            default:
                break;
            }
            if (stopped || left == 0) break;
        }
    }
    fish_ws_decoder_free(&d);
    return at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    uint64_t cap = 1 + 16 * (uint64_t)data[0];
    unsigned seed = data[1] | 0x100;
    data += 2;
    size -= 2;
    fish_buffer whole, pieces;
    fish_buffer_init(&whole);
    fish_buffer_init(&pieces);
    size_t used_whole = run(data, size, cap, 0, &whole);
    size_t used_pieces = run(data, size, cap, seed, &pieces);
    check(used_whole == used_pieces);
    check(whole.len == pieces.len && (whole.len == 0 || memcmp(whole.data, pieces.data, whole.len) == 0));
    fish_buffer_free(&whole);
    fish_buffer_free(&pieces);
    return 0;
}
