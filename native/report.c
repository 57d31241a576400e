/*
 * Reporting what init did, to two readers.
 *
 * The host reads the status fd: one JSON object per line, each with an "event". Init writes what
 * it applied before the agent runs, then the fd closes (it is close-on-exec, so the successful
 * execve of the agent closes the agent's copy and PID 1 closes its own right after the fork):
 * end of file on the status fd means the agent is running, or that init failed.
 *
 * A person reads stderr: every failure is one line, "carapace-init: <step>: <what>: <strerror>",
 * and the same failure is an {"event":"error",...} line on the status fd.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "init.h"

static int status_fd = -1;
static void (*warning_log)(const char *text, size_t len);

void report_set_log(void (*log)(const char *text, size_t len))
{
	warning_log = log;
}

void report_set_status_fd(int fd)
{
	status_fd = fd;
}

void report_close_status_fd(void)
{
	if (status_fd < 0)
		return;
	/* close() may report EINTR or an I/O error, but the fd is gone either way. */
	close(status_fd);
	status_fd = -1;
}

/* ---- building a line ---- */

static void append(struct status_line *line, const char *text, size_t len)
{
	if (line->out_of_memory)
		return;
	if (line->len + len + 1 > line->cap) {
		size_t cap = line->cap ? line->cap : 256;
		while (line->len + len + 1 > cap)
			cap *= 2;
		char *grown = realloc(line->text, cap);
		if (!grown) {
			line->out_of_memory = true;
			return;
		}
		line->text = grown;
		line->cap = cap;
	}
	memcpy(line->text + line->len, text, len);
	line->len += len;
	line->text[line->len] = '\0';
}

static void append_str(struct status_line *line, const char *text)
{
	append(line, text, strlen(text));
}

static void append_quoted_bytes(struct status_line *line, const char *value, size_t len)
{
	append_str(line, "\"");
	for (const unsigned char *p = (const unsigned char *)value; p < (const unsigned char *)value + len; p++) {
		char escaped[8];
		if (*p == '"' || *p == '\\') {
			escaped[0] = '\\';
			escaped[1] = (char)*p;
			append(line, escaped, 2);
		} else if (*p < 0x20 || *p == 0x7f) {
			snprintf(escaped, sizeof escaped, "\\u%04x", *p);
			append_str(line, escaped);
		} else {
			append(line, (const char *)p, 1);
		}
	}
	append_str(line, "\"");
}

static void append_quoted(struct status_line *line, const char *value)
{
	append_quoted_bytes(line, value, strlen(value));
}

static void append_key(struct status_line *line, const char *key)
{
	/* The first key of a bare object (line_open) has no comma before it. */
	if (!(line->len > 0 && line->text[line->len - 1] == '{'))
		append_str(line, ",");
	append_str(line, "\"");
	append_str(line, key);
	append_str(line, "\":");
}

void line_begin(struct status_line *line, const char *event)
{
	*line = (struct status_line){ 0 };
	append_str(line, "{\"event\":");
	append_quoted(line, event);
}

void line_open(struct status_line *line)
{
	*line = (struct status_line){ 0 };
	append_str(line, "{");
}

void line_string_bytes(struct status_line *line, const char *key, const char *value, size_t len)
{
	append_key(line, key);
	append_quoted_bytes(line, value, len);
}

void line_base64(struct status_line *line, const char *key, const unsigned char *value, size_t len)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	append_key(line, key);
	append_str(line, "\"");
	for (size_t i = 0; i < len; i += 3) {
		unsigned bits = (unsigned)value[i] << 16;
		if (i + 1 < len)
			bits |= (unsigned)value[i + 1] << 8;
		if (i + 2 < len)
			bits |= value[i + 2];
		char quad[4] = { alphabet[(bits >> 18) & 63], alphabet[(bits >> 12) & 63],
				 i + 1 < len ? alphabet[(bits >> 6) & 63] : '=', i + 2 < len ? alphabet[bits & 63] : '=' };
		append(line, quad, 4);
	}
	append_str(line, "\"");
}

void line_string(struct status_line *line, const char *key, const char *value)
{
	append_key(line, key);
	append_quoted(line, value);
}

