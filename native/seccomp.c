/*
 * Seccomp: the agent's system-call filter.
 *
 * The host generates the program (src/sandbox/seccomp/: an architecture check, then the denylist)
 * and passes it on --seccomp-fd as raw struct sock_filter[] in native byte order. We read it to
 * end of file in PID 1, before the fork, so that a malformed program fails before any agent
 * exists, and the agent child installs it last, after Landlock, right before execve: the filter
 * then binds the agent and every process it starts, and cannot be removed.
 *
 * We trust the program's content (it is the host's, not the agent's) but check its shape: a
 * whole number of instructions, at least one, at most BPF_MAXINSNS. The kernel verifies the rest.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "init.h"

#define SECCOMP_STEP "seccomp"

bool seccomp_filter_available(void)
{
	/* PR_GET_SECCOMP fails with EINVAL when the kernel lacks CONFIG_SECCOMP. Filter mode is then
	 * probed by asking for a filter at NULL: EFAULT means the mode exists, EINVAL that it does not. */
	if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0 && errno == EINVAL)
		return false;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, NULL, 0, 0) < 0 && errno == EFAULT)
		return true;
	return false;
}

static void report_program(const struct seccomp_program *program)
{
	struct status_line line;
	line_begin(&line, "seccomp");
	line_bool(&line, "installed", program->count > 0);
	line_number(&line, "instructions", program->count);
	line_send(&line);
}

void seccomp_read_program(int fd, struct seccomp_program *program)
{
	*program = (struct seccomp_program){ 0 };
	if (fd < 0) {
		report_program(program);
		return;
	}

	/* One byte more than the largest program allowed, to tell "too long" from "just fits". */
	const size_t max_bytes = BPF_MAXINSNS * sizeof(struct sock_filter);
	char *bytes = malloc(max_bytes + 1);
	if (!bytes)
		die(SECCOMP_STEP, ENOMEM, "allocate %zu bytes for the program", max_bytes + 1);
	size_t size = 0;
	for (;;) {
		ssize_t n = read(fd, bytes + size, max_bytes + 1 - size);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die(SECCOMP_STEP, errno, "read the program from --seccomp-fd %d", fd);
		}
		if (n == 0)
			break;
		size += (size_t)n;
		if (size > max_bytes)
			die(SECCOMP_STEP, E2BIG, "the program on --seccomp-fd %d is longer than %d instructions",
			    fd, BPF_MAXINSNS);
	}
	if (close(fd) < 0)
		die(SECCOMP_STEP, errno, "close --seccomp-fd %d", fd);

	if (size == 0)
		die(SECCOMP_STEP, EINVAL, "the program on --seccomp-fd %d is empty", fd);
	if (size % sizeof(struct sock_filter) != 0)
		die(SECCOMP_STEP, EINVAL, "the program on --seccomp-fd %d is %zu bytes, not a multiple of %zu",
		    fd, size, sizeof(struct sock_filter));

	program->filter = (struct sock_filter *)bytes;
	program->count = (unsigned short)(size / sizeof(struct sock_filter));
	report_program(program);
}

/* In the agent child, after no_new_privs. Returns -1 with errno set on failure. */
int seccomp_install(const struct seccomp_program *program)
{
	if (program->count == 0)
		return 0;
	struct sock_fprog fprog = { .len = program->count, .filter = program->filter };
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0);
}
