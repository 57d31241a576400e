/*
 * The relay: the sandbox's only way out.
 *
 * The sandbox's network namespace has nothing but lo. The relay listens on 127.0.0.1:<port> and
 * [::1]:<port> (3128 by default) and, for each connection, connects to the host proxy's Unix
 * socket, writes one PROXY protocol v1 line carrying the client's address and port (and, as a
 * seventh field of our own, the inode of the client's socket: relay-header.c), then copies bytes
 * both ways (relay-pump.c). The host knows the sandbox from the socket and the calling program
 * from the client's socket: the inode saves it reading the sandbox's whole TCP table to find it.
 *
 * The host socket's directory is not mounted in the sandbox: it is reachable only through the
 * O_PATH directory fd PID 1 inherited (--relay-dir-fd), which is close-on-exec, so the agent
 * never holds it, and which it cannot take from PID 1 (not dumpable: /proc/1/fd is closed to it,
 * see pid1.c). We connect through /proc/self/fd/<fd>/<name>, the magic link to that directory.
 *
 * The relay runs inside PID 1's event loop, before any restriction is applied to the agent. The
 * agent cannot replace it: the port is taken, and Landlock (ABI >= 4) lets the agent bind only
 * the --bind-port ports. It cannot forge the header either: the line comes before anything the
 * client sends, and the host reads only the first one.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay.h"

#define ACCEPTS_PER_ROUND 64 /* then let the other fds have a turn */

/* bwrap brings lo up in a new network namespace; make sure, since 127.0.0.1 exists only then. */
static void loopback_ensure_up(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die(RELAY_STEP, errno, "socket(AF_INET, SOCK_DGRAM) to query lo");
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		die(RELAY_STEP, errno, "SIOCGIFFLAGS lo");
	if (!(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
			die(RELAY_STEP, errno, "bring the loopback interface lo up");
	}
	if (close(fd) < 0)
		die(RELAY_STEP, errno, "close the lo query socket");
}

static void on_listener(struct watch *self, uint32_t events);
static void on_connection_closed(struct pump_owner *owner);

/* Returns the listening fd, or -1 with errno set. */
static int listen_on(int family, unsigned port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_storage address = { 0 };
	socklen_t len;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&address;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof *in;
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&address;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		in6->sin6_addr = in6addr_loopback;
		len = sizeof *in6;
		int only = 1;
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof only) < 0)
			goto fail;
	}
	if (bind(fd, (struct sockaddr *)&address, len) < 0 || listen(fd, SOMAXCONN) < 0)
		goto fail;
	return fd;
fail:;
	int err = errno;
	close(fd);
	errno = err;
	return -1;
}

static void add_listener(struct relay *relay, int fd, const char *where)
{
	struct listener *listener = &relay->listeners[relay->listener_count++];
	*listener = (struct listener){ .watch.handle = on_listener, .fd = fd, .relay = relay };
	if (loop_watch(fd, &listener->watch, EPOLLIN) < 0)
		die(RELAY_STEP, errno, "watch the listener on %s", where);
}

/* The host socket must be there before the sandbox starts; saying so now beats failing each
 * connection later. */
static void check_upstream(const struct init_config *cfg, const struct relay *relay)
{
	struct stat st;
	if (fstat(cfg->relay_dir_fd, &st) < 0)
		die(RELAY_STEP, errno, "--relay-dir-fd %d", cfg->relay_dir_fd);
	if (!S_ISDIR(st.st_mode))
		die(RELAY_STEP, ENOTDIR, "--relay-dir-fd %d", cfg->relay_dir_fd);
	if (fstatat(cfg->relay_dir_fd, cfg->relay_socket, &st, 0) < 0)
		die(RELAY_STEP, errno, "the host socket %s", relay->upstream.sun_path);
	if (!S_ISSOCK(st.st_mode))
		die(RELAY_STEP, ENOTSOCK, "the host socket %s", relay->upstream.sun_path);
	/* The path we connect through goes by /proc's magic link to the directory. */
	if (stat(relay->upstream.sun_path, &st) < 0)
		die(RELAY_STEP, errno, "reach the host socket through %s (is /proc mounted?)",
		    relay->upstream.sun_path);
}

struct relay *relay_start(const struct init_config *cfg)
{
	struct status_line line;
	if (cfg->relay_dir_fd < 0) {
		line_begin(&line, "relay");
		line_bool(&line, "enabled", false);
		line_send(&line);
		return NULL;
	}

	struct relay *relay = calloc(1, sizeof *relay);
	if (!relay)
		die(RELAY_STEP, ENOMEM, "allocate the relay");
	relay->port = cfg->relay_port;
	relay->accepting = true;
	relay->pump.closed = on_connection_closed;
	relay->spare_upstream = -1;
	/* Without sock_diag the header says 0 and the host finds the socket the slow way. */
	relay->diag_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	relay->upstream.sun_family = AF_UNIX;
	int n = snprintf(relay->upstream.sun_path, sizeof relay->upstream.sun_path, "/proc/self/fd/%d/%s",
			 cfg->relay_dir_fd, cfg->relay_socket);
	if (n < 0 || (size_t)n >= sizeof relay->upstream.sun_path)
		die(RELAY_STEP, ENAMETOOLONG, "the host socket path /proc/self/fd/%d/%s", cfg->relay_dir_fd,
		    cfg->relay_socket);
	relay->upstream_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
	check_upstream(cfg, relay);

