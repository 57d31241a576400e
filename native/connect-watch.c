/*
 * Watching the sandbox's connect() calls, to report those the sandbox refuses.
 *
 * A direct connection (one that does not go through the relay) is refused by the kernel: Landlock
 * answers EACCES for a TCP port that is neither the relay's nor a --bind-port, and the network
 * namespace, which holds only lo, has no route anywhere else. Neither leaves a trace the host can
 * see. So, when --event-fd is given, the agent child installs one more seccomp filter before the
 * host's program: connect(2) -> SECCOMP_RET_USER_NOTIF, everything else allowed, with a listener
 * fd that it passes to PID 1 (SCM_RIGHTS over a socketpair) before its execve. PID 1 watches the
 * listener in its event loop; for each connect() it reads the destination from the caller's
 * memory, works out whether the sandbox will refuse it and why, writes one JSON line on the event
 * fd for a refused one, and answers SECCOMP_USER_NOTIF_FLAG_CONTINUE: the call goes on to the
 * kernel, which decides.
 *
 * Security assumptions:
 *   - This observes; it never decides. CONTINUE hands the call to the kernel exactly as if no
 *     filter had looked, and Landlock and the namespace refuse or allow it. The notifier's TOCTOU
 *     (the caller may rewrite the sockaddr after PID 1 read it) therefore cannot widen anything: a
 *     hostile agent can only make PID 1 report a refusal that did not happen, or miss one. The
 *     events serve the user of a well-behaved agent ("why does my loopback base URL fail?"), they
 *     are no evidence against a hostile one.
 *   - The filter is installed before the host's program, which then denies any further filter: the
 *     agent cannot stack a USER_NOTIF filter of its own over this one. The host's program never
 *     denies connect, so every connect() reaches PID 1.
 *   - What PID 1 reads from the caller (at most a sockaddr_in6) is parsed as data, with its length
 *     bounded. Reading needs ptrace access: a process that made itself non-dumpable is not watched
 *     (its calls are continued unseen).
 *   - PID 1 never blocks on the host: while the queue cannot take a line (the event fd has not
 *     taken the last one whole, or the control subscriber is EVENTS_QUEUE_MAX lines behind), PID 1
 *     holds the notification (the caller's connect waits) and receives no other from any
 *     listener, so a host that reads slowly slows the sandbox's connects, never the relay. A host
 *     whose event fd is gone (EPIPE) gets no more lines; connects continue unseen.
 *   - Only connect(2) is watched. A datagram sent with sendto(2) to an outside address, and TCP Fast
 *     Open, are refused (no route) without a line: watching every send would cost every send.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "connect-watch.h"

#define WATCH_STEP "connect_watch"

#if defined(__x86_64__)
#define WATCH_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define WATCH_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "carapace-init: connect watch: unsupported architecture"
#endif

/* One listener: the agent's, or an exec'd process's. */
struct listener {
	struct watch watch;
	int fd;
	bool watched;
	struct listener *next;
};

static struct {
	bool enabled;
	int handoff[2]; /* socketpair: the agent child sends the listener fd on [1] */
	struct connect_rules rules;
	struct seccomp_notif *notif;
	size_t notif_size;
	struct seccomp_notif_resp *resp;
	size_t resp_size;
	struct listener *listeners;
	/* A line the queue could not take yet, and the notification held until it does. */
	int held_fd;
	__u64 held_id;
	bool holding;
} cw = { .handoff = { -1, -1 }, .held_fd = -1 };

static void on_listener(struct watch *self, uint32_t events);
static void on_events_ready(void);

/* ---- PID 1, before the fork ---- */

