/*
 * Copying one relayed connection's bytes both ways, with splice(2) through a pipe per direction:
 * the data never enters PID 1's memory, which stays small however much flows. The relay's
 * connections and the control socket's forwarded ports (control-connect.c) go through it alike;
 * each set has a pump_owner, told when one of its connections closes.
 *
 * A connection has two sides (0: the socket in the sandbox, 1: the host's socket) and two flows
 * (flow i carries side i's bytes to side 1-i). A flow alternates: fill its pipe from the source,
 * drain the pipe to the destination, until the source reaches end of file; then it shuts the
 * destination's write side (half-close travels through: a client's shutdown(SHUT_WR) reaches the
 * host as end of file, and back). A flow pauses when its source has nothing (it waits for
 * EPOLLIN on the source) or its destination is full (EPOLLOUT on the destination).
 *
 * Each side is in the epoll set only while one of its flows waits on it: a level-triggered
 * EPOLLHUP cannot be masked, and would otherwise wake us forever for a side we cannot use yet.
 * EPOLLHUP on a side means nothing more can be written to it: the flow towards it ends, and its
 * remaining input is still read to end of file. EPOLLERR means the peer reset: the connection ends.
 * The connection is closed when both flows have ended.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

#define PIPE_CHUNK (64 * 1024)
#define FILLS_PER_WAKEUP 16 /* up to 16 pipe-fulls (1 MiB) per flow per wake-up, then others get a turn */

struct side {
	struct watch watch;
	int fd;
	uint32_t watched; /* the events registered; 0 when not in the epoll set */
	struct connection *connection;
};

struct flow {
	int pipe[2]; /* read end, write end */
	size_t pending; /* bytes in the pipe */
	bool source_eof;
	bool done;
	bool wants_input;  /* waiting for its source to be readable */
	bool wants_output; /* waiting for its destination to be writable */
};

struct connection {
	struct connection *next_closed;
	struct pump_owner *owner;
	struct side sides[2];
	struct flow flows[2];
	bool closed;
};

static void on_side(struct watch *self, uint32_t events);

static void close_connection(struct connection *c)
{
	if (c->closed)
		return;
	c->closed = true;
	for (int i = 0; i < 2; i++) {
		/* Closing an fd also removes it from the epoll set; the explicit call keeps our
		 * bookkeeping exact. Errors here are ignored on purpose: the fds are released either
		 * way, and there is nobody left to tell. */
		if (c->sides[i].watched)
			loop_unwatch(c->sides[i].fd);
		close(c->sides[i].fd);
		for (int end = 0; end < 2; end++)
			if (c->flows[i].pipe[end] >= 0)
				close(c->flows[i].pipe[end]);
	}
	c->next_closed = c->owner->closed_list;
	c->owner->closed_list = c;
	c->owner->closed(c->owner);
}

/* Connections closed during a round of events are freed only after it, so that a later event
 * of the same round never points to freed memory. */
void pump_collect_closed(struct pump_owner *owner)
{
	while (owner->closed_list) {
		struct connection *c = owner->closed_list;
		owner->closed_list = c->next_closed;
		free(c);
	}
}

/* Moves what it can; returns -1 with errno set when the connection must be aborted. */
static int pump(struct connection *c, int i)
{
	struct flow *flow = &c->flows[i];
	int source = c->sides[i].fd, destination = c->sides[1 - i].fd;
	flow->wants_input = flow->wants_output = false;

	int fills = 0;
	while (!flow->done) {
		if (flow->pending > 0) {
			ssize_t n = splice(flow->pipe[0], NULL, destination, NULL, flow->pending,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN) {
					flow->wants_output = true;
					return 0;
				}
				return -1;
			}
			flow->pending -= (size_t)n;
			continue;
		}
		if (flow->source_eof) {
			if (shutdown(destination, SHUT_WR) < 0 && errno != ENOTCONN)
				return -1;
			flow->done = true;
			break;
		}
		if (fills == FILLS_PER_WAKEUP) {
			flow->wants_input = true; /* level-triggered: we come back if there is more */
			return 0;
		}
		ssize_t n = splice(source, NULL, flow->pipe[1], NULL, PIPE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				flow->wants_input = true;
				return 0;
			}
			return -1;
		}
		if (n == 0)
			flow->source_eof = true;
		flow->pending = (size_t)n;
		fills++;
	}
	return 0;
}

/* Registers each side for exactly the events its flows wait on. */
static int update_interest(struct connection *c)
{
	for (int i = 0; i < 2; i++) {
		struct side *side = &c->sides[i];
		uint32_t wanted = 0;
		if (c->flows[i].wants_input)
			wanted |= EPOLLIN;
		if (c->flows[1 - i].wants_output)
			wanted |= EPOLLOUT;
		if (wanted == side->watched)
			continue;
		int rc;
		if (wanted == 0)
			rc = loop_unwatch(side->fd);
		else if (side->watched == 0)
			rc = loop_watch(side->fd, &side->watch, wanted);
		else
			rc = loop_change(side->fd, &side->watch, wanted);
		if (rc < 0)
			return -1;
		side->watched = wanted;
	}
	return 0;
}

/* Pumps both flows and re-registers; closes the connection when it is over or broken. */
static void advance(struct connection *c)
{
	for (int i = 0; i < 2; i++) {
		if (pump(c, i) < 0) {
			/* A peer that went away (ECONNRESET, EPIPE) is the normal end of a connection. */
			if (errno != ECONNRESET && errno != EPIPE)
				report_warning(RELAY_STEP, errno, "copy %s", i == 0 ? "to the host" : "to the sandbox");
			close_connection(c);
			return;
		}
	}
	if (c->flows[0].done && c->flows[1].done) {
		close_connection(c);
		return;
	}
	if (update_interest(c) < 0) {
		report_warning(RELAY_STEP, errno, "epoll_ctl for a relayed connection");
		close_connection(c);
	}
}

static void on_side(struct watch *self, uint32_t events)
{
	struct side *side = container_of(self, struct side, watch);
	struct connection *c = side->connection;
	if (c->closed)
		return;
	int i = (int)(side - c->sides);

	if (events & EPOLLERR) {
		close_connection(c);
		return;
	}
	if (events & EPOLLHUP) {
		/* Nothing can be written to this side any more: the flow towards it is over. */
		struct flow *towards = &c->flows[1 - i];
		towards->done = true;
		towards->pending = 0;
		towards->wants_input = towards->wants_output = false;
	}
	advance(c);
}

struct connection *connection_prepare(struct pump_owner *owner)
{
	struct connection *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->owner = owner;
	for (int i = 0; i < 2; i++) {
		c->sides[i] = (struct side){ .watch.handle = on_side, .fd = -1, .connection = c };
		c->flows[i].pipe[0] = c->flows[i].pipe[1] = -1;
	}
	for (int i = 0; i < 2; i++) {
		if (pipe2(c->flows[i].pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
			int err = errno;
			connection_discard(c);
			errno = err;
			return NULL;
		}
	}
	return c;
}

void connection_discard(struct connection *c)
{
	for (int i = 0; i < 2; i++) {
		if (c->sides[i].fd >= 0)
			close(c->sides[i].fd);
		for (int end = 0; end < 2; end++)
			if (c->flows[i].pipe[end] >= 0)
				close(c->flows[i].pipe[end]);
	}
	free(c);
}

void connection_start(struct connection *c, int sandbox_fd, int host_fd)
{
	c->sides[0].fd = sandbox_fd;
	c->sides[1].fd = host_fd;
	advance(c);
}
