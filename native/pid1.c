/*
 * PID 1 of the sandbox's pid namespace.
 *
 * Duties: reap every child (orphans of the agent are re-parented to us, and a zombie must never
 * linger), forward SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the agent, and when
 * the agent exits, SIGKILL whatever is left and exit with the agent's status (128 + the signal
 * when it was killed by one).
 *
 * One process, one event loop: a signalfd, the relay's listeners and its connections all live in
 * one epoll set, so the sandbox costs the host a single small process.
 *
 * Threat: the agent runs as the same uid as PID 1. It must not be able to trace PID 1, read its
 * memory or its /proc/1/fd (where the host socket's directory fd is), or stop it. Hence:
 * PR_SET_DUMPABLE 0 (ptrace and /proc/1/{fd,mem,environ,...} need dumpability, or CAP_SYS_PTRACE
 * which nobody has here), every fd close-on-exec, and - in the agent - Landlock's signal scope
 * (ABI 6) on top of the kernel's own rule that a namespace's init only gets the signals it
 * handles. The seccomp program denies ptrace and process_vm_* as a further layer.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "init.h"

#define PID1_STEP "pid1"

static int epoll_fd = -1;
static int signal_fd = -1;
static sigset_t agent_signal_mask; /* the mask we started with, given back to the agent */

static pid_t agent_pid = -1;
static bool agent_running;
static int agent_exit_code;

static void on_signals(struct watch *self, uint32_t events);
static struct watch signal_watch = { .handle = on_signals };

/* The signals we forward, plus SIGCHLD; all arrive through the signalfd. */
static void handled_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGQUIT);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGUSR2);
}

void pid1_prepare(void)
{
	if (getpid() != 1)
		die(PID1_STEP, 0, "must run as PID 1 of a new pid namespace (bwrap --unshare-pid --as-pid-1)");

	/* Mark every inherited fd but stdio close-on-exec: the agent gets fds 0, 1 and 2 only. The
	 * relay's directory fd, the status and seccomp fds included. */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		die(PID1_STEP, errno, "close_range(3, ~0, CLOSE_RANGE_CLOEXEC)");

	rlimits_raise_for_pid1();

	sigset_t handled;
	handled_signals(&handled);
	if (sigprocmask(SIG_BLOCK, &handled, &agent_signal_mask) < 0)
		die(PID1_STEP, errno, "block signals");
	/* A write to a closed socket must fail with EPIPE, not stop the relay. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		die(PID1_STEP, errno, "ignore SIGPIPE");

	signal_fd = signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC);
	if (signal_fd < 0)
		die(PID1_STEP, errno, "signalfd");
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		die(PID1_STEP, errno, "epoll_create1");
	if (loop_watch(signal_fd, &signal_watch, EPOLLIN) < 0)
		die(PID1_STEP, errno, "watch the signalfd");
}

const sigset_t *pid1_agent_signal_mask(void)
{
	return &agent_signal_mask;
}

/* ---- the event loop ---- */

int loop_watch(int fd, struct watch *watch, uint32_t events)
{
	struct epoll_event event = { .events = events, .data.ptr = watch };
	return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event);
}

int loop_change(int fd, struct watch *watch, uint32_t events)
{
	struct epoll_event event = { .events = events, .data.ptr = watch };
	return epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &event);
}

int loop_unwatch(int fd)
{
	return epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL);
}

/* Kills every process left in the namespace and reaps them all. kill(-1) from the init of a pid
 * namespace reaches every process in it except the caller; pid1_prepare made sure we are that
 * init, so this never touches a process outside the sandbox. */
static void kill_everything_left(void)
{
	if (kill(-1, SIGKILL) < 0 && errno != ESRCH)
		report_warning(PID1_STEP, errno, "kill(-1, SIGKILL)");
	for (;;) {
		if (waitpid(-1, NULL, 0) < 0) {
			if (errno == EINTR)
				continue;
			if (errno != ECHILD)
				report_warning(PID1_STEP, errno, "waitpid");
			return;
		}
	}
}

noreturn void pid1_fatal(const char *what, int err)
{
	report_warning(PID1_STEP, err, "%s", what);
	kill_everything_left();
	_exit(EXIT_INIT_FAILED);
}

static void reap_children(void)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid == 0)
			return;
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			if (errno != ECHILD)
				pid1_fatal("waitpid", errno);
			return;
		}
		if (pid != agent_pid)
			continue; /* an orphan of the agent: reaping it was the point */
		agent_running = false;
		if (WIFEXITED(status))
			agent_exit_code = WEXITSTATUS(status);
		else if (WIFSIGNALED(status))
			agent_exit_code = 128 + WTERMSIG(status);
	}
}

static void forward_signal(int signo)
{
	if (!agent_running)
		return;
	/* ESRCH: the agent exited and its SIGCHLD is still queued; nothing to forward to. */
	if (kill(agent_pid, signo) < 0 && errno != ESRCH)
		report_warning(PID1_STEP, errno, "forward signal %d to the agent (pid %d)", signo, (int)agent_pid);
}

static void on_signals(struct watch *self, uint32_t events)
{
	(void)self;
	(void)events;
	for (;;) {
		struct signalfd_siginfo info;
		ssize_t n = read(signal_fd, &info, sizeof info);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			pid1_fatal("read the signalfd", errno);
		}
		if (n != sizeof info)
			pid1_fatal("short read from the signalfd", EIO);
		if (info.ssi_signo == SIGCHLD)
			reap_children();
		else
			forward_signal((int)info.ssi_signo);
	}
}

noreturn void pid1_run(pid_t agent, struct relay *relay)
{
	agent_pid = agent;
	agent_running = true;
	/* The agent may have exited before the loop started: its SIGCHLD is pending in the
	 * signalfd and the first round reaps it. */
	while (agent_running) {
		struct epoll_event events[64];
		int n = epoll_wait(epoll_fd, events, 64, relay ? relay_wait_timeout(relay) : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			pid1_fatal("epoll_wait", errno);
		}
		for (int i = 0; i < n; i++) {
			struct watch *watch = events[i].data.ptr;
			watch->handle(watch, events[i].events);
		}
		if (relay)
			relay_after_round(relay);
	}
	kill_everything_left();
	_exit(agent_exit_code);
}
