/*
 * An exec session's frames from the client, in PID 1: STDIN (to the process's stdin, at most
 * IN_CHUNK bytes waiting for it to read), STDIN_EOF (its stdin closed; with a tty, the terminal's
 * EOF character), RESIZE (the pty's window size) and SIGNAL (to the process group). While STDIN
 * data waits, the client's frames are not read, except that a RESIZE or SIGNAL may overtake it.
 * A frame the protocol does not have ends the session, as a client gone away.
 */
#include <errno.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "exec.h"

#define CLIENT_READS_PER_WAKEUP 16

bool session_stdin_pending(const struct session *s)
{
	return s->stdin_off < s->stdin_len;
}

static void apply_eof(struct session *s)
{
	s->eof_wanted = false;
	if (s->stdin_closed)
		return;
	if (!s->tty) {
		session_close_fd(s, FD_STDIN);
		s->stdin_closed = true;
		return;
	}
	/* A terminal has no end of file: its EOF character is what a terminal's user types. */
	struct termios termios;
	s->stdin_buf[0] = tcgetattr(stdin_fd(s), &termios) == 0 ? termios.c_cc[VEOF] : 4;
	s->stdin_off = 0;
	s->stdin_len = 1;
}

void session_write_stdin(struct session *s)
{
	for (;;) {
		if (!session_stdin_pending(s)) {
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
				session_close_fd(s, FD_STDIN);
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
	if (waits && session_stdin_pending(s))
		return false;
	bool valid = (type == FRAME_STDIN && len <= FRAME_PAYLOAD_MAX) || (type == FRAME_STDIN_EOF && len == 0) ||
		     ((type == FRAME_RESIZE || type == FRAME_SIGNAL) && len == 4);
	if (!valid) {
		report_warning(EXEC_STEP, 0, "a frame of type 0x%02x and length %u from the client: closing the session",
			       type, (unsigned)len);
		session_client_gone(s);
		return false;
	}
	s->header_len = 0;
	s->frame_type = type;
	s->payload_left = len;
	s->small_len = 0;
	if (type == FRAME_STDIN_EOF) {
		s->eof_wanted = !s->stdin_closed;
		session_write_stdin(s);
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
		session_client_gone(s);
		return false;
	}
	*got = (size_t)n;
	return true;
}

void session_read_client(struct session *s)
{
	for (int i = 0; i < CLIENT_READS_PER_WAKEUP && !s->closed && !s->exit_queued; i++) {
		size_t got;
		if (s->payload_left > 0 && s->frame_type == FRAME_STDIN) {
			if (session_stdin_pending(s))
				return;
			size_t want = s->payload_left < IN_CHUNK ? s->payload_left : IN_CHUNK;
			if (!client_recv(s, s->stdin_buf, want, &got))
				return;
			s->payload_left -= got;
			s->stdin_off = 0;
			s->stdin_len = s->stdin_closed ? 0 : got;
			session_write_stdin(s);
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

/* Reading the client waits while STDIN data is in progress or held and the process has not read
 * what came before. */
bool session_client_blocked(const struct session *s)
{
	return session_stdin_pending(s) &&
	       ((s->payload_left > 0 && s->frame_type == FRAME_STDIN) || s->header_len == FRAME_HEADER);
}

