/*
 * The `exec` op's session, shared by exec.c (its start in PID 1, and its process's end) and
 * exec-session.c (its frames and its process's stdio, until the EXIT frame).
 */
#ifndef CARAPACE_EXEC_H
#define CARAPACE_EXEC_H

#include "control.h"

#define EXEC_STEP "exec"
#define OUT_READ (16 * 1024)
#define OUT_CAP (2 * (FRAME_HEADER + OUT_READ))
#define IN_CHUNK (16 * 1024)
#define ERROR_TEXT_MAX 1024

struct session;

struct session_fd {
	struct watch watch;
	int fd;
	uint32_t watched;
	struct session *session;
};

enum { FD_CLIENT, FD_STDIN, FD_STDOUT, FD_STDERR, FD_SETUP, FD_COUNT };

struct session {
	struct session *next;
	struct session_fd fds[FD_COUNT]; /* with a tty, FD_STDOUT is the master, which is stdin too */
	pid_t pid;
	bool tty;
	bool reaped;
	int exit_code;
	bool output_done[2]; /* stdout, stderr */
	char *error;         /* from the setup socket: why the command did not start */
	bool exit_queued;
	bool closed;
	bool draining;	/* EXIT is out: what the client still sends is read and dropped */
	size_t drained;
	/* frames from the client */
	unsigned char header[FRAME_HEADER];
	size_t header_len;
	unsigned frame_type;
	size_t payload_left; /* of the current frame, still in the socket */
	unsigned char small[4];
	size_t small_len;
	unsigned char stdin_buf[IN_CHUNK];
	size_t stdin_len, stdin_off;
	bool stdin_closed; /* nobody reads it any more: what comes is dropped */
	bool eof_wanted;   /* STDIN_EOF came; applied once stdin_buf is written */
	/* frames to the client */
	unsigned char out[OUT_CAP];
	size_t out_start, out_end;
};

static inline int fd_of(const struct session *s, int which)
{
	return s->fds[which].fd;
}

/* With a tty, the master is stdin and stdout both. */
static inline int stdin_fd(const struct session *s)
{
	return s->tty ? s->fds[FD_STDOUT].fd : s->fds[FD_STDIN].fd;
}

static inline uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* exec-session.c */
void session_init(struct session *s, int client);
/* Moves what can move (frames both ways, stdin, output, the setup socket), ends the session when
 * its EXIT frame is out, and watches exactly what it waits for. */
void session_advance(struct session *s);
void session_close_fd(struct session *s, int which);
/* The client is gone (or broke the protocol): the process is hung up, the session closed. */
void session_client_gone(struct session *s);

/* exec-input.c */
bool session_stdin_pending(const struct session *s);
void session_write_stdin(struct session *s);
void session_read_client(struct session *s);
/* Reading the client waits while STDIN data is in progress or held behind unread stdin. */
bool session_client_blocked(const struct session *s);

/* exec.c: the session is over (closed); it leaves the list of running execs. */
void exec_forget(struct session *s);

#endif
