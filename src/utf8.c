/* UTF-8 validation, shared by the text checks of the Lua layer (every
 * fish.convert checks its text, and a Lua loop with a pattern scan costs
 * more than the rest of the check) and the WebSocket decoder. */
#include "utf8.h"

size_t fish_utf8_bad(const unsigned char *p, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned low = 0x80, high = 0xBF; /* the range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) low = 0xA0;       /* overlong */
            else if (c == 0xED) high = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) low = 0x90;       /* overlong */
            else if (c == 0xF4) high = 0x8F; /* past U+10FFFF */
        } else {
            return i + 1;
        }
        if (len - i - 1 < need) return i + 1;
        for (size_t k = 1; k <= need; k++) {
            unsigned b = p[i + k];
            if (b < (k == 1 ? low : 0x80) || b > (k == 1 ? high : 0xBF)) return i + 1;
        }
        i += need + 1;
    }
    return 0;
}
