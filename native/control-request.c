/*
 * A control request line → struct control_request (docs/architecture.md, "The control socket").
 *
 * Each op accepts its own fields and no others: a field this init does not know is an error
 * naming it (a client built for a newer init learns so at once, instead of having a setting
 * silently ignored). Numbers are checked against their ranges here, so the ops can use them as is.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "control.h"

struct op_fields {
	const char *name;
	enum control_op op;
	const char *fields; /* the keys it accepts besides "op", space-separated */
};

static const struct op_fields ops[] = {
	{ "exec", OP_EXEC, "argv env cwd tty cols rows" },
	{ "connect", OP_CONNECT, "port family" },
	{ "events", OP_EVENTS, "ack" },
	{ "status", OP_STATUS, "" },
	{ "signal", OP_SIGNAL, "signal" },
	{ "log", OP_LOG, "limit" },
};

static bool listed(const char *fields, const char *key)
{
	size_t len = strlen(key);
	for (const char *p = fields; *p;) {
		const char *end = strchrnul(p, ' ');
		if ((size_t)(end - p) == len && strncmp(p, key, len) == 0)
			return true;
		p = *end ? end + 1 : end;
	}
	return false;
}

static const char *kind_name(enum json_kind kind)
{
	switch (kind) {
	case JSON_STRING:
		return "a string";
	case JSON_NUMBER:
		return "an integer";
	case JSON_BOOL:
		return "true or false";
	case JSON_NULL:
		return "null";
	case JSON_STRINGS:
		return "an array of strings";
	}
	return "?";
}

/* The field `key` if present and of `kind`; NULL when absent; *bad set when of another kind. */
static const struct json_field *field(const struct control_request *request, const char *key, enum json_kind kind,
				      char *error, size_t error_size, bool *bad)
{
	const struct json_field *f = json_get(&request->json, key);
	if (f && f->kind != kind) {
		snprintf(error, error_size, "\"%s\" must be %s, not %s", key, kind_name(kind), kind_name(f->kind));
		*bad = true;
		return NULL;
	}
	return f;
}

static bool number_in(const struct json_field *f, long long min, long long max, char *error, size_t error_size)
{
	if (f->number >= min && f->number <= max)
		return true;
	snprintf(error, error_size, "\"%s\" must be from %lld to %lld, got %lld", f->key, min, max, f->number);
	return false;
}

static int parse_exec(struct control_request *request, char *error, size_t error_size)
{
	bool bad = false;
	const struct json_field *argv = field(request, "argv", JSON_STRINGS, error, error_size, &bad);
	const struct json_field *env = field(request, "env", JSON_STRINGS, error, error_size, &bad);
	const struct json_field *cwd = field(request, "cwd", JSON_STRING, error, error_size, &bad);
	const struct json_field *tty = field(request, "tty", JSON_BOOL, error, error_size, &bad);
	const struct json_field *cols = field(request, "cols", JSON_NUMBER, error, error_size, &bad);
	const struct json_field *rows = field(request, "rows", JSON_NUMBER, error, error_size, &bad);
	if (bad)
		return -1;
	if (!argv || argv->count == 0) {
		snprintf(error, error_size, "\"argv\" must hold the command and its arguments (at least one string)");
		return -1;
	}
	if (argv->strings[0][0] == '\0') {
		snprintf(error, error_size, "\"argv\"[0] (the command) is empty");
		return -1;
	}
	request->argv = argv->strings;
	static char *no_env[] = { NULL };
	request->env = env ? env->strings : no_env;
	for (size_t i = 0; env && i < env->count; i++) {
		const char *eq = strchr(env->strings[i], '=');
		if (!eq || eq == env->strings[i]) {
			snprintf(error, error_size, "\"env\"[%zu] must be NAME=VALUE with a non-empty NAME", i);
			return -1;
		}
	}
	if (cwd && cwd->string[0] != '/') {
		snprintf(error, error_size, "\"cwd\" must be an absolute path, got \"%s\"", cwd->string);
		return -1;
	}
	request->cwd = cwd ? cwd->string : NULL;
	request->tty = tty && tty->boolean;
	request->cols = 80;
	request->rows = 24;
	if (cols) {
		if (!number_in(cols, 1, 65535, error, error_size))
			return -1;
		request->cols = (unsigned)cols->number;
	}
	if (rows) {
		if (!number_in(rows, 1, 65535, error, error_size))
			return -1;
		request->rows = (unsigned)rows->number;
	}
	return 0;
}

