/*
 * The sandbox's event lines: the connects it refuses (connect-watch.c) and, on the control
 * socket, the agent's exit. Two readers, each optional:
 *
 *   --event-fd        the host's pipe (carapace run): every connect line, as it comes
 *   the control socket one subscriber at a time ({"op":"events"}): every line with a sequence
 *                     number, {"seq":N,"event":...}, the agent's exit included
 *
 * Audit events are never dropped, and PID 1 never buffers without bound. So the lines wait in one
 * queue, each until every reader has it: the event fd has it once written; the subscriber once
 * written, or, when it asked for acknowledgements ({"op":"events","ack":true}), once it has sent
 * {"ack":N} for it or a later one. A subscriber that goes away gets what it had not acknowledged
 * again on its successor's connection: a gateway that restarts loses nothing. The queue holds at
 * most EVENTS_QUEUE_MAX lines the subscriber does not have yet; while it is full, or while the
 * event fd has not taken the newest line whole, events_publish answers "wait", and the connect
 * watch holds the caller's connect() (and receives no other) until events_ready() says so. With
 * the control socket and no subscriber, that is after EVENTS_QUEUE_MAX refused connects: a
 * gateway keeps a subscriber. The exit line is queued whatever the count (the agent is gone; there
 * is nobody left to hold).
 *
 * When PID 1 exits, what the subscriber has not acknowledged (or been sent) is written to
 * events.jsonl in the control directory, next to exit.json, for the gateway that comes back.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "control.h"

#define EVENTS_STEP "events"
#define EVENTS_QUEUE_MAX 1024
#define ACK_LINE_MAX 256

struct event {
	struct event *next;
	unsigned long long seq;
	bool control_only; /* the exit line: not for --event-fd, whose format predates it */
	char prefix[32];   /* {"seq":N, : the control stream's line is prefix + text + 1 */
	size_t prefix_len;
	size_t len;
	char text[]; /* {"event":...}\n */
};

static struct {
	bool control; /* a control socket exists: lines wait for its subscriber */
	struct event *head, *tail;
	unsigned long long next_seq;
	/* --event-fd */
	int fd;
	struct watch fd_watch;
	bool fd_watched;
	struct event *fd_next; /* the next line to write, NULL: caught up */
	size_t fd_off;
	/* the control subscriber */
	struct subscriber *subscriber;
	struct event *unconsumed; /* the oldest line the subscriber does not have (acked or written) */
	size_t waiting;           /* lines from `unconsumed` on */
	void (*ready)(void);
	bool told_wait;
} ev = { .fd = -1, .next_seq = 1 };

struct subscriber {
	struct watch watch;
	int fd;
	bool ack;
	uint32_t watched;
	struct event *next; /* the next line to write; NULL: all written */
	size_t off;
	char in[ACK_LINE_MAX];
	size_t in_len;
};

static void on_event_fd(struct watch *self, uint32_t events);
static void on_subscriber(struct watch *self, uint32_t events);

void events_prepare(const struct init_config *cfg)
{
	ev.control = cfg->control_dir_fd >= 0;
	if (cfg->event_fd < 0)
		return;
	ev.fd = cfg->event_fd;
	ev.fd_watch.handle = on_event_fd;
	int flags = fcntl(ev.fd, F_GETFL);
	if (flags < 0 || fcntl(ev.fd, F_SETFL, flags | O_NONBLOCK) < 0)
		die(EVENTS_STEP, errno, "make --event-fd %d non-blocking", ev.fd);
}

bool events_wanted(void)
{
	return ev.fd >= 0 || ev.control;
}

void events_on_ready(void (*ready)(void))
{
	ev.ready = ready;
}

/* ---- the queue ---- */

static bool fd_has(const struct event *e)
{
	return ev.fd < 0 || e->control_only || !ev.fd_next || e->seq < ev.fd_next->seq;
}

static bool subscriber_has(const struct event *e)
{
	return !ev.control || !ev.unconsumed || e->seq < ev.unconsumed->seq;
}

/* Frees the lines every reader has, from the oldest; says "go on" when the queue has room again. */
static void release(void)
{
	while (ev.head && fd_has(ev.head) && subscriber_has(ev.head)) {
		struct event *e = ev.head;
		ev.head = e->next;
		if (!ev.head)
			ev.tail = NULL;
		free(e);
	}
	if (ev.told_wait && (!ev.control || ev.waiting < EVENTS_QUEUE_MAX) && (ev.fd < 0 || !ev.fd_next)) {
		ev.told_wait = false;
		if (ev.ready)
			ev.ready();
	}
}

static void fd_stop(int err)
{
	if (err != EPIPE)
		report_warning(EVENTS_STEP, err, "write to --event-fd %d (no more events are sent)", ev.fd);
	if (ev.fd_watched)
		loop_unwatch(ev.fd);
	close(ev.fd);
	ev.fd = -1;
	ev.fd_next = NULL;
}

