/*
 * carapace: the command on PATH. It serves one case itself and hands every other to the CLI:
 *
 *   carapace run [--env NAME=VALUE]... -- CMD [ARGS...]    through a running gateway, when one answers
 *   carapace ANYTHING ELSE                                  execs dist/cli/carapace.js (Node), unchanged
 *
 * Why: a gateway keeps a one-off sandbox of the default policy ready for each user's next
 * `carapace run` (src/gateway/sandboxes/one-off-runs.ts). What is left of such a run is a socket
 * round trip and an exec in that sandbox, a few milliseconds; starting Node to send it costs 30
 * (the `startup` rows of docs/benchmarks.md). So the plain run, the one a user types most, is sent
 * from here, exactly as src/cli/run/run-gateway.ts sends it: `GET /v1/runs` upgraded, the exec's
 * JSON line, then the init's exec frames both ways (docs/gateway.md, "carapace run and the
 * gateway").
 *
 * Anything else - another option, no gateway answering, one that declines or does not answer
 * within PATIENCE_MS - and the arguments go to the CLI untouched, which runs the sandbox in its own
 * process (its --help, its errors). An argument that is not valid UTF-8 is refused, for every
 * command (refuse_non_utf8): neither Node nor the gateway's JSON could pass it on unchanged. The
 * command is never sent twice: a gateway that declines has not run it, and once it answered 101
 * there is no going back.
 *
 * Security: this runs as the calling user and does what they could do with the CLI; the gateway
 * decides who the caller is (the kernel, by the socket they can connect to), never this program.
 * Bytes from the sandbox go to this process's stdout and stderr as they are, as the sandbox's own
 * output would in an in-process run; the gateway's own word (why a command could not start) is
 * escaped as the Node CLI escapes it (front-text.c). The terminal is put back as it was on every
 * way out.
 *
 * This file: main, the hand-over to the CLI, and the exec's frames. The request line is made in
 * front-request.c, the gateway found and the upgrade sent in front-gateway.c, the gateway's word
 * escaped for the terminal in front-text.c.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "front.h"

/* The CLI, from this program's directory (the sanitizer build lives deeper: it says so). */
#ifndef CLI_FROM_SELF
#define CLI_FROM_SELF "../dist/cli/carapace.js"
#endif
#define FRAME_HEADER 5
#define FRAME_PAYLOAD_MAX (64 * 1024)

enum {
	FRAME_STDIN = 0x01,
	FRAME_STDIN_EOF = 0x02,
	FRAME_RESIZE = 0x03,
	FRAME_SIGNAL = 0x04,
	FRAME_STDOUT = 0x11,
	FRAME_STDERR = 0x12,
	FRAME_EXIT = 0x13,
	FRAME_ERROR = 0x14,
};

static char **cli_argv;
static struct termios saved_termios;
static bool termios_saved;

static void restore_terminal(void)
{
	if (termios_saved)
		(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);
	termios_saved = false;
}

/* Ends the run with RUN_LOST and a line saying which step failed. */
_Noreturn void front_fail(const char *step)
{
	int saved = errno;
	restore_terminal();
	fprintf(stderr, "carapace: run through the gateway: %s: %s\n", step, strerror(saved));
	exit(RUN_LOST);
}

/* Hands the untouched arguments to the CLI: dist/cli/carapace.js, beside this program's native/. */
static _Noreturn void exec_cli(void)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n < 0) {
		perror("carapace: readlink /proc/self/exe");
		exit(127);
	}
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (slash == NULL) {
		fprintf(stderr, "carapace: cannot tell where this program lives (%s)\n", self);
		exit(127);
	}
	*slash = '\0';
	char cli[PATH_MAX + 32];
	if (snprintf(cli, sizeof cli, "%s/" CLI_FROM_SELF, self) >= (int)sizeof cli) {
		fprintf(stderr, "carapace: the path of %s is too long\n", self);
		exit(127);
	}
	execv(cli, cli_argv);
	fprintf(stderr, "carapace: cannot run the CLI %s: %s (run npm run build)\n", cli, strerror(errno));
	exit(127);
}

/*
 * Hands the run to the CLI with --no-gateway after `run`: the gateway took the connection and said
 * nothing for PATIENCE_MS (already said on stderr), and the CLI would otherwise ask it again and
 * wait as long before running the sandbox itself.
 */
