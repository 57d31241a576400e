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
 * gateway keeps a subscriber. The control-only lines are queued whatever the count: the exit line
 * (the agent is gone; there is nobody left to hold), and the log file's requests for a new file
 * (logs.c: at most two per file, and a file changes only when the host hands over a new one).
 *
 * When PID 1 exits, what the subscriber has not acknowledged (or been sent) is written to
 * events.jsonl in the control directory, next to exit.json, for the gateway that comes back.
 *
 * This file: the queue, --event-fd and the end; the control subscriber is events-subscriber.c.
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
#include "events.h"

struct events ev = { .fd = -1, .next_seq = 1 };

static void on_event_fd(struct watch *self, uint32_t events);

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

void events_release(void)
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
	events_release();
}

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
	events_subscriber_flush();
	events_release();
	bool wait = (ev.fd >= 0 && ev.fd_next) || (ev.control && ev.waiting >= EVENTS_QUEUE_MAX);
	if (wait)
		ev.told_wait = true;
	return !wait;
}

void events_publish_control(const char *text, size_t len)
{
	if (!ev.control)
		return;
	if (!append(text, len, true))
		report_warning(EVENTS_STEP, ENOMEM, "queue a control event line");
	events_subscriber_flush();
}

void events_publish_exit(int code)
{
	char text[64];
	int n = snprintf(text, sizeof text, "{\"event\":\"exit\",\"code\":%d}\n", code);
	events_publish_control(text, (size_t)n);
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
