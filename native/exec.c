/*
 * The control socket's `exec` op, in PID 1: one session per request, from the fork to the EXIT
 * frame (docs/architecture.md, "exec").
 *
 * PID 1 forks a child that takes the agent's restrictions and execve's the command (exec-child.c).
 * Its stdio is a pty (the sandbox's /dev/ptmx, from bwrap's --dev) or three pipes; PID 1 holds the
 * other ends and carries them over the control connection as frames: 1 byte type, 4 bytes length
 * (big-endian), the payload. From the client: STDIN, STDIN_EOF, RESIZE, SIGNAL; to it: STDOUT,
 * STDERR (none with a tty), and at the end ERROR (why the command could not start, when it could
 * not) and EXIT (the status, as env(1) encodes it). Then the connection closes.
 *
 * Nothing is buffered without bound, and PID 1 never waits:
 *   - output: one buffer of OUT_CAP bytes per session; the process's pipes (or the pty) are read
 *     only while it has room, so a client that reads slowly stops the process's writes;
 *   - input: at most IN_CHUNK bytes of STDIN wait for the process to read them; meanwhile the
 *     client's frames are not read, except that a RESIZE or SIGNAL frame may overtake STDIN data
 *     the process has not read yet (a Ctrl-C sent as SIGNAL reaches a process that reads nothing);
 *   - at most EXEC_MAX sessions at once; one more is answered with an ERROR frame.
 *
 * The end: the session ends once its process has exited and what it wrote has been read (a read
 * that finds nothing after the process was reaped: what background processes write later is not
 * waited for), and the setup socket has said whether the command started. When the process is
 * reaped, its process group gets SIGHUP (exec_before_reap, while the zombie still holds the pid,
 * so the group named is exactly its own). When the client goes away first, the process and its
 * group get SIGHUP, and with a tty the pty's master is closed, which hangs the terminal up, as
 * closing a terminal window does.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "exec.h"

static struct session *sessions;
static unsigned session_count;

/* ---- start ---- */

/* The agent's environment, with the request's NAME=VALUE entries added or replacing. */
static char **exec_environment(char **extra)
{
	char **base = environment_for_agent();
	size_t count = 0, added = 0;
	while (base[count])
		count++;
	while (extra[added])
		added++;
	char **envp = calloc(count + added + 1, sizeof *envp);
	if (!envp)
		return NULL;
	size_t n = 0;
	for (size_t i = 0; i < count; i++) {
		size_t name = strcspn(base[i], "=");
		bool replaced = false;
		for (size_t j = 0; j < added && !replaced; j++)
			replaced = strncmp(extra[j], base[i], name + 1) == 0;
		if (!replaced)
			envp[n++] = base[i];
	}
	for (size_t j = 0; j < added; j++) {
		/* A name given twice in the request: the last one counts. */
		size_t name = strcspn(extra[j], "=");
		bool later = false;
		for (size_t k = j + 1; k < added && !later; k++)
			later = strncmp(extra[k], extra[j], name + 1) == 0;
		if (!later)
			envp[n++] = extra[j];
	}
	return envp;
}

/* The pty's two ends, the window size set. -1 with *what naming the step. */
static int open_pty(struct session *s, int *peer, const struct control_request *request, const char **what)
{
	int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	if (master < 0) {
		*what = "open /dev/ptmx";
		return -1;
	}
	int unlock = 0;
	struct winsize size = { .ws_col = (unsigned short)request->cols, .ws_row = (unsigned short)request->rows };
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0) {
		*what = "unlock the pty (TIOCSPTLCK)";
	} else if ((*peer = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		*what = "open the pty's peer (TIOCGPTPEER)";
	} else if (ioctl(master, TIOCSWINSZ, &size) < 0) {
		*what = "set the pty's window size";
		int err = errno;
		close(*peer);
		errno = err;
	} else {
		s->fds[FD_STDOUT].fd = master;
		s->output_done[1] = true; /* one stream: the terminal */
		return 0;
	}
	int err = errno;
	close(master);
	errno = err;
	return -1;
}

/* Three pipes; PID 1's ends non-blocking, the child's as a program expects them. */
static int open_pipes(struct session *s, int child_ends[3], const char **what)
{
	int pipes[3][2];
	for (int i = 0; i < 3; i++) {
		if (pipe2(pipes[i], O_CLOEXEC) < 0) {
			int err = errno;
			for (int j = 0; j < i; j++) {
				close(pipes[j][0]);
				close(pipes[j][1]);
			}
			*what = "make the stdio pipes";
			errno = err;
			return -1;
		}
	}
	/* stdin: the child reads [0]; stdout, stderr: the child writes [1]. */
	child_ends[0] = pipes[0][0];
	child_ends[1] = pipes[1][1];
	child_ends[2] = pipes[2][1];
	s->fds[FD_STDIN].fd = pipes[0][1];
	s->fds[FD_STDOUT].fd = pipes[1][0];
	s->fds[FD_STDERR].fd = pipes[2][0];
	for (int which = FD_STDIN; which <= FD_STDERR; which++) {
		if (fcntl(s->fds[which].fd, F_SETFL, O_NONBLOCK) < 0) {
			int err = errno;
			for (int i = 0; i < 3; i++) {
				close(child_ends[i]);
				child_ends[i] = -1;
			}
			*what = "make the stdio pipes non-blocking";
			errno = err;
			return -1;
		}
	}
	return 0;
}