static _Noreturn void exec_cli_without_gateway(int argc, char **argv)
{
	char **args = calloc((size_t)argc + 2, sizeof *args);
	if (args == NULL) {
		perror("carapace: calloc");
		exit(127);
	}
	args[0] = argv[0];
	args[1] = argv[1]; /* run */
	args[2] = (char *)"--no-gateway";
	for (int i = 2; i < argc; i++)
		args[i + 1] = argv[i];
	cli_argv = args;
	exec_cli();
}

/* ---- the exec ------------------------------------------------------------------------------- */

struct out {
	unsigned char *data;
	size_t len, cap;
};

static void queue_frame(struct out *o, int type, const void *payload, uint32_t len)
{
	if (o->len + FRAME_HEADER + len > o->cap) {
		size_t cap = o->cap ? o->cap : 4096;
		while (cap < o->len + FRAME_HEADER + len)
			cap *= 2;
		unsigned char *grown = realloc(o->data, cap);
		if (grown == NULL)
			front_fail("allocate a frame");
		o->data = grown;
		o->cap = cap;
	}
	unsigned char *p = o->data + o->len;
	p[0] = (unsigned char)type;
	p[1] = (unsigned char)(len >> 24);
	p[2] = (unsigned char)(len >> 16);
	p[3] = (unsigned char)(len >> 8);
	p[4] = (unsigned char)len;
	if (len > 0)
		memcpy(p + FRAME_HEADER, payload, len);
	o->len += FRAME_HEADER + len;
}

static uint32_t be32(const unsigned char *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void window_size(unsigned *cols, unsigned *rows)
{
	struct winsize ws;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
		*cols = ws.ws_col;
		*rows = ws.ws_row;
	} else {
		*cols = 80;
		*rows = 24;
	}
}

/*
 * Output the sandbox sent, to fd 1 or 2; once one cannot take it, what follows is dropped. A
 * closed pipe (`| head -1`) is what SIGPIPE tells a local process: the command gets SIGPIPE, as
 * it would have writing to that pipe itself, rather than run on writing into nothing.
 */
static void deliver(int fd, bool *broken, struct out *o, const unsigned char *bytes, size_t len)
{
	if (*broken || front_write_all(fd, bytes, len))
		return;
	*broken = true;
	if (errno == EPIPE) {
		uint32_t s = SIGPIPE;
		unsigned char sig[4] = { (unsigned char)(s >> 24), (unsigned char)(s >> 16), (unsigned char)(s >> 8),
					 (unsigned char)s };
		queue_frame(o, FRAME_SIGNAL, sig, 4);
	}
}

