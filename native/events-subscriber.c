/*
 * The control socket's events subscriber ({"op":"events"[,"ack":true]}): one at a time, the newest
 * wins; it is sent every line it does not have, with its sequence number, and with acknowledgements
 * a line is its own only once it has said {"ack":N}. The queue and the rules are in events.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "control.h"
#include "events.h"

static void on_subscriber(struct watch *self, uint32_t events);

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

void events_subscriber_flush(void)
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
		events_subscriber_flush();
	events_release();
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
	events_subscriber_flush();
	events_release();
}
