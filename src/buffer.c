#include "buffer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void fish_buffer_init(fish_buffer *b) {
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void fish_buffer_free(fish_buffer *b) {
    free(b->data);
    fish_buffer_init(b);
}

void fish_buffer_reset(fish_buffer *b) { b->len = 0; }

int fish_buffer_reserve(fish_buffer *b, size_t extra) {
    if (extra <= b->cap - b->len) return 0;
    if (extra > SIZE_MAX - b->len) return -1;
    size_t need = b->len + extra;
    /* Double so that appending n bytes one chunk at a time stays O(n). */
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *grown = realloc(b->data, cap);
    if (!grown) return -1;
    b->data = grown;
    b->cap = cap;
    return 0;
}

int fish_buffer_reserve_exact(fish_buffer *b, size_t extra) {
    if (extra <= b->cap - b->len) return 0;
    if (extra > SIZE_MAX - b->len) return -1;
    char *grown = realloc(b->data, b->len + extra);
    if (!grown) return -1;
    b->data = grown;
    b->cap = b->len + extra;
    return 0;
}

int fish_buffer_append(fish_buffer *b, const void *bytes, size_t n) {
    if (n == 0) return 0;
    if (fish_buffer_reserve(b, n) != 0) return -1;
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

int fish_buffer_append_byte(fish_buffer *b, unsigned char byte) {
    return fish_buffer_append(b, &byte, 1);
}