	loopback_ensure_up();
	int fd4 = listen_on(AF_INET, relay->port);
	if (fd4 < 0)
		die(RELAY_STEP, errno, "listen on 127.0.0.1:%u", relay->port);
	add_listener(relay, fd4, "127.0.0.1");

	/* IPv6 may be off in this kernel or namespace; the relay then serves IPv4 only, and the
	 * status line says so. */
	int fd6 = listen_on(AF_INET6, relay->port);
	int ipv6_error = fd6 < 0 ? errno : 0;
	if (fd6 >= 0)
		add_listener(relay, fd6, "[::1]");
	else if (ipv6_error != EAFNOSUPPORT && ipv6_error != EADDRNOTAVAIL)
		die(RELAY_STEP, ipv6_error, "listen on [::1]:%u", relay->port);

	line_begin(&line, "relay");
	line_bool(&line, "enabled", true);
	line_number(&line, "port", relay->port);
	line_string(&line, "socket", cfg->relay_socket);
	line_bool(&line, "ipv4", true);
	line_bool(&line, "ipv6", fd6 >= 0);
	line_bool(&line, "socket_inodes", relay->diag_fd >= 0);
	if (fd6 < 0)
		line_string(&line, "ipv6_error", strerror(ipv6_error));
	line_send(&line);
	return relay;
}

/* ---- accepting connections ---- */

/* When fds run out, stop accepting (a level-triggered listener would otherwise wake us forever)
 * until a connection closes. Clients wait in the listen backlog meanwhile. */
static void set_accepting(struct relay *relay, bool accepting)
{
	if (relay->accepting == accepting)
		return;
	relay->accepting = accepting;
	for (size_t i = 0; i < relay->listener_count; i++) {
		struct listener *listener = &relay->listeners[i];
		int rc = accepting ? loop_watch(listener->fd, &listener->watch, EPOLLIN) : loop_unwatch(listener->fd);
		if (rc < 0)
			report_warning(RELAY_STEP, errno, "%s accepting connections",
				       accepting ? "resume" : "pause");
	}
}

static void on_connection_closed(struct pump_owner *owner)
{
	struct relay *relay = container_of(owner, struct relay, pump);
	relay->open_connections--;
	set_accepting(relay, true);
}

/* The next connection's pipes and host socket, kept ready; -1 with errno set when fds ran out. */
static int prepare_spare(struct relay *relay)
{
	if (!relay->spare) {
		relay->spare = connection_prepare(&relay->pump);
		if (!relay->spare)
			return -1;
	}
	if (relay->spare_upstream < 0) {
		relay->spare_upstream = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (relay->spare_upstream < 0)
			return -1;
	}
	return 0;
}

/* Connects the prepared socket to the host and sends the header. Returns -1 after a warning. */
static int open_upstream(struct relay *relay, int upstream_fd, int client_fd, const struct sockaddr_storage *peer)
{
	char header[RELAY_HEADER_MAX];
	const char *what = "";
	int header_len = relay_proxy_header(relay, client_fd, peer, header, sizeof header, &what);
	if (header_len < 0) {
		report_warning(RELAY_STEP, errno, "%s (the client's connection is closed)", what);
		return -1;
	}
	/* A Unix stream connect completes at once or fails; EAGAIN means the host's backlog is
	 * full, and the client is refused rather than PID 1 blocked. */
	if (connect(upstream_fd, (struct sockaddr *)&relay->upstream, relay->upstream_len) < 0) {
		report_warning(RELAY_STEP, errno, "connect to the host socket %s", relay->upstream.sun_path);
		return -1;
	}
	/* A fresh socket's buffer is empty, so the short line goes out whole. */
	ssize_t sent = send(upstream_fd, header, (size_t)header_len, MSG_NOSIGNAL);
	if (sent != header_len) {
		report_warning(RELAY_STEP, sent < 0 ? errno : EIO, "send the PROXY line to the host");
		return -1;
	}
	return 0;
}

static void pause_accepting(struct relay *relay, int err, const char *what)
{
	report_warning(RELAY_STEP, err, "%s (pausing until a connection closes)", what);
	set_accepting(relay, false);
}

static void on_listener(struct watch *self, uint32_t events)
{
	(void)events;
	struct listener *listener = container_of(self, struct listener, watch);
	struct relay *relay = listener->relay;

	for (int i = 0; i < ACCEPTS_PER_ROUND && relay->accepting; i++) {
		if (prepare_spare(relay) < 0) {
			pause_accepting(relay, errno, "prepare a connection");
			return;
		}
		struct sockaddr_storage peer;
		socklen_t len = sizeof peer;
		int client = accept4(listener->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (client < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				pause_accepting(relay, errno, "accept");
			else
				report_warning(RELAY_STEP, errno, "accept");
			return;
		}
		struct connection *connection = relay->spare;
		int upstream = relay->spare_upstream;
		relay->spare = NULL;
		relay->spare_upstream = -1;
		if (open_upstream(relay, upstream, client, &peer) < 0) {
			close(client);
			close(upstream);
			connection_discard(connection);
			continue;
		}
		relay->open_connections++;
		connection_start(connection, client, upstream);
	}
}

/* Paused with nothing open, no connection will close to resume us (the fds went elsewhere, or
 * the limit was lowered): try again every second. */
int relay_wait_timeout(const struct relay *relay)
{
	return !relay->accepting && relay->open_connections == 0 ? 1000 : -1;
}

void relay_after_round(struct relay *relay)
{
	pump_collect_closed(&relay->pump);
	if (!relay->accepting && relay->open_connections == 0)
		set_accepting(relay, true);
}