void line_number(struct status_line *line, const char *key, long long value)
{
	char text[32];
	snprintf(text, sizeof text, "%lld", value);
	append_key(line, key);
	append_str(line, text);
}

void line_hex(struct status_line *line, const char *key, unsigned long long value)
{
	char text[32];
	snprintf(text, sizeof text, "0x%llx", value);
	append_key(line, key);
	append_quoted(line, text);
}

void line_bool(struct status_line *line, const char *key, bool value)
{
	append_key(line, key);
	append_str(line, value ? "true" : "false");
}

void line_null(struct status_line *line, const char *key)
{
	append_key(line, key);
	append_str(line, "null");
}

void line_strings(struct status_line *line, const char *key, const char *const *values, size_t count)
{
	append_key(line, key);
	append_str(line, "[");
	for (size_t i = 0; i < count; i++) {
		if (i)
			append_str(line, ",");
		append_quoted(line, values[i]);
	}
	append_str(line, "]");
}

void line_numbers(struct status_line *line, const char *key, const unsigned *values, size_t count)
{
	append_key(line, key);
	append_str(line, "[");
	for (size_t i = 0; i < count; i++) {
		char text[16];
		snprintf(text, sizeof text, "%s%u", i ? "," : "", values[i]);
		append_str(line, text);
	}
	append_str(line, "]");
}

static int write_all(int fd, const char *text, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, text, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		text += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Finishes the line and writes it. A status fd the host stopped reading is a failure: the host
 * relies on these lines to know what was enforced. */
void line_send(struct status_line *line)
{
	append_str(line, "}\n");
	if (line->out_of_memory) {
		free(line->text);
		die("status", ENOMEM, "build a status line");
	}
	if (status_fd >= 0 && write_all(status_fd, line->text, line->len) < 0) {
		int err = errno;
		int fd = status_fd;
		status_fd = -1; /* do not try to report this failure where it just failed */
		free(line->text);
		die("status", err, "write to --status-fd %d", fd);
	}
	free(line->text);
	*line = (struct status_line){ 0 };
}

char *line_finish(struct status_line *line, size_t *len)
{
	append_str(line, "}\n");
	if (line->out_of_memory) {
		free(line->text);
		*line = (struct status_line){ 0 };
		return NULL;
	}
	char *text = line->text;
	*len = line->len;
	*line = (struct status_line){ 0 };
	return text;
}

/* ---- failures ---- */

static void print_stderr(const char *step, int err, const char *what)
{
	if (err)
		fprintf(stderr, "carapace-init: %s: %s: %s\n", step, what, strerror(err));
	else
		fprintf(stderr, "carapace-init: %s: %s\n", step, what);
}

static void vreport_failure(const char *step, int err, const char *fmt, va_list args)
{
	char what[1024];
	vsnprintf(what, sizeof what, fmt, args);
	print_stderr(step, err, what);
	if (status_fd < 0)
		return;

	char message[1200];
	if (err)
		snprintf(message, sizeof message, "%s: %s", what, strerror(err));
	else
		snprintf(message, sizeof message, "%s", what);
	struct status_line line;
	line_begin(&line, "error");
	line_string(&line, "step", step);
	line_number(&line, "errno", err);
	line_string(&line, "message", message);
	append_str(&line, "}\n");
	/* Best effort: the stderr line above is the failure report that always gets out. */
	if (!line.out_of_memory)
		(void)write_all(status_fd, line.text, line.len);
	free(line.text);
}

void report_failure(const char *step, int err, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	vreport_failure(step, err, fmt, args);
	va_end(args);
}

void report_warning(const char *step, int err, const char *fmt, ...)
{
	char what[1024];
	va_list args;
	va_start(args, fmt);
	vsnprintf(what, sizeof what, fmt, args);
	va_end(args);
	print_stderr(step, err, what);
	if (warning_log) {
		char text[1200];
		int n = err ? snprintf(text, sizeof text, "carapace-init: %s: %s: %s", step, what, strerror(err))
			    : snprintf(text, sizeof text, "carapace-init: %s: %s", step, what);
		if (n > 0)
			warning_log(text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
	}
}

noreturn void die_with(int exit_code, const char *step, int err, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	vreport_failure(step, err, fmt, args);
	va_end(args);
	_exit(exit_code);
}