void connect_watch_prepare(const struct init_config *cfg, const struct landlock_plan *landlock)
{
	if (!events_wanted())
		return;
	cw.enabled = true;
	cw.rules = (struct connect_rules){ .relay_port = cfg->relay_port,
					   .bind_ports = cfg->bind_ports,
					   .bind_count = cfg->bind_count,
					   .landlock_net = landlock->abi >= 4 };
	events_on_ready(on_events_ready);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cw.handoff) < 0)
		die(WATCH_STEP, errno, "socketpair for the listener hand-off");

	/* Everything that can fail is done here, before any agent exists: once the listener is
	 * PID 1's, it must be served, for a closed listener fails every watched connect (ENOSYS)
	 * and an unread one hangs them. A kernel without user notification says so with EINVAL,
	 * and the agent child then installs nothing. */
	struct seccomp_notif_sizes sizes;
	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0)
		return; /* reported by the agent child, whose filter the kernel refuses the same way */
	/* The kernel's structures may be larger than the ones we were built with. */
	cw.notif_size = sizes.seccomp_notif > sizeof *cw.notif ? sizes.seccomp_notif : sizeof *cw.notif;
	cw.resp_size = sizes.seccomp_notif_resp > sizeof *cw.resp ? sizes.seccomp_notif_resp : sizeof *cw.resp;
	cw.notif = malloc(cw.notif_size);
	cw.resp = malloc(cw.resp_size);
	if (!cw.notif || !cw.resp)
		die(WATCH_STEP, ENOMEM, "allocate the notification buffers");
}

/* ---- in a child of PID 1 (the agent, or an exec'd process) ---- */

static int install_filter(void)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, WATCH_AUDIT_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW), /* the host's program kills other arches */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_connect, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog program = { .len = sizeof filter / sizeof filter[0], .filter = filter };
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &program);
}

/* Sends the listener fd to PID 1 ('L'), or nothing ('-'), which PID 1 reads as "not watching". */
static int hand_over(int sock, int listener)
{
	char byte = listener >= 0 ? 'L' : '-';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr header;
		char bytes[CMSG_SPACE(sizeof(int))];
	} control = { 0 };
	struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (listener >= 0) {
		message.msg_control = control.bytes;
		message.msg_controllen = sizeof control.bytes;
		struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cmsg), &listener, sizeof(int));
	}
	ssize_t n;
	do
		n = sendmsg(sock, &message, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == 1 ? 0 : -1;
}

int connect_watch_install(int sock, int *install_error)
{
	*install_error = 0;
	if (!cw.enabled)
		return 0;
	int listener = cw.notif ? install_filter() : -1;
	if (listener < 0)
		*install_error = cw.notif ? errno : ENOSYS;
	if (hand_over(sock, listener) < 0)
		return -1;
	if (listener >= 0 && close(listener) < 0)
		return -1;
	return 0;
}

/* In the agent child, after no_new_privs and Landlock, before the host's seccomp program (which
 * denies installing filters). A kernel without user notification (before 5.0) leaves connects
 * unwatched; the status line says so, and nothing else changes. */
void connect_watch_install_in_agent(void)
{
	if (!cw.enabled)
		return;
	close(cw.handoff[0]);
	int err;
	if (connect_watch_install(cw.handoff[1], &err) < 0)
		die(WATCH_STEP, errno, "send the listener fd to PID 1");
	close(cw.handoff[1]);

	struct status_line line;
	line_begin(&line, "connect_watch");
	line_bool(&line, "enabled", err == 0);
	if (err) {
		line_number(&line, "errno", err);
		line_string(&line, "error", strerror(err));
	}
	line_send(&line);
}

/* ---- PID 1, after the fork ---- */

int connect_watch_receive(int sock, bool wait)
{
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr header;
		char bytes[CMSG_SPACE(sizeof(int))];
	} control;
	struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes,
				  .msg_controllen = sizeof control.bytes };
	ssize_t n;
	do
		n = recvmsg(sock, &message, MSG_CMSG_CLOEXEC | (wait ? 0 : MSG_DONTWAIT));
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return -1; /* the child failed before it could say: it reported why */
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message);
	if (byte != 'L' || !cmsg || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS ||
	    cmsg->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
	return fd;
}

