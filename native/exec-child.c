/*
 * The control socket's `exec` op, in the child PID 1 forked for it: the agent's restrictions,
 * then execve.
 *
 * The process a gateway runs in a sandbox (`sandbox exec`, `sandbox connect`) must be exactly as
 * confined as the agent: the same rlimits, no_new_privs, the same Landlock ruleset (the fd PID 1
 * kept from start-up), the connect watch's filter (its listener goes to PID 1 like the agent's)
 * and the same seccomp program (kept in PID 1's memory), in the agent's order (agent.c says why
 * that order). Each exec'd process gets a Landlock domain of its own, made from the same ruleset:
 * with ABI >= 6 it can neither signal the agent's processes nor reach their abstract unix sockets,
 * nor they its (the gateway signals the agent with the `signal` op).
 *
 * Before that, in this order: a session of its own (setsid: its process group is what SIGNAL
 * frames and the hang-up reach, and with a tty the pty becomes its controlling terminal,
 * TIOCSCTTY), its fds 0, 1 and 2 (the pty's peer, or the pipes PID 1 reads and writes), every
 * other fd closed but the two it still needs (the setup socket and the ruleset), its working
 * directory. It runs as PID 1's child, not dumpable until its execve (PID 1 is not), with PID 1's
 * signals blocked: a SIGHUP sent to it before it could make its group is delivered, and ends it,
 * when the mask is restored right before execve.
 *
 * A failure is reported on the setup socket ("E" and one line: step, what, strerror), which PID 1
 * turns into an ERROR frame, and ends the child with env(1)'s codes: 125 for ours, 126 when the
 * command cannot be run, 127 when it is not found. A successful execve closes the setup socket
 * (close-on-exec): end of file there tells PID 1 the command runs.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control.h"

static struct {
	const struct init_config *cfg;
	const struct landlock_plan *landlock;
	const struct seccomp_program *seccomp;
} kept;

void exec_keep_confinement(const struct init_config *cfg, const struct landlock_plan *landlock,
			   const struct seccomp_program *seccomp)
{
	kept.cfg = cfg;
	kept.landlock = landlock;
	kept.seccomp = seccomp;
}

static noreturn __attribute__((format(printf, 5, 6))) void fail(int sock, int code, const char *step, int err,
								const char *fmt, ...)
{
	char what[PATH_MAX + 128];
	va_list args;
	va_start(args, fmt);
	vsnprintf(what, sizeof what, fmt, args);
	va_end(args);
	char message[sizeof what + 256];
	int n = err ? snprintf(message, sizeof message, "Ecarapace-init: %s: %s: %s", step, what, strerror(err))
		    : snprintf(message, sizeof message, "Ecarapace-init: %s: %s", step, what);
	if (n > 0)
		(void)send(sock, message, (size_t)n < sizeof message ? (size_t)n : sizeof message - 1, MSG_NOSIGNAL);
	_exit(code);
}

/* Closes every fd from 3 on but `a` and `b` (either may be -1). */
static int close_all_except(int a, int b)
{
	int low = a < b ? a : b, high = a < b ? b : a;
	unsigned next = 3;
	int keep[2] = { low, high };
	for (int i = 0; i < 2; i++) {
		if (keep[i] < (int)next)
			continue;
		if ((unsigned)keep[i] > next && close_range(next, (unsigned)keep[i] - 1, 0) < 0)
			return -1;
		next = (unsigned)keep[i] + 1;
	}
	return close_range(next, ~0U, 0);
}

static const char *path_of(char **envp)
{
	for (char **entry = envp; *entry; entry++)
		if (strncmp(*entry, "PATH=", 5) == 0)
			return *entry + 5;
	return NULL;
}

noreturn void exec_child_run(const struct exec_child_plan *plan)
{
	int sock = plan->setup_fd;
	if (setsid() < 0)
		fail(sock, EXIT_INIT_FAILED, "exec", errno, "setsid");
	if (plan->tty && ioctl(plan->stdio[0], TIOCSCTTY, 0) < 0)
		fail(sock, EXIT_INIT_FAILED, "exec", errno, "make the pty the controlling terminal (TIOCSCTTY)");
	for (int i = 0; i < 3; i++)
		if (dup2(plan->stdio[i], i) < 0)
			fail(sock, EXIT_INIT_FAILED, "exec", errno, "dup2 onto fd %d", i);
	/* PID 1's fds are all close-on-exec; closing them now means none of them is held through the
	 * restrictions either. */
	int ruleset = kept.landlock->ruleset_fd;
	if (close_all_except(sock, ruleset) < 0)
		fail(sock, EXIT_INIT_FAILED, "exec", errno, "close PID 1's fds");
	if (plan->cwd && chdir(plan->cwd) < 0)
		fail(sock, EXIT_INIT_FAILED, "exec", errno, "chdir %s", plan->cwd);

	const char *failed = "";
	if (rlimits_apply(kept.cfg, &failed) < 0)
		fail(sock, EXIT_INIT_FAILED, "rlimits", errno, "setrlimit %s", failed);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail(sock, EXIT_INIT_FAILED, "no_new_privs", errno, "prctl(PR_SET_NO_NEW_PRIVS)");
	if (landlock_enforce(kept.landlock) < 0)
		fail(sock, EXIT_INIT_FAILED, "landlock", errno, "landlock_restrict_self (ABI %d)", kept.landlock->abi);
	int watch_error;
	if (connect_watch_install(sock, &watch_error) < 0)
		fail(sock, EXIT_INIT_FAILED, "connect_watch", errno, "send the listener fd to PID 1");
	if (seccomp_install(kept.seccomp) < 0)
		fail(sock, EXIT_INIT_FAILED, "seccomp", errno, "install the filter of %u instructions",
		     (unsigned)kept.seccomp->count);

	if (sigprocmask(SIG_SETMASK, pid1_agent_signal_mask(), NULL) < 0)
		fail(sock, EXIT_INIT_FAILED, "exec", errno, "restore the signal mask");
	if (signal(SIGPIPE, SIG_DFL) == SIG_ERR)
		fail(sock, EXIT_INIT_FAILED, "exec", errno, "restore SIGPIPE");

	char what[PATH_MAX + 64];
	exec_command(plan->argv, plan->envp, path_of(plan->envp), what, sizeof what);
	int err = errno;
	fail(sock, err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_INVOKE, "exec", err, "%s", what);
}
