/*
 * carapace-sendfd: sends one request line with a file descriptor to a sandbox's control socket,
 * and prints the answer line. Node.js cannot pass a descriptor over a Unix socket (SCM_RIGHTS), so
 * the gateway runs this for the control socket's `log` op: the agent's next log file (logs.c).
 *
 *   carapace-sendfd SOCKET LINE      (fd 3: the descriptor to send)
 *
 * LINE (no newline in it; one is added) goes out in one sendmsg with fd 3 attached, so that the
 * init receives the descriptor with the line. The answer, one line, is written to stdout. Exit 0
 * when an answer line came (whether it says ok is the caller's to read), 1 when the socket could
 * not be reached or closed before answering (one line on stderr says which step failed), 2 on
 * misuse. It parses nothing it receives, and waits on nothing but the socket: a sandbox whose
 * init is gone gives ECONNREFUSED or end of file.
 *
 * Static and libc only, like the other programs the host runs: no loader, no environment read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PASSED_FD 3
#define LINE_MAX_BYTES 4096
#define ANSWER_MAX 4096

static int fail(const char *step)
{
	fprintf(stderr, "carapace-sendfd: %s: %s\n", step, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: carapace-sendfd SOCKET LINE (fd 3: the descriptor to send)\n");
		return 2;
	}
	const char *path = argv[1];
	size_t len = strlen(argv[2]);
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof address.sun_path || len == 0 || len >= LINE_MAX_BYTES || strchr(argv[2], '\n')) {
		fprintf(stderr, "carapace-sendfd: a socket path shorter than %zu bytes and one line of 1 to %d bytes\n",
			sizeof address.sun_path, LINE_MAX_BYTES - 1);
		return 2;
	}
	if (fcntl(PASSED_FD, F_GETFD) < 0) {
		fprintf(stderr, "carapace-sendfd: fd %d (the descriptor to send): %s\n", PASSED_FD, strerror(errno));
		return 2;
	}
	strcpy(address.sun_path, path);

	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return fail("socket(AF_UNIX)");
	if (connect(sock, (struct sockaddr *)&address, sizeof address) < 0)
		return fail("connect to the control socket");

	char line[LINE_MAX_BYTES + 1];
	memcpy(line, argv[2], len);
	line[len] = '\n';
	struct iovec iov = { line, len + 1 };
	union {
		struct cmsghdr align;
		char space[CMSG_SPACE(sizeof(int))];
	} control;
	memset(&control, 0, sizeof control);
	struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
				  .msg_controllen = sizeof control.space };
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	int fd = PASSED_FD;
	memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
	ssize_t sent;
	do
		sent = sendmsg(sock, &message, MSG_NOSIGNAL);
	while (sent < 0 && errno == EINTR);
	if (sent < 0)
		return fail("send the request");
	if ((size_t)sent != len + 1) {
		/* A fresh connection takes a few bytes at once; anything else is not a socket we know. */
		errno = EIO;
		return fail("send the request whole");
	}

	char answer[ANSWER_MAX];
	size_t got = 0;
	while (got < sizeof answer) {
		ssize_t n = read(sock, answer + got, sizeof answer - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail("read the answer");
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (memchr(answer, '\n', got))
			break;
	}
	char *nl = memchr(answer, '\n', got);
	if (!nl) {
		errno = got == 0 ? ECONNRESET : EPROTO;
		return fail("read the answer line");
	}
	size_t answer_len = (size_t)(nl - answer) + 1;
	for (size_t off = 0; off < answer_len;) {
		ssize_t n = write(STDOUT_FILENO, answer + off, answer_len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail("write the answer");
		}
		off += (size_t)n;
	}
	return 0;
}
