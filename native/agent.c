/*
 * The agent: PID 1's one child, restricted and then replaced by the agent's command.
 *
 * In the child, in this order - each step needs the one before, and each narrows what follows:
 *   1. rlimits (RLIMIT_CORE 0, --nofile, --nproc);
 *   2. no_new_privs: the kernel requires it before Landlock and seccomp for a process without
 *      CAP_SYS_ADMIN, and it makes setuid binaries inert (bwrap sets it too; we do not rely on it);
 *   3. Landlock (the ruleset PID 1 prepared), then, with --event-fd, the connect watch's filter
 *      (its listener goes to PID 1: connect-watch.c);
 *   4. seccomp, last, so that our own remaining system calls need not be allowed by it beyond
 *      write (the status line), rt_sigprocmask, rt_sigaction, execve and exit;
 *   5. {"event":"exec"} on the status fd, the signal mask and SIGPIPE back to what a fresh
 *      process expects, then execve. The status fd is close-on-exec: the
 *      successful execve closes it. If execve fails, the error line follows the exec line.
 *
 * Dumpability: PID 1 is not dumpable, and neither is this child until its execve, which resets
 * it. The agent itself stays dumpable (as any program started normally is): it runs as the
 * sandbox user, owns nothing the sandbox user should not see, and tools inside the sandbox read
 * their own /proc entries. Ptrace is denied to it by seccomp anyway.
 *
 * A failure exits the child with env(1)'s codes: 125 for ours, 126 when the command was found
 * but cannot be run (EACCES, ENOEXEC, ...), 127 when it was not found. PID 1 passes the child's
 * exit status through, so no separate channel is needed to carry the errno: the child has
 * already reported the failure, step and errno, on stderr and the status fd.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "init.h"

#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

static noreturn void exec_failed(const char *what, int err)
{
	/* Report with SIGPIPE ignored again, so a status fd nobody reads gives EPIPE, not death. */
	signal(SIGPIPE, SIG_IGN);
	die_with(err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_INVOKE, "exec", err, "%s", what);
}

/* execvp(3)'s search, without its fallback of running a file that has no #! line through
 * /bin/sh. Shared with the control socket's execs (exec-child.c). */
void exec_command(char **argv, char **envp, const char *path, char *what, size_t what_size)
{
	const char *command = argv[0];
	if (strchr(command, '/')) {
		execve(command, argv, envp);
		int err = errno;
		snprintf(what, what_size, "%s", command);
		errno = err;
		return;
	}

	if (!path || !*path)
		path = DEFAULT_PATH;
	int first_error = ENOENT;

	for (const char *dir = path;; dir++) {
		const char *colon = strchrnul(dir, ':');
		size_t dir_len = (size_t)(colon - dir);
		char candidate[PATH_MAX];
		/* An empty PATH entry means the current directory, as in execvp. */
		int n = snprintf(candidate, sizeof candidate, "%.*s/%s", (int)dir_len, dir_len ? dir : ".", command);
		if (n > 0 && (size_t)n < sizeof candidate) {
			execve(candidate, argv, envp);
			int err = errno;
			switch (err) {
			case ENOENT:
			case ENOTDIR:
			case ENAMETOOLONG:
				break; /* not here: try the next entry */
			case EACCES:
				/* Found but not runnable here; keep looking, as execvp does, and report
				 * this one if nothing better turns up. */
				if (first_error == ENOENT) {
					first_error = EACCES;
					snprintf(what, what_size, "%s", candidate);
				}
				break;
			default:
				snprintf(what, what_size, "%s", candidate);
				errno = err;
				return;
			}
		}
		if (*colon == '\0')
			break;
		dir = colon;
	}

	if (first_error == ENOENT)
		snprintf(what, what_size, "%s (searched PATH=%s)", command, path);
	errno = first_error;
}

static noreturn void agent_exec(const struct init_config *cfg, const struct landlock_plan *landlock,
				const struct seccomp_program *seccomp)
{
	/* With --log-fd: stdin /dev/null, stdout and stderr the pipes PID 1 reads. */
	logs_in_agent();

	const char *failed = "";
	if (rlimits_apply(cfg, &failed) < 0)
		die("rlimits", errno, "setrlimit %s", failed);

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		die("no_new_privs", errno, "prctl(PR_SET_NO_NEW_PRIVS)");

	if (landlock_enforce(landlock) < 0)
		die("landlock", errno, "landlock_restrict_self (ABI %d)", landlock->abi);

	/* Before the host's program, which denies installing filters. */
	connect_watch_install_in_agent();

	if (seccomp_install(seccomp) < 0)
		die("seccomp", errno, "install the filter of %u instructions", (unsigned)seccomp->count);

	struct status_line line;
	line_begin(&line, "exec");
	line_send(&line);

	/* Last, as signal dispositions and the mask survive execve: the agent starts with the mask
	 * init was started with and SIGPIPE at its default, as any program expects. */
	if (sigprocmask(SIG_SETMASK, pid1_agent_signal_mask(), NULL) < 0)
		die("agent", errno, "restore the signal mask");
	if (signal(SIGPIPE, SIG_DFL) == SIG_ERR)
		die("agent", errno, "restore SIGPIPE");

	char what[PATH_MAX + 64];
	exec_command(cfg->command, environment_for_agent(), environment_get("PATH"), what, sizeof what);
	exec_failed(what, errno);
}

pid_t agent_start(const struct init_config *cfg, const struct landlock_plan *landlock,
		  const struct seccomp_program *seccomp)
{
	pid_t pid = fork();
	if (pid < 0)
		die("agent", errno, "fork");
	if (pid == 0)
		agent_exec(cfg, landlock, seccomp);
	return pid;
}