static void fd_flush(void)
{
	while (ev.fd >= 0 && ev.fd_next) {
		struct event *e = ev.fd_next;
		if (e->control_only) {
			ev.fd_next = e->next;
			ev.fd_off = 0;
			continue;
		}
		ssize_t n = write(ev.fd, e->text + ev.fd_off, e->len - ev.fd_off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				if (!ev.fd_watched && loop_watch(ev.fd, &ev.fd_watch, EPOLLOUT) < 0)
					fd_stop(errno);
				else
					ev.fd_watched = true;
				return;
			}
			fd_stop(errno);
			return;
		}
		ev.fd_off += (size_t)n;
		if (ev.fd_off == e->len) {
			ev.fd_next = e->next;
			ev.fd_off = 0;
		}
	}
	if (ev.fd >= 0 && ev.fd_watched) {
		loop_unwatch(ev.fd);
		ev.fd_watched = false;
	}
}

static void on_event_fd(struct watch *self, uint32_t events)
{
	(void)self;
	(void)events;
	fd_flush();
	release();
}

static void subscriber_flush(void);

static struct event *append(const char *text, size_t len, bool control_only)
{
	struct event *e = malloc(sizeof *e + len);
	if (!e)
		return NULL;
	e->next = NULL;
	e->seq = ev.next_seq++;
	e->control_only = control_only;
	e->len = len;
	memcpy(e->text, text, len);
	e->prefix_len = (size_t)snprintf(e->prefix, sizeof e->prefix, "{\"seq\":%llu,", e->seq);
	if (ev.tail)
		ev.tail->next = e;
	else
		ev.head = e;
	ev.tail = e;
	if (ev.fd >= 0 && !ev.fd_next) {
		ev.fd_next = e;
		ev.fd_off = 0;
	}
	if (ev.control) {
		if (!ev.unconsumed)
			ev.unconsumed = e;
		ev.waiting++;
		if (ev.subscriber && !ev.subscriber->next) {
			ev.subscriber->next = e;
			ev.subscriber->off = 0;
		}
	}
	return e;
}

bool events_publish(const char *text, size_t len)
{
	if (!events_wanted())
		return true;
	if (!append(text, len, false)) {
		/* Memory ran out: hold the caller until the readers free some. */
		report_warning(EVENTS_STEP, ENOMEM, "queue an event line");
		ev.told_wait = true;
		return false;
	}
	fd_flush();
	subscriber_flush();
	release();
	bool wait = (ev.fd >= 0 && ev.fd_next) || (ev.control && ev.waiting >= EVENTS_QUEUE_MAX);
	if (wait)
		ev.told_wait = true;
	return !wait;
}

void events_publish_exit(int code)
{
	if (!ev.control)
		return;
	char text[64];
	int n = snprintf(text, sizeof text, "{\"event\":\"exit\",\"code\":%d}\n", code);
	if (!append(text, (size_t)n, true))
		report_warning(EVENTS_STEP, ENOMEM, "queue the exit line");
	subscriber_flush();
}

/* ---- the control subscriber ---- */

static void subscriber_close(void)
{
	struct subscriber *s = ev.subscriber;
	if (!s)
		return;
	if (s->watched)
		loop_unwatch(s->fd);
	close(s->fd);
	ev.subscriber = NULL;
	loop_free_later(s);
}

static void subscriber_watch(uint32_t wanted)
{
	struct subscriber *s = ev.subscriber;
	if (wanted == s->watched)
		return;
	int rc = s->watched ? loop_change(s->fd, &s->watch, wanted) : loop_watch(s->fd, &s->watch, wanted);
	if (rc < 0) {
		report_warning(EVENTS_STEP, errno, "watch the events subscriber");
		subscriber_close();
		return;
	}
	s->watched = wanted;
}

/* Without acknowledgements, a line the subscriber has whole is consumed. */
static void consumed_up_to(const struct event *next_unwritten)
{
	while (ev.unconsumed && ev.unconsumed != next_unwritten) {
		ev.unconsumed = ev.unconsumed->next;
		ev.waiting--;
	}
}

