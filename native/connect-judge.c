/*
 * Judging one watched connect() as the kernel will, for connect-watch.c: the destination is read
 * from the caller's memory (at most a sockaddr_in6, its length bounded; it is data from the
 * sandbox), and the call is refused by Landlock when it is TCP (SO_TYPE and SO_PROTOCOL of a
 * pidfd_getfd copy of the caller's socket) to a port that is neither the relay's nor a
 * --bind-port (ABI >= 4), or by the network namespace when the address is not loopback. What is
 * allowed - the relay, the sandbox's own servers, loopback UDP, unix sockets - costs one read of
 * the caller's memory and nothing else.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "connect-watch.h"

enum verdict { ALLOWED, REFUSED_BY_LANDLOCK, REFUSED_BY_NETWORK };

static bool loopback(const struct sockaddr_storage *address)
{
	if (address->ss_family == AF_INET) {
		in_addr_t a = ntohl(((const struct sockaddr_in *)address)->sin_addr.s_addr);
		return (a >> 24) == 127 || a == INADDR_ANY; /* 0.0.0.0 means this host: lo here */
	}
	const struct in6_addr *a = &((const struct sockaddr_in6 *)address)->sin6_addr;
	if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a))
		return true;
	return IN6_IS_ADDR_V4MAPPED(a) && (a->s6_addr[12] == 127 || (a->s6_addr32[3] == 0));
}

static bool port_open_to_connect(const struct connect_rules *rules, unsigned port)
{
	if (port == rules->relay_port)
		return true;
	for (size_t i = 0; i < rules->bind_count; i++)
		if (rules->bind_ports[i] != 0 && rules->bind_ports[i] == port)
			return true;
	return false;
}

/* The thread group of a thread (pidfd_open wants the leader). -1 when it cannot be read. */
static pid_t thread_group_of(pid_t tid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
	FILE *status = fopen(path, "re");
	if (!status)
		return -1;
	char text[256];
	pid_t tgid = -1;
	while (fgets(text, sizeof text, status)) {
		if (sscanf(text, "Tgid:\t%d", &tgid) == 1)
			break;
	}
	fclose(status);
	return tgid;
}

/* The type and protocol of the socket `fd` of thread `tid`, through a copy of it (pidfd_getfd).
 * Returns -1 when it cannot be had (the process went away or is not dumpable; fd is no socket). */
static int socket_kind(pid_t tid, int fd, int *type, int *protocol)
{
	pid_t tgid = thread_group_of(tid);
	if (tgid <= 0)
		return -1;
	int pidfd = (int)syscall(SYS_pidfd_open, tgid, 0);
	if (pidfd < 0)
		return -1;
	int copy = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	close(pidfd);
	if (copy < 0)
		return -1;
	socklen_t len = sizeof *type;
	int rc = getsockopt(copy, SOL_SOCKET, SO_TYPE, type, &len);
	len = sizeof *protocol;
	if (rc == 0)
		rc = getsockopt(copy, SOL_SOCKET, SO_PROTOCOL, protocol, &len);
	close(copy);
	return rc;
}

static enum verdict judge(const struct connect_rules *rules, const struct sockaddr_storage *address,
			  unsigned port, int type, int protocol)
{
	bool tcp = type == SOCK_STREAM && protocol == IPPROTO_TCP;
	if (tcp && rules->landlock_net && !port_open_to_connect(rules, port))
		return REFUSED_BY_LANDLOCK;
	if (!loopback(address))
		return REFUSED_BY_NETWORK;
	return ALLOWED;
}

char *connect_describe(const struct connect_rules *rules, const struct seccomp_notif *n, size_t *len)
{
	int fd = (int)n->data.args[0];
	size_t addrlen = (size_t)(socklen_t)n->data.args[2];
	struct sockaddr_storage address = { 0 };
	size_t want = addrlen < sizeof(struct sockaddr_in6) ? addrlen : sizeof(struct sockaddr_in6);
	if (want < sizeof(sa_family_t))
		return NULL;
	struct iovec local = { .iov_base = &address, .iov_len = want };
	struct iovec remote = { .iov_base = (void *)(uintptr_t)n->data.args[1], .iov_len = want };
	if (process_vm_readv((pid_t)n->pid, &local, 1, &remote, 1, 0) != (ssize_t)want)
		return NULL;
	/* An IPv6 address may come without its scope id (the kernel accepts 24 bytes, RFC 2133's
	 * size); the rest of a short address is left zero. */
	if (!((address.ss_family == AF_INET && want >= sizeof(struct sockaddr_in)) ||
	      (address.ss_family == AF_INET6 && want >= offsetof(struct sockaddr_in6, sin6_scope_id))))
		return NULL; /* unix sockets, AF_UNSPEC, short addresses: not ours to judge */

	unsigned port = ntohs(address.ss_family == AF_INET ? ((struct sockaddr_in *)&address)->sin_port
							   : ((struct sockaddr_in6 *)&address)->sin6_port);
	/* Cheap first: a loopback connect to an open port is the relay or the sandbox's own server. */
	if (loopback(&address) && (!rules->landlock_net || port_open_to_connect(rules, port)))
		return NULL;
	int type, protocol;
	if (socket_kind((pid_t)n->pid, fd, &type, &protocol) < 0)
		return NULL;
	enum verdict verdict = judge(rules, &address, port, type, protocol);
	if (verdict == ALLOWED)
		return NULL;

	char text[INET6_ADDRSTRLEN] = "";
	if (address.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&address)->sin_addr, text, sizeof text);
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&address)->sin6_addr, text, sizeof text);
	char exe_path[64], binary[4096];
	snprintf(exe_path, sizeof exe_path, "/proc/%u/exe", n->pid);
	ssize_t binary_len = readlink(exe_path, binary, sizeof binary - 1);
	binary[binary_len > 0 ? binary_len : 0] = '\0';

	struct status_line line;
	line_begin(&line, "connect");
	line_number(&line, "pid", n->pid);
	if (binary_len > 0)
		line_string(&line, "binary", binary);
	line_string(&line, "protocol",
		    type == SOCK_STREAM && protocol == IPPROTO_TCP ? "tcp"
		    : type == SOCK_DGRAM			    ? "udp"
								    : "other");
	line_string(&line, "family", address.ss_family == AF_INET ? "ipv4" : "ipv6");
	line_string(&line, "address", text);
	line_number(&line, "port", port);
	line_string(&line, "refused_by", verdict == REFUSED_BY_LANDLOCK ? "landlock" : "network");
	return line_finish(&line, len);
}
