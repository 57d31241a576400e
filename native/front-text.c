/* carapace (the front): text — what is valid UTF-8, and the gateway's word made safe to print. See front.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "utf8.h"

bool front_valid_utf8(const char *text)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t left = strlen(text);
	while (left > 0) {
		size_t n = utf8_sequence(s, left, NULL);
		if (n == 0)
			return false;
		s += n;
		left -= n;
	}
	return true;
}

/*
 * The gateway's word on a run that failed, made safe to print. It quotes what the caller or the
 * sandbox chose (a command's name; one could hold `\e[2J` or a right-to-left override), so it is
 * shown as src/policy/printable.ts shows such text in the Node CLI: C0, DEL and the C1 controls as
 * \xNN, Unicode's invisible and bidirectional format characters as \u{N}. A byte that is not part
 * of well-formed UTF-8 (Node would have shown U+FFFD) is shown as \xNN too. Every character
 * escaped is at most 3 bytes that become at most 8, or 1 byte that becomes 4: 4 * len + 1 holds it.
 */
static bool unsafe_code_point(uint32_t c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0xad || c == 0x61c || c == 0x180e ||
	       (c >= 0x200b && c <= 0x200f) || (c >= 0x2028 && c <= 0x202e) || (c >= 0x2060 && c <= 0x2069) ||
	       c == 0xfeff || (c >= 0xfff9 && c <= 0xfffb);
}

char *front_printable_text(const unsigned char *s, size_t len)
{
	size_t cap = 4 * len + 1, o = 0;
	char *out = malloc(cap);
	if (out == NULL)
		front_fail("allocate the gateway's message");
	for (size_t i = 0; i < len;) {
		uint32_t c;
		size_t n = utf8_sequence(s + i, len - i, &c);
		int wrote;
		if (n == 0) {
			n = 1;
			wrote = snprintf(out + o, cap - o, "\\x%02x", (unsigned)s[i]);
		} else if (unsafe_code_point(c)) {
			wrote = c <= 0xff ? snprintf(out + o, cap - o, "\\x%02x", (unsigned)c)
					  : snprintf(out + o, cap - o, "\\u{%x}", (unsigned)c);
		} else if (n < cap - o) {
			memcpy(out + o, s + i, n);
			wrote = (int)n;
		} else {
			wrote = -1;
		}
		if (wrote < 0 || (size_t)wrote >= cap - o) {
			errno = EOVERFLOW;
			front_fail("escape the gateway's message");
		}
		o += (size_t)wrote;
		i += n;
	}
	out[o] = '\0';
	return out;
}
