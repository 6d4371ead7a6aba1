/* A growable byte buffer: the one place that owns heap bytes we hand to
 * libcurl or build for Lua. Modelled on lua-cjson's strbuf. */
#ifndef FISH_BUFFER_H
#define FISH_BUFFER_H

#include <stddef.h>

typedef struct fish_buffer {
    char *data;
    size_t len;
    size_t cap;
} fish_buffer;

void fish_buffer_init(fish_buffer *b);
void fish_buffer_free(fish_buffer *b);
void fish_buffer_reset(fish_buffer *b); /* keep the allocation, drop the bytes */

/* Make room for `extra` more bytes. Returns 0 on success, -1 when out of
 * memory (the buffer is left as it was). */
int fish_buffer_reserve(fish_buffer *b, size_t extra);
/* The same, but grow to exactly len + extra: for a size known in advance
 * (a Content-Length), where doubling would waste up to half. */
int fish_buffer_reserve_exact(fish_buffer *b, size_t extra);
int fish_buffer_append(fish_buffer *b, const void *bytes, size_t n);
int fish_buffer_append_byte(fish_buffer *b, unsigned char byte);

#endif
