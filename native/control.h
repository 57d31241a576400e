/*
 * The control socket's internals (docs/architecture.md, "The control socket"), shared by:
 *   json.c             reading one JSON object (request lines, acknowledgements)
 *   control-request.c  a request line → struct control_request, every field checked
 *   control.c          the socket in the control directory, status, signal, the exit record
 *   control-dispatch.c a connection's request line read and handed to its op; the one-line answers
 *   control-connect.c  the `connect` op: a port inside, forwarded with the relay's pump
 *   control-log.c      descriptors sent with a request (SCM_RIGHTS), and the `log` op that takes one
 *   exec.c             the `exec` op in PID 1: a session's start, and its process's end
 *   exec-session.c     a session's traffic: output frames, the setup socket, EXIT (exec.h)
 *   exec-input.c       a session's frames from the client: stdin, EOF, resize, signal
 *   exec-child.c       the `exec` op in the child: the agent's restrictions, then execve
 * events.c (the event queue) and logs.c (--log-fd) serve the rest of init as well; their calls
 * are in init.h.
 */
#ifndef CARAPACE_CONTROL_H
#define CARAPACE_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "init.h"
#include "utf8.h"

#define CONTROL_STEP "control"
#define CONTROL_SOCKET "control.sock"
#define CONTROL_LINE_MAX (64 * 1024) /* a request line, newline included */
#define EXEC_MAX 64                  /* execs running at once; one more is refused with ERROR */

/* ---- json.c ---- */

#define JSON_FIELDS_MAX 16

enum json_kind { JSON_STRING, JSON_NUMBER, JSON_BOOL, JSON_NULL, JSON_STRINGS };

struct json_field {
	char *key;
	enum json_kind kind;
	char *string;    /* JSON_STRING */
	long long number; /* JSON_NUMBER: integers only */
	bool boolean;    /* JSON_BOOL */
	char **strings;  /* JSON_STRINGS: NULL-terminated */
	size_t count;
};

struct json_object {
	struct json_field fields[JSON_FIELDS_MAX];
	size_t count;
};

/* 0, or -1 with a message in error. The object is freed on failure. */
int json_parse_object(const char *text, size_t len, struct json_object *object, char *error, size_t error_size);
void json_object_free(struct json_object *object);
const struct json_field *json_get(const struct json_object *object, const char *key);

/* ---- control-request.c ---- */

enum control_op { OP_EXEC, OP_CONNECT, OP_EVENTS, OP_STATUS, OP_SIGNAL, OP_LOG };

struct control_request {
	enum control_op op;
	bool op_known; /* set even when the request is refused, once "op" was read */
	/* exec */
	char **argv; /* NULL-terminated, at least one entry */
	char **env;  /* NULL-terminated "NAME=VALUE" entries added to the agent's environment */
	char *cwd;   /* NULL: PID 1's own (where bwrap started it: /sandbox) */
	bool tty;
	unsigned cols, rows;
	/* connect */
	unsigned port;
	int family; /* 4 or 6 */
	/* events */
	bool ack;
	/* signal */
	int signal;
	/* log: the new file's limit in bytes (0: none), -1 when not given (the current one stays) */
	long log_limit;
	struct json_object json; /* owns the strings above */
};

/* 0, or -1 with a message in error (which names the field). */
int control_request_parse(const char *line, size_t len, struct control_request *request, char *error,
			  size_t error_size);
void control_request_free(struct control_request *request);

/* ---- control.c ---- */

long long now_ms(void);
bool control_agent_running(void);
/* The status and signal ops: answer on fd and close it. */
void control_status_op(int fd);
void control_signal_op(int fd, int signo);

/* ---- control-dispatch.c ---- */

/* A connection control.c accepted: its request line is read and handed to its op. Takes fd. */
void control_request_start(int fd);
/* Sends a short line on a connection whose send buffer is empty (never blocks), then closes it. */
void control_reply_and_close(int fd, const char *line);
void control_reply_error_and_close(int fd, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- control-log.c ---- */

#define PASSED_FDS_MAX 4

/* Descriptors that came with a request line. */
struct passed_fds {
	int fds[PASSED_FDS_MAX];
	size_t count;
	bool truncated; /* more came than there was room for: the kernel closed the rest */
};

struct msghdr;
void passed_fds_take(struct msghdr *message, struct passed_fds *passed);
void passed_fds_close(struct passed_fds *passed);
/* The log op: answers on fd and closes it; takes the one passed descriptor. */
void control_log_op(int fd, const struct control_request *request, struct passed_fds *passed);

/* ---- control-connect.c ---- */

void connect_op_start(int client, const struct control_request *request);
void connect_op_after_round(void);

/* ---- exec.c / exec-child.c ---- */

enum exec_frame {
	/* client → init */
	FRAME_STDIN = 0x01,
	FRAME_STDIN_EOF = 0x02,
	FRAME_RESIZE = 0x03,
	FRAME_SIGNAL = 0x04,
	/* init → client */
	FRAME_STDOUT = 0x11,
	FRAME_STDERR = 0x12,
	FRAME_EXIT = 0x13,
	FRAME_ERROR = 0x14,
};
#define FRAME_HEADER 5
#define FRAME_PAYLOAD_MAX (64 * 1024)

void exec_op_start(int client, struct control_request *request);
/* An ERROR frame, then the end: an exec that runs nothing. */
void exec_refuse(int client, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* What the exec'd child needs, set up by PID 1 (exec.c) before the fork. */
struct exec_child_plan {
	char **argv;
	char **envp;
	const char *cwd;
	bool tty;
	int stdio[3]; /* the child's fds 0, 1, 2 (the pty's peer three times, or the pipes' ends) */
	int setup_fd; /* SOCK_SEQPACKET to PID 1: the connect watch's listener, or why it failed */
};

noreturn void exec_child_run(const struct exec_child_plan *plan);

#endif
