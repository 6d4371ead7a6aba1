/* libFuzzer target: the parser of the server's answer to the WebSocket
 * Upgrade request (src/ws.c): status line and headers, the 101 checks, and
 * a refusal's body by Content-Length, chunked or until close.
 *
 *   make build/fuzz/ws_handshake_fuzz
 *   build/fuzz/ws_handshake_fuzz build/fuzz/new-ws_handshake spec/fuzz/corpus/ws_handshake
 *
 * Checked on every input:
 *   - no read outside the input (ASan), no UB (UBSan);
 *   - a complete head lies inside the input, and so does every header;
 *   - any shorter prefix of a complete head is "need more", never an error
 *     or a different head: the parser does not depend on how bytes arrive;
 *   - a refusal body never exceeds its cap, and a body complete without
 *     eof is still complete with it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "ws.h"

static void check(int ok) {
    if (!ok) abort();
}

static fish_ws_head head, shorter;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *bytes = (const char *)data;
    const char *error = NULL;
    int r = fish_ws_parse_head(bytes, size, &head, &error);
    check(r >= -1 && r <= 1);
    if (r < 0) check(error != NULL);
    if (r != 1) return 0;
    check(head.head_len > 0 && head.head_len <= size && head.head_len <= FISH_WS_HEAD_MAX);
    check(head.status >= 100 && head.status <= 999);
    check(head.count <= FISH_WS_HEADERS_MAX);
    for (size_t i = 0; i < head.count; i++) {
        const fish_ws_header *h = &head.headers[i];
        check(h->name >= bytes && h->name + h->name_len <= bytes + head.head_len);
        check(h->value >= bytes && h->value + h->value_len <= bytes + head.head_len);
        check(h->name_len > 0);
    }
    size_t cuts[3] = {head.head_len - 1, head.head_len / 2, 1};
    for (int i = 0; i < 3; i++)
        check(fish_ws_parse_head(bytes, cuts[i], &shorter, &error) == 0);
    check(fish_ws_parse_head(bytes, head.head_len, &shorter, &error) == 1 &&
          shorter.head_len == head.head_len && shorter.count == head.count);

    (void)fish_ws_check_upgrade(&head, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    const char *raw = bytes + head.head_len;
    size_t raw_len = size - head.head_len;
    size_t cap = 1 + (size % 97);
    fish_buffer body;
    fish_buffer_init(&body);
    int done = fish_ws_refusal_body(&head, raw, raw_len, 0, cap, &body, &error);
    check(done >= -1 && done <= 1 && body.len <= cap);
    int done_eof = fish_ws_refusal_body(&head, raw, raw_len, 1, cap, &body, &error);
    check(body.len <= cap);
    if (done == 1) check(done_eof == 1);
    if (done == -1) check(done_eof == -1);
    fish_buffer_free(&body);
    return 0;
}
