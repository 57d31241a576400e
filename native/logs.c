/*
 * --log-fd: the agent's stdout and stderr as JSON lines in a host file.
 *
 * A sandbox that outlives the process that started it (a gateway's) cannot hand the agent a pipe
 * to that process: the pipe would break with it. So with --log-fd the agent's stdin is /dev/null
 * and its stdout and stderr are pipes PID 1 reads; what one stream brings within LOG_WINDOW_MS of
 * its first byte (at most LOG_CHUNK bytes) becomes one line appended to the file:
 *
 *   {"t":<unix ms>,"s":"out"|"err","d":"<the bytes as a JSON string>"}
 *   {"t":<unix ms>,"s":"out"|"err","b":"<base64>"}       when the bytes are not valid UTF-8
 *   {"t":<unix ms>,"s":"init","d":"carapace-init: ..."}  PID 1's own warnings, once the agent runs
 *
 * Why a window: a record costs some 40 bytes of framing, and an agent decides how it writes. One
 * that writes a byte at a time (curl's progress, a REPL echoing keys) would make a record of each
 * byte, ~40 times the bytes it wrote, and so ~40 times the rotations it makes the host answer. So
 * a stream's bytes wait in a fixed buffer per stream (LOG_CHUNK: no memory grows with the agent's
 * output) until LOG_WINDOW_MS after the first of them, or until the buffer is full, then go out
 * as one record: at most 1000 / LOG_WINDOW_MS records a second per stream for a dribbling writer,
 * and no complete line waits longer than the window, whether or not more comes after it. Bytes of
 * one stream are flushed before the other stream's next bytes are taken, and before PID 1's own
 * warnings, so records stay in the order PID 1 read them; and everything pending is written when
 * the pipes reach their end (the agent and all it started are gone) and at exit.
 *
 * A UTF-8 sequence cut at the end of a record waits for the rest in the buffer (at most three
 * bytes), so text is never base64 merely because of where a write ended. Lines of one stream are
 * in the order the agent wrote; across the two streams, in the order PID 1 read them.
 *
 * The file is the host's (the gateway opened it O_WRONLY|O_APPEND; it must be a regular file, so
 * that a write never waits for a reader). It is written with ordinary blocking writes: a regular
 * file does not block for long. If a write fails (a full disk), one warning goes to stderr and
 * later output is read and dropped, so that the agent never blocks on a pipe nobody reads.
 *
 * Size (--log-limit BYTES, docs/gateway.md "The agent's output log"): the agent decides how much it
 * writes, the host's disk is shared, and the host rotates the file by name, which PID 1 has no part
 * in. So PID 1 counts the bytes of its current file (its size when it was handed over, plus every
 * line written since) and never takes it past the limit: a line that would is dropped, and its
 * bytes counted. Past half the limit it asks the host for a new file, once, with a control-only
 * event, {"event":"log","bytes":N,"limit":L,"file":"DEV:INO","dropped":D} (and once more when it
 * starts dropping); the host renames the file away, makes a new one and hands it over with the
 * control socket's `log` op (an fd with SCM_RIGHTS): from the next line on, output goes there,
 * and its first line says how many bytes were dropped meanwhile, if any. Lines are written whole,
 * one write each, by this one thread: a switch always falls between two lines. The file stays the
 * host's: PID 1 never opens or renames anything by name, and a file's identity (DEV:INO) lets the
 * host tell which one is meant when an event comes twice (after a gateway restart).
 *
 * Security: nothing of the sandbox's is parsed here; its bytes are escaped or encoded, never
 * interpreted, and each line is built in memory bounded by LOG_CHUNK (six bytes per byte at worst).
 * The buffers are static: PID 1's memory for the log is the same whatever the agent writes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control.h"

#define LOGS_STEP "logs"
#define LOG_CHUNK (16 * 1024)
#define LOG_WINDOW_MS 10

struct log_stream {
	struct watch watch;
	const char *tag;
	int pipe[2]; /* read end (PID 1's), write end (the agent's) */
	unsigned char pending[LOG_CHUNK]; /* read, not yet written: the next record */
	size_t pending_len;
	long long deadline; /* CLOCK_MONOTONIC ms by which `pending` is written; 0: none */
	bool done;
};