static void subscriber_flush(void)
{
	struct subscriber *s = ev.subscriber;
	if (!s)
		return;
	while (s->next) {
		struct event *e = s->next;
		size_t total = e->prefix_len + e->len - 1;
		struct iovec iov[2];
		int count = 0;
		if (s->off < e->prefix_len)
			iov[count++] = (struct iovec){ e->prefix + s->off, e->prefix_len - s->off };
		size_t text_off = s->off > e->prefix_len ? s->off - e->prefix_len : 0;
		iov[count++] = (struct iovec){ e->text + 1 + text_off, e->len - 1 - text_off };
		struct msghdr message = { .msg_iov = iov, .msg_iovlen = (size_t)count };
		ssize_t n = sendmsg(s->fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			/* Gone: its successor gets what it had not consumed. */
			subscriber_close();
			return;
		}
		s->off += (size_t)n;
		if (s->off == total) {
			s->next = e->next;
			s->off = 0;
		}
	}
	if (!s->ack)
		consumed_up_to(s->next); /* s->next, when half-sent, is not consumed */
	subscriber_watch(EPOLLIN | (s->next ? EPOLLOUT : 0));
}

/* {"ack":N}: every line up to N is the subscriber's for good. */
static void acknowledge(const char *line, size_t len)
{
	struct json_object object;
	char error[160];
	if (json_parse_object(line, len, &object, error, sizeof error) < 0) {
		report_warning(EVENTS_STEP, 0, "an acknowledgement that is not JSON (%s): closing the subscriber", error);
		subscriber_close();
		return;
	}
	const struct json_field *ack = json_get(&object, "ack");
	if (!ack || ack->kind != JSON_NUMBER || object.count != 1 || ack->number < 0) {
		json_object_free(&object);
		report_warning(EVENTS_STEP, 0, "an acknowledgement is {\"ack\":SEQ}: closing the subscriber");
		subscriber_close();
		return;
	}
	unsigned long long seq = (unsigned long long)ack->number;
	json_object_free(&object);
	/* Only what was sent can be acknowledged. */
	while (ev.unconsumed && ev.unconsumed->seq <= seq && ev.unconsumed != ev.subscriber->next) {
		ev.unconsumed = ev.unconsumed->next;
		ev.waiting--;
	}
}

static void subscriber_read(void)
{
	struct subscriber *s = ev.subscriber;
	for (;;) {
		ssize_t n = recv(s->fd, s->in + s->in_len, sizeof s->in - s->in_len, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			subscriber_close();
			return;
		}
		if (n == 0) {
			subscriber_close();
			return;
		}
		s->in_len += (size_t)n;
		char *nl;
		while (ev.subscriber == s && (nl = memchr(s->in, '\n', s->in_len))) {
			size_t line = (size_t)(nl - s->in) + 1;
			if (s->ack) {
				acknowledge(s->in, line - 1);
			} else {
				report_warning(EVENTS_STEP, 0, "the subscriber sent a line but did not ask for acknowledgements");
				subscriber_close();
			}
			if (ev.subscriber != s)
				return;
			memmove(s->in, s->in + line, s->in_len - line);
			s->in_len -= line;
		}
		if (s->in_len == sizeof s->in) {
			report_warning(EVENTS_STEP, 0, "an acknowledgement longer than %d bytes", ACK_LINE_MAX);
			subscriber_close();
			return;
		}
	}
}

static void on_subscriber(struct watch *self, uint32_t events)
{
	struct subscriber *s = container_of(self, struct subscriber, watch);
	if (ev.subscriber != s)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		subscriber_read();
	if (ev.subscriber == s && (events & EPOLLOUT))
		subscriber_flush();
	release();
}

void events_subscribe(int fd, bool ack)
{
	/* The newest subscriber wins: a restarted gateway replaces the connection its predecessor
	 * left, whether or not the kernel has told us yet that it is gone. */
	subscriber_close();
	struct subscriber *s = calloc(1, sizeof *s);
	if (!s) {
		control_reply_error_and_close(fd, ENOMEM, "allocate the events subscriber");
		return;
	}
	s->watch.handle = on_subscriber;
	s->fd = fd;
	s->ack = ack;
	s->next = ev.unconsumed;
	ev.subscriber = s;
	subscriber_flush();
	release();
}

/* ---- the end ---- */

bool events_drained(void)
{
	return !ev.control || !ev.subscriber || !ev.unconsumed;
}

/* What the subscriber never had: written where the next gateway looks. */
void events_write_undelivered(int dir_fd)
{
	if (!ev.control || !ev.unconsumed)
		return;
	const char *tmp = "events.jsonl.tmp";
	int fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		report_warning(EVENTS_STEP, errno, "create %s in the control directory", tmp);
		return;
	}
	for (struct event *e = ev.unconsumed; e; e = e->next) {
		struct iovec iov[2] = { { e->prefix, e->prefix_len }, { e->text + 1, e->len - 1 } };
		if (writev(fd, iov, 2) != (ssize_t)(e->prefix_len + e->len - 1)) {
			report_warning(EVENTS_STEP, errno, "write %s", tmp);
			close(fd);
			return;
		}
	}
	if (close(fd) < 0 || renameat(dir_fd, tmp, dir_fd, "events.jsonl") < 0)
		report_warning(EVENTS_STEP, errno, "write events.jsonl in the control directory");
}
