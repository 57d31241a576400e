/*
 * The control socket's `exec` op, in PID 1: one session per request, from the fork to the EXIT
 * frame (docs/architecture.md, "exec").
 *
 * PID 1 forks a child that takes the agent's restrictions and execve's the command (exec-child.c).
 * Its stdio is a pty (the sandbox's /dev/ptmx, from bwrap's --dev) or three pipes; PID 1 holds the
 * other ends and carries them over the control connection as frames: 1 byte type, 4 bytes length
 * (big-endian), the payload. From the client: STDIN, STDIN_EOF, RESIZE, SIGNAL; to it: STDOUT,
 * STDERR (none with a tty), and at the end ERROR (why the command could not start, when it could
 * not) and EXIT (the status, as env(1) encodes it). Then the connection closes.
 *
 * Nothing is buffered without bound, and PID 1 never waits:
 *   - output: one buffer of OUT_CAP bytes per session; the process's pipes (or the pty) are read
 *     only while it has room, so a client that reads slowly stops the process's writes;
 *   - input: at most IN_CHUNK bytes of STDIN wait for the process to read them; meanwhile the
 *     client's frames are not read, except that a RESIZE or SIGNAL frame may overtake STDIN data
 *     the process has not read yet (a Ctrl-C sent as SIGNAL reaches a process that reads nothing);
 *   - at most EXEC_MAX sessions at once; one more is answered with an ERROR frame.
 *
 * The end: the session ends once its process has exited and what it wrote has been read (a read
 * that finds nothing after the process was reaped: what background processes write later is not
 * waited for), and the setup socket has said whether the command started. When the process is
 * reaped, its process group gets SIGHUP (exec_before_reap, while the zombie still holds the pid,
 * so the group named is exactly its own). When the client goes away first, the process and its
 * group get SIGHUP, and with a tty the pty's master is closed, which hangs the terminal up, as
 * closing a terminal window does.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "control.h"

#define EXEC_STEP "exec"
#define OUT_READ (16 * 1024)
#define OUT_CAP (2 * (FRAME_HEADER + OUT_READ))
#define IN_CHUNK (16 * 1024)
#define ERROR_TEXT_MAX 1024
#define CLIENT_READS_PER_WAKEUP 16

struct session;

struct session_fd {
	struct watch watch;
	int fd;
	uint32_t watched;
	struct session *session;
};

enum { FD_CLIENT, FD_STDIN, FD_STDOUT, FD_STDERR, FD_SETUP, FD_COUNT };

struct session {
	struct session *next;
	struct session_fd fds[FD_COUNT]; /* with a tty, FD_STDOUT is the master, which is stdin too */
	pid_t pid;
	bool tty;
	bool reaped;
	int exit_code;
	bool output_done[2]; /* stdout, stderr */
	char *error;         /* from the setup socket: why the command did not start */
	bool exit_queued;
	bool closed;
	/* frames from the client */
	unsigned char header[FRAME_HEADER];
	size_t header_len;
	unsigned frame_type;
	size_t payload_left; /* of the current frame, still in the socket */
	unsigned char small[4];
	size_t small_len;
	unsigned char stdin_buf[IN_CHUNK];
	size_t stdin_len, stdin_off;
	bool stdin_closed; /* nobody reads it any more: what comes is dropped */
	bool eof_wanted;   /* STDIN_EOF came; applied once stdin_buf is written */
	/* frames to the client */
	unsigned char out[OUT_CAP];
	size_t out_start, out_end;
};

static struct session *sessions;
static unsigned session_count;

static void on_fd(struct watch *self, uint32_t events);
static void advance(struct session *s);

/* ---- frames ---- */

