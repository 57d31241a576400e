/*
 * An exec session's traffic, in PID 1: the frames between the client and the exec'd process's
 * stdio, until the EXIT frame (exec.c starts the session and routes its process's end here; the
 * protocol and its bounds are described there).
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
#include <termios.h>
#include <unistd.h>

#include "exec.h"

static void on_fd(struct watch *self, uint32_t events);

/* ---- frames ---- */

static void put_be32(unsigned char *p, uint32_t value)
{
	p[0] = (unsigned char)(value >> 24);
	p[1] = (unsigned char)(value >> 16);
	p[2] = (unsigned char)(value >> 8);
	p[3] = (unsigned char)value;
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
void exec_refuse(int client, const char *fmt, ...)
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



void session_close_fd(struct session *s, int which)
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
		session_close_fd(s, i);
	exec_forget(s);
	free(s->error);
	loop_free_later(s);
}

/* The client is gone (or broke the protocol): the process is hung up, as by a closed terminal. */
void session_client_gone(struct session *s)
{
	hang_up(s);
	session_close(s);
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
			session_close_fd(s, FD_SETUP); /* exec'd, or failed and said why */
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
			session_client_gone(s);
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
		session_client_gone(s);
		return;
	}
	f->watched = wanted;
}

static void update_interest(struct session *s)
{
	/* EPOLLRDHUP: a client that goes away is noticed even while its frames are not read. */
	uint32_t client_events = s->exit_queued ? 0 : EPOLLRDHUP | (session_client_blocked(s) ? 0 : EPOLLIN);
	watch_fd(s, FD_CLIENT, client_events | (s->out_start < s->out_end ? EPOLLOUT : 0));
	bool room = out_room(s) >= FRAME_HEADER + 1;
	uint32_t out_events = !s->output_done[0] && room ? EPOLLIN : 0;
	if (s->tty)
		out_events |= session_stdin_pending(s) ? EPOLLOUT : 0;
	else if (!s->closed)
		watch_fd(s, FD_STDIN, session_stdin_pending(s) ? EPOLLOUT : 0);
	if (!s->closed)
		watch_fd(s, FD_STDOUT, s->output_done[0] ? 0 : out_events);
	if (!s->closed && !s->tty)
		watch_fd(s, FD_STDERR, !s->output_done[1] && room ? EPOLLIN : 0);
	if (!s->closed)
		watch_fd(s, FD_SETUP, EPOLLIN);
}

/* At most this much of what a client sends after EXIT is read and dropped before the session
 * closes anyway. */
#define DRAIN_MAX (16u << 20)

/* Reads and drops what the client sends, until it closes its end. */
static void drain(struct session *s)
{
	unsigned char scratch[4096];
	for (;;) {
		ssize_t n = recv(fd_of(s, FD_CLIENT), scratch, sizeof scratch, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0 || (s->drained += (size_t)n) > DRAIN_MAX) {
			session_close(s);
			return;
		}
	}
}

/*
 * The EXIT frame is out. Closing the connection now, with frames of the client's unread (stdin it
 * sent after the process was done: the end of an archive a `tar -x` did not need), would reset it,
 * and a reset can cost the client the EXIT frame still in its receive queue. So the session stops
 * writing (the client reads end of file after EXIT), reads and drops what still comes, and closes
 * once the client has closed its end too, which it does after EXIT.
 */
static void start_draining(struct session *s)
{
	for (int i = FD_STDIN; i < FD_COUNT; i++)
		session_close_fd(s, i);
	s->draining = true;
	if (shutdown(fd_of(s, FD_CLIENT), SHUT_WR) < 0) {
		session_close(s);
		return;
	}
	watch_fd(s, FD_CLIENT, EPOLLIN | EPOLLRDHUP);
	if (!s->closed)
		drain(s);
}

void session_advance(struct session *s)
{
	if (s->draining) {
		if (!s->closed)
			drain(s);
		return;
	}
	if (!s->closed)
		flush_client(s);
	if (!s->closed)
		session_write_stdin(s);
	if (!s->closed)
		session_read_client(s);
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
		start_draining(s);
		return;
	}
	/* Done with the process's fds: with a pty, closing the master hangs up what is left. */
	if (s->exit_queued)
		for (int i = FD_STDIN; i <= FD_STDERR; i++)
			session_close_fd(s, i);
	update_interest(s);
}

static void on_fd(struct watch *self, uint32_t events)
{
	struct session_fd *f = container_of(self, struct session_fd, watch);
	struct session *s = f->session;
	if (s->closed)
		return;
	/* Gone while its frames wait: nothing it sent will be read now. */
	if (f == &s->fds[FD_CLIENT] && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && session_client_blocked(s)) {
		session_client_gone(s);
		return;
	}
	session_advance(s);
}


void session_init(struct session *s, int client)
{
	for (int i = 0; i < FD_COUNT; i++)
		s->fds[i] = (struct session_fd){ .watch.handle = on_fd, .fd = -1, .session = s };
	s->fds[FD_CLIENT].fd = client;
}
