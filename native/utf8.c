/*
 * UTF-8, decoded strictly, in one place: the init's JSON reader (json.c) and its log lines
 * (logs.c), and the front's check of what it sends as JSON text and its escaping of a gateway's
 * message (front-request.c, carapace-front.c). A sequence Node would read differently (overlong,
 * surrogate, out of range) is refused, never decoded leniently.
 */
#include "utf8.h"

size_t utf8_sequence(const unsigned char *p, size_t available, uint32_t *cp)
{
	if (available == 0)
		return 0;
	unsigned char c = p[0];
	size_t len;
	uint32_t value, least;
	if (c < 0x80) {
		len = 1;
		value = c;
		least = 0;
	} else if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		value = c & 0x1f;
		least = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		value = c & 0x0f;
		least = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		value = c & 0x07;
		least = 0x10000;
	} else {
		return 0;
	}
	if (available < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		value = (value << 6) | (p[i] & 0x3f);
	}
	if (value < least || value > 0x10ffff || (value >= 0xd800 && value <= 0xdfff))
		return 0;
	if (cp != NULL)
		*cp = value;
	return len;
}