static int parse_connect(struct control_request *request, char *error, size_t error_size)
{
	bool bad = false;
	const struct json_field *port = field(request, "port", JSON_NUMBER, error, error_size, &bad);
	const struct json_field *family = field(request, "family", JSON_NUMBER, error, error_size, &bad);
	if (bad)
		return -1;
	if (!port) {
		snprintf(error, error_size, "\"port\" is required");
		return -1;
	}
	if (!number_in(port, 1, 65535, error, error_size))
		return -1;
	request->port = (unsigned)port->number;
	request->family = 4;
	if (family) {
		if (family->number != 4 && family->number != 6) {
			snprintf(error, error_size, "\"family\" must be 4 or 6, got %lld", family->number);
			return -1;
		}
		request->family = (int)family->number;
	}
	return 0;
}

int control_request_parse(const char *line, size_t len, struct control_request *request, char *error,
			  size_t error_size)
{
	*request = (struct control_request){ 0 };
	if (json_parse_object(line, len, &request->json, error, error_size) < 0)
		return -1;
	bool bad = false;
	const struct json_field *op = field(request, "op", JSON_STRING, error, error_size, &bad);
	if (bad)
		goto fail;
	if (!op) {
		snprintf(error, error_size, "\"op\" is required (exec, connect, events, status, signal or log)");
		goto fail;
	}
	const struct op_fields *known = NULL;
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
		if (strcmp(op->string, ops[i].name) == 0)
			known = &ops[i];
	if (!known) {
		snprintf(error, error_size, "unknown op \"%.64s\" (exec, connect, events, status, signal or log)", op->string);
		goto fail;
	}
	request->op = known->op;
	request->op_known = true;
	for (size_t i = 0; i < request->json.count; i++) {
		const char *key = request->json.fields[i].key;
		if (strcmp(key, "op") != 0 && !listed(known->fields, key)) {
			snprintf(error, error_size, "op \"%s\" has no field \"%.64s\"", known->name, key);
			goto fail;
		}
	}

	const struct json_field *f;
	switch (request->op) {
	case OP_EXEC:
		if (parse_exec(request, error, error_size) < 0)
			goto fail;
		break;
	case OP_CONNECT:
		if (parse_connect(request, error, error_size) < 0)
			goto fail;
		break;
	case OP_EVENTS:
		f = field(request, "ack", JSON_BOOL, error, error_size, &bad);
		if (bad)
			goto fail;
		request->ack = f && f->boolean;
		break;
	case OP_SIGNAL:
		f = field(request, "signal", JSON_NUMBER, error, error_size, &bad);
		if (bad)
			goto fail;
		if (!f) {
			snprintf(error, error_size, "\"signal\" is required (a signal number)");
			goto fail;
		}
		if (!number_in(f, 1, SIGRTMAX, error, error_size))
			goto fail;
		request->signal = (int)f->number;
		break;
	case OP_LOG:
		f = field(request, "limit", JSON_NUMBER, error, error_size, &bad);
		if (bad)
			goto fail;
		request->log_limit = -1;
		if (f) {
			if (f->number != 0 && !number_in(f, LOG_LIMIT_MIN, LOG_LIMIT_MAX, error, error_size)) {
				snprintf(error, error_size, "\"limit\" must be 0 (none) or from %ld to %ld, got %lld",
					 LOG_LIMIT_MIN, LOG_LIMIT_MAX, f->number);
				goto fail;
			}
			request->log_limit = (long)f->number;
		}
		break;
	case OP_STATUS:
		break;
	}
	return 0;
fail:;
	/* What the op was, when it was known: its client expects that op's kind of refusal. */
	enum control_op known_op = request->op;
	bool op_known = request->op_known;
	control_request_free(request);
	request->op = known_op;
	request->op_known = op_known;
	return -1;
}

void control_request_free(struct control_request *request)
{
	json_object_free(&request->json);
	*request = (struct control_request){ 0 };
}
