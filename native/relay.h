/*
 * The relay's internals, shared by relay.c (listeners, the host socket, the PROXY line) and
 * relay-pump.c (copying bytes). The rest of init sees only relay_start and relay_collect_closed.
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
	size_t listener_count;
	bool accepting;
	unsigned open_connections;
	struct connection *closed; /* freed after the current round of events */
};

/* relay-pump.c: takes ownership of both fds. */
void connection_start(struct relay *relay, int client_fd, int upstream_fd);

/* relay.c: a connection was closed, so an fd is free again. */
void relay_connection_closed(struct relay *relay);

#endif
