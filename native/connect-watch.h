/*
 * The connect watch's two halves: connect-watch.c (the filter, the listener's hand-off to PID 1,
 * answering and writing event lines without blocking) and connect-judge.c (what one connect() is,
 * and whether the sandbox refuses it). The rest of init sees only the connect_watch_* calls
 * (init.h).
 */
#ifndef CARAPACE_CONNECT_WATCH_H
#define CARAPACE_CONNECT_WATCH_H

#include <linux/seccomp.h>

#include "init.h"

/* What the kernel lets a connect() reach: Landlock's TCP ports, and loopback (the namespace). */
struct connect_rules {
	unsigned relay_port;
	const unsigned *bind_ports; /* 0 is an ephemeral bind, never a destination */
	size_t bind_count;
	bool landlock_net; /* Landlock ABI >= 4 restricts TCP ports */
};

/* The event line ("...}\n", *len bytes, to free) for a connect the sandbox refuses, or NULL when
 * it is allowed or cannot be read (the caller is gone, not dumpable, or its fd is no socket). */
char *connect_describe(const struct connect_rules *rules, const struct seccomp_notif *n, size_t *len);

#endif
