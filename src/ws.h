/* The client side of RFC 6455, as pure byte work: the Sec-WebSocket-Accept
 * key (SHA-1 + base64), the frame encoder and incremental decoder, and the
 * parser of the server's answer to the Upgrade request (status line,
 * headers, and the body of a refusal). No libcurl and no Lua here: every
 * byte it reads comes from the network, so the fuzzers link this file
 * alone (spec/fuzz/ws_frame_fuzz.c, spec/fuzz/ws_handshake_fuzz.c). */
#ifndef FISH_WS_H
#define FISH_WS_H

#include <stddef.h>
#include <stdint.h>

#include "buffer.h"

/* ---- handshake keys ---------------------------------------------------- */

void fish_ws_sha1(const void *data, size_t len, unsigned char digest[20]);

/* Base64 with padding; out needs 4 * ((len + 2) / 3) + 1 bytes (NUL-ended).
 * Returns the length written, without the NUL. */
size_t fish_ws_base64(const unsigned char *in, size_t len, char *out);

/* The client's Sec-WebSocket-Key: base64 of 16 random bytes (24 chars). */
void fish_ws_client_key(const unsigned char nonce[16], char key[25]);

/* The Sec-WebSocket-Accept a server must answer to `key` (28 chars):
 * base64(SHA-1(key + the RFC's GUID)). */
void fish_ws_accept_for(const char *key, char accept[29]);

/* ---- frames ------------------------------------------------------------ */

enum {
    FISH_WS_OP_CONTINUATION = 0x0,
    FISH_WS_OP_TEXT = 0x1,
    FISH_WS_OP_BINARY = 0x2,
    FISH_WS_OP_CLOSE = 0x8,
    FISH_WS_OP_PING = 0x9,
    FISH_WS_OP_PONG = 0xA
};

/* A control frame carries at most this much (RFC 6455 5.5). */
#define FISH_WS_CONTROL_MAX 125
/* The longest frame header: 2 bytes, a 64-bit length, a mask key. */
#define FISH_WS_HEADER_MAX 14

/* Write the header of one final (FIN) client frame, masked with `mask`.
 * Returns its length (2 to 14). */
size_t fish_ws_frame_header(unsigned char out[FISH_WS_HEADER_MAX], int opcode, uint64_t len,
                            const unsigned char mask[4]);

/* dst[i] = src[i] ^ mask[i % 4]; dst may be src. */
void fish_ws_mask(unsigned char *dst, const unsigned char *src, size_t len,
                  const unsigned char mask[4]);

typedef enum {
    FISH_WS_NEED_MORE, /* every byte given was consumed */
    FISH_WS_MESSAGE,   /* a whole binary message is in d->message */
    FISH_WS_PING,      /* d->control holds its payload */
    FISH_WS_PONG,
    FISH_WS_CLOSE,     /* d->close_code / close_reason; no more input is read */
    FISH_WS_ERROR      /* d->error_kind / error; no more input is read */
} fish_ws_event;

typedef enum { FISH_WS_PROTOCOL = 1, FISH_WS_TOO_LARGE } fish_ws_error_kind;

/* Reads server frames: they must be unmasked, and a data message (the sum
 * of its fragments) may hold at most max_message bytes. Text messages are
 * read and dropped: fish's peers speak binary msgpack only. */
typedef struct fish_ws_decoder {
    uint64_t max_message;
    unsigned char header[FISH_WS_HEADER_MAX];
    size_t header_len;    /* header bytes read so far */
    int in_payload;       /* header complete, `remaining` payload bytes to come */
    int fin, opcode;
    uint64_t remaining;
    int message_opcode;   /* FISH_WS_OP_TEXT or _BINARY while a message is open, else 0 */
    uint64_t message_len; /* its bytes so far, text ones too */
    fish_buffer message;  /* a binary message's bytes */
    unsigned char control[FISH_WS_CONTROL_MAX];
    size_t control_len;
    int close_code;       /* 0: the close frame had no code */
    const unsigned char *close_reason; /* into control */
    size_t close_reason_len;
    int done;             /* a close frame or an error came: stop */
    fish_ws_error_kind error_kind;
    char error[112];
} fish_ws_decoder;

void fish_ws_decoder_init(fish_ws_decoder *d, uint64_t max_message);
void fish_ws_decoder_free(fish_ws_decoder *d);

/* Consume bytes until one event is complete or the input runs out; *used
 * says how many were taken. A MESSAGE stays in d->message until the next
 * call, unless taken (fish_ws_decoder_take). After CLOSE or ERROR every
 * further call returns that event again and consumes nothing. */
fish_ws_event fish_ws_decode(fish_ws_decoder *d, const unsigned char *in, size_t len,
                             size_t *used);

/* Move the message just decoded into *out (which must be empty or freed);
 * the decoder starts its next message with a fresh buffer. */
void fish_ws_decoder_take(fish_ws_decoder *d, fish_buffer *out);

/* ---- the answer to the Upgrade request --------------------------------- */

/* A head longer than this is refused: no server needs it for a 101 or an
 * error answer, and it bounds what we buffer before knowing which it is. */
#define FISH_WS_HEAD_MAX (32 * 1024)
#define FISH_WS_HEADERS_MAX 100

typedef struct fish_ws_header {
    const char *name, *value; /* into the parsed bytes; not NUL-ended */
    size_t name_len, value_len;
} fish_ws_header;

typedef struct fish_ws_head {
    int status;
    size_t head_len; /* bytes of the head, through its blank line */
    size_t count;
    fish_ws_header headers[FISH_WS_HEADERS_MAX];
} fish_ws_head;

/* Parse an HTTP/1.x response head at the start of data. Returns 1 when the
 * head is complete (out filled, pointing into data), 0 when more bytes are
 * needed, -1 when it is malformed (*error says how). */
int fish_ws_parse_head(const char *data, size_t len, fish_ws_head *out, const char **error);

/* The first header called `name` (any case), or NULL. */
const fish_ws_header *fish_ws_find_header(const fish_ws_head *h, const char *name);

/* Does a 101 answer accept our Upgrade with this expected accept key?
 * NULL if so, else what is wrong. */
const char *fish_ws_check_upgrade(const fish_ws_head *h, const char *accept);

/* The body of a non-101 answer, from the bytes after its head: by
 * Content-Length, chunked, or until the connection closes (eof). Decodes
 * into `out` up to `cap` bytes (the rest is dropped). Returns 1 when the
 * body is complete (or cap bytes are in), 0 when more bytes are needed,
 * -1 when the framing is malformed (*error says how). At eof an
 * incomplete body counts as complete: what came is what there is. */
int fish_ws_refusal_body(const fish_ws_head *h, const char *raw, size_t len, int eof, size_t cap,
                         fish_buffer *out, const char **error);

#endif
