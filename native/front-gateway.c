/*
 * carapace (the front): which gateway the caller talks to, and the upgrade that hands it the run.
 * See carapace-front.c.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "front.h"

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
bool front_gateway_socket(char *out, size_t size)
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

bool front_write_all(int fd, const void *buf, size_t len)
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
 * socket after a 101 (with what followed the head in `rest`), FRONT_NO_ANSWER when the gateway
 * says nothing within PATIENCE_MS, or -1 when no gateway serves it.
 */
int front_open_run(const char *path, const char *line, char *rest, size_t *rest_len)
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
	if (!front_write_all(fd, upgrade, sizeof upgrade - 1) || !front_write_all(fd, line, strlen(line))) {
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
			return FRONT_NO_ANSWER;
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
			/* Declined (or an older gateway): the CLI runs it. Nothing is said here: the CLI
			 * asks again and says why in one line (src/cli/run/run-gateway.ts), once a run. */
			return -1;
		}
		size_t used = (size_t)(end + 4 - head);
		*rest_len = len - used;
		memcpy(rest, end + 4, *rest_len);
		return fd;
	}
}