static int run_exec(int sock, bool tty, bool background, const char *rest, size_t rest_len)
{
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGWINCH);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		front_fail("block signals");
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0)
		front_fail("signalfd");
	signal(SIGPIPE, SIG_IGN);

	static unsigned char in[FRAME_HEADER + FRAME_PAYLOAD_MAX];
	size_t in_len = rest_len;
	memcpy(in, rest, rest_len);
	struct out out = { 0 };
	bool stdin_open = !background, out_broken = false, err_broken = false;
	char *failure = NULL;
	if (background)
		queue_frame(&out, FRAME_STDIN_EOF, NULL, 0);

	for (;;) {
		/* Frames that arrived: output written, the exit taken. */
		while (in_len >= FRAME_HEADER) {
			uint32_t len = be32(in + 1);
			if (len > FRAME_PAYLOAD_MAX) {
				errno = EPROTO;
				front_fail("a frame from the gateway over 64 KiB");
			}
			if (in_len < FRAME_HEADER + len)
				break;
			const unsigned char *payload = in + FRAME_HEADER;
			switch (in[0]) {
			case FRAME_STDOUT:
				deliver(STDOUT_FILENO, &out_broken, &out, payload, len);
				break;
			case FRAME_STDERR:
				deliver(STDERR_FILENO, &err_broken, &out, payload, len);
				break;
			case FRAME_ERROR:
				free(failure);
				failure = front_printable_text(payload, len);
				break;
			case FRAME_EXIT:
				if (len != 4) {
					errno = EPROTO;
					front_fail("an exit frame of the wrong size");
				}
				restore_terminal();
				if (failure != NULL)
					fprintf(stderr, "%s\n", failure);
				return (int)be32(payload);
			default:
				errno = EPROTO;
				front_fail("a frame of unknown type from the gateway");
			}
			memmove(in, in + FRAME_HEADER + len, in_len - FRAME_HEADER - len);
			in_len -= FRAME_HEADER + len;
		}

		/* stdin is read only once what was read before has gone out: the init takes it as fast
		 * as the command reads it, and meanwhile its output must keep flowing. */
		struct pollfd p[3] = {
			{ .fd = sock, .events = POLLIN | (out.len > 0 ? POLLOUT : 0) },
			{ .fd = sfd, .events = POLLIN },
			{ .fd = stdin_open && out.len == 0 ? STDIN_FILENO : -1, .events = POLLIN },
		};
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			front_fail("poll");
		}
		if (p[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
				if (si.ssi_signo == SIGWINCH) {
					if (tty) {
						unsigned cols, rows;
						window_size(&cols, &rows);
						unsigned char size[4] = { (unsigned char)(cols >> 8), (unsigned char)cols,
									  (unsigned char)(rows >> 8), (unsigned char)rows };
						queue_frame(&out, FRAME_RESIZE, size, 4);
					}
				} else {
					uint32_t s = si.ssi_signo;
					unsigned char sig[4] = { (unsigned char)(s >> 24), (unsigned char)(s >> 16),
								 (unsigned char)(s >> 8), (unsigned char)s };
					queue_frame(&out, FRAME_SIGNAL, sig, 4);
				}
			}
		}
		if (p[2].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
			unsigned char buf[FRAME_PAYLOAD_MAX];
			ssize_t n = p[2].revents & POLLNVAL ? 0 : read(STDIN_FILENO, buf, sizeof buf);
			if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
				/* again */
			} else if (n <= 0) {
				stdin_open = false;
				queue_frame(&out, FRAME_STDIN_EOF, NULL, 0);
			} else {
				queue_frame(&out, FRAME_STDIN, buf, (uint32_t)n);
			}
		}
		if ((p[0].revents & POLLOUT) && out.len > 0) {
			ssize_t n = send(sock, out.data, out.len, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				/* the gateway went away: what it says (or its silence) comes through POLLIN */
				out.len = 0;
			} else if (n > 0) {
				memmove(out.data, out.data + n, out.len - (size_t)n);
				out.len -= (size_t)n;
			}
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(sock, in + in_len, sizeof in - in_len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				restore_terminal();
				if (failure != NULL) {
					fprintf(stderr, "carapace: %s\n", failure); /* the command did not start */
				} else {
					fprintf(stderr, "carapace: the gateway went away (stopped or restarted) before the command ended: the run was killed\n");
				}
				return RUN_LOST;
			}
			in_len += (size_t)n;
		}
	}
}

/*
 * An argument that is not valid UTF-8 is refused, whatever the command: Node reads arguments as
 * text (a byte it cannot decode becomes U+FFFD), and the gateway's requests are JSON text, so such
 * a file name or command argument would be used changed, silently. One line, exit 2 (a usage
 * error, as the CLI's), before anything runs.
 */
static void refuse_non_utf8(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (front_valid_utf8(argv[i]))
			continue;
		char *shown = front_printable_text((const unsigned char *)argv[i], strlen(argv[i]));
		fprintf(stderr,
			"carapace: argument %d (\"%s\") is not valid UTF-8: Carapace reads its arguments as text and "
			"would use another name; rename it, or let a shell inside the sandbox name it (sh -c 'cmd ./*')\n",
			i, shown);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	cli_argv = argv;
	refuse_non_utf8(argc, argv);
	if (argc < 4 || strcmp(argv[1], "run") != 0)
		exec_cli();

	/* In the background of its terminal (`carapace run -- job &`), reading the terminal or making it
	 * raw would stop this process (SIGTTIN, SIGTTOU): the command's stdin then ends at once, as
	 * src/cli/run/run-gateway.ts does too. */
	bool background = isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) != getpgrp();
	bool tty = !background && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
	unsigned cols = 80, rows = 24;
	if (tty)
		window_size(&cols, &rows);
	char *line = front_request_line(argc, argv, tty, cols, rows);
	if (line == NULL)
		exec_cli();
	char path[PATH_MAX];
	if (!front_gateway_socket(path, sizeof path))
		exec_cli();
	static char rest[HEAD_MAX];
	size_t rest_len = 0;
	int sock = front_open_run(path, line, rest, &rest_len);
	free(line);
	if (sock == FRONT_NO_ANSWER)
		exec_cli_without_gateway(argc, argv);
	if (sock < 0)
		exec_cli();

	if (tty) {
		if (tcgetattr(STDIN_FILENO, &saved_termios) < 0)
			front_fail("tcgetattr");
		termios_saved = true;
		struct termios raw = saved_termios;
		cfmakeraw(&raw);
		if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) < 0)
			front_fail("tcsetattr");
	}
	return run_exec(sock, tty, background, rest, rest_len);
}
