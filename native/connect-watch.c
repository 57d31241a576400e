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
 *   - PID 1 never blocks on the host: the event fd is non-blocking, and while a line cannot be
 *     written PID 1 holds the notification (the caller's connect waits) and stops receiving, so a
 *     host that reads slowly slows the agent's connects, never the relay. A host that is gone
 *     (EPIPE) gets no more lines; connects continue unseen.
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

static struct {
	struct watch listener_watch;
	struct watch event_watch;
	int listener_fd;  /* -1: not watching */
	int event_fd;     /* -1: no host to tell (none given, or it went away) */
	int handoff[2];   /* socketpair: the agent child sends the listener fd on [1] */
	struct connect_rules rules;
	struct seccomp_notif *notif;
	size_t notif_size;
	struct seccomp_notif_resp *resp;
	size_t resp_size;
	/* A line that did not fit the event fd yet, and the notification held until it does. */
	char *pending;
	size_t pending_len, pending_off;
	__u64 held_id;
	bool holding;
} cw = { .listener_fd = -1, .event_fd = -1, .handoff = { -1, -1 } };

static void on_listener(struct watch *self, uint32_t events);
static void on_event_fd(struct watch *self, uint32_t events);

/* ---- PID 1, before the fork ---- */

void connect_watch_prepare(const struct init_config *cfg, const struct landlock_plan *landlock)
{
	if (cfg->event_fd < 0)
		return;
	cw.event_fd = cfg->event_fd;
	cw.rules = (struct connect_rules){ .relay_port = cfg->relay_port,
					   .bind_ports = cfg->bind_ports,
					   .bind_count = cfg->bind_count,
					   .landlock_net = landlock->abi >= 4 };
	int flags = fcntl(cw.event_fd, F_GETFL);
	if (flags < 0 || fcntl(cw.event_fd, F_SETFL, flags | O_NONBLOCK) < 0)
		die(WATCH_STEP, errno, "make --event-fd %d non-blocking", cw.event_fd);
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

/* ---- the agent child ---- */

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

/* Sends the listener fd to PID 1 (or nothing, which PID 1 reads as "not watching"). */
static int hand_over(int listener)
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
		n = sendmsg(cw.handoff[1], &message, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == 1 ? 0 : -1;
}

/* In the agent child, after no_new_privs and Landlock, before the host's seccomp program (which
 * denies installing filters). A kernel without user notification (before 5.0) leaves connects
 * unwatched; the status line says so, and nothing else changes. */
void connect_watch_install_in_agent(void)
{
	if (cw.event_fd < 0)
		return;
	close(cw.handoff[0]);
	int listener = cw.notif ? install_filter() : -1;
	int err = listener < 0 ? (cw.notif ? errno : ENOSYS) : 0;
	if (hand_over(listener) < 0)
		die(WATCH_STEP, errno, "send the listener fd to PID 1");
	if (listener >= 0 && close(listener) < 0)
		die(WATCH_STEP, errno, "close the listener fd");
	close(cw.handoff[1]);

	struct status_line line;
	line_begin(&line, "connect_watch");
	line_bool(&line, "enabled", listener >= 0);
	if (listener < 0) {
		line_number(&line, "errno", err);
		line_string(&line, "error", strerror(err));
	}
	line_send(&line);
}

/* ---- PID 1, after the fork ---- */

static int receive_listener(void)
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
		n = recvmsg(cw.handoff[0], &message, MSG_CMSG_CLOEXEC);
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

void connect_watch_start(void)
{
	if (cw.event_fd < 0)
		return;
	close(cw.handoff[1]);
	cw.listener_fd = receive_listener();
	close(cw.handoff[0]);
	if (cw.listener_fd < 0)
		return;
	cw.listener_watch.handle = on_listener;
	cw.event_watch.handle = on_event_fd;
	if (!cw.notif || loop_watch(cw.listener_fd, &cw.listener_watch, EPOLLIN) < 0)
		pid1_fatal("watch the connect listener", cw.notif ? errno : ENOSYS);
}

/* ---- answering, and writing without blocking ---- */

static void respond(__u64 id)
{
	memset(cw.resp, 0, cw.resp_size);
	cw.resp->id = id;
	cw.resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
	/* ENOENT: the caller was interrupted or killed meanwhile; its call is gone. */
	if (ioctl(cw.listener_fd, SECCOMP_IOCTL_NOTIF_SEND, cw.resp) < 0 && errno != ENOENT)
		report_warning(WATCH_STEP, errno, "answer a watched connect");
}

static void stop_events(int err)
{
	if (err != EPIPE)
		report_warning(WATCH_STEP, err, "write to --event-fd %d (no more events are sent)", cw.event_fd);
	close(cw.event_fd);
	cw.event_fd = -1;
}

/* Writes what is pending; true when nothing is left (written, or dropped for a host gone). */
static bool flush_pending(void)
{
	while (cw.pending && cw.pending_off < cw.pending_len) {
		if (cw.event_fd < 0)
			break;
		ssize_t n = write(cw.event_fd, cw.pending + cw.pending_off, cw.pending_len - cw.pending_off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return false;
			stop_events(errno);
			break;
		}
		cw.pending_off += (size_t)n;
	}
	free(cw.pending);
	cw.pending = NULL;
	return true;
}

static void hold_until_written(__u64 id)
{
	cw.holding = true;
	cw.held_id = id;
	if (loop_unwatch(cw.listener_fd) < 0 || loop_watch(cw.event_fd, &cw.event_watch, EPOLLOUT) < 0) {
		report_warning(WATCH_STEP, errno, "wait for --event-fd %d", cw.event_fd);
		stop_events(EPIPE);
		flush_pending();
		cw.holding = false;
		respond(id);
		loop_watch(cw.listener_fd, &cw.listener_watch, EPOLLIN);
	}
}

static void on_event_fd(struct watch *self, uint32_t events)
{
	(void)self;
	(void)events;
	if (!flush_pending())
		return; /* still full: EPOLLOUT again later */
	if (cw.event_fd >= 0)
		loop_unwatch(cw.event_fd);
	cw.holding = false;
	respond(cw.held_id);
	if (loop_watch(cw.listener_fd, &cw.listener_watch, EPOLLIN) < 0)
		report_warning(WATCH_STEP, errno, "watch the listener again");
}

static void on_listener(struct watch *self, uint32_t events)
{
	(void)self;
	if (events & (EPOLLHUP | EPOLLERR)) {
		/* Every process under the filter has exited. */
		loop_unwatch(cw.listener_fd);
		close(cw.listener_fd);
		cw.listener_fd = -1;
		return;
	}
	memset(cw.notif, 0, cw.notif_size);
	if (ioctl(cw.listener_fd, SECCOMP_IOCTL_NOTIF_RECV, cw.notif) < 0) {
		/* ENOENT: the caller was interrupted before we got to it. */
		if (errno != ENOENT && errno != EINTR)
			report_warning(WATCH_STEP, errno, "receive a watched connect");
		return;
	}
	__u64 id = cw.notif->id;
	size_t len = 0;
	char *text = cw.event_fd >= 0 ? connect_describe(&cw.rules, cw.notif, &len) : NULL;
	if (text) {
		/* What was read belongs to this call only if the call is still waiting (its pid may
		 * be another process's by now). */
		if (ioctl(cw.listener_fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0) {
			free(text);
			return;
		}
		cw.pending = text;
		cw.pending_len = len;
		cw.pending_off = 0;
		if (!flush_pending()) {
			hold_until_written(id);
			return;
		}
	}
	respond(id);
}
