/*
 * A control connection's request (docs/architecture.md, "The control socket"): its one request
 * line read off the socket, with the file descriptors that came with it, parsed
 * (control-request.c) and handed to its op; and the one-line answers the ops that end at once
 * (status, signal, log, and every refusal) write before they close the connection. control.c
 * accepts the connection and hands it here (control_request_start).
 *
 * Security assumptions:
 *   - Requests come from the host and are trusted, but parsed as data (json.c, bounded by
 *     CONTROL_LINE_MAX). A request line is read with MSG_PEEK and then consumed to its newline
 *     exactly, so whatever the client sent after it (exec's frames, a forwarded port's first
 *     bytes) stays in the socket for the op.
 *   - `log` is the one op that comes with a file descriptor (SCM_RIGHTS, sent with the request
 *     line): the agent's next log file (control-log.c). An fd sent with any other op, or more
 *     than one, is closed and the request refused.
 *   - PID 1 never waits on a client: the connection is non-blocking, and an answer is a short line
 *     written into its empty send buffer.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control.h"

struct request_conn {
	struct watch watch;
	int fd;
};

/* ---- answers ---- */

void control_reply_and_close(int fd, const char *line)
{
	/* A fresh connection's send buffer is empty: a short line goes out whole, or the client is
	 * gone, which is its business. */
	(void)send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

void control_reply_error_and_close(int fd, int err, const char *fmt, ...)
{
	char what[512];
	va_list args;
	va_start(args, fmt);
	vsnprintf(what, sizeof what, fmt, args);
	va_end(args);
	char message[640];
	if (err)
		snprintf(message, sizeof message, "%s: %s", what, strerror(err));
	else
		snprintf(message, sizeof message, "%s", what);
	struct status_line line;
	line_open(&line);
	line_bool(&line, "ok", false);
	line_number(&line, "errno", err);
	line_string(&line, "message", message);
	size_t len;
	char *text = line_finish(&line, &len);
	control_reply_and_close(fd, text ? text : "{\"ok\":false,\"errno\":12,\"message\":\"out of memory\"}\n");
	free(text);
}

/* ---- requests ---- */

static void dispatch(int fd, const char *line, size_t len, struct passed_fds *passed)
{
	struct control_request request;
	char error[256];
	if (control_request_parse(line, len, &request, error, sizeof error) < 0) {
		passed_fds_close(passed);
		if (request.op_known && request.op == OP_EXEC)
			exec_refuse(fd, "carapace-init: exec: bad request: %s", error);
		else
			control_reply_error_and_close(fd, EINVAL, "bad request: %s", error);
		return;
	}
	if (request.op != OP_LOG && (passed->count > 0 || passed->truncated)) {
		/* An fd where none belongs: refused, so that a client's mistake is seen, not ignored. */
		passed_fds_close(passed);
		if (request.op == OP_EXEC)
			exec_refuse(fd, "carapace-init: exec: bad request: op \"exec\" takes no file descriptor");
		else
			control_reply_error_and_close(fd, EINVAL, "bad request: op takes no file descriptor");
		control_request_free(&request);
		return;
	}
	switch (request.op) {
	case OP_LOG:
		control_log_op(fd, &request, passed);
		break;
	case OP_STATUS:
		control_status_op(fd);
		break;
	case OP_SIGNAL:
		control_signal_op(fd, request.signal);
		break;
	case OP_EVENTS:
		events_subscribe(fd, request.ack);
		break;
	case OP_CONNECT:
		connect_op_start(fd, &request);
		break;
	case OP_EXEC:
		exec_op_start(fd, &request);
		break;
	}
	control_request_free(&request);
}

static void request_done(struct request_conn *conn, bool close_fd)
{
	loop_unwatch(conn->fd);
	if (close_fd)
		close(conn->fd);
	loop_free_later(conn);
}

/* Edge-triggered until the line is whole: what is peeked stays in the socket, so a level-triggered
 * watch would wake us for it again and again. */
static void on_request(struct watch *self, uint32_t events)
{
	struct request_conn *conn = container_of(self, struct request_conn, watch);
	static char buffer[CONTROL_LINE_MAX];
	ssize_t n;
	do
		n = recv(conn->fd, buffer, sizeof buffer, MSG_PEEK | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0) {
		request_done(conn, true); /* gone before it asked */
		return;
	}
	char *newline = memchr(buffer, '\n', (size_t)n);
	if (!newline) {
		if ((size_t)n == sizeof buffer) {
			request_done(conn, false);
			control_reply_error_and_close(conn->fd, EMSGSIZE, "bad request: no newline in the first %d bytes",
						      CONTROL_LINE_MAX);
		} else if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
			request_done(conn, true); /* it stopped sending before its line was whole */
		}
		return; /* more to come: the next edge */
	}
	size_t len = (size_t)(newline - buffer) + 1;
	/* Consumed with room for the fds that may come with the line (the `log` op's file): a plain
	 * recv would have the kernel close them unseen. Close-on-exec at once: no exec'd process or
	 * agent may inherit a host file. */
	union {
		struct cmsghdr align;
		char space[CMSG_SPACE(sizeof(int) * PASSED_FDS_MAX)];
	} control;
	struct iovec iov = { buffer, len };
	struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
				  .msg_controllen = sizeof control.space };
	ssize_t taken;
	do
		taken = recvmsg(conn->fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (taken < 0 && errno == EINTR);
	int fd = conn->fd;
	request_done(conn, false);
	struct passed_fds passed = { .count = 0, .truncated = taken >= 0 && (message.msg_flags & MSG_CTRUNC) };
	if (taken >= 0)
		passed_fds_take(&message, &passed);
	if (taken != (ssize_t)len) {
		passed_fds_close(&passed);
		close(fd);
		return;
	}
	dispatch(fd, buffer, len - 1, &passed);
}

void control_request_start(int fd)
{
	struct request_conn *conn = calloc(1, sizeof *conn);
	if (!conn) {
		control_reply_error_and_close(fd, ENOMEM, "allocate the connection");
		return;
	}
	*conn = (struct request_conn){ .watch.handle = on_request, .fd = fd };
	if (loop_watch(fd, &conn->watch, EPOLLIN | EPOLLRDHUP | EPOLLET) < 0) {
		report_warning(CONTROL_STEP, errno, "watch a control connection");
		close(fd);
		free(conn);
		return;
	}
	/* The line may be there already: its edge came before the watch. (So may the client's
	 * end, which the next edge, if any, reports.) */
	on_request(&conn->watch, EPOLLIN);
}
