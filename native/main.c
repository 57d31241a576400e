/*
 * carapace-init: PID 1 of every Carapace sandbox.
 *
 *   carapace-init --probe                   what this kernel can enforce, as one JSON object
 *   carapace-init [options] -- CMD [ARGS...]
 *
 * The command line, the status-fd lines, the exit codes and the relay's protocol are specified in
 * docs/architecture.md ("carapace-init"). bwrap starts us (--as-pid-1) in fresh namespaces as the
 * unprivileged sandbox user. What happens, in order:
 *
 *   1. PID 1 hardening: not dumpable, every inherited fd close-on-exec, signals to a signalfd.
 *   2. The relay starts listening, and the control socket (--control-dir-fd) is bound - before any
 *      restriction, since the agent's restrictions would otherwise be ours too (Landlock and
 *      seccomp bind the calling thread and its descendants), and before the agent exists.
 *   3. What the agent will get is prepared and reported on the status fd: rlimits, the Landlock
 *      ruleset, the seccomp program (read from its fd); and its environment is read from its fd
 *      (ours is empty: bwrap and PID 1 never hold the agent's variables). With --log-fd, the pipes
 *      that become its stdout and stderr are made.
 *   4. The agent child applies it all and execve's the command (agent.c); when anyone is to hear
 *      of refused connects (--event-fd, the control socket) it first hands PID 1 a seccomp
 *      listener for its connect() calls (connect-watch.c).
 *   5. PID 1 closes its status fd and runs the event loop - reaping, forwarding signals, relaying,
 *      reporting refused connects, logging the agent's output, serving the control socket (whose
 *      execs get what the agent got, kept from step 3) - until the agent exits; then kills what is
 *      left, finishes what it owes the host, writes the exit record, and exits with the agent's
 *      status.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "init.h"

static int probe(void)
{
	printf("{\"landlock_abi\":%d,\"seccomp_filter\":%s}\n", landlock_kernel_abi(),
	       seccomp_filter_available() ? "true" : "false");
	return fflush(stdout) == 0 ? 0 : EXIT_INIT_FAILED;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--probe") == 0)
		return probe();

	/* First of all: nothing of ours is readable or traceable by the sandbox's other processes. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		die("pid1", errno, "prctl(PR_SET_DUMPABLE, 0)");

	struct init_config cfg;
	options_parse(argc, argv, &cfg);
	/* What bwrap wrote went to the host's pipe (its reason, if the start fails); from here on
	 * fd 2 is the one the agent is meant to have. */
	if (cfg.stderr_fd >= 0) {
		if (dup2(cfg.stderr_fd, STDERR_FILENO) < 0)
			die("options", errno, "dup2(--stderr-fd %d, 2)", cfg.stderr_fd);
		if (close(cfg.stderr_fd) < 0)
			die("options", errno, "close --stderr-fd %d", cfg.stderr_fd);
	}
	pid1_prepare();

	struct relay *relay = relay_start(&cfg);
	control_start(&cfg);
	rlimits_report(&cfg);
	struct landlock_plan landlock;
	landlock_prepare(&cfg, &landlock);
	struct seccomp_program seccomp;
	seccomp_read_program(cfg.seccomp_fd, &seccomp);
	environment_read(cfg.env_fd);
	events_prepare(&cfg);
	connect_watch_prepare(&cfg, &landlock);
	logs_prepare(&cfg);

	pid_t agent = agent_start(&cfg, &landlock, &seccomp);
	logs_start();
	connect_watch_start();

	/* The agent child holds what it needs. Every exec of the control socket gets the same, so
	 * PID 1 keeps it then (main never returns: what it points to stays); else it lets go. */
	if (control_enabled()) {
		exec_keep_confinement(&cfg, &landlock, &seccomp);
	} else {
		if (landlock.ruleset_fd >= 0 && close(landlock.ruleset_fd) < 0)
			report_warning("landlock", errno, "close the ruleset fd");
		free(seccomp.filter);
	}
	report_close_status_fd();

	pid1_run(agent, relay);
}
