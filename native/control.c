/*
 * The control socket: how the host (a gateway) drives a running sandbox without being its parent
 * and without pipes to its processes (docs/architecture.md, "The control socket").
 *
 * --control-dir-fd names an O_PATH fd of a host directory Carapace made for this sandbox (owned by
 * the sandbox's uid, mode 0700, never mounted inside). Before the agent exists, PID 1 binds
 * control.sock there, mode 0600, through /proc/self/fd/<fd>/ as the relay reaches its socket, and
 * serves it from its event loop. Each connection sends one request line, {"op":...}\n, and then
 * follows that op's protocol: exec (exec.c), connect (control-connect.c), events (events.c),
 * status, signal and log (here: one answer line, then the connection closes). `log` is the one
 * op that comes with a file descriptor (SCM_RIGHTS, sent with the request line): the agent's next
 * log file (logs.c). An fd sent with any other op, or more than one, is closed and the request
 * refused.
 *
 * When the agent exits, PID 1 finishes what it owes (the exit line to the events subscriber, the
 * execs' EXIT frames, the agent's last output to --log-fd; at most DRAIN_MS), then writes
 * exit.json into the directory (a temporary name, then renamed: a reader never sees half of it)
 * and exits. A gateway that is not bwrap's parent learns the status from it.
 *
 * Security assumptions:
 *   - Nothing inside the sandbox can reach the socket: the directory is not mounted inside, its fd
 *     is PID 1's alone (close-on-exec; the agent and every exec'd process get fds 0-2 only), and
 *     PID 1 is not dumpable, so /proc/1/fd/<fd> is closed to the sandbox's processes. On the host,
 *     the directory (0700) and the socket (0600) belong to the sandbox's uid: root and that uid
 *     can connect. Whoever can connect has the sandbox's full control (run any command in it as
 *     confined as the agent, reach its listeners): the host side keeps the directory its own.
 *   - Requests come from the host and are trusted, but parsed as data (json.c, bounded by
 *     CONTROL_LINE_MAX). A request line is read with MSG_PEEK and then consumed to its newline
 *     exactly, so whatever the client sent after it (exec's frames, a forwarded port's first
 *     bytes) stays in the socket for the op.
 *   - PID 1 never waits on a client: every socket is non-blocking, answers are short lines written
 *     into an empty send buffer, and each op applies backpressure instead of buffering.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"

#define ACCEPTS_PER_ROUND 16

struct request_conn {
	struct watch watch;
	int fd;
};

static struct {
	int dir_fd; /* -1: no control socket */
	int listen_fd;
	struct watch listen_watch;
	bool accepting;
	pid_t agent;
	bool agent_running;
	int exit_code;
	long long since;
} ctl = { .dir_fd = -1, .listen_fd = -1 };

static void on_listen(struct watch *self, uint32_t events);
static void on_request(struct watch *self, uint32_t events);

long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool control_enabled(void)
{
	return ctl.dir_fd >= 0;
}

bool control_agent_running(void)
{
	return ctl.agent_running;
}

/* A leftover of an earlier run in the same directory must not be taken for this one's. */
static void remove_stale(const char *name)
{
	if (unlinkat(ctl.dir_fd, name, 0) < 0 && errno != ENOENT)
		die(CONTROL_STEP, errno, "remove the stale %s from the control directory", name);
}

void control_start(const struct init_config *cfg)
{
	if (cfg->control_dir_fd < 0)
		return;
	ctl.dir_fd = cfg->control_dir_fd;
	struct stat st;
	if (fstat(ctl.dir_fd, &st) < 0)
		die(CONTROL_STEP, errno, "--control-dir-fd %d", ctl.dir_fd);
	if (!S_ISDIR(st.st_mode))
		die(CONTROL_STEP, ENOTDIR, "--control-dir-fd %d", ctl.dir_fd);
	remove_stale(CONTROL_SOCKET);
	remove_stale("exit.json");
	remove_stale("events.jsonl");

	struct sockaddr_un address = { .sun_family = AF_UNIX };
	int n = snprintf(address.sun_path, sizeof address.sun_path, "/proc/self/fd/%d/%s", ctl.dir_fd, CONTROL_SOCKET);
	if (n < 0 || (size_t)n >= sizeof address.sun_path)
		die(CONTROL_STEP, ENAMETOOLONG, "the socket path /proc/self/fd/%d/%s", ctl.dir_fd, CONTROL_SOCKET);
	ctl.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ctl.listen_fd < 0)
		die(CONTROL_STEP, errno, "socket(AF_UNIX)");
	/* bind() makes the socket file 0777 & ~umask: 0600 it is, from the start. */
	mode_t umask_before = umask(0177);
	int rc = bind(ctl.listen_fd, (struct sockaddr *)&address,
		      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1));
	int err = errno;
	umask(umask_before);
	if (rc < 0)
		die(CONTROL_STEP, err, "bind %s (is /proc mounted?)", address.sun_path);
	if (listen(ctl.listen_fd, SOMAXCONN) < 0)
		die(CONTROL_STEP, errno, "listen on %s", address.sun_path);
	ctl.listen_watch.handle = on_listen;
	if (loop_watch(ctl.listen_fd, &ctl.listen_watch, EPOLLIN) < 0)
		die(CONTROL_STEP, errno, "watch the control socket");
	ctl.accepting = true;

	struct status_line line;
	line_begin(&line, "control");
	line_bool(&line, "enabled", true);
	line_string(&line, "socket", CONTROL_SOCKET);
	line_bool(&line, "log", cfg->log_fd >= 0);
	line_send(&line);
}

