/*
 * File descriptors sent with a control request line (SCM_RIGHTS), and the one op that takes one:
 * {"op":"log"[,"limit":N]} with the agent's next log file (logs.c; docs/architecture.md, "The
 * control socket").
 *
 * control-dispatch.c consumes each request line with room for a few descriptors (a plain recv
 * would have the kernel close them unseen), received close-on-exec so that no exec'd process or
 * agent inherits a host file. Here: taking them out of the message, and the log op. Any other op
 * that came with one closes it and refuses the request (control-dispatch.c's dispatch).
 *
 * Security: the descriptor is the host's choice, trusted as the request is; PID 1 checks only
 * that it is a regular file open for appending, as it checks --log-fd, and never opens a path.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control.h"

void passed_fds_take(struct msghdr *message, struct passed_fds *passed)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(message); c; c = CMSG_NXTHDR(message, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int passed_fd;
			memcpy(&passed_fd, CMSG_DATA(c) + i * sizeof(int), sizeof passed_fd);
			if (passed->count < PASSED_FDS_MAX)
				passed->fds[passed->count++] = passed_fd;
			else
				close(passed_fd);
		}
	}
}

void passed_fds_close(struct passed_fds *passed)
{
	for (size_t i = 0; i < passed->count; i++)
		close(passed->fds[i]);
	passed->count = 0;
}

/* {"op":"log"[,"limit":N]} with one fd: the agent's output goes to that file from the next line. */
void control_log_op(int fd, const struct control_request *request, struct passed_fds *passed)
{
	if (passed->count != 1 || passed->truncated) {
		size_t count = passed->count;
		passed_fds_close(passed);
		control_reply_error_and_close(fd, EINVAL, "log: expected one file descriptor with the request (SCM_RIGHTS), got %s",
					      count == 0 ? "none" : "more");
		return;
	}
	char why[200];
	int log_fd = passed->fds[0];
	passed->count = 0;
	if (logs_switch(log_fd, request->log_limit, why, sizeof why) < 0)
		control_reply_error_and_close(fd, errno, "log: %s", why);
	else
		control_reply_and_close(fd, "{\"ok\":true}\n");
}
