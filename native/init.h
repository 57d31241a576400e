/*
 * carapace-init: declarations shared by the files of PID 1.
 *
 * The program is split along its seams, each file readable on its own:
 *   main.c        the order of events, top to bottom, and --probe
 *   options.c     the command line (docs/architecture.md, "carapace-init")
 *   report.c      the status fd (JSON lines) and the one-line stderr failure messages
 *   pid1.c        signals, reaping, the event loop, shutdown
 *   agent.c       the agent child: rlimits, no_new_privs, Landlock, seccomp, execve
 *   rlimits.c     resource limits
 *   landlock.c    the Landlock ruleset (landlock-abi.h mirrors the kernel UAPI)
 *   seccomp.c     reading and installing the BPF program the host generated
 *   environment.c the agent's environment, read from --env-fd (never our own)
 *   connect-watch.c  reporting the connects the sandbox refuses
 *   connect-judge.c  whether one connect() is refused, and by what
 *   events.c      the event lines' queue, to --event-fd and to the control socket's subscriber
 *   events-subscriber.c  that subscriber (events.h: what the two share)
 *   relay.c       the network relay's listeners and its connections to the host socket
 *   relay-header.c   the PROXY line each connection starts with: who is calling
 *   relay-pump.c  copying bytes both ways with splice, half-close included
 *   logs.c        the agent's stdout and stderr as JSON lines on --log-fd
 *   control.c, control-dispatch.c, control-request.c, control-log.c, control-connect.c, json.c,
 *   exec.c, exec-session.c, exec-input.c, exec-child.c
 *                 the control socket (--control-dir-fd): see control.h
 */
#ifndef CARAPACE_INIT_H
#define CARAPACE_INIT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>
#include <sys/types.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* Exit codes, as env(1) uses them. */
#define EXIT_INIT_FAILED 125
#define EXIT_CANNOT_INVOKE 126
#define EXIT_NOT_FOUND 127

/* ---- options.c ---------------------------------------------------------------------------- */

enum landlock_mode { LANDLOCK_BEST_EFFORT, LANDLOCK_HARD_REQUIREMENT };

struct init_config {
	int status_fd;  /* -1: none */
	int seccomp_fd; /* -1: no seccomp program */
	int env_fd;     /* -1: the agent inherits init's environment */
	int event_fd;   /* -1: no events, and connects are not watched */
	enum landlock_mode landlock_mode;
	int landlock_abi_max; /* -1: no cap */
	const char **ro_paths;
	size_t ro_count;
	const char **rw_paths;
	size_t rw_count;
	const char **write_paths; /* --write-files: write and truncate existing files only */
	size_t write_count;
	const char **list_paths; /* read_dir only: the names, nothing else */
	size_t list_count;
	unsigned *bind_ports;
	size_t bind_count;
	long nofile; /* -1: inherit */
	long nproc;  /* -1: inherit */
	int relay_dir_fd; /* -1: no relay */
	int stderr_fd;    /* -1: keep fd 2; else made the agent's (and our) fd 2 at once */
	int control_dir_fd; /* -1: no control socket */
	int log_fd;         /* -1: the agent's stdout and stderr are fds 1 and 2 as given */
	long log_limit;     /* bytes one log file may hold (logs.c); 0: no limit */
	const char *relay_socket;
	unsigned relay_port;
	char **command; /* NULL-terminated argv of the agent */
};

/* --log-limit's range: a file of at least a few of the longest lines, at most 1 TiB. */
#define LOG_LIMIT_MIN (1L << 20)
#define LOG_LIMIT_MAX (1L << 40)

void options_parse(int argc, char **argv, struct init_config *cfg);

/* ---- report.c ----------------------------------------------------------------------------- */

/* One JSON object being built for the status fd. Keys are literals; values are escaped. */
struct status_line {
	char *text;
	size_t len, cap;
	bool out_of_memory;
};