void control_agent_started(pid_t agent)
{
	ctl.agent = agent;
	ctl.agent_running = true;
	ctl.since = now_ms();
}

void control_agent_exited(int code)
{
	ctl.agent_running = false;
	ctl.exit_code = code;
	ctl.since = now_ms();
	events_publish_exit(code);
}

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

static void reply_status(int fd)
{
	struct status_line line;
	line_open(&line);
	line_number(&line, "agent_pid", ctl.agent);
	line_bool(&line, "running", ctl.agent_running);
	if (ctl.agent_running)
		line_null(&line, "exit");
	else
		line_number(&line, "exit", ctl.exit_code);
	line_number(&line, "since", ctl.since);
	size_t len;
	char *text = line_finish(&line, &len);
	if (!text) {
		control_reply_error_and_close(fd, ENOMEM, "build the status line");
		return;
	}
	control_reply_and_close(fd, text);
	free(text);
}

static void reply_signal(int fd, int signo)
{
	if (pid1_signal_agent(signo) < 0)
		control_reply_error_and_close(fd, errno, "signal %d to the agent%s", signo,
					      errno == ESRCH ? " (it has exited)" : "");
	else
		control_reply_and_close(fd, "{\"ok\":true}\n");
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
		reply_status(fd);
		break;
	case OP_SIGNAL:
		reply_signal(fd, request.signal);
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

static void set_accepting(bool accepting)
{
	if (ctl.accepting == accepting)
		return;
	if ((accepting ? loop_watch(ctl.listen_fd, &ctl.listen_watch, EPOLLIN) : loop_unwatch(ctl.listen_fd)) < 0)
		report_warning(CONTROL_STEP, errno, "%s accepting connections", accepting ? "resume" : "pause");
	ctl.accepting = accepting;
}

static void on_listen(struct watch *self, uint32_t events)
{
	(void)self;
	(void)events;
	for (int i = 0; i < ACCEPTS_PER_ROUND; i++) {
		int fd = accept4(ctl.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return;
			/* Out of fds: the clients wait in the backlog; we try again next round. */
			report_warning(CONTROL_STEP, errno, "accept a control connection (pausing a moment)");
			set_accepting(false);
			return;
		}
		struct request_conn *conn = calloc(1, sizeof *conn);
		if (!conn) {
			control_reply_error_and_close(fd, ENOMEM, "allocate the connection");
			continue;
		}
		*conn = (struct request_conn){ .watch.handle = on_request, .fd = fd };
		if (loop_watch(fd, &conn->watch, EPOLLIN | EPOLLRDHUP | EPOLLET) < 0) {
			report_warning(CONTROL_STEP, errno, "watch a control connection");
			close(fd);
			free(conn);
			continue;
		}
		/* The line may be there already: its edge came before the watch. (So may the client's
		 * end, which the next edge, if any, reports.) */
		on_request(&conn->watch, EPOLLIN);
	}
}

int control_wait_timeout(void)
{
	return ctl.dir_fd >= 0 && !ctl.accepting ? 1000 : -1;
}

void control_after_round(void)
{
	if (ctl.dir_fd < 0)
		return;
	connect_op_after_round();
	if (!ctl.accepting)
		set_accepting(true);
}

/* ---- the end ---- */

bool control_drained(void)
{
	return ctl.dir_fd < 0 || (events_drained() && exec_drained());
}

void control_write_exit_record(int code)
{
	if (ctl.dir_fd < 0)
		return;
	events_write_undelivered(ctl.dir_fd);
	char text[96];
	int n = snprintf(text, sizeof text, "{\"code\":%d,\"t\":%lld}\n", code, now_ms());
	const char *tmp = "exit.json.tmp";
	int fd = openat(ctl.dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		report_warning(CONTROL_STEP, errno, "create %s in the control directory", tmp);
		return;
	}
	ssize_t written = write(fd, text, (size_t)n);
	int err = written == n ? 0 : (written < 0 ? errno : EIO);
	if (close(fd) < 0 && !err)
		err = errno;
	if (!err && renameat(ctl.dir_fd, tmp, ctl.dir_fd, "exit.json") < 0)
		err = errno;
	if (err)
		report_warning(CONTROL_STEP, err, "write exit.json in the control directory");
}
