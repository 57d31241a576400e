/*
 * The relay's PROXY line: how the host learns who is calling (docs/architecture.md, "The relay
 * protocol"). For each relayed connection, one line, sent before any byte of the client's:
 *
 *   PROXY TCP4 <src> <dst> <src port> <dst port> <client socket inode>\r\n
 *
 * PROXY protocol v1 and one field of ours, the inode of the client's own socket, found with an
 * exact sock_diag lookup in the sandbox's network namespace. The host goes from the inode to the
 * process holding the socket and its binary, which the policy judges; 0 sends it to the slower
 * way, the client port in the sandbox's TCP table.
 *
 * Security: every field comes from the kernel (accept, getsockname, sock_diag), none from a byte
 * the client sends.
 * A sock_diag reply is taken only if it answers this request, so a stray one cannot make the
 * line name another connection's socket; a line that does not fit its buffer is refused, never
 * sent cut short or with a length past the buffer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "relay.h"

static void address_text(const struct sockaddr_storage *address, char *text, size_t size, unsigned *port)
{
	if (address->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)address;
		inet_ntop(AF_INET, &in->sin_addr, text, (socklen_t)size);
		*port = ntohs(in->sin_port);
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)address;
		inet_ntop(AF_INET6, &in6->sin6_addr, text, (socklen_t)size);
		*port = ntohs(in6->sin6_port);
	}
}

/* Copies an address and port into a sock_diag socket id (both stay in network byte order). */
static void diag_endpoint(const struct sockaddr_storage *address, __be32 ip[4], __be16 *port)
{
	if (address->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)address;
		ip[0] = in->sin_addr.s_addr;
		*port = in->sin_port;
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)address;
		memcpy(ip, &in6->sin6_addr, 16);
		*port = in6->sin6_port;
	}
}

/*
 * The inode of the client's own socket (local end = peer, remote end = local), by an exact
 * sock_diag lookup in this network namespace: one hash lookup in the kernel, where reading
 * /proc/net/tcp walks every socket. 0 when it cannot be had (the client already closed, or no
 * sock_diag); the host then reads the table. The reply comes while send() runs, so the recv
 * does not wait.
 */
static unsigned long client_socket_inode(struct relay *relay, const struct sockaddr_storage *peer,
					 const struct sockaddr_storage *local)
{
	if (relay->diag_fd < 0)
		return 0;
	struct {
		struct nlmsghdr header;
		struct inet_diag_req_v2 request;
	} message = { 0 };
	message.header.nlmsg_len = sizeof message;
	message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	message.header.nlmsg_flags = NLM_F_REQUEST;
	message.header.nlmsg_seq = ++relay->diag_seq;
	message.request.sdiag_family = (__u8)peer->ss_family;
	message.request.sdiag_protocol = IPPROTO_TCP;
	message.request.idiag_states = ~0U;
	diag_endpoint(peer, message.request.id.idiag_src, &message.request.id.idiag_sport);
	diag_endpoint(local, message.request.id.idiag_dst, &message.request.id.idiag_dport);
	message.request.id.idiag_cookie[0] = message.request.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (send(relay->diag_fd, &message, sizeof message, 0) != (ssize_t)sizeof message)
		return 0;
	union {
		struct nlmsghdr header;
		char bytes[1024];
	} reply;
	/* Read every queued reply and keep only this request's: a stray one (none is expected) must
	 * not name another connection's socket. */
	unsigned long inode = 0;
	for (;;) {
		ssize_t n = recv(relay->diag_fd, &reply, sizeof reply, MSG_DONTWAIT);
		if (n < 0)
			return inode;
		if (!NLMSG_OK(&reply.header, (size_t)n) || reply.header.nlmsg_seq != relay->diag_seq ||
		    reply.header.nlmsg_type != SOCK_DIAG_BY_FAMILY ||
		    reply.header.nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
			continue;
		const struct inet_diag_msg *found = NLMSG_DATA(&reply.header);
		inode = found->idiag_inode;
	}
}

/* "PROXY TCP4 <src> <dst> <src port> <dst port> <client socket inode>\r\n": PROXY protocol v1
 * and one field of ours (0 when unknown). Returns its length, or -1 with errno set and *what
 * naming the step. The line is sent from a buffer of RELAY_HEADER_MAX bytes: snprintf returns the
 * length the line would have had, so a line that did not fit is refused here (EMSGSIZE) rather
 * than sent with that length, which would read past the buffer. */
int relay_proxy_header(struct relay *relay, int client_fd, const struct sockaddr_storage *peer, char *header,
		       size_t size, const char **what)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof local;
	if (getsockname(client_fd, (struct sockaddr *)&local, &len) < 0) {
		*what = "getsockname of an accepted connection";
		return -1;
	}
	char source[INET6_ADDRSTRLEN], destination[INET6_ADDRSTRLEN];
	unsigned source_port, destination_port;
	address_text(peer, source, sizeof source, &source_port);
	address_text(&local, destination, sizeof destination, &destination_port);
	int n = snprintf(header, size, "PROXY %s %s %s %u %u %lu\r\n", peer->ss_family == AF_INET ? "TCP4" : "TCP6",
			 source, destination, source_port, destination_port, client_socket_inode(relay, peer, &local));
	if (n < 0 || (size_t)n >= size) {
		*what = "format the PROXY line";
		if (n >= 0)
			errno = EMSGSIZE;
		return -1;
	}
	return n;
}