static struct {
	int fd; /* -1: no --log-fd */
	int devnull;
	bool failed;
	long long limit;        /* bytes the current file may hold; 0: no limit */
	long long size;         /* bytes it holds: its size when it came, plus what we wrote */
	int asked;              /* events sent for this file: 0, 1 (past half), 2 (dropping) */
	unsigned long long dropped; /* the agent's bytes dropped since the last file came */
	dev_t dev;              /* the current file's identity, for the host */
	ino_t ino;
	struct log_stream streams[2];
} logs = { .fd = -1, .devnull = -1 };

static void ask_for_new_file(void);

static void on_stream(struct watch *self, uint32_t events);
static void streams_flush(void);

/* One line; `dropped` > 0 adds the count of dropped bytes (the line that says so). Whether it
 * was written. */
static bool write_line_counting(const char *tag, const unsigned char *data, size_t len, bool text,
				unsigned long long dropped)
{
	if (logs.failed)
		return false;
	struct status_line line;
	line_open(&line);
	line_number(&line, "t", now_ms());
	line_string(&line, "s", tag);
	if (text)
		line_string_bytes(&line, "d", (const char *)data, len);
	else
		line_base64(&line, "b", data, len);
	if (dropped > 0)
		line_number(&line, "dropped", (long long)dropped);
	size_t size;
	char *out = line_finish(&line, &size);
	if (!out) {
		logs.failed = true;
		report_warning(LOGS_STEP, ENOMEM, "build a log line (later output is dropped)");
		return false;
	}
	if (logs.limit > 0 && logs.size + (long long)size > logs.limit) {
		/* Full: the line is dropped whole (never cut), counted (the count line itself is kept for
		 * the next file), and the host asked again. */
		free(out);
		if (dropped == 0)
			logs.dropped += len;
		if (logs.asked < 2)
			ask_for_new_file();
		return false;
	}
	for (size_t off = 0; off < size;) {
		ssize_t n = write(logs.fd, out + off, size - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int err = errno;
			free(out);
			logs.failed = true; /* first, so that the warning is not logged where it failed */
			report_warning(LOGS_STEP, err, "append to --log-fd %d (later output is dropped)", logs.fd);
			return false;
		}
		off += (size_t)n;
		logs.size += n;
	}
	free(out);
	if (logs.limit > 0 && logs.asked == 0 && logs.size >= logs.limit / 2)
		ask_for_new_file();
	return true;
}

static void write_line(const char *tag, const unsigned char *data, size_t len, bool text)
{
	(void)write_line_counting(tag, data, len, text, 0);
}

/* The event that asks the host for a new file (control-only: --event-fd's format predates it). */
static void ask_for_new_file(void)
{
	logs.asked++;
	if (!control_enabled())
		return;
	char file[64];
	snprintf(file, sizeof file, "%llu:%llu", (unsigned long long)logs.dev, (unsigned long long)logs.ino);
	struct status_line line;
	line_open(&line);
	line_string(&line, "event", "log");
	line_number(&line, "bytes", logs.size);
	line_number(&line, "limit", logs.limit);
	line_string(&line, "file", file);
	line_number(&line, "dropped", (long long)logs.dropped);
	size_t len;
	char *text = line_finish(&line, &len);
	if (!text) {
		report_warning(LOGS_STEP, ENOMEM, "ask the host for a new log file");
		return;
	}
	events_publish_control(text, len);
	free(text);
}

/* The file's identity and size as it comes, or -1 with errno and a message. */
static int check_log_fd(int fd, struct stat *st, char *why, size_t why_size)
{
	int flags = fcntl(fd, F_GETFL);
	if (fstat(fd, st) < 0 || flags < 0) {
		snprintf(why, why_size, "fd %d: %s", fd, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st->st_mode) || (flags & O_ACCMODE) == O_RDONLY || !(flags & O_APPEND)) {
		snprintf(why, why_size, "fd %d must be a regular file opened for appending (O_WRONLY|O_APPEND)", fd);
		errno = EINVAL;
		return -1;
	}
	return 0;
}

