/*
 * The control socket: how the host (a gateway) drives a running sandbox without being its parent
 * and without pipes to its processes (docs/architecture.md, "The control socket").
 *
 * --control-dir-fd names an O_PATH fd of a host directory Carapace made for this sandbox (owned by
 * the sandbox's uid, mode 0700, never mounted inside). Before the agent exists, PID 1 binds
 * control.sock there, mode 0600, through /proc/self/fd/<fd>/ as the relay reaches its socket, and
 * serves it from its event loop. Each connection sends one request line, {"op":...}\n, read and
 * handed to its op by control-dispatch.c, and then follows that op's protocol: exec (exec.c),
 * connect (control-connect.c), events (events.c), log (control-log.c), status and signal (here);
 * the last three answer one line, then the connection closes.
 *
 * Here: the socket (bound, accepting, paused when fds run out), the agent's state as status and
 * signal report it, and the end.
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
 *   - Requests come from the host and are trusted, but parsed as data (control-dispatch.c).
 *   - PID 1 never waits on a client: every socket is non-blocking, answers are short lines written
 *     into an empty send buffer, and each op applies backpressure instead of buffering.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"

#define ACCEPTS_PER_ROUND 16

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

/* ---- the ops answered here ---- */

void control_status_op(int fd)
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

void control_signal_op(int fd, int signo)
{
	if (pid1_signal_agent(signo) < 0)
		control_reply_error_and_close(fd, errno, "signal %d to the agent%s", signo,
					      errno == ESRCH ? " (it has exited)" : "");
	else
		control_reply_and_close(fd, "{\"ok\":true}\n");
}

/* ---- accepting connections ---- */

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
		control_request_start(fd);
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
