/*
 * Resource limits.
 *
 * The agent gets RLIMIT_CORE 0 always (a core dump would write the agent's memory, which may hold
 * secrets the proxy injected into its responses, to a file), and RLIMIT_NOFILE / RLIMIT_NPROC
 * from --nofile / --nproc, soft and hard alike so that the agent cannot raise them again.
 * RLIMIT_NPROC counts processes of the sandbox's uid; cgroup limits (set by the host) are the
 * real bound on the sandbox, this is a second one that needs no cgroup.
 *
 * PID 1 itself raises its soft RLIMIT_NOFILE to the hard limit, as each relayed connection costs
 * it six fds (two sockets, two pipes); the agent gets the original soft limit back unless --nofile
 * says otherwise.
 */
#include <errno.h>
#include <sys/resource.h>

#include "init.h"

static struct rlimit nofile_at_start;

void rlimits_raise_for_pid1(void)
{
	if (getrlimit(RLIMIT_NOFILE, &nofile_at_start) < 0)
		die("rlimits", errno, "getrlimit RLIMIT_NOFILE");
	struct rlimit raised = { .rlim_cur = nofile_at_start.rlim_max, .rlim_max = nofile_at_start.rlim_max };
	if (setrlimit(RLIMIT_NOFILE, &raised) < 0)
		die("rlimits", errno, "raise PID 1's RLIMIT_NOFILE to its hard limit %llu",
		    (unsigned long long)raised.rlim_max);
}

void rlimits_report(const struct init_config *cfg)
{
	struct status_line line;
	line_begin(&line, "rlimits");
	line_number(&line, "core", 0);
	if (cfg->nofile >= 0)
		line_number(&line, "nofile", cfg->nofile);
	else
		line_null(&line, "nofile");
	if (cfg->nproc >= 0)
		line_number(&line, "nproc", cfg->nproc);
	else
		line_null(&line, "nproc");
	line_send(&line);
}

/* In the agent child. On failure, returns -1 with errno set and *failed naming the limit. */
int rlimits_apply(const struct init_config *cfg, const char **failed)
{
	struct rlimit core = { 0, 0 };
	if (setrlimit(RLIMIT_CORE, &core) < 0) {
		*failed = "RLIMIT_CORE 0";
		return -1;
	}

	struct rlimit nofile = nofile_at_start;
	if (cfg->nofile >= 0)
		nofile = (struct rlimit){ (rlim_t)cfg->nofile, (rlim_t)cfg->nofile };
	if (setrlimit(RLIMIT_NOFILE, &nofile) < 0) {
		*failed = "RLIMIT_NOFILE";
		return -1;
	}

	if (cfg->nproc >= 0) {
		struct rlimit nproc = { (rlim_t)cfg->nproc, (rlim_t)cfg->nproc };
		if (setrlimit(RLIMIT_NPROC, &nproc) < 0) {
			*failed = "RLIMIT_NPROC";
			return -1;
		}
	}
	return 0;
}