static void take_file(int fd, const struct stat *st)
{
	logs.fd = fd;
	logs.size = st->st_size;
	logs.dev = st->st_dev;
	logs.ino = st->st_ino;
	logs.asked = 0;
	logs.failed = false;
}

int logs_switch(int fd, long limit, char *why, size_t why_size)
{
	if (logs.fd < 0) {
		close(fd);
		snprintf(why, why_size, "this sandbox has no --log-fd");
		errno = ENOENT;
		return -1;
	}
	struct stat st;
	if (check_log_fd(fd, &st, why, why_size) < 0) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	/* Every line so far is written whole (one thread, one write each): nothing is torn here. */
	if (fd != logs.fd && close(logs.fd) < 0)
		report_warning(LOGS_STEP, errno, "close the previous log file");
	take_file(fd, &st);
	if (limit >= 0)
		logs.limit = limit;
	if (logs.dropped > 0) {
		/* Kept until said: a file handed over full (the same one again) says it in the next. */
		char text[200];
		int n = snprintf(text, sizeof text,
				 "carapace-init: logs: %llu bytes of output dropped: the log file was full before the next one came",
				 logs.dropped);
		if (write_line_counting("init", (const unsigned char *)text, (size_t)n, true, logs.dropped))
			logs.dropped = 0;
	}
	if (logs.limit > 0 && logs.asked == 0 && logs.size >= logs.limit / 2)
		ask_for_new_file();
	return 0;
}

/* PID 1's own warnings (report_warning), once the agent runs: after what the agent wrote before. */
static void log_warning(const char *text, size_t len)
{
	streams_flush();
	write_line("init", (const unsigned char *)text, len, true);
}

void logs_prepare(const struct init_config *cfg)
{
	if (cfg->log_fd < 0)
		return;
	struct stat st;
	char why[160];
	if (check_log_fd(cfg->log_fd, &st, why, sizeof why) < 0)
		die(LOGS_STEP, 0, "--log-%s", why);
	take_file(cfg->log_fd, &st);
	logs.limit = cfg->log_limit;
	logs.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (logs.devnull < 0)
		die(LOGS_STEP, errno, "open /dev/null for the agent's stdin");
	const char *tags[2] = { "out", "err" };
	for (int i = 0; i < 2; i++) {
		struct log_stream *s = &logs.streams[i];
		*s = (struct log_stream){ .watch.handle = on_stream, .tag = tags[i] };
		if (pipe2(s->pipe, O_CLOEXEC) < 0)
			die(LOGS_STEP, errno, "pipe for the agent's std%s", tags[i]);
		/* PID 1's end only: the agent's stays blocking, as a program expects its stdout. */
		if (fcntl(s->pipe[0], F_SETFL, O_NONBLOCK) < 0)
			die(LOGS_STEP, errno, "make the agent's std%s pipe non-blocking", tags[i]);
	}
}

void logs_in_agent(void)
{
	if (logs.fd < 0)
		return;
	if (dup2(logs.devnull, STDIN_FILENO) < 0 || dup2(logs.streams[0].pipe[1], STDOUT_FILENO) < 0 ||
	    dup2(logs.streams[1].pipe[1], STDERR_FILENO) < 0)
		die(LOGS_STEP, errno, "make the log pipes the agent's stdout and stderr");
}

void logs_start(void)
{
	if (logs.fd < 0)
		return;
	if (close(logs.devnull) < 0)
		report_warning(LOGS_STEP, errno, "close /dev/null");
	for (int i = 0; i < 2; i++) {
		struct log_stream *s = &logs.streams[i];
		/* Only the agent (and what it starts) writes: end of file once they all are gone. */
		if (close(s->pipe[1]) < 0)
			die(LOGS_STEP, errno, "close PID 1's copy of the std%s pipe", s->tag);
		if (loop_watch(s->pipe[0], &s->watch, EPOLLIN) < 0)
			die(LOGS_STEP, errno, "watch the agent's std%s", s->tag);
	}
	report_set_log(log_warning);
	/* A file that is already past half its limit (a restart appends to the last run's). */
	if (logs.limit > 0 && logs.size >= logs.limit / 2)
		ask_for_new_file();
}

