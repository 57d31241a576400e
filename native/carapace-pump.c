/*
 * carapace-pump: moves a raw tunnel's bytes between two sockets outside the proxy's event loop.
 * The egress proxy hands a bulk raw tunnel (one that no policy will inspect again) to this program
 * as fd 3 (the sandbox side) and fd 4 (the upstream), and stops reading them itself.
 *
 * Why plain recv/send with a 1 MiB buffer per direction and not splice(2) through a pipe: measured
 * on the bench's Unix-socket → TCP path, the copy moved 25–30% more bytes per second. A Unix
 * socket's data is not in pages that splice can pass on, so splice copies it once anyway, and then
 * pays two system calls and the pipe's bookkeeping per chunk on top.
 *
 * The sockets are not fds 0-2 on purpose: a spawning libuv makes those blocking, and the file
 * description is shared with the proxy, whose event loop must never block on them. Both stay
 * non-blocking; this program waits in poll(2).
 *
 * fd 5 is a control pipe from the proxy. Nothing is read before its first byte, 'j': the proxy has
 * moved this process into the sandbox's cgroups, so the buffers' memory and the copying are the
 * sandbox's from the first byte on (Node cannot start a process inside a cgroup; the proxy moves it
 * once it runs). The proxy may still hold bytes it had read before the hand-over, queued for writing
 * to either socket; until it sends 'c' (its writes to the sandbox side are done) or 'u' (to the
 * upstream), this program reads that direction's source but does not write its destination, so no
 * byte can overtake one queued before it. End of file on fd 5 releases everything.
 *
 * Each direction alternates: read a chunk from the source, write it all to the destination. End of
 * file on a source becomes shutdown(SHUT_WR) on the destination once its chunk is out, so half-close
 * travels through. The program exits 0 when both directions have ended, 1 on a socket error (a
 * reset: the proxy then closes both sides), 2 on misuse. It parses nothing it receives.
 *
 * fd 1 takes its count of the bytes it has delivered, for the proxy's per-sandbox counters: one
 * line "SANDBOX_TO_UPSTREAM UPSTREAM_TO_SANDBOX\n" (running totals) each time another REPORT_EVERY
 * bytes have moved, and one when it ends, so that a long tunnel is counted as it goes and a pump
 * the proxy kills has told most of its count. A reader that went away costs nothing (SIGPIPE is
 * ignored, the write fails, the bytes still move).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (1024 * 1024)
#define READS_PER_WAKEUP 8 /* then the other direction gets a turn */
#define SANDBOX_FD 3
#define UPSTREAM_FD 4
#define CONTROL_FD 5
#define REPORT_EVERY (4ULL * 1024 * 1024)

struct flow {
	int src, dst;
	char *buf;
	size_t len, off;  /* buf[off..len) is still to be written */
	bool may_write;   /* the proxy's own queued writes to dst are done */
	bool eof;         /* the source has ended */
	bool done;        /* ...and everything reached the destination, which was shut for writing */
	unsigned long long moved; /* bytes delivered to dst */
};

static char buffers[2][CHUNK];

static int fail(const char *step)
{
	fprintf(stderr, "carapace-pump: %s: %s\n", step, strerror(errno));
	return 1;
}

/* Advances a flow as far as it can without blocking. Returns -1 on a socket error, else 0, and
 * says what it waits for: every return of 0 with nothing waited for must mean the flow is done or
 * held by the control pipe, or its sockets would drop out of the poll set and the flow would
 * stall. Hence an interrupted call (EINTR) is retried at once. */
