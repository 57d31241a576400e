/*
 * The relay's internals, shared by relay.c (listeners, the host socket), relay-header.c (the
 * PROXY line) and relay-pump.c (copying bytes). The rest of init sees only relay_start,
 * relay_wait_timeout and relay_after_round (init.h), and the control socket's `connect` op
 * (control-connect.c), which copies a forwarded port's bytes with the same pump.
 */
#ifndef CARAPACE_RELAY_H
#define CARAPACE_RELAY_H

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "init.h"

#define RELAY_STEP "relay"

/* The longest PROXY line: two IPv6 addresses, two 5-digit ports and a 20-digit inode fit with room
 * to spare. A test build sets it smaller to check that a line which does not fit is refused. */
#ifndef RELAY_HEADER_MAX
#define RELAY_HEADER_MAX (sizeof "PROXY TCP6   65535 65535 18446744073709551615\r\n" + 2 * INET6_ADDRSTRLEN)
#endif

struct listener {
	struct watch watch;
	int fd;
	struct relay *relay;
};

struct connection;

/* Who owns a set of pumped connections: told when one closes (an fd is free again), and holding
 * those closed during the current round of events, freed after it (pump_collect_closed). */
struct pump_owner {
	void (*closed)(struct pump_owner *owner);
	struct connection *closed_list;
};

struct relay {
	struct pump_owner pump;
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
	int spare_upstream;
};

/* relay-header.c: the PROXY line for an accepted client (peer: its address, from accept) into
 * header, at most size bytes (RELAY_HEADER_MAX). Its length, or -1 with errno set and *what
 * naming the step; a line that does not fit is EMSGSIZE, never sent cut short. */
int relay_proxy_header(struct relay *relay, int client_fd, const struct sockaddr_storage *peer, char *header,
		       size_t size, const char **what);

/* relay-pump.c: a connection's two pipes, then its two sides (0: the sandbox's end, 1: the host's),
 * both non-blocking sockets it owns from then on. */
struct connection *connection_prepare(struct pump_owner *owner); /* NULL with errno set */
void connection_start(struct connection *connection, int sandbox_fd, int host_fd);
void connection_discard(struct connection *connection); /* one never started */
void pump_collect_closed(struct pump_owner *owner);

#endif