static long long monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The stream's pending bytes as one record: text when they are valid UTF-8. A sequence cut at
 * their end stays pending for its end, unless `last` (the pipe's end: nothing more comes). */
static void stream_flush(struct log_stream *s, bool last)
{
	s->deadline = 0;
	size_t len = s->pending_len;
	if (len == 0)
		return;
	unsigned char *data = s->pending;
	size_t valid = 0;
	while (valid < len) {
		size_t n = utf8_sequence(data + valid, len - valid, NULL);
		if (n == 0)
			break;
		valid += n;
	}
	size_t rest = len - valid;
	bool cut = !last && rest > 0 && rest < 4 && (data[valid] & 0xc0) == 0xc0;
	for (size_t k = 1; cut && k < rest; k++)
		cut = (data[valid + k] & 0xc0) == 0x80;
	size_t out = cut ? valid : len;
	/* Emptied first: a warning while writing (a full disk) flushes the streams again. */
	s->pending_len = 0;
	if (out > 0)
		write_line(s->tag, data, out, out == valid);
	if (cut) {
		memmove(data, data + valid, rest);
		s->pending_len = rest;
	}
}

static void streams_flush(void)
{
	for (int i = 0; i < 2; i++)
		stream_flush(&logs.streams[i], false);
}

static void stream_end(struct log_stream *s)
{
	stream_flush(s, true);
	s->done = true;
	loop_unwatch(s->pipe[0]);
	close(s->pipe[0]);
}

/* Reads what the pipe holds (at most `rounds` reads) into the pending record; stops at its end or
 * when it is empty. A full record is written at once; else by its deadline (logs_after_round). */
static void stream_read(struct log_stream *s, int rounds)
{
	struct log_stream *other = &logs.streams[s == &logs.streams[0] ? 1 : 0];
	/* What the other stream brought before this read is written before what it brings. */
	if (other->deadline != 0)
		stream_flush(other, false);
	for (int i = 0; i < rounds && !s->done; i++) {
		if (s->pending_len == LOG_CHUNK)
			stream_flush(s, false); /* leaves at most three bytes */
		ssize_t n = read(s->pipe[0], s->pending + s->pending_len, LOG_CHUNK - s->pending_len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN) {
				report_warning(LOGS_STEP, errno, "read the agent's std%s", s->tag);
				stream_end(s);
			}
			return;
		}
		if (n == 0) {
			stream_end(s);
			return;
		}
		if (s->pending_len == 0 || s->deadline == 0)
			s->deadline = monotonic_ms() + LOG_WINDOW_MS;
		s->pending_len += (size_t)n;
		if (s->pending_len == LOG_CHUNK)
			stream_flush(s, false);
	}
}

static void on_stream(struct watch *self, uint32_t events)
{
	(void)events;
	/* A few reads, then the other fds get a turn (level-triggered: we come back). */
	stream_read(container_of(self, struct log_stream, watch), 4);
}

int logs_wait_timeout(void)
{
	if (logs.fd < 0)
		return -1;
	long long first = 0;
	for (int i = 0; i < 2; i++) {
		long long d = logs.streams[i].deadline;
		if (d != 0 && (first == 0 || d < first))
			first = d;
	}
	if (first == 0)
		return -1;
	long long left = first - monotonic_ms();
	return left < 0 ? 0 : (int)left;
}

void logs_after_round(void)
{
	if (logs.fd < 0)
		return;
	long long now = monotonic_ms();
	for (int i = 0; i < 2; i++) {
		struct log_stream *s = &logs.streams[i];
		if (s->deadline != 0 && s->deadline <= now)
			stream_flush(s, false);
	}
}

bool logs_drained(void)
{
	return logs.fd < 0 || (logs.streams[0].done && logs.streams[1].done);
}

void logs_flush_all(void)
{
	if (logs.fd < 0)
		return;
	for (int i = 0; i < 2; i++) {
		stream_read(&logs.streams[i], 1 << 20);
		stream_flush(&logs.streams[i], true);
	}
}