static void put_be32(unsigned char *p, uint32_t value)
{
	p[0] = (unsigned char)(value >> 24);
	p[1] = (unsigned char)(value >> 16);
	p[2] = (unsigned char)(value >> 8);
	p[3] = (unsigned char)value;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static size_t out_room(const struct session *s)
{
	return OUT_CAP - (s->out_end - s->out_start);
}

/* Room for `len` more bytes at the end of the buffer, moving what waits to the front if needed. */
static unsigned char *out_reserve(struct session *s, size_t len)
{
	if (out_room(s) < len)
		return NULL;
	if (OUT_CAP - s->out_end < len) {
		memmove(s->out, s->out + s->out_start, s->out_end - s->out_start);
		s->out_end -= s->out_start;
		s->out_start = 0;
	}
	return s->out + s->out_end;
}

static bool queue_frame(struct session *s, unsigned type, const void *payload, size_t len)
{
	unsigned char *p = out_reserve(s, FRAME_HEADER + len);
	if (!p)
		return false;
	p[0] = (unsigned char)type;
	put_be32(p + 1, (uint32_t)len);
	memcpy(p + FRAME_HEADER, payload, len);
	s->out_end += FRAME_HEADER + len;
	return true;
}

/* An ERROR frame on a connection that has nothing else, then the end: for a refused request. */
static void refuse(int client, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(int client, const char *fmt, ...)
{
	unsigned char frame[FRAME_HEADER + ERROR_TEXT_MAX];
	va_list args;
	va_start(args, fmt);
	int n = vsnprintf((char *)frame + FRAME_HEADER, ERROR_TEXT_MAX, fmt, args);
	va_end(args);
	size_t len = n < 0 ? 0 : (size_t)n < ERROR_TEXT_MAX ? (size_t)n : ERROR_TEXT_MAX - 1;
	frame[0] = FRAME_ERROR;
	put_be32(frame + 1, (uint32_t)len);
	(void)send(client, frame, FRAME_HEADER + len, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(client);
}

/* ---- the session's fds ---- */

static int fd_of(const struct session *s, int which)
{
	return s->fds[which].fd;
}

static int stdin_fd(const struct session *s)
{
	return s->tty ? fd_of(s, FD_STDOUT) : fd_of(s, FD_STDIN);
}

static void close_fd(struct session *s, int which)
{
	struct session_fd *f = &s->fds[which];
	if (f->fd < 0)
		return;
	if (f->watched)
		loop_unwatch(f->fd);
	close(f->fd);
	f->fd = -1;
	f->watched = 0;
}

static void hang_up(struct session *s)
{
	if (s->reaped)
		return; /* its pid may name another process by now */
	/* The process itself too: it may not have made its group yet (it gets the signal when it
	 * unblocks its signals, right before execve). */
	kill(s->pid, SIGHUP);
	if (kill(-s->pid, SIGHUP) < 0 && errno != ESRCH)
		report_warning(EXEC_STEP, errno, "SIGHUP to the process group %d", (int)s->pid);
}

static void session_close(struct session *s)
{
	if (s->closed)
		return;
	s->closed = true;
	for (int i = 0; i < FD_COUNT; i++)
		close_fd(s, i);
	for (struct session **p = &sessions; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	session_count--;
	free(s->error);
	loop_free_later(s);
}

/* The client is gone (or broke the protocol): the process is hung up, as by a closed terminal. */
static void client_gone(struct session *s)
{
	hang_up(s);
	session_close(s);
}

/* ---- to the process ---- */

static bool stdin_pending(const struct session *s)
{
	return s->stdin_off < s->stdin_len;
}

static void apply_eof(struct session *s)
{
	s->eof_wanted = false;
	if (s->stdin_closed)
		return;
	if (!s->tty) {
		close_fd(s, FD_STDIN);
		s->stdin_closed = true;
		return;
	}
	/* A terminal has no end of file: its EOF character is what a terminal's user types. */
	struct termios termios;
	s->stdin_buf[0] = tcgetattr(stdin_fd(s), &termios) == 0 ? termios.c_cc[VEOF] : 4;
	s->stdin_off = 0;
	s->stdin_len = 1;
}

static void write_stdin(struct session *s)
{
	for (;;) {
		if (!stdin_pending(s)) {
			s->stdin_off = s->stdin_len = 0;
			if (!s->eof_wanted)
				return;
			apply_eof(s); /* with a tty, the EOF character is written next */
			continue;
		}
		ssize_t n = write(stdin_fd(s), s->stdin_buf + s->stdin_off, s->stdin_len - s->stdin_off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			/* EPIPE, EIO: nobody reads it any more; what comes for it is dropped. */
			s->stdin_closed = true;
			s->stdin_off = s->stdin_len = 0;
			s->eof_wanted = false;
			if (!s->tty)
				close_fd(s, FD_STDIN);
			return;
		}
		s->stdin_off += (size_t)n;
	}
}

static void apply_small_frame(struct session *s)
{
	if (s->frame_type == FRAME_RESIZE) {
		if (!s->tty)
			return;
		struct winsize size = { .ws_col = (unsigned short)(s->small[0] << 8 | s->small[1]),
					.ws_row = (unsigned short)(s->small[2] << 8 | s->small[3]) };
		/* The kernel sends SIGWINCH to the terminal's foreground process group. */
		if (ioctl(fd_of(s, FD_STDOUT), TIOCSWINSZ, &size) < 0)
			report_warning(EXEC_STEP, errno, "resize the pty");
		return;
	}
	int signo = (int)be32(s->small);
	if (signo < 1 || signo > SIGRTMAX || s->reaped)
		return;
	if (kill(-s->pid, signo) < 0 && errno == ESRCH)
		kill(s->pid, signo); /* its group does not exist yet */
}

/* A whole header: true when the frame can start now, false when it must wait for stdin. */
static bool start_frame(struct session *s)
{
	unsigned type = s->header[0];
	uint32_t len = be32(s->header + 1);
	bool waits = type == FRAME_STDIN || type == FRAME_STDIN_EOF;
	if (waits && stdin_pending(s))
		return false;
	bool valid = (type == FRAME_STDIN && len <= FRAME_PAYLOAD_MAX) || (type == FRAME_STDIN_EOF && len == 0) ||
		     ((type == FRAME_RESIZE || type == FRAME_SIGNAL) && len == 4);
	if (!valid) {
		report_warning(EXEC_STEP, 0, "a frame of type 0x%02x and length %u from the client: closing the session",
			       type, (unsigned)len);
		client_gone(s);
		return false;
	}
	s->header_len = 0;
	s->frame_type = type;
	s->payload_left = len;
	s->small_len = 0;
	if (type == FRAME_STDIN_EOF) {
		s->eof_wanted = !s->stdin_closed;
		write_stdin(s);
	}
	return true;
}

/* recv into p; false when there is nothing now or the client is gone (then the session is). */
static bool client_recv(struct session *s, void *p, size_t len, size_t *got)
{
	ssize_t n;
	do
		n = recv(fd_of(s, FD_CLIENT), p, len, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return false;
	if (n <= 0) {
		client_gone(s);
		return false;
	}
	*got = (size_t)n;
	return true;
}

static void read_client(struct session *s)
{
	for (int i = 0; i < CLIENT_READS_PER_WAKEUP && !s->closed && !s->exit_queued; i++) {
		size_t got;
		if (s->payload_left > 0 && s->frame_type == FRAME_STDIN) {
			if (stdin_pending(s))
				return;
			size_t want = s->payload_left < IN_CHUNK ? s->payload_left : IN_CHUNK;
			if (!client_recv(s, s->stdin_buf, want, &got))
				return;
			s->payload_left -= got;
			s->stdin_off = 0;
			s->stdin_len = s->stdin_closed ? 0 : got;
			write_stdin(s);
		} else if (s->payload_left > 0) {
			if (!client_recv(s, s->small + s->small_len, s->payload_left, &got))
				return;
			s->small_len += got;
			s->payload_left -= got;
			if (s->payload_left == 0)
				apply_small_frame(s);
		} else if (s->header_len == FRAME_HEADER) {
			if (!start_frame(s))
				return; /* STDIN waits for the process to read what came before */
		} else {
			if (!client_recv(s, s->header + s->header_len, FRAME_HEADER - s->header_len, &got))
				return;
			s->header_len += got;
			if (s->header_len == FRAME_HEADER && !start_frame(s))
				return;
		}
	}
}

/* ---- from the process ---- */

static void read_output(struct session *s, int i)
{
	int which = i == 0 ? FD_STDOUT : FD_STDERR;
	while (!s->output_done[i]) {
		unsigned char *p = out_reserve(s, FRAME_HEADER + 1);
		if (!p)
			return; /* the client is behind: the process waits */
		size_t room = OUT_CAP - s->out_end - FRAME_HEADER;
		ssize_t n = read(fd_of(s, which), p + FRAME_HEADER, room < OUT_READ ? room : OUT_READ);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			/* Reaped and nothing more: everything it wrote has been read. */
			if (s->reaped)
				s->output_done[i] = true;
			return;
		}
		if (n <= 0) {
			/* End of file, or EIO from a pty whose every peer is closed. */
			if (n < 0 && errno != EIO)
				report_warning(EXEC_STEP, errno, "read the process's output");
			s->output_done[i] = true;
			return;
		}
		p[0] = i == 0 ? FRAME_STDOUT : FRAME_STDERR;
		put_be32(p + 1, (uint32_t)n);
		s->out_end += FRAME_HEADER + (size_t)n;
	}
}

static void read_setup(struct session *s)
{
	while (fd_of(s, FD_SETUP) >= 0) {
		char text[ERROR_TEXT_MAX + 8];
		struct iovec iov = { .iov_base = text, .iov_len = sizeof text - 1 };
		union {
			struct cmsghdr header;
			char bytes[CMSG_SPACE(sizeof(int))];
		} control;
		struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes,
					  .msg_controllen = sizeof control.bytes };
		ssize_t n = recvmsg(fd_of(s, FD_SETUP), &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close_fd(s, FD_SETUP); /* exec'd, or failed and said why */
			return;
		}
		struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message);
		int fd = -1;
		if (cmsg && cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS &&
		    cmsg->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
		if (text[0] == 'L' && fd >= 0) {
			connect_watch_add_listener(fd);
		} else {
			if (fd >= 0)
				close(fd);
			if (text[0] == 'E' && !s->error) {
				text[n] = '\0';
				s->error = strdup(text + 1);
			}
		}
	}
}

/* ---- the whole session ---- */

static void flush_client(struct session *s)
{
	while (s->out_start < s->out_end) {
		ssize_t n = send(fd_of(s, FD_CLIENT), s->out + s->out_start, s->out_end - s->out_start,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			client_gone(s);
			return;
		}
		s->out_start += (size_t)n;
	}
	s->out_start = s->out_end = 0;
}

static bool outputs_done(const struct session *s)
{
	return s->output_done[0] && s->output_done[1];
}

/* After the process: ERROR (if it never ran) and EXIT, once there is room for both. */
static void finish(struct session *s)
{
	if (s->exit_queued || !s->reaped || !outputs_done(s) || fd_of(s, FD_SETUP) >= 0)
		return;
	size_t error_len = s->error ? strlen(s->error) : 0;
	if (error_len > ERROR_TEXT_MAX)
		error_len = ERROR_TEXT_MAX;
	if (out_room(s) < 2 * FRAME_HEADER + error_len + 4)
		return;
	if (s->error)
		queue_frame(s, FRAME_ERROR, s->error, error_len);
	unsigned char code[4];
	put_be32(code, (uint32_t)s->exit_code);
	queue_frame(s, FRAME_EXIT, code, sizeof code);
	s->exit_queued = true;
}

static void watch_fd(struct session *s, int which, uint32_t wanted)
{
	struct session_fd *f = &s->fds[which];
	if (f->fd < 0 || wanted == f->watched)
		return;
	int rc = wanted == 0	     ? loop_unwatch(f->fd)
		 : f->watched == 0 ? loop_watch(f->fd, &f->watch, wanted)
				   : loop_change(f->fd, &f->watch, wanted);
	if (rc < 0) {
		report_warning(EXEC_STEP, errno, "watch a session's fd");
		client_gone(s);
		return;
	}
	f->watched = wanted;
}

/* Reading the client waits while STDIN data is in progress or held and the process has not read
 * what came before. */
static bool client_blocked(const struct session *s)
{
	return stdin_pending(s) &&
	       ((s->payload_left > 0 && s->frame_type == FRAME_STDIN) || s->header_len == FRAME_HEADER);
}

static void update_interest(struct session *s)
{
	/* EPOLLRDHUP: a client that goes away is noticed even while its frames are not read. */
	uint32_t client_events = s->exit_queued ? 0 : EPOLLRDHUP | (client_blocked(s) ? 0 : EPOLLIN);
	watch_fd(s, FD_CLIENT, client_events | (s->out_start < s->out_end ? EPOLLOUT : 0));
	bool room = out_room(s) >= FRAME_HEADER + 1;
	uint32_t out_events = !s->output_done[0] && room ? EPOLLIN : 0;
	if (s->tty)
		out_events |= stdin_pending(s) ? EPOLLOUT : 0;
	else if (!s->closed)
		watch_fd(s, FD_STDIN, stdin_pending(s) ? EPOLLOUT : 0);
	if (!s->closed)
		watch_fd(s, FD_STDOUT, s->output_done[0] ? 0 : out_events);
	if (!s->closed && !s->tty)
		watch_fd(s, FD_STDERR, !s->output_done[1] && room ? EPOLLIN : 0);
	if (!s->closed)
		watch_fd(s, FD_SETUP, EPOLLIN);
}

static void advance(struct session *s)
{
	if (!s->closed)
		flush_client(s);
	if (!s->closed)
		write_stdin(s);
	if (!s->closed)
		read_client(s);
	for (int i = 0; i < 2 && !s->closed; i++)
		read_output(s, i);
	if (s->closed)
		return;
	read_setup(s);
	finish(s);
	flush_client(s);
	if (s->closed)
		return;
	if (s->exit_queued && s->out_start == s->out_end) {
		session_close(s);
		return;
	}
	/* Done with the process's fds: with a pty, closing the master hangs up what is left. */
	if (s->exit_queued)
		for (int i = FD_STDIN; i <= FD_STDERR; i++)
			close_fd(s, i);
	update_interest(s);
}

static void on_fd(struct watch *self, uint32_t events)
{
	struct session_fd *f = container_of(self, struct session_fd, watch);
	struct session *s = f->session;
	if (s->closed)
		return;
	/* Gone while its frames wait: nothing it sent will be read now. */
	if (f == &s->fds[FD_CLIENT] && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && client_blocked(s)) {
		client_gone(s);
		return;
	}
	advance(s);
}

/* ---- start ---- */

/* The agent's environment, with the request's NAME=VALUE entries added or replacing. */
static char **exec_environment(char **extra)
{
	char **base = environment_for_agent();
	size_t count = 0, added = 0;
	while (base[count])
		count++;
	while (extra[added])
		added++;
	char **envp = calloc(count + added + 1, sizeof *envp);
	if (!envp)
		return NULL;
	size_t n = 0;
	for (size_t i = 0; i < count; i++) {
		size_t name = strcspn(base[i], "=");
		bool replaced = false;
		for (size_t j = 0; j < added && !replaced; j++)
			replaced = strncmp(extra[j], base[i], name + 1) == 0;
		if (!replaced)
			envp[n++] = base[i];
	}
	for (size_t j = 0; j < added; j++) {
		/* A name given twice in the request: the last one counts. */
		size_t name = strcspn(extra[j], "=");
		bool later = false;
		for (size_t k = j + 1; k < added && !later; k++)
			later = strncmp(extra[k], extra[j], name + 1) == 0;
		if (!later)
			envp[n++] = extra[j];
	}
	return envp;
}

/* The pty's two ends, the window size set. -1 with *what naming the step. */
static int open_pty(struct session *s, int *peer, const struct control_request *request, const char **what)
{
	int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	if (master < 0) {
		*what = "open /dev/ptmx";
		return -1;
	}
	int unlock = 0;
	struct winsize size = { .ws_col = (unsigned short)request->cols, .ws_row = (unsigned short)request->rows };
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0) {
		*what = "unlock the pty (TIOCSPTLCK)";
	} else if ((*peer = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		*what = "open the pty's peer (TIOCGPTPEER)";
	} else if (ioctl(master, TIOCSWINSZ, &size) < 0) {
		*what = "set the pty's window size";
		int err = errno;
		close(*peer);
		errno = err;
	} else {
		s->fds[FD_STDOUT].fd = master;
		s->output_done[1] = true; /* one stream: the terminal */
		return 0;
	}
	int err = errno;
	close(master);
	errno = err;
	return -1;
}

/* Three pipes; PID 1's ends non-blocking, the child's as a program expects them. */
static int open_pipes(struct session *s, int child_ends[3], const char **what)
{
	int pipes[3][2];
	for (int i = 0; i < 3; i++) {
		if (pipe2(pipes[i], O_CLOEXEC) < 0) {
			int err = errno;
			for (int j = 0; j < i; j++) {
				close(pipes[j][0]);
				close(pipes[j][1]);
			}
			*what = "make the stdio pipes";
			errno = err;
			return -1;
		}
	}
	/* stdin: the child reads [0]; stdout, stderr: the child writes [1]. */
	child_ends[0] = pipes[0][0];
	child_ends[1] = pipes[1][1];
	child_ends[2] = pipes[2][1];
	s->fds[FD_STDIN].fd = pipes[0][1];
	s->fds[FD_STDOUT].fd = pipes[1][0];
	s->fds[FD_STDERR].fd = pipes[2][0];
	for (int which = FD_STDIN; which <= FD_STDERR; which++) {
		if (fcntl(s->fds[which].fd, F_SETFL, O_NONBLOCK) < 0) {
			int err = errno;
			for (int i = 0; i < 3; i++) {
				close(child_ends[i]);
				child_ends[i] = -1;
			}
			*what = "make the stdio pipes non-blocking";
			errno = err;
			return -1;
		}
	}
	return 0;
}

void exec_op_start(int client, struct control_request *request)
{
	if (!control_agent_running()) {
		refuse(client, "carapace-init: exec: the agent has exited; the sandbox is stopping");
		return;
	}
	if (session_count >= EXEC_MAX) {
		refuse(client, "carapace-init: exec: %d execs are running, the most at once: wait for one to end",
		       EXEC_MAX);
		return;
	}
	struct session *s = calloc(1, sizeof *s);
	char **envp = exec_environment(request->env);
	if (!s || !envp) {
		free(s);
		free(envp);
		refuse(client, "carapace-init: exec: out of memory");
		return;
	}
	s->tty = request->tty;
	for (int i = 0; i < FD_COUNT; i++)
		s->fds[i] = (struct session_fd){ .watch.handle = on_fd, .fd = -1, .session = s };
	s->fds[FD_CLIENT].fd = client;

	const char *what = "";
	int child_stdio[3] = { -1, -1, -1 };
	int setup[2] = { -1, -1 };
	int peer = -1;
	int rc = s->tty ? open_pty(s, &peer, request, &what) : open_pipes(s, child_stdio, &what);
	if (rc == 0 && s->tty)
		child_stdio[0] = child_stdio[1] = child_stdio[2] = peer;
	if (rc == 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, setup) < 0) {
		what = "socketpair for the child's setup";
		rc = -1;
	}
	pid_t pid = -1;
	if (rc == 0) {
		struct exec_child_plan plan = { .argv = request->argv,
						.envp = envp,
						.cwd = request->cwd,
						.tty = s->tty,
						.stdio = { child_stdio[0], child_stdio[1], child_stdio[2] },
						.setup_fd = setup[1] };
		pid = fork();
		if (pid == 0)
			exec_child_run(&plan);
		if (pid < 0)
			what = "fork";
	}
	int err = errno;
	free(envp);
	for (int i = 0; i < 3; i++)
		if (child_stdio[i] >= 0 && (i == 0 || child_stdio[i] != child_stdio[0]))
			close(child_stdio[i]);
	if (setup[1] >= 0)
		close(setup[1]);
	if (pid < 0) {
		if (setup[0] >= 0)
			close(setup[0]);
		for (int i = FD_STDIN; i <= FD_STDERR; i++)
			if (s->fds[i].fd >= 0)
				close(s->fds[i].fd);
		free(s);
		refuse(client, "carapace-init: exec: %s: %s", what, strerror(err));
		return;
	}
	s->pid = pid;
	s->fds[FD_SETUP].fd = setup[0];
	s->next = sessions;
	sessions = s;
	session_count++;
	advance(s);
}

/* ---- the process's end ---- */

static struct session *session_of(pid_t pid)
{
	for (struct session *s = sessions; s; s = s->next)
		if (s->pid == pid && !s->reaped)
			return s;
	return NULL;
}

void exec_before_reap(pid_t pid)
{
	struct session *s = session_of(pid);
	if (s && kill(-pid, SIGHUP) < 0 && errno != ESRCH)
		report_warning(EXEC_STEP, errno, "SIGHUP to what is left of process group %d", (int)pid);
}

void exec_reaped(pid_t pid, int status)
{
	struct session *s = session_of(pid);
	if (!s)
		return;
	s->reaped = true;
	s->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	advance(s);
}

bool exec_drained(void)
{
	return sessions == NULL;
}