/*
 * A session whose EXIT is out waits for its client to close (exec-session.c, start_draining): it
 * holds no process, so it does not count against EXEC_MAX, or an exec right after another's exit
 * could be refused. A client that never closes must not pile such sessions up either: past
 * EXEC_MAX of them, the oldest (the list's tail) is closed.
 */
static unsigned running_sessions(void)
{
	unsigned n = 0;
	for (struct session *s = sessions; s; s = s->next)
		n += !s->draining;
	return n;
}

static void close_oldest_draining(void)
{
	struct session *oldest = NULL;
	for (struct session *s = sessions; s; s = s->next)
		if (s->draining)
			oldest = s;
	if (oldest)
		session_client_gone(oldest);
}

void exec_op_start(int client, struct control_request *request)
{
	if (!control_agent_running()) {
		exec_refuse(client, "carapace-init: exec: the agent has exited; the sandbox is stopping");
		return;
	}
	unsigned running = running_sessions();
	if (session_count - running >= EXEC_MAX)
		close_oldest_draining();
	if (running >= EXEC_MAX) {
		exec_refuse(client, "carapace-init: exec: %d execs are running, the most at once: wait for one to end",
		       EXEC_MAX);
		return;
	}
	struct session *s = calloc(1, sizeof *s);
	char **envp = exec_environment(request->env);
	if (!s || !envp) {
		free(s);
		free(envp);
		exec_refuse(client, "carapace-init: exec: out of memory");
		return;
	}
	s->tty = request->tty;
	session_init(s, client);

	const char *what = "";
	int child_stdio[3] = { -1, -1, -1 };
	int setup[2] = { -1, -1 };
	int peer = -1;
	int rc = s->tty ? open_pty(s, &peer, request, &what) : open_pipes(s, child_stdio, &what);
	if (rc == 0 && s->tty)
		child_stdio[0] = child_stdio[1] = child_stdio[2] = peer;
	if (rc == 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, setup) < 0) {
		what = "socketpair for the child's setup";
		rc = -1;
	}
	pid_t pid = -1;
	if (rc == 0) {
		struct exec_child_plan plan = { .argv = request->argv,
						.envp = envp,
						.cwd = request->cwd,
						.tty = s->tty,
						.stdio = { child_stdio[0], child_stdio[1], child_stdio[2] },
						.setup_fd = setup[1] };
		pid = fork();
		if (pid == 0)
			exec_child_run(&plan);
		if (pid < 0)
			what = "fork";
	}
	int err = errno;
	free(envp);
	for (int i = 0; i < 3; i++)
		if (child_stdio[i] >= 0 && (i == 0 || child_stdio[i] != child_stdio[0]))
			close(child_stdio[i]);
	if (setup[1] >= 0)
		close(setup[1]);
	if (pid < 0) {
		if (setup[0] >= 0)
			close(setup[0]);
		for (int i = FD_STDIN; i <= FD_STDERR; i++)
			if (s->fds[i].fd >= 0)
				close(s->fds[i].fd);
		free(s);
		exec_refuse(client, "carapace-init: exec: %s: %s", what, strerror(err));
		return;
	}
	s->pid = pid;
	s->fds[FD_SETUP].fd = setup[0];
	s->next = sessions;
	sessions = s;
	session_count++;
	session_advance(s);
}

/* ---- the process's end ---- */

static struct session *session_of(pid_t pid)
{
	for (struct session *s = sessions; s; s = s->next)
		if (s->pid == pid && !s->reaped)
			return s;
	return NULL;
}

void exec_before_reap(pid_t pid)
{
	struct session *s = session_of(pid);
	if (s && kill(-pid, SIGHUP) < 0 && errno != ESRCH)
		report_warning(EXEC_STEP, errno, "SIGHUP to what is left of process group %d", (int)pid);
}

void exec_reaped(pid_t pid, int status)
{
	struct session *s = session_of(pid);
	if (!s)
		return;
	s->reaped = true;
	s->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	session_advance(s);
}

void exec_forget(struct session *s)
{
	for (struct session **p = &sessions; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			session_count--;
			return;
		}
	}
}

bool exec_drained(void)
{
	return sessions == NULL;
}
