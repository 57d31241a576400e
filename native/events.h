/*
 * What events.c (the queue, --event-fd, the end) and events-subscriber.c (the control socket's
 * subscriber) share: the queue's lines and its one state. Private to those two files; the rest of
 * init sees init.h's events_* calls only.
 */
#ifndef CARAPACE_EVENTS_H
#define CARAPACE_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "init.h"

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

struct events {
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
};

extern struct events ev;

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

/* Frees the lines every reader has, from the oldest; says "go on" when the queue has room again. */
void events_release(void);
/* Sends the subscriber what it does not have yet, as far as its socket takes it. */
void events_subscriber_flush(void);

#endif
