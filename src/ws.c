#include "ws.h"
#include "utf8.h"

#include <stdio.h>
#include <string.h>

/* ---- SHA-1 (FIPS 180-4), only for Sec-WebSocket-Accept ----------------- */

/* The accept key is a fixed checksum of the handshake, not a security
 * boundary, so SHA-1 is what the RFC asks for; a few dozen lines here
 * spare the core a dependency on whichever TLS library libcurl uses. */

static uint32_t rotl(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
        else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
        else f = b ^ c ^ d, k = 0xCA62C1D6;
        uint32_t t = rotl(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rotl(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

void fish_ws_sha1(const void *data, size_t len, unsigned char digest[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const unsigned char *p = data;
    size_t left = len;
    for (; left >= 64; p += 64, left -= 64) sha1_block(h, p);
    /* The tail, 0x80, zeros, and the bit length: one or two blocks. */
    unsigned char tail[128] = {0};
    memcpy(tail, p, left);
    tail[left] = 0x80;
    size_t blocks = left < 56 ? 1 : 2;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[blocks * 64 - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t i = 0; i < blocks; i++) sha1_block(h, tail + 64 * i);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) digest[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

size_t fish_ws_base64(const unsigned char *in, size_t len, char *out) {
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) v |= in[i + 2];
        out[n++] = digits[v >> 18 & 63];
        out[n++] = digits[v >> 12 & 63];
        out[n++] = i + 1 < len ? digits[v >> 6 & 63] : '=';
        out[n++] = i + 2 < len ? digits[v & 63] : '=';
    }
    out[n] = '\0';
    return n;
}

void fish_ws_client_key(const unsigned char nonce[16], char key[25]) {
    fish_ws_base64(nonce, 16, key);
}

void fish_ws_accept_for(const char *key, char accept[29]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char joined[128];
    size_t klen = strlen(key);
    if (klen > sizeof joined - sizeof guid) klen = sizeof joined - sizeof guid;
    memcpy(joined, key, klen);
    memcpy(joined + klen, guid, sizeof guid - 1);
    unsigned char digest[20];
    fish_ws_sha1(joined, klen + sizeof guid - 1, digest);
    fish_ws_base64(digest, 20, accept);
}

/* ---- frame encoder ----------------------------------------------------- */

size_t fish_ws_frame_header(unsigned char out[FISH_WS_HEADER_MAX], int opcode, uint64_t len,
                            const unsigned char mask[4]) {
    size_t n = 0;
    out[n++] = (unsigned char)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        out[n++] = (unsigned char)(0x80 | len);
    } else if (len <= 0xFFFF) {
        out[n++] = 0x80 | 126;
        out[n++] = (unsigned char)(len >> 8);
        out[n++] = (unsigned char)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) out[n++] = (unsigned char)(len >> (8 * i));
    }
    memcpy(out + n, mask, 4);
    return n + 4;
}

void fish_ws_mask(unsigned char *dst, const unsigned char *src, size_t len,
                  const unsigned char mask[4]) {
    for (size_t i = 0; i < len; i++) dst[i] = src[i] ^ mask[i & 3];
}

/* ---- frame decoder ----------------------------------------------------- */

void fish_ws_decoder_init(fish_ws_decoder *d, uint64_t max_message) {
    memset(d, 0, sizeof *d);
    fish_buffer_init(&d->message);
    d->max_message = max_message;
}

void fish_ws_decoder_free(fish_ws_decoder *d) { fish_buffer_free(&d->message); }

void fish_ws_decoder_take(fish_ws_decoder *d, fish_buffer *out) {
    *out = d->message;
    fish_buffer_init(&d->message);
}

static fish_ws_event fail(fish_ws_decoder *d, fish_ws_error_kind kind, const char *message) {
    d->done = 1;
    d->error_kind = kind;
    snprintf(d->error, sizeof d->error, "%s", message);
    return FISH_WS_ERROR;
}

/* Bytes the header needs, from what its first two bytes say. */
static size_t header_size(const unsigned char *h) {
    size_t n = 2;
    unsigned len7 = h[1] & 0x7F;
    if (len7 == 126) n += 2;
    else if (len7 == 127) n += 8;
    if (h[1] & 0x80) n += 4;
    return n;
}

/* The header is whole: check it against the RFC and the message so far. */
static fish_ws_event start_frame(fish_ws_decoder *d) {
    const unsigned char *h = d->header;
    d->fin = (h[0] & 0x80) != 0;
    d->opcode = h[0] & 0x0F;
    unsigned len7 = h[1] & 0x7F;
    uint64_t len = len7;
    if (len7 == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | h[2 + i];
        if (len >> 63) return fail(d, FISH_WS_PROTOCOL, "a frame length has its top bit set");
    }
    if (h[0] & 0x70)
        return fail(d, FISH_WS_PROTOCOL, "a frame sets reserved bits (no extension was agreed)");
    if (h[1] & 0x80) return fail(d, FISH_WS_PROTOCOL, "the server sent a masked frame");
    char why[112];
    switch (d->opcode) {
    case FISH_WS_OP_CLOSE:
    case FISH_WS_OP_PING:
    case FISH_WS_OP_PONG:
        if (!d->fin) return fail(d, FISH_WS_PROTOCOL, "a control frame is fragmented");
        if (len > FISH_WS_CONTROL_MAX) {
            snprintf(why, sizeof why, "a control frame carries %llu bytes (at most 125)",
                     (unsigned long long)len);
            return fail(d, FISH_WS_PROTOCOL, why);
        }
        if (d->opcode == FISH_WS_OP_CLOSE && len == 1)
            return fail(d, FISH_WS_PROTOCOL, "a close frame carries 1 byte");
        d->control_len = 0;
        break;
    case FISH_WS_OP_CONTINUATION:
        if (!d->message_opcode)
            return fail(d, FISH_WS_PROTOCOL, "a continuation frame continues no message");
        break;
    case FISH_WS_OP_TEXT:
    case FISH_WS_OP_BINARY:
        if (d->message_opcode)
            return fail(d, FISH_WS_PROTOCOL, "a new message began before the last one ended");
        d->message_opcode = d->opcode;
        d->message_len = 0;
        fish_buffer_reset(&d->message);
        break;
    default:
        snprintf(why, sizeof why, "a frame has the unknown opcode %d", d->opcode);
        return fail(d, FISH_WS_PROTOCOL, why);
    }
    if (d->opcode < FISH_WS_OP_CLOSE) {
        if (len > d->max_message - d->message_len) {
            snprintf(why, sizeof why, "a message exceeds the limit of %llu bytes",
                     (unsigned long long)d->max_message);
            return fail(d, FISH_WS_TOO_LARGE, why);
        }
        /* A message's first frame reserves its size at once (bounded by
         * max_message), so a large message is not copied as it doubles
         * its way up. Continuations grow by doubling: an exact size each
         * would copy the message once per fragment. Best effort: the
         * appends report a real shortage. */
        if (d->opcode == FISH_WS_OP_BINARY && len <= SIZE_MAX)
            (void)fish_buffer_reserve_exact(&d->message, (size_t)len);
    }
    d->remaining = len;
    d->in_payload = 1;
    return FISH_WS_NEED_MORE;
}

static fish_ws_event end_close(fish_ws_decoder *d) {
    d->close_code = 0;
    d->close_reason = d->control;
    d->close_reason_len = 0;
    if (d->control_len >= 2) {
        int code = d->control[0] << 8 | d->control[1];
        /* 1005, 1006 and 1015 are for reports, never for the wire; the
         * rest below 3000 that RFC 6455 does not define are reserved. */
        int defined = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
        if (!defined && !(code >= 3000 && code <= 4999)) {
            char why[64];
            snprintf(why, sizeof why, "a close frame carries the invalid code %d", code);
            return fail(d, FISH_WS_PROTOCOL, why);
        }
        /* The reason is text, and reaches error messages. */
        if (fish_utf8_bad(d->control + 2, d->control_len - 2) != 0)
            return fail(d, FISH_WS_PROTOCOL, "a close frame's reason is not UTF-8");
        d->close_code = code;
        d->close_reason = d->control + 2;
        d->close_reason_len = d->control_len - 2;
    }
    d->done = 1;
    return FISH_WS_CLOSE;
}

/* The frame's payload is in: say what it was. */
static fish_ws_event end_frame(fish_ws_decoder *d) {
    d->in_payload = 0;
    d->header_len = 0;
    switch (d->opcode) {
    case FISH_WS_OP_PING: return FISH_WS_PING;
    case FISH_WS_OP_PONG: return FISH_WS_PONG;
    case FISH_WS_OP_CLOSE: return end_close(d);
    default: break;
    }
    if (!d->fin) return FISH_WS_NEED_MORE;
    int opcode = d->message_opcode;
    d->message_opcode = 0;
    return opcode == FISH_WS_OP_BINARY ? FISH_WS_MESSAGE : FISH_WS_NEED_MORE;
}

fish_ws_event fish_ws_decode(fish_ws_decoder *d, const unsigned char *in, size_t len,
                             size_t *used) {
    size_t at = 0;
    *used = 0;
    if (d->done) return d->error_kind ? FISH_WS_ERROR : FISH_WS_CLOSE;
    /* A message handed out by the last call and not taken is dropped now. */
    if (!d->message_opcode && d->message.len) fish_buffer_reset(&d->message);
    for (;;) {
        if (!d->in_payload) {
            /* Header bytes, two first to learn how many more. */
            size_t need = d->header_len < 2 ? 2 : header_size(d->header);
            while (d->header_len < need) {
                if (at == len) {
                    *used = at;
                    return FISH_WS_NEED_MORE;
                }
                d->header[d->header_len++] = in[at++];
                if (d->header_len == 2) {
                    /* A masked server frame fails before its key arrives. */
                    if (d->header[1] & 0x80) {
                        *used = at;
                        return fail(d, FISH_WS_PROTOCOL, "the server sent a masked frame");
                    }
                    need = header_size(d->header);
                }
            }
            fish_ws_event ev = start_frame(d);
            if (ev != FISH_WS_NEED_MORE) {
                *used = at;
                return ev;
            }
        }
        size_t take = len - at;
        if ((uint64_t)take > d->remaining) take = (size_t)d->remaining;
        if (take) {
            if (d->opcode >= FISH_WS_OP_CLOSE) {
                memcpy(d->control + d->control_len, in + at, take);
                d->control_len += take;
            } else {
                if (d->message_opcode == FISH_WS_OP_BINARY &&
                    fish_buffer_append(&d->message, in + at, take) != 0) {
                    *used = at;
                    return fail(d, FISH_WS_TOO_LARGE, "out of memory while reading a message");
                }
                d->message_len += take;
            }
            at += take;
            d->remaining -= take;
        }
        if (d->remaining) {
            *used = at;
            return FISH_WS_NEED_MORE;
        }
        fish_ws_event ev = end_frame(d);
        if (ev != FISH_WS_NEED_MORE) {
            *used = at;
            return ev;
        }
        if (at == len) {
            *used = at;
            return FISH_WS_NEED_MORE;
        }
    }
}

/* ---- the answer to the Upgrade request --------------------------------- */

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int same_word(const char *a, size_t alen, const char *b) {
    size_t blen = strlen(b);
    if (alen != blen) return 0;
    for (size_t i = 0; i < alen; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
    return 1;
}

static int is_token_char(int c) {
    return c > 32 && c < 127 && !strchr("()<>@,;:\\\"/[]?={}", c);
}

static int parse_status_line(const char *line, size_t len, fish_ws_head *out) {
    /* HTTP/1.x SSS[ reason] */
    if (len < 12 || memcmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') ||
        line[8] != ' ')
        return -1;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (line[i] < '0' || line[i] > '9') return -1;
        status = status * 10 + (line[i] - '0');
    }
    if (len > 12 && line[12] != ' ') return -1;
    if (status < 100) return -1;
    out->status = status;
    return 0;
}

int fish_ws_parse_head(const char *data, size_t len, fish_ws_head *out, const char **error) {
    size_t at = 0;
    int first = 1;
    out->status = 0;
    out->count = 0;
    out->head_len = 0;
    for (;;) {
        const char *nl = memchr(data + at, '\n', len - at);
        if (!nl) {
            if (len >= FISH_WS_HEAD_MAX) {
                *error = "the response head is too large";
                return -1;
            }
            return 0;
        }
        size_t end = (size_t)(nl - data);
        if (end + 1 > FISH_WS_HEAD_MAX) {
            *error = "the response head is too large";
            return -1;
        }
        const char *line = data + at;
        size_t line_len = end - at;
        if (line_len && line[line_len - 1] == '\r') line_len--;
        at = end + 1;
        if (first) {
            if (parse_status_line(line, line_len, out) != 0) {
                *error = "the response does not start with an HTTP/1.x status line";
                return -1;
            }
            first = 0;
            continue;
        }
        if (line_len == 0) break;
        const char *colon = memchr(line, ':', line_len);
        if (!colon || colon == line) {
            *error = "a response header line has no name";
            return -1;
        }
        size_t name_len = (size_t)(colon - line);
        for (size_t i = 0; i < name_len; i++)
            if (!is_token_char((unsigned char)line[i])) {
                /* Also refuses obsolete line folding: a leading space. */
                *error = "a response header name is malformed";
                return -1;
            }
        const char *value = colon + 1;
        const char *value_end = line + line_len;
        while (value < value_end && (*value == ' ' || *value == '\t')) value++;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t')) value_end--;
        for (const char *c = value; c < value_end; c++)
            if (*c == '\0' || *c == '\r') {
                *error = "a response header value holds a control character";
                return -1;
            }
        if (out->count == FISH_WS_HEADERS_MAX) {
            *error = "the response has too many headers";
            return -1;
        }
        fish_ws_header *h = &out->headers[out->count++];
        h->name = line;
        h->name_len = name_len;
        h->value = value;
        h->value_len = (size_t)(value_end - value);
    }
    out->head_len = at;
    return 1;
}

const fish_ws_header *fish_ws_find_header(const fish_ws_head *h, const char *name) {
    for (size_t i = 0; i < h->count; i++)
        if (same_word(h->headers[i].name, h->headers[i].name_len, name)) return &h->headers[i];
    return NULL;
}

/* Does the comma-separated list hold `token` (any case)? */
static int list_has(const char *value, size_t len, const char *token) {
    size_t at = 0;
    while (at < len) {
        while (at < len && (value[at] == ' ' || value[at] == '\t' || value[at] == ',')) at++;
        size_t start = at;
        while (at < len && value[at] != ',') at++;
        size_t end = at;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t')) end--;
        if (end > start && same_word(value + start, end - start, token)) return 1;
    }
    return 0;
}

const char *fish_ws_check_upgrade(const fish_ws_head *h, const char *accept) {
    if (h->status != 101) return "the server did not switch protocols";
    const fish_ws_header *upgrade = fish_ws_find_header(h, "Upgrade");
    if (!upgrade || !same_word(upgrade->value, upgrade->value_len, "websocket"))
        return "the 101 answer lacks 'Upgrade: websocket'";
    const fish_ws_header *connection = fish_ws_find_header(h, "Connection");
    if (!connection || !list_has(connection->value, connection->value_len, "upgrade"))
        return "the 101 answer lacks 'Connection: Upgrade'";
    const fish_ws_header *key = fish_ws_find_header(h, "Sec-WebSocket-Accept");
    if (!key) return "the 101 answer lacks Sec-WebSocket-Accept";
    if (key->value_len != strlen(accept) || memcmp(key->value, accept, key->value_len) != 0)
        return "the 101 answer has the wrong Sec-WebSocket-Accept";
    /* We asked for neither: a server that picks one anyway would frame or
     * read its messages in a way we do not. */
    if (fish_ws_find_header(h, "Sec-WebSocket-Extensions"))
        return "the server chose an extension that was not offered";
    if (fish_ws_find_header(h, "Sec-WebSocket-Protocol"))
        return "the server chose a subprotocol that was not offered";
    return NULL;
}

static int add_capped(fish_buffer *out, size_t cap, const char *bytes, size_t n) {
    size_t room = cap - out->len;
    if (n > room) n = room;
    return fish_buffer_append(out, bytes, n);
}

/* Chunked framing from the start of raw: 1 complete, 0 need more, -1 bad. */
static int read_chunked(const char *raw, size_t len, size_t cap, fish_buffer *out,
                        const char **error) {
    size_t at = 0;
    for (;;) {
        const char *nl = memchr(raw + at, '\n', len - at);
        if (!nl) return 0;
        uint64_t size = 0;
        size_t digits = 0;
        for (const char *c = raw + at; c < nl; c++, digits++) {
            int v = *c >= '0' && *c <= '9'   ? *c - '0'
                    : lower(*c) >= 'a' && lower(*c) <= 'f' ? lower(*c) - 'a' + 10
                                                           : -1;
            if (v < 0) break;
            if (digits == 15) {
                *error = "a chunk size is too large";
                return -1;
            }
            size = size << 4 | (uint64_t)v;
        }
        if (digits == 0) {
            *error = "a chunk size is malformed";
            return -1;
        }
        at = (size_t)(nl - raw) + 1;
        if (size == 0) return 1; /* trailers are not read */
        size_t left = len - at;
        size_t take = (uint64_t)left < size ? left : (size_t)size;
        if (add_capped(out, cap, raw + at, take) != 0) {
            *error = "out of memory";
            return -1;
        }
        if (out->len == cap) return 1;
        if (take < size) return 0;
        at += take;
        /* The CRLF after the chunk's data. */
        if (len - at < 1) return 0;
        if (raw[at] == '\r') {
            if (len - at < 2) return 0;
            at++;
        }
        if (raw[at] != '\n') {
            *error = "a chunk does not end with CRLF";
            return -1;
        }
        at++;
    }
}

int fish_ws_refusal_body(const fish_ws_head *h, const char *raw, size_t len, int eof, size_t cap,
                         fish_buffer *out, const char **error) {
    fish_buffer_reset(out);
    const fish_ws_header *te = fish_ws_find_header(h, "Transfer-Encoding");
    if (te && list_has(te->value, te->value_len, "chunked")) {
        int done = read_chunked(raw, len, cap, out, error);
        return done == 0 && eof ? 1 : done;
    }
    const fish_ws_header *cl = fish_ws_find_header(h, "Content-Length");
    uint64_t want = UINT64_MAX; /* until the connection closes */
    if (cl) {
        want = 0;
        if (cl->value_len == 0 || cl->value_len > 18) {
            *error = "the Content-Length is malformed";
            return -1;
        }
        for (size_t i = 0; i < cl->value_len; i++) {
            char c = cl->value[i];
            if (c < '0' || c > '9') {
                *error = "the Content-Length is malformed";
                return -1;
            }
            want = want * 10 + (uint64_t)(c - '0');
        }
    } else if (h->status == 204 || h->status == 304 || h->status < 200) {
        want = 0;
    }
    size_t have = (uint64_t)len < want ? len : (size_t)want;
    if (add_capped(out, cap, raw, have) != 0) {
        *error = "out of memory";
        return -1;
    }
    return eof || (uint64_t)have == want || out->len == cap ? 1 : 0;
}
