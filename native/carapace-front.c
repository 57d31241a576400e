/*
 * carapace: the command on PATH. It serves one case itself and hands every other to the CLI:
 *
 *   carapace run [--env NAME=VALUE]... -- CMD [ARGS...]    through a running gateway, when one answers
 *   carapace ANYTHING ELSE                                  execs dist/cli/carapace.js (Node), unchanged
 *
 * Why: a gateway keeps a one-off sandbox of the default policy ready for each user's next
 * `carapace run` (src/gateway/sandboxes/one-off-runs.ts). What is left of such a run is a socket round trip
 * and an exec in that sandbox, a few milliseconds; starting Node to send it costs 30 (the
 * `startup` rows of docs/benchmarks.md). So the plain run, the one a user types most, is sent from
 * here, exactly as src/cli/run/run-gateway.ts sends it: `GET /v1/runs` upgraded, the exec's JSON line,
 * then the init's exec frames both ways (docs/gateway.md, "carapace run and the gateway").
 *
 * Anything else - another option, a value that is not valid UTF-8, no gateway answering, one that
 * declines or does not answer within PATIENCE_MS - and the arguments go to the CLI untouched, which
 * runs the sandbox in its own process (its --help, its errors). The command is never sent twice:
 * a gateway that declines has not run it, and once it answered 101 there is no going back.
 *
 * Security: this runs as the calling user and does what they could do with the CLI; the gateway
 * decides who the caller is (the kernel, by the socket they can connect to), never this program.
 * Bytes from the sandbox go to this process's stdout and stderr as they are, as the sandbox's own
 * output would in an in-process run. The terminal is put back as it was on every way out.
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

/* The CLI, from this program's directory (the sanitizer build lives deeper: it says so). */
#ifndef CLI_FROM_SELF
#define CLI_FROM_SELF "../dist/cli/carapace.js"
#endif
#define PATIENCE_MS 15000
#define HEAD_MAX (16 * 1024)
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

/* Ends the run with a line saying which step failed (the command's own status otherwise). */
static void fail(const char *step)
{
	int saved = errno;
	restore_terminal();
	fprintf(stderr, "carapace: run through the gateway: %s: %s\n", step, strerror(saved));
	exit(1);
}

/* Hands the untouched arguments to the CLI: dist/cli/carapace.js, beside this program's native/. */
static void exec_cli(void)
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

/* ---- the request ----------------------------------------------------------------------------- */

struct text {
	char *data;
	size_t len, cap;
};

static void append(struct text *t, const char *bytes, size_t len)
{
	if (t->len + len + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 1024;
		while (cap < t->len + len + 1)
			cap *= 2;
		char *grown = realloc(t->data, cap);
		if (grown == NULL)
			fail("allocate the request");
		t->data = grown;
		t->cap = cap;
	}
	memcpy(t->data + t->len, bytes, len);
	t->len += len;
	t->data[t->len] = '\0';
}

static void append_str(struct text *t, const char *s)
{
	append(t, s, strlen(s));
}