void report_set_status_fd(int fd);
void report_close_status_fd(void);

void line_begin(struct status_line *line, const char *event);
void line_string(struct status_line *line, const char *key, const char *value);
void line_number(struct status_line *line, const char *key, long long value);
void line_hex(struct status_line *line, const char *key, unsigned long long value);
void line_bool(struct status_line *line, const char *key, bool value);
void line_null(struct status_line *line, const char *key);
void line_strings(struct status_line *line, const char *key, const char *const *values, size_t count);
void line_numbers(struct status_line *line, const char *key, const unsigned *values, size_t count);
void line_send(struct status_line *line);
/* Finishes the line and hands over its text ("...}\n", *len bytes; the caller frees it), for a
 * line that goes elsewhere than the status fd. NULL when memory ran out. */
char *line_finish(struct status_line *line, size_t *len);

/* Opens a line that is a bare object ({"key":...}), for what is not a status event. */
void line_open(struct status_line *line);
/* A string of len bytes (NUL and invalid UTF-8 included: the bytes are escaped, not judged). */
void line_string_bytes(struct status_line *line, const char *key, const char *value, size_t len);
void line_base64(struct status_line *line, const char *key, const unsigned char *value, size_t len);

/* Where warnings go besides stderr once the agent runs (logs.c, with --log-fd). */
void report_set_log(void (*log)(const char *text, size_t len));

/* A failure: "carapace-init: <step>: <what>: <strerror(err)>" on stderr and an error event on the
 * status fd. err 0 means the failure is not a system call's, and the strerror part is left out. */