static int advance(struct flow *f, bool *wait_in, bool *wait_out)
{
	*wait_in = *wait_out = false;
	int reads = 0;
	while (!f->done) {
		if (f->off < f->len) {
			if (!f->may_write)
				return 0; /* held until the control pipe releases dst */
			/* MSG_NOSIGNAL: a peer that went away is an error to report, not a SIGPIPE. */
			ssize_t n = send(f->dst, f->buf + f->off, f->len - f->off, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue; /* retried now: returning would leave dst out of the poll set */
			if (n < 0 && errno == EAGAIN) {
				*wait_out = true;
				return 0;
			}
			if (n < 0)
				return -1;
			f->off += (size_t)n;
			f->moved += (unsigned long long)n;
			continue;
		}
		if (f->eof) {
			if (!f->may_write)
				return 0; /* the proxy may still have bytes queued before the end */
			if (shutdown(f->dst, SHUT_WR) < 0 && errno != ENOTCONN)
				return -1;
			f->done = true;
			return 0;
		}
		if (reads == READS_PER_WAKEUP) {
			*wait_in = true; /* level-triggered: poll returns at once if there is more */
			return 0;
		}
		ssize_t n = recv(f->src, f->buf, CHUNK, 0);
		if (n < 0 && errno == EINTR)
			continue; /* the same: src must stay in the poll set */
		if (n < 0 && errno == EAGAIN) {
			*wait_in = true;
			return 0;
		}
		if (n < 0)
			return -1;
		reads++;
		if (n == 0)
			f->eof = true;
		f->len = (size_t)n;
		f->off = 0;
	}
	return 0;
}

/* Writes the running totals to fd 1 (see the top of this file); a failed write changes nothing. */
static void report(const struct flow flows[2])
{
	char line[64];
	int len = snprintf(line, sizeof line, "%llu %llu\n", flows[0].moved, flows[1].moved);
	if (len > 0 && write(STDOUT_FILENO, line, (size_t)len) < 0) {
		/* no reader, or none that wants it: the count is a courtesy, the tunnel goes on */
	}
}

/* Set by 'j' on the control pipe (or its end, or no pipe): reading may start. */
static bool joined;

/* Reads the control pipe: 'j' lets reading start, 'u' releases writes to the upstream, 'c' to the
 * sandbox side. */
static int read_control(int *control, struct flow flows[2])
{
	char buf[16];
	ssize_t n = read(*control, buf, sizeof buf);
	if (n < 0)
		return (errno == EINTR || errno == EAGAIN) ? 0 : -1;
	for (ssize_t k = 0; k < n; k++) {
		if (buf[k] == 'j')
			joined = true;
		else if (buf[k] == 'u')
			flows[0].may_write = true;
		else if (buf[k] == 'c')
			flows[1].may_write = true;
	}
	if (n == 0) {
		joined = true;
		flows[0].may_write = flows[1].may_write = true;
		close(*control);
		*control = -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "carapace-pump: usage: carapace-pump 3<>sandbox-socket 4<>upstream-socket 5<control\n");
		return 2;
	}
	struct flow flows[2] = {
		{ .src = SANDBOX_FD, .dst = UPSTREAM_FD, .buf = buffers[0] },
		{ .src = UPSTREAM_FD, .dst = SANDBOX_FD, .buf = buffers[1] },
	};
	signal(SIGPIPE, SIG_IGN); /* a count nobody reads must not end the tunnel */
	unsigned long long reported = 0;
	int control = CONTROL_FD;
	if (fcntl(control, F_GETFD) < 0) {
		flows[0].may_write = flows[1].may_write = true; /* no control pipe: nothing is queued */
		joined = true;
		control = -1;
	}
	while (!flows[0].done || !flows[1].done) {
		/* fds[0]: the sandbox side, fds[1]: the upstream, fds[2]: the control pipe. */
		struct pollfd fds[3] = { { .fd = SANDBOX_FD }, { .fd = UPSTREAM_FD }, { .fd = control, .events = POLLIN } };
		for (int i = 0; i < 2 && joined; i++) {
			bool wait_in, wait_out;
			if (advance(&flows[i], &wait_in, &wait_out) < 0) {
				report(flows);
				return fail("socket");
			}
			/* flow 0 reads the sandbox side (fds[0]) and writes the upstream (fds[1]); flow 1 the reverse */
			if (wait_in)
				fds[i].events |= POLLIN;
			if (wait_out)
				fds[1 - i].events |= POLLOUT;
		}
		if (flows[0].done && flows[1].done)
			break;
		if (flows[0].moved + flows[1].moved - reported >= REPORT_EVERY) {
			report(flows);
			reported = flows[0].moved + flows[1].moved;
		}
		/* A side nobody waits on is left out: its POLLHUP would otherwise wake us forever. */
		for (int i = 0; i < 2; i++)
			if (fds[i].events == 0)
				fds[i].fd = -1;
		if (poll(fds, control >= 0 ? 3 : 2, -1) < 0 && errno != EINTR) {
			report(flows);
			return fail("poll");
		}
		for (int i = 0; i < 2; i++) {
			if ((fds[i].revents & POLLERR) != 0) {
				report(flows);
				errno = ECONNRESET;
				return fail("socket");
			}
		}
		if (control >= 0 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) != 0 && read_control(&control, flows) < 0) {
			report(flows);
			return fail("control");
		}
	}
	report(flows);
	return 0;
}
