/*
 * The relay's internals, shared by relay.c (listeners, the host socket, the PROXY line) and
 * relay-pump.c (copying bytes). The rest of init sees only relay_start, relay_wait_timeout and
 * relay_after_round (init.h).
 */
#ifndef CARAPACE_RELAY_H
#define CARAPACE_RELAY_H

#include <sys/un.h>

#include "init.h"

#define RELAY_STEP "relay"

struct listener {
	struct watch watch;
	int fd;
	struct relay *relay;
};

struct connection;

struct relay {
	struct sockaddr_un upstream; /* /proc/self/fd/<dir fd>/<socket name> */
	socklen_t upstream_len;
	unsigned port;
	struct listener listeners[2]; /* 127.0.0.1, then ::1 when IPv6 is there */
	int diag_fd; /* NETLINK_SOCK_DIAG, to name each client's socket in the header; -1 without */
	unsigned diag_seq;
	size_t listener_count;
	bool accepting;
	unsigned open_connections;
	/* The next connection's pipes and host socket, made before accept(2): running out of fds
	 * then pauses accepting and leaves clients waiting in the backlog, instead of dropping
	 * a client already accepted. */
	struct connection *spare;
	struct connection *closed; /* freed after the current round of events */
};

/* relay-pump.c */
struct connection *connection_prepare(struct relay *relay); /* NULL with errno set */
int connection_upstream_fd(const struct connection *connection);
void connection_start(struct connection *connection, int client_fd);
void connection_discard(struct connection *connection); /* one never started */
void relay_collect_closed(struct relay *relay);

/* relay.c: a connection was closed, so an fd is free again. */
void relay_connection_closed(struct relay *relay);

#endif
