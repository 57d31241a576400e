/*
 * The control socket's `connect` op: {"op":"connect","port":P,"family":4|6}.
 *
 * PID 1 connects to 127.0.0.1:P (or [::1]:P) in the sandbox's network namespace, answers
 * {"ok":true} and from then on copies bytes both ways between that connection and the control
 * connection with the relay's pump (relay-pump.c: splice through two pipes, half-close and reset
 * carried across, backpressure both ways); or it answers {"ok":false,"errno":N,"message":"..."}
 * and closes. This is how the host forwards one of its ports to a server the agent listens on.
 *
 * PID 1 is not under Landlock, so any port of the namespace can be reached, not only the policy's
 * listen_ports: the host decides what it forwards. The connect is non-blocking (a listener whose
 * backlog is full answers late), and the pipes are made before it, so that running out of fds is
 * an answer, not a connection dropped half-made.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control.h"
#include "relay.h"

struct pending_connect {
	struct watch watch;
	int client;
	int tcp;
	unsigned port;
	int family;
	struct connection *connection; /* its pipes, made before the connect */
};

static void on_forward_closed(struct pump_owner *owner)
{
	(void)owner;
}

static struct pump_owner forwards = { .closed = on_forward_closed };

void connect_op_after_round(void)
{
	pump_collect_closed(&forwards);
}

static const char *where(int family)
{
	return family == 4 ? "127.0.0.1" : "[::1]";
}

static void fail(struct pending_connect *p, int err, const char *what)
{
	control_reply_error_and_close(p->client, err, "%s %s:%u", what, where(p->family), p->port);
	if (p->tcp >= 0)
		close(p->tcp);
	if (p->connection)
		connection_discard(p->connection);
	loop_free_later(p);
}

static void established(struct pending_connect *p)
{
	/* The control connection's send buffer is empty: the short line goes out whole. */
	static const char ok[] = "{\"ok\":true}\n";
	if (send(p->client, ok, sizeof ok - 1, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)(sizeof ok - 1)) {
		close(p->client);
		close(p->tcp);
		connection_discard(p->connection);
		loop_free_later(p);
		return;
	}
	connection_start(p->connection, p->tcp, p->client);
	loop_free_later(p);
}

static void on_connected(struct watch *self, uint32_t events)
{
	(void)events;
	struct pending_connect *p = container_of(self, struct pending_connect, watch);
	loop_unwatch(p->tcp);
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(p->tcp, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		fail(p, err, "connect to");
		return;
	}
	established(p);
}

void connect_op_start(int client, const struct control_request *request)
{
	if (!control_agent_running()) {
		control_reply_error_and_close(client, ESRCH, "the agent has exited; the sandbox is stopping");
		return;
	}
	struct pending_connect *p = calloc(1, sizeof *p);
	if (!p) {
		control_reply_error_and_close(client, ENOMEM, "allocate a forwarded connection");
		return;
	}
	*p = (struct pending_connect){ .watch.handle = on_connected, .client = client, .tcp = -1,
				       .port = request->port, .family = request->family };
	p->connection = connection_prepare(&forwards);
	if (!p->connection) {
		fail(p, errno, "make the pipes to forward");
		return;
	}
	int family = request->family == 4 ? AF_INET : AF_INET6;
	p->tcp = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->tcp < 0) {
		fail(p, errno, "make a socket to");
		return;
	}
	struct sockaddr_storage address = { 0 };
	socklen_t len;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&address;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)request->port);
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof *in;
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&address;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)request->port);
		in6->sin6_addr = in6addr_loopback;
		len = sizeof *in6;
	}
	if (connect(p->tcp, (struct sockaddr *)&address, len) == 0) {
		established(p);
		return;
	}
	if (errno != EINPROGRESS) {
		fail(p, errno, "connect to");
		return;
	}
	if (loop_watch(p->tcp, &p->watch, EPOLLOUT) < 0)
		fail(p, errno, "wait for the connection to");
}