void connect_watch_add_listener(int fd)
{
	if (!cw.notif) {
		/* The child installed a filter the kernel said it cannot notify for: cannot happen, but an
		 * unserved listener would hang every connect. */
		pid1_fatal("watch a connect listener", ENOSYS);
	}
	struct listener *l = calloc(1, sizeof *l);
	if (!l)
		pid1_fatal("allocate a connect listener", ENOMEM);
	*l = (struct listener){ .watch.handle = on_listener, .fd = fd, .next = cw.listeners };
	cw.listeners = l;
	if (cw.holding)
		return; /* watched once the held line is queued */
	if (loop_watch(fd, &l->watch, EPOLLIN) < 0)
		pid1_fatal("watch a connect listener", errno);
	l->watched = true;
}

void connect_watch_start(void)
{
	if (!cw.enabled)
		return;
	close(cw.handoff[1]);
	/* Waits for the agent child's message, or for its end (it failed, and said why). */
	int fd = connect_watch_receive(cw.handoff[0], true);
	close(cw.handoff[0]);
	if (fd >= 0)
		connect_watch_add_listener(fd);
}

/* ---- answering ---- */

static void respond(int listener_fd, __u64 id)
{
	memset(cw.resp, 0, cw.resp_size);
	cw.resp->id = id;
	cw.resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
	/* ENOENT: the caller was interrupted or killed meanwhile; its call is gone. */
	if (ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_SEND, cw.resp) < 0 && errno != ENOENT)
		report_warning(WATCH_STEP, errno, "answer a watched connect");
}

static void watch_all(bool watch)
{
	for (struct listener *l = cw.listeners; l; l = l->next) {
		if (l->watched == watch)
			continue;
		if ((watch ? loop_watch(l->fd, &l->watch, EPOLLIN) : loop_unwatch(l->fd)) < 0)
			pid1_fatal(watch ? "watch a connect listener again" : "pause a connect listener", errno);
		l->watched = watch;
	}
}

/* The queue took the held line: answer the held call, and listen again. */
static void on_events_ready(void)
{
	if (!cw.holding)
		return;
	cw.holding = false;
	if (cw.held_fd >= 0)
		respond(cw.held_fd, cw.held_id);
	cw.held_fd = -1;
	watch_all(true);
}

static void drop_listener(struct listener *gone)
{
	for (struct listener **p = &cw.listeners; *p; p = &(*p)->next) {
		if (*p == gone) {
			*p = gone->next;
			break;
		}
	}
	if (gone->watched)
		loop_unwatch(gone->fd);
	close(gone->fd);
	loop_free_later(gone);
}

static void on_listener(struct watch *self, uint32_t events)
{
	struct listener *l = container_of(self, struct listener, watch);
	if (events & (EPOLLHUP | EPOLLERR)) {
		/* Every process under the filter has exited. */
		drop_listener(l);
		return;
	}
	memset(cw.notif, 0, cw.notif_size);
	if (ioctl(l->fd, SECCOMP_IOCTL_NOTIF_RECV, cw.notif) < 0) {
		/* ENOENT: the caller was interrupted before we got to it. */
		if (errno != ENOENT && errno != EINTR)
			report_warning(WATCH_STEP, errno, "receive a watched connect");
		return;
	}
	__u64 id = cw.notif->id;
	size_t len = 0;
	char *text = connect_describe(&cw.rules, cw.notif, &len);
	if (text) {
		/* What was read belongs to this call only if the call is still waiting (its pid may
		 * be another process's by now). */
		if (ioctl(l->fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0) {
			free(text);
			return;
		}
		bool go_on = events_publish(text, len);
		free(text);
		if (!go_on) {
			/* Hold this caller, and take no other connect, until the readers catch up. */
			cw.holding = true;
			cw.held_fd = l->fd;
			cw.held_id = id;
			watch_all(false);
			return;
		}
	}
	respond(l->fd, id);
}