/* Whether `s` is valid UTF-8 (JSON carries text: other bytes would reach the command changed). */
static bool valid_utf8(const unsigned char *s)
{
	while (*s) {
		int extra;
		uint32_t cp;
		if (*s < 0x80) {
			s++;
			continue;
		} else if ((*s & 0xe0) == 0xc0) {
			extra = 1;
			cp = *s & 0x1f;
		} else if ((*s & 0xf0) == 0xe0) {
			extra = 2;
			cp = *s & 0x0f;
		} else if ((*s & 0xf8) == 0xf0) {
			extra = 3;
			cp = *s & 0x07;
		} else {
			return false;
		}
		s++;
		for (int i = 0; i < extra; i++, s++) {
			if ((*s & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (*s & 0x3f);
		}
		static const uint32_t least[] = { 0, 0x80, 0x800, 0x10000 };
		if (cp < least[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
	}
	return true;
}

/* A JSON string of `s` (valid UTF-8): quotes, backslashes and control characters escaped. */
static void append_json(struct text *t, const char *s)
{
	append_str(t, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char esc[8];
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			append(t, esc, 2);
		} else if (*p < 0x20 || *p == 0x7f) {
			snprintf(esc, sizeof esc, "\\u%04x", *p);
			append(t, esc, 6);
		} else {
			append(t, (const char *)p, 1);
		}
	}
	append_str(t, "\"");
}

/* NAME=VALUE with NAME made of letters, digits and '_', not starting with a digit. */
static bool env_pair(const char *pair)
{
	const char *eq = strchr(pair, '=');
	if (eq == NULL || eq == pair || (pair[0] >= '0' && pair[0] <= '9'))
		return false;
	for (const char *p = pair; p < eq; p++) {
		bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			  *p == '_';
		if (!ok)
			return false;
	}
	return true;
}

/*
 * The exec's request line for `carapace run [--env N=V]... -- CMD...`, or NULL when the run is not
 * one this program sends (then the CLI takes it).
 */
static char *request_line(int argc, char **argv, bool tty, unsigned cols, unsigned rows)
{
	const char *envs[argc];
	int nenv = 0, i = 2;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *pair;
		if (strcmp(argv[i], "--env") == 0 && i + 1 < argc)
			pair = argv[++i];
		else if (strncmp(argv[i], "--env=", 6) == 0)
			pair = argv[i] + 6;
		else
			return NULL; /* any other option: the CLI's */
		if (!env_pair(pair) || !valid_utf8((const unsigned char *)pair))
			return NULL; /* the CLI says what is wrong with it */
		envs[nenv++] = pair;
	}
	if (i >= argc - 1)
		return NULL; /* no `--`, or no command after it */
	for (int j = i + 1; j < argc; j++)
		if (!valid_utf8((const unsigned char *)argv[j]))
			return NULL;

	struct text t = { 0 };
	append_str(&t, "{\"argv\":[");
	for (int j = i + 1; j < argc; j++) {
		if (j > i + 1)
			append_str(&t, ",");
		append_json(&t, argv[j]);
	}
	append_str(&t, "],\"env\":{");
	bool term_given = false;
	for (int k = 0; k < nenv; k++) {
		const char *eq = strchr(envs[k], '=');
		char name[eq - envs[k] + 1];
		memcpy(name, envs[k], (size_t)(eq - envs[k]));
		name[eq - envs[k]] = '\0';
		/* A name given twice: the last one counts, as in the CLI. */
		bool later = false;
		for (int m = k + 1; m < nenv; m++)
			if (strncmp(envs[m], envs[k], (size_t)(eq - envs[k]) + 1) == 0)
				later = true;
		if (later)
			continue;
		if (strcmp(name, "TERM") == 0)
			term_given = true;
		if (t.data[t.len - 1] != '{')
			append_str(&t, ",");
		append_json(&t, name);
		append_str(&t, ":");
		append_json(&t, eq + 1);
	}
	const char *term = getenv("TERM");
	if (!term_given && term != NULL && valid_utf8((const unsigned char *)term)) {
		if (t.data[t.len - 1] != '{')
			append_str(&t, ",");
		append_str(&t, "\"TERM\":");
		append_json(&t, term);
	}
	append_str(&t, "},\"tty\":");
	append_str(&t, tty ? "true" : "false");
	if (tty) {
		char size[64];
		snprintf(size, sizeof size, ",\"cols\":%u,\"rows\":%u", cols, rows);
		append_str(&t, size);
	}
	append_str(&t, "}\n");
	return t.data;
}

/* ---- the gateway ----------------------------------------------------------------------------- */

/* Formats into `out`; false when it does not fit (then the CLI takes the run). */
static bool format(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool format(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, size, fmt, ap);
	va_end(ap);
	return n >= 0 && (size_t)n < size;
}

/* The socket of the caller's gateway, as src/cli/gateway/gateway-endpoint.ts finds it; false if none fits. */
static bool gateway_socket(char *out, size_t size)
{
	const char *home = getenv("CARAPACE_HOME");
	bool homed = home != NULL && home[0] != '\0';
	uid_t uid = getuid();
	char run[PATH_MAX];
	bool ok;
	if (homed) {
		ok = format(run, sizeof run, "%s/run", home);
	} else if (uid == 0) {
		ok = format(run, sizeof run, "/run/carapace");
	} else {
		const char *xdg = getenv("XDG_RUNTIME_DIR");
		const char *tmp = getenv("TMPDIR");
		if (xdg != NULL && xdg[0] != '\0')
			ok = format(run, sizeof run, "%s/carapace", xdg);
		else
			ok = format(run, sizeof run, "%s/carapace-%u/carapace", tmp && tmp[0] ? tmp : "/tmp",
				    (unsigned)uid);
	}
	if (!ok)
		return false;
	if (uid != 0) {
		/* A member of the carapace group has a socket of their own on the system gateway. */
		char mine[PATH_MAX];
		if (format(mine, sizeof mine, "%s/users/%u.sock", homed ? run : "/run/carapace", (unsigned)uid) &&
		    access(mine, F_OK) == 0)
			return format(out, size, "%s", mine);
	}
	return format(out, size, "%s/gateway.sock", run);
}

static bool write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/*
 * Connects, sends the upgrade and the request line, and reads the answer's head. Returns the
 * socket after a 101 (with what followed the head in `rest`), or -1 when no gateway serves it.
 */
static int open_run(const char *path, const char *line, char *rest, size_t *rest_len)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof addr.sun_path)
		return -1;
	strcpy(addr.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		close(fd);
		return -1;
	}
	static const char upgrade[] = "GET /v1/runs HTTP/1.1\r\nHost: carapace\r\n"
				      "Connection: Upgrade\r\nUpgrade: carapace-stream\r\n\r\n";
	if (!write_all(fd, upgrade, sizeof upgrade - 1) || !write_all(fd, line, strlen(line))) {
		close(fd);
		return -1;
	}
	char head[HEAD_MAX];
	size_t len = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int ready = poll(&p, 1, PATIENCE_MS);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0) {
			fprintf(stderr, "carapace: the gateway at %s did not answer within %d s: running the sandbox in this process\n",
				path, PATIENCE_MS / 1000);
			close(fd);
			return -1;
		}
		ssize_t n = read(fd, head + len, sizeof head - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return -1;
		}
		len += (size_t)n;
		char *end = memmem(head, len, "\r\n\r\n", 4);
		if (end == NULL) {
			if (len == sizeof head) {
				close(fd);
				return -1;
			}
			continue;
		}
		if (len < 13 || memcmp(head, "HTTP/1.1 101 ", 13) != 0) {
			close(fd);
			return -1; /* declined (or an older gateway): the CLI runs it */
		}
		size_t used = (size_t)(end + 4 - head);
		*rest_len = len - used;
		memcpy(rest, end + 4, *rest_len);
		return fd;
	}
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
			fail("allocate a frame");
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
	if (*broken || write_all(fd, bytes, len))
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
		fail("block signals");
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0)
		fail("signalfd");
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
				fail("a frame from the gateway over 64 KiB");
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
				failure = strndup((const char *)payload, len);
				break;
			case FRAME_EXIT:
				if (len != 4) {
					errno = EPROTO;
					fail("an exit frame of the wrong size");
				}
				restore_terminal();
				if (failure != NULL)
					fprintf(stderr, "%s\n", failure);
				return (int)be32(payload);
			default:
				errno = EPROTO;
				fail("a frame of unknown type from the gateway");
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
			fail("poll");
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
				return 1;
			}
			in_len += (size_t)n;
		}
	}
}

int main(int argc, char **argv)
{
	cli_argv = argv;
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
	char *line = request_line(argc, argv, tty, cols, rows);
	if (line == NULL)
		exec_cli();
	char path[PATH_MAX];
	if (!gateway_socket(path, sizeof path))
		exec_cli();
	static char rest[HEAD_MAX];
	size_t rest_len = 0;
	int sock = open_run(path, line, rest, &rest_len);
	free(line);
	if (sock < 0)
		exec_cli();

	if (tty) {
		if (tcgetattr(STDIN_FILENO, &saved_termios) < 0)
			fail("tcgetattr");
		termios_saved = true;
		struct termios raw = saved_termios;
		cfmakeraw(&raw);
		if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) < 0)
			fail("tcsetattr");
	}
	return run_exec(sock, tty, background, rest, rest_len);
}
