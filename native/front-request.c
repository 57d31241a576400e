/*
 * carapace (the front): the exec's request line for a plain `carapace run`, as JSON text. Every
 * argument is valid UTF-8 by now (main refused any other: JSON carries text, other bytes would
 * reach the command changed); checked again here all the same. See carapace-front.c.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "utf8.h"

/* ---- the request ----------------------------------------------------------------------------- */

struct text {
	char *data;
	size_t len, cap;
};

static void append(struct text *t, const char *bytes, size_t len)
{
	if (t->len + len + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 1024;
		while (cap < t->len + len + 1)
			cap *= 2;
		char *grown = realloc(t->data, cap);
		if (grown == NULL)
			front_fail("allocate the request");
		t->data = grown;
		t->cap = cap;
	}
	memcpy(t->data + t->len, bytes, len);
	t->len += len;
	t->data[t->len] = '\0';
}

static void append_str(struct text *t, const char *s)
{
	append(t, s, strlen(s));
}

/* A JSON string of `s` (valid UTF-8): quotes, backslashes and control characters escaped. */
static void append_json(struct text *t, const char *s)
{
	append_str(t, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char esc[8];
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			append(t, esc, 2);
		} else if (*p < 0x20 || *p == 0x7f) {
			snprintf(esc, sizeof esc, "\\u%04x", *p);
			append(t, esc, 6);
		} else {
			append(t, (const char *)p, 1);
		}
	}
	append_str(t, "\"");
}

/* NAME=VALUE with NAME made of letters, digits and '_', not starting with a digit. */
static bool env_pair(const char *pair)
{
	const char *eq = strchr(pair, '=');
	if (eq == NULL || eq == pair || (pair[0] >= '0' && pair[0] <= '9'))
		return false;
	for (const char *p = pair; p < eq; p++) {
		bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			  *p == '_';
		if (!ok)
			return false;
	}
	return true;
}

/*
 * The exec's request line for `carapace run [--env N=V]... -- CMD...`, or NULL when the run is not
 * one this program sends (then the CLI takes it).
 */
char *front_request_line(int argc, char **argv, bool tty, unsigned cols, unsigned rows)
{
	const char *envs[argc];
	int nenv = 0, i = 2;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *pair;
		if (strcmp(argv[i], "--env") == 0 && i + 1 < argc)
			pair = argv[++i];
		else if (strncmp(argv[i], "--env=", 6) == 0)
			pair = argv[i] + 6;
		else
			return NULL; /* any other option: the CLI's */
		if (!env_pair(pair) || !front_valid_utf8(pair))
			return NULL; /* the CLI says what is wrong with it */
		envs[nenv++] = pair;
	}
	if (i >= argc - 1)
		return NULL; /* no `--`, or no command after it */
	for (int j = i + 1; j < argc; j++)
		if (!front_valid_utf8(argv[j]))
			return NULL;

	struct text t = { 0 };
	append_str(&t, "{\"argv\":[");
	for (int j = i + 1; j < argc; j++) {
		if (j > i + 1)
			append_str(&t, ",");
		append_json(&t, argv[j]);
	}
	append_str(&t, "],\"env\":{");
	bool term_given = false;
	for (int k = 0; k < nenv; k++) {
		const char *eq = strchr(envs[k], '=');
		char name[eq - envs[k] + 1];
		memcpy(name, envs[k], (size_t)(eq - envs[k]));
		name[eq - envs[k]] = '\0';
		/* A name given twice: the last one counts, as in the CLI. */
		bool later = false;
		for (int m = k + 1; m < nenv; m++)
			if (strncmp(envs[m], envs[k], (size_t)(eq - envs[k]) + 1) == 0)
				later = true;
		if (later)
			continue;
		if (strcmp(name, "TERM") == 0)
			term_given = true;
		if (t.data[t.len - 1] != '{')
			append_str(&t, ",");
		append_json(&t, name);
		append_str(&t, ":");
		append_json(&t, eq + 1);
	}
	const char *term = getenv("TERM");
	if (!term_given && term != NULL && front_valid_utf8(term)) {
		if (t.data[t.len - 1] != '{')
			append_str(&t, ",");
		append_str(&t, "\"TERM\":");
		append_json(&t, term);
	}
	append_str(&t, "},\"tty\":");
	append_str(&t, tty ? "true" : "false");
	if (tty) {
		char size[64];
		snprintf(size, sizeof size, ",\"cols\":%u,\"rows\":%u", cols, rows);
		append_str(&t, size);
	}
	append_str(&t, "}\n");
	return t.data;
}
