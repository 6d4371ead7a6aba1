#ifndef FISH_UTF8_H
#define FISH_UTF8_H

#include <stddef.h>

/* Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing
 * above U+10FFFF. Returns 0 if all `len` bytes are, else the 1-based
 * position of the lead byte of the first bad sequence. */
size_t fish_utf8_bad(const unsigned char *p, size_t len);

#endif