void report_failure(const char *step, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same on stderr only, for what goes wrong after the agent started (the status fd is closed). */
void report_warning(const char *step, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* report_failure, then _exit(exit_code). */
noreturn void die_with(int exit_code, const char *step, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
#define die(...) die_with(EXIT_INIT_FAILED, __VA_ARGS__)

/* ---- pid1.c ------------------------------------------------------------------------------- */

/* Something the event loop watches: handle() runs when its fd is ready. */
struct watch {
	void (*handle)(struct watch *self, uint32_t events);
};

struct relay;

void pid1_prepare(void);
const sigset_t *pid1_agent_signal_mask(void);
int loop_watch(int fd, struct watch *watch, uint32_t events);
int loop_change(int fd, struct watch *watch, uint32_t events);
int loop_unwatch(int fd);
/* Frees p after the current round of events: a later event of the round may still point to it. */
void loop_free_later(void *p);
noreturn void pid1_run(pid_t agent, struct relay *relay);
/* Sends signo to the agent; -1 with errno ESRCH once it has exited. */
int pid1_signal_agent(int signo);
/* After the agent started: a warning on stderr, every process killed, exit 125. */
noreturn void pid1_fatal(const char *what, int err);

/* ---- rlimits.c ---------------------------------------------------------------------------- */

void rlimits_raise_for_pid1(void);
void rlimits_report(const struct init_config *cfg);
int rlimits_apply(const struct init_config *cfg, const char **failed);

/* ---- landlock.c --------------------------------------------------------------------------- */

struct landlock_plan {
	int kernel_abi; /* what the kernel offers, 0 when Landlock is off */
	int abi;        /* what we use: min(kernel, highest we know, --landlock-abi-max) */
	int ruleset_fd; /* -1: nothing to enforce */
};

int landlock_kernel_abi(void);
void landlock_prepare(const struct init_config *cfg, struct landlock_plan *plan);
int landlock_enforce(const struct landlock_plan *plan);

/* ---- seccomp.c ---------------------------------------------------------------------------- */

struct sock_filter;
struct seccomp_program {
	struct sock_filter *filter;
	unsigned short count; /* 0: no program */
};

bool seccomp_filter_available(void);
void seccomp_read_program(int fd, struct seccomp_program *program);
int seccomp_install(const struct seccomp_program *program);

/* ---- environment.c ------------------------------------------------------------------------ */

void environment_read(int fd);
char **environment_for_agent(void);
const char *environment_get(const char *name); /* in the agent's environment */

/* ---- connect-watch.c ---------------------------------------------------------------------- */

void connect_watch_prepare(const struct init_config *cfg, const struct landlock_plan *landlock);
void connect_watch_install_in_agent(void);
void connect_watch_start(void);
/* In a child: installs the filter and sends its listener on sock (or says there is none, with
 * *install_error the reason). -1 with errno set when the hand-over itself failed. */
int connect_watch_install(int sock, int *install_error);
/* In PID 1: a listener sent on sock, or -1 when the child sent none. */
int connect_watch_receive(int sock, bool wait);
void connect_watch_add_listener(int fd);

/* ---- events.c ----------------------------------------------------------------------------- */

void events_prepare(const struct init_config *cfg);
bool events_wanted(void); /* is anyone to be told? (--event-fd or the control socket) */
/* Queues one line ("{...}\n"). false: the caller must wait for the callback given to
 * events_on_ready before it goes on (the readers are behind). */
bool events_publish(const char *text, size_t len);
void events_on_ready(void (*ready)(void));
void events_publish_exit(int code);
/* A line for the control socket's subscriber only ("{...}\n"), queued whatever the count. */
void events_publish_control(const char *text, size_t len);
void events_subscribe(int fd, bool ack);
bool events_drained(void);
void events_write_undelivered(int dir_fd);

/* ---- agent.c ------------------------------------------------------------------------------ */

pid_t agent_start(const struct init_config *cfg, const struct landlock_plan *landlock,
		  const struct seccomp_program *seccomp);
/* execvp's search of PATH (NULL or empty: the default), without its /bin/sh fallback. Returns
 * only when nothing could be run: errno says why, `what` names the file or the search. */
void exec_command(char **argv, char **envp, const char *path, char *what, size_t what_size);

/* ---- logs.c ------------------------------------------------------------------------------- */

void logs_prepare(const struct init_config *cfg);
void logs_in_agent(void); /* the agent child's fds 0, 1, 2 */
void logs_start(void);    /* PID 1, after the fork */
bool logs_drained(void);
void logs_flush_all(void); /* reads what the pipes hold, to their end, and writes it, at exit */
int logs_wait_timeout(void);  /* ms until a pending record is due; -1: none */
void logs_after_round(void);  /* writes the records that are due */
/* The control socket's `log` op: later lines go to fd (a new file the host made), whose limit is
 * `limit` (0: no limit; -1: the current one). Takes fd; 0, or -1 with errno and a message in why. */
int logs_switch(int fd, long limit, char *why, size_t why_size);

/* ---- control.c ---------------------------------------------------------------------------- */

void control_start(const struct init_config *cfg);
bool control_enabled(void);
void control_agent_started(pid_t agent);
void control_agent_exited(int code);
bool control_drained(void);
void control_write_exit_record(int code);
void control_after_round(void);
int control_wait_timeout(void);

/* ---- exec.c, exec-child.c ----------------------------------------------------------------- */

/* What every exec gets: the agent's restrictions, kept from start-up (the ruleset fd stays open,
 * the seccomp program in memory). */
void exec_keep_confinement(const struct init_config *cfg, const struct landlock_plan *landlock,
			   const struct seccomp_program *seccomp);
/* A child of PID 1 is about to be reaped: if it is an exec'd process, its process group (which its
 * pid, still held by the zombie, names exactly) gets SIGHUP, as a closed terminal would give. */
void exec_before_reap(pid_t pid);
void exec_reaped(pid_t pid, int status);
bool exec_drained(void);

/* ---- relay.c ------------------------------------------------------------------------------ */

struct relay *relay_start(const struct init_config *cfg);
int relay_wait_timeout(const struct relay *relay);
void relay_after_round(struct relay *relay);

#endif
