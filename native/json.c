/*
 * Reading one JSON object, for the control socket's request lines (control-request.c) and the
 * events stream's acknowledgements (events.c).
 *
 * The text comes from the host (the gateway), which is trusted, but it is still parsed as data:
 * every length is bounded by the line (at most CONTROL_LINE_MAX bytes), nothing is recursive, and
 * anything this reader does not expect is an error with a message, never a guess. What it accepts
 * is the subset the protocol uses: one object whose values are strings, integers, booleans, null,
 * or arrays of strings. Strings are decoded (every escape of RFC 8259, surrogate pairs included)
 * to UTF-8 and must be valid UTF-8 without NUL, since they become argv, environment entries and
 * paths, which cannot hold a NUL. Numbers must be integers. A key given twice is an error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"

struct reader {
	const char *start, *p, *end;
	char *error;
	size_t error_size;
};

static int fail(struct reader *r, const char *what)
{
	snprintf(r->error, r->error_size, "%s at byte %zu", what, (size_t)(r->p - r->start));
	return -1;
}

static void skip_space(struct reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\r' || *r->p == '\n'))
		r->p++;
}

static int hex4(struct reader *r, unsigned *value)
{
	if (r->end - r->p < 4)
		return fail(r, "a \\u escape needs four hex digits");
	*value = 0;
	for (int i = 0; i < 4; i++) {
		char c = *r->p++;
		unsigned digit;
		if (c >= '0' && c <= '9')
			digit = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			digit = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			digit = (unsigned)(c - 'A' + 10);
		else
			return fail(r, "a \\u escape needs four hex digits");
		*value = (*value << 4) | digit;
	}
	return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* The raw length of the string that starts after the quote at p: up to its closing quote (or the
 * end of the text, which read_string then reports). */
static size_t raw_length(const char *p, const char *end)
{
	const char *q = p;
	while (q < end && *q != '"')
		q += *q == '\\' && q + 1 < end ? 2 : 1;
	return (size_t)(q - p);
}

/* A string, decoded into a NUL-terminated copy (the decoded form is never longer than the text). */
static int read_string(struct reader *r, char **out)
{
	if (r->p >= r->end || *r->p != '"')
		return fail(r, "expected a string");
	r->p++;
	char *text = malloc(raw_length(r->p, r->end) + 1);
	if (!text) {
		snprintf(r->error, r->error_size, "out of memory");
		return -1;
	}
	size_t n = 0;
	for (;;) {
		if (r->p >= r->end) {
			free(text);
			return fail(r, "unterminated string");
		}
		unsigned char c = (unsigned char)*r->p;
		if (c == '"') {
			r->p++;
			break;
		}
		if (c < 0x20) {
			free(text);
			return fail(r, "a control character in a string (escape it)");
		}
		if (c != '\\') {
			size_t len = utf8_sequence((const unsigned char *)r->p, (size_t)(r->end - r->p), NULL);
			if (len == 0) {
				free(text);
				return fail(r, "invalid UTF-8 in a string");
			}
			memcpy(text + n, r->p, len);
			n += len;
			r->p += len;
			continue;
		}
		r->p++;
		if (r->p >= r->end) {
			free(text);
			return fail(r, "unterminated escape");
		}
		char e = *r->p++;
		unsigned cp;
		switch (e) {
		case '"':
		case '\\':
		case '/':
			text[n++] = e;
			continue;
		case 'b':
			text[n++] = '\b';
			continue;
		case 'f':
			text[n++] = '\f';
			continue;
		case 'n':
			text[n++] = '\n';
			continue;
		case 'r':
			text[n++] = '\r';
			continue;
		case 't':
			text[n++] = '\t';
			continue;
		case 'u':
			if (hex4(r, &cp) < 0) {
				free(text);
				return -1;
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				unsigned low;
				if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u') {
					free(text);
					return fail(r, "a high surrogate without its low surrogate");
				}
				r->p += 2;
				if (hex4(r, &low) < 0) {
					free(text);
					return -1;
				}
				if (low < 0xdc00 || low > 0xdfff) {
					free(text);
					return fail(r, "a high surrogate without its low surrogate");
				}
				cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
			} else if (cp >= 0xdc00 && cp <= 0xdfff) {
				free(text);
				return fail(r, "a lone low surrogate");
			}
			if (cp == 0) {
				free(text);
				return fail(r, "NUL (\\u0000) cannot be passed in a string");
			}
			n += put_utf8(text + n, cp);
			continue;
		default:
			free(text);
			return fail(r, "unknown escape");
		}
	}
	text[n] = '\0';
	*out = text;
	return 0;
}

