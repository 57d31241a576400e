/*
 * PID 1 of the sandbox's pid namespace.
 *
 * Duties: reap every child (orphans of the agent are re-parented to us, and a zombie must never
 * linger; the control socket's exec'd processes are ours too, and their sessions learn how they
 * ended), forward SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the agent, and when
 * the agent exits, SIGKILL whatever is left, finish what is owed to the host (the agent's last
 * output on --log-fd, the control socket's exit line and EXIT frames: at most DRAIN_MS), write the
 * exit record and exit with the agent's status (128 + the signal when it was killed by one).
 *
 * One process, one event loop: a signalfd, the relay's listeners and its connections, the control
 * socket and its sessions all live in one epoll set, so the sandbox costs the host a single small
 * process.
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
#include <time.h>
#include <unistd.h>

#include "init.h"

#define PID1_STEP "pid1"
#define DRAIN_MS 5000

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

static struct {
	void **items;
	size_t count, cap;
} to_free;

void loop_free_later(void *p)
{
	if (to_free.count == to_free.cap) {
		size_t cap = to_free.cap ? 2 * to_free.cap : 64;
		void **grown = realloc(to_free.items, cap * sizeof *grown);
		if (!grown) {
			/* Leaking one small object beats freeing it under a pending event. */
			report_warning(PID1_STEP, ENOMEM, "keep an object to free after the round");
			return;
		}
		to_free.items = grown;
		to_free.cap = cap;
	}
	to_free.items[to_free.count++] = p;
}

static void free_what_waits(void)
{
	for (size_t i = 0; i < to_free.count; i++)
		free(to_free.items[i]);
	to_free.count = 0;
}

/* One round: every ready fd handled, then what the round closed is freed. */
static void run_round(struct relay *relay, int timeout)
{
	struct epoll_event events[64];
	int n = epoll_wait(epoll_fd, events, 64, timeout);
	if (n < 0) {
		if (errno == EINTR)
			return;
		pid1_fatal("epoll_wait", errno);
	}
	for (int i = 0; i < n; i++) {
		struct watch *watch = events[i].data.ptr;
		watch->handle(watch, events[i].events);
	}
	if (relay)
		relay_after_round(relay);
	control_after_round();
	logs_after_round();
	free_what_waits();
}

static int round_timeout(struct relay *relay)
{
	int a = relay ? relay_wait_timeout(relay) : -1;
	int b = control_wait_timeout();
	int c = logs_wait_timeout();
	int ab = a < 0 ? b : b < 0 ? a : a < b ? a : b;
	return ab < 0 ? c : c < 0 ? ab : ab < c ? ab : c;
}

/* Kills every process left in the namespace and reaps them all. kill(-1) from the init of a pid
 * namespace reaches every process in it except the caller; pid1_prepare made sure we are that
 * init, so this never touches a process outside the sandbox. */
static void kill_everything_left(void)
{
	if (kill(-1, SIGKILL) < 0 && errno != ESRCH)
		report_warning(PID1_STEP, errno, "kill(-1, SIGKILL)");
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			if (errno != ECHILD)
				report_warning(PID1_STEP, errno, "waitpid");
			return;
		}
		exec_reaped(pid, status);
	}
}

noreturn void pid1_fatal(const char *what, int err)
{
	report_warning(PID1_STEP, err, "%s", what);
	kill_everything_left();
	control_write_exit_record(EXIT_INIT_FAILED);
	_exit(EXIT_INIT_FAILED);
}

static void reap_children(void)
{
	for (;;) {
		/* Looked at first and reaped after: while the zombie holds its pid, an exec'd process's
		 * group can be hung up knowing that the pid names that group and no other. */
		siginfo_t info = { 0 };
		if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0) {
			if (errno == EINTR)
				continue;
			if (errno != ECHILD)
				pid1_fatal("waitid", errno);
			return;
		}
		pid_t pid = info.si_pid;
		if (pid == 0)
			return;
		exec_before_reap(pid);
		int status;
		if (waitpid(pid, &status, 0) < 0) {
			if (errno == EINTR)
				continue;
			pid1_fatal("waitpid", errno);
		}
		if (pid != agent_pid) {
			exec_reaped(pid, status); /* or an orphan of the agent: reaping it was the point */
			continue;
		}
		agent_running = false;
		if (WIFEXITED(status))
			agent_exit_code = WEXITSTATUS(status);
		else if (WIFSIGNALED(status))
			agent_exit_code = 128 + WTERMSIG(status);
	}
}

int pid1_signal_agent(int signo)
{
	if (!agent_running) {
		errno = ESRCH;
		return -1;
	}
	return kill(agent_pid, signo);
}

static void forward_signal(int signo)
{
	/* ESRCH: the agent exited and its SIGCHLD is still queued; nothing to forward to. */
	if (pid1_signal_agent(signo) < 0 && errno != ESRCH)
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

static long long monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* After the agent: the rest killed, the host told (within DRAIN_MS), the record written. */
static noreturn void finish(struct relay *relay)
{
	control_agent_exited(agent_exit_code);
	kill_everything_left();
	/* Every writer of the log pipes is gone: they hold only what is left to read. */
	logs_flush_all();
	long long deadline = monotonic_ms() + DRAIN_MS;
	while (!(control_drained() && logs_drained())) {
		long long left = deadline - monotonic_ms();
		if (left <= 0)
			break;
		run_round(relay, (int)left);
	}
	control_write_exit_record(agent_exit_code);
	_exit(agent_exit_code);
}

noreturn void pid1_run(pid_t agent, struct relay *relay)
{
	agent_pid = agent;
	agent_running = true;
	control_agent_started(agent);
	/* The agent may have exited before the loop started: its SIGCHLD is pending in the
	 * signalfd and the first round reaps it. */
	while (agent_running)
		run_round(relay, round_timeout(relay));
	finish(relay);
}
