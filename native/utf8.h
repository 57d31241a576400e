/* One UTF-8 decoder for every native program (utf8.c). */
#ifndef CARAPACE_UTF8_H
#define CARAPACE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/*
 * The length (1-4) of the well-formed UTF-8 sequence at p, reading at most `available` bytes, with
 * its code point in *cp when cp is not NULL; 0 when it is not one (a stray continuation byte, a
 * sequence cut short, an overlong form, a surrogate, a code point beyond U+10FFFF).
 */
size_t utf8_sequence(const unsigned char *p, size_t available, uint32_t *cp);

#endif