static int read_integer(struct reader *r, long long *out)
{
	const char *start = r->p;
	if (r->p < r->end && *r->p == '-')
		r->p++;
	if (r->p >= r->end || *r->p < '0' || *r->p > '9')
		return fail(r, "expected a number");
	if (*r->p == '0' && r->p + 1 < r->end && r->p[1] >= '0' && r->p[1] <= '9')
		return fail(r, "a number with a leading zero");
	while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
		r->p++;
	if (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E'))
		return fail(r, "expected an integer");
	char digits[32];
	size_t len = (size_t)(r->p - start);
	if (len >= sizeof digits)
		return fail(r, "a number out of range");
	memcpy(digits, start, len);
	digits[len] = '\0';
	errno = 0;
	*out = strtoll(digits, NULL, 10);
	if (errno == ERANGE)
		return fail(r, "a number out of range");
	return 0;
}

static bool literal(struct reader *r, const char *word)
{
	size_t len = strlen(word);
	if ((size_t)(r->end - r->p) < len || memcmp(r->p, word, len) != 0)
		return false;
	r->p += len;
	return true;
}

static int read_strings(struct reader *r, struct json_field *field)
{
	r->p++; /* '[' */
	size_t cap = 8;
	field->strings = calloc(cap, sizeof *field->strings);
	if (!field->strings) {
		snprintf(r->error, r->error_size, "out of memory");
		return -1;
	}
	skip_space(r);
	if (r->p < r->end && *r->p == ']') {
		r->p++;
		return 0;
	}
	for (;;) {
		skip_space(r);
		if (field->count + 1 >= cap) {
			cap *= 2;
			char **grown = realloc(field->strings, cap * sizeof *grown);
			if (!grown) {
				snprintf(r->error, r->error_size, "out of memory");
				return -1;
			}
			field->strings = grown;
		}
		if (read_string(r, &field->strings[field->count]) < 0)
			return -1;
		field->strings[++field->count] = NULL;
		skip_space(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		if (r->p < r->end && *r->p == ']') {
			r->p++;
			return 0;
		}
		return fail(r, "expected ',' or ']' in an array");
	}
}

static int read_value(struct reader *r, struct json_field *field)
{
	if (r->p >= r->end)
		return fail(r, "expected a value");
	switch (*r->p) {
	case '"':
		field->kind = JSON_STRING;
		return read_string(r, &field->string);
	case '[':
		field->kind = JSON_STRINGS;
		return read_strings(r, field);
	case 't':
	case 'f':
		field->kind = JSON_BOOL;
		field->boolean = *r->p == 't';
		if (!literal(r, field->boolean ? "true" : "false"))
			return fail(r, "expected true or false");
		return 0;
	case 'n':
		field->kind = JSON_NULL;
		if (!literal(r, "null"))
			return fail(r, "expected null");
		return 0;
	default:
		field->kind = JSON_NUMBER;
		return read_integer(r, &field->number);
	}
}

int json_parse_object(const char *text, size_t len, struct json_object *object, char *error, size_t error_size)
{
	*object = (struct json_object){ 0 };
	struct reader r = { .start = text, .p = text, .end = text + len, .error = error, .error_size = error_size };
	skip_space(&r);
	if (r.p >= r.end || *r.p != '{')
		return fail(&r, "expected a JSON object");
	r.p++;
	skip_space(&r);
	if (r.p < r.end && *r.p == '}') {
		r.p++;
	} else {
		for (;;) {
			skip_space(&r);
			if (object->count == JSON_FIELDS_MAX) {
				json_object_free(object);
				return fail(&r, "too many fields");
			}
			struct json_field *field = &object->fields[object->count];
			*field = (struct json_field){ 0 };
			if (read_string(&r, &field->key) < 0) {
				json_object_free(object);
				return -1;
			}
			object->count++;
			for (size_t i = 0; i + 1 < object->count; i++) {
				if (strcmp(object->fields[i].key, field->key) == 0) {
					snprintf(error, error_size, "field \"%s\" given twice", field->key);
					json_object_free(object);
					return -1;
				}
			}
			skip_space(&r);
			if (r.p >= r.end || *r.p != ':') {
				json_object_free(object);
				return fail(&r, "expected ':' after a key");
			}
			r.p++;
			skip_space(&r);
			if (read_value(&r, field) < 0) {
				json_object_free(object);
				return -1;
			}
			skip_space(&r);
			if (r.p < r.end && *r.p == ',') {
				r.p++;
				continue;
			}
			if (r.p < r.end && *r.p == '}') {
				r.p++;
				break;
			}
			json_object_free(object);
			return fail(&r, "expected ',' or '}' in an object");
		}
	}
	skip_space(&r);
	if (r.p != r.end) {
		json_object_free(object);
		return fail(&r, "text after the object");
	}
	return 0;
}

void json_object_free(struct json_object *object)
{
	for (size_t i = 0; i < object->count; i++) {
		struct json_field *field = &object->fields[i];
		free(field->key);
		free(field->string);
		for (size_t j = 0; j < field->count; j++)
			free(field->strings[j]);
		free(field->strings);
	}
	*object = (struct json_object){ 0 };
}

const struct json_field *json_get(const struct json_object *object, const char *key)
{
	for (size_t i = 0; i < object->count; i++)
		if (strcmp(object->fields[i].key, key) == 0)
			return &object->fields[i];
	return NULL;
}
