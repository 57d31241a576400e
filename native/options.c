/*
 * The command line, as docs/architecture.md ("carapace-init") defines it:
 *
 *   carapace-init [options] -- CMD [ARGS...]
 *
 * Every option takes one value in the next argument. A mistake is reported with the option's name
 * and exits 125 before anything else happens. --status-fd is found first, so that even a mistake
 * in another option reaches the host as a status line.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "init.h"

#define OPTIONS_STEP "options"

static long parse_number(const char *option, const char *text, long min, long max)
{
	char *end;
	errno = 0;
	long value = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
		die(OPTIONS_STEP, 0, "%s: expected a number from %ld to %ld, got '%s'", option, min, max, text);
	return value;
}

/* An fd option names a file descriptor the caller passed to us: it must be open, and must not be
 * stdin, stdout or stderr, which belong to the agent. */
static int parse_fd(const char *option, const char *text)
{
	int fd = (int)parse_number(option, text, 3, 1 << 20);
	if (fcntl(fd, F_GETFD) < 0)
		die(OPTIONS_STEP, errno, "%s %d", option, fd);
	return fd;
}

static const char *parse_path(const char *option, const char *text)
{
	if (text[0] != '/')
		die(OPTIONS_STEP, 0, "%s: expected an absolute path, got '%s'", option, text);
	return text;
}

static void once(bool *seen, const char *option)
{
	if (*seen)
		die(OPTIONS_STEP, 0, "%s given twice", option);
	*seen = true;
}

/* The index of the "--" that ends the options, or argc when there is none. */
static int find_end_of_options(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return i;
	}
	return argc;
}

void options_parse(int argc, char **argv, struct init_config *cfg)
{
	*cfg = (struct init_config){
		.status_fd = -1,
		.seccomp_fd = -1,
		.env_fd = -1,
		.event_fd = -1,
		.landlock_mode = LANDLOCK_BEST_EFFORT,
		.landlock_abi_max = -1,
		.nofile = -1,
		.nproc = -1,
		.relay_dir_fd = -1,
		.stderr_fd = -1,
		.control_dir_fd = -1,
		.log_fd = -1,
		.relay_socket = "proxy.sock",
		.relay_port = 3128,
	};
	int end = find_end_of_options(argc, argv);

	/* The status fd first: it is where the other mistakes are reported. */
	for (int i = 1; i + 1 < end; i += 2) {
		if (strcmp(argv[i], "--status-fd") == 0) {
			cfg->status_fd = parse_fd("--status-fd", argv[i + 1]);
			report_set_status_fd(cfg->status_fd);
			break;
		}
	}

	size_t slots = (size_t)argc;
	cfg->ro_paths = calloc(slots, sizeof *cfg->ro_paths);
	cfg->rw_paths = calloc(slots, sizeof *cfg->rw_paths);
	cfg->write_paths = calloc(slots, sizeof *cfg->write_paths);
	cfg->list_paths = calloc(slots, sizeof *cfg->list_paths);
	cfg->bind_ports = calloc(slots, sizeof *cfg->bind_ports);
	if (!cfg->ro_paths || !cfg->rw_paths || !cfg->write_paths || !cfg->list_paths || !cfg->bind_ports)
		die(OPTIONS_STEP, ENOMEM, "allocate the option lists");

	bool seen_status = false, seen_seccomp = false, seen_env = false, seen_event = false, seen_mode = false, seen_abi_max = false,
	     seen_nofile = false, seen_nproc = false, seen_dir = false, seen_socket = false,
	     seen_port = false, seen_stderr = false, seen_control = false, seen_log = false,
	     seen_log_limit = false;

	for (int i = 1; i < end; i += 2) {
		const char *option = argv[i];
		if (i + 1 >= end)
			die(OPTIONS_STEP, 0, "%s needs a value (or '--' before the command is missing)", option);
		const char *value = argv[i + 1];

		if (strcmp(option, "--status-fd") == 0) {
			once(&seen_status, option); /* already parsed above */
		} else if (strcmp(option, "--seccomp-fd") == 0) {
			once(&seen_seccomp, option);
			cfg->seccomp_fd = parse_fd(option, value);
		} else if (strcmp(option, "--env-fd") == 0) {
			once(&seen_env, option);
			cfg->env_fd = parse_fd(option, value);
		} else if (strcmp(option, "--event-fd") == 0) {
			once(&seen_event, option);
			cfg->event_fd = parse_fd(option, value);
		} else if (strcmp(option, "--landlock") == 0) {
			once(&seen_mode, option);
			if (strcmp(value, "best_effort") == 0)
				cfg->landlock_mode = LANDLOCK_BEST_EFFORT;
			else if (strcmp(value, "hard_requirement") == 0)
				cfg->landlock_mode = LANDLOCK_HARD_REQUIREMENT;
			else
				die(OPTIONS_STEP, 0, "--landlock: expected best_effort or hard_requirement, got '%s'",
				    value);
		} else if (strcmp(option, "--landlock-abi-max") == 0) {
			once(&seen_abi_max, option);
			cfg->landlock_abi_max = (int)parse_number(option, value, 0, 1000);
		} else if (strcmp(option, "--ro") == 0) {
			cfg->ro_paths[cfg->ro_count++] = parse_path(option, value);
		} else if (strcmp(option, "--rw") == 0) {
			cfg->rw_paths[cfg->rw_count++] = parse_path(option, value);
		} else if (strcmp(option, "--write-files") == 0) {
			cfg->write_paths[cfg->write_count++] = parse_path(option, value);
		} else if (strcmp(option, "--list") == 0) {
			cfg->list_paths[cfg->list_count++] = parse_path(option, value);
		} else if (strcmp(option, "--stderr-fd") == 0) {
			once(&seen_stderr, option);
			cfg->stderr_fd = parse_fd(option, value);
		} else if (strcmp(option, "--bind-port") == 0) {
			cfg->bind_ports[cfg->bind_count++] = (unsigned)parse_number(option, value, 0, 65535);
		} else if (strcmp(option, "--nofile") == 0) {
			once(&seen_nofile, option);
			cfg->nofile = parse_number(option, value, 1, 1L << 30);
		} else if (strcmp(option, "--nproc") == 0) {
			once(&seen_nproc, option);
			cfg->nproc = parse_number(option, value, 1, 1L << 30);
		} else if (strcmp(option, "--relay-dir-fd") == 0) {
			once(&seen_dir, option);
			cfg->relay_dir_fd = parse_fd(option, value);
		} else if (strcmp(option, "--relay-socket") == 0) {
			once(&seen_socket, option);
			if (value[0] == '\0' || strchr(value, '/') || strcmp(value, ".") == 0 ||
			    strcmp(value, "..") == 0)
				die(OPTIONS_STEP, 0, "--relay-socket: expected a file name without '/', got '%s'",
				    value);
			cfg->relay_socket = value;
		} else if (strcmp(option, "--control-dir-fd") == 0) {
			once(&seen_control, option);
			cfg->control_dir_fd = parse_fd(option, value);
		} else if (strcmp(option, "--log-fd") == 0) {
			once(&seen_log, option);
			cfg->log_fd = parse_fd(option, value);
		} else if (strcmp(option, "--log-limit") == 0) {
			once(&seen_log_limit, option);
			cfg->log_limit = parse_number(option, value, LOG_LIMIT_MIN, LOG_LIMIT_MAX);
		} else if (strcmp(option, "--relay-port") == 0) {
			once(&seen_port, option);
			cfg->relay_port = (unsigned)parse_number(option, value, 1, 65535);
		} else {
			die(OPTIONS_STEP, 0, "unknown option '%s'", option);
		}
	}

	if (end >= argc)
		die(OPTIONS_STEP, 0, "missing '--' before the command");
	if (end + 1 >= argc)
		die(OPTIONS_STEP, 0, "missing the command after '--'");
	cfg->command = &argv[end + 1];
	if (seen_log_limit && cfg->log_fd < 0)
		die(OPTIONS_STEP, 0, "--log-limit needs --log-fd");

	/* One fd cannot serve two purposes: each is consumed (read to EOF, closed) on its own. */
	int fds[] = { cfg->status_fd,	 cfg->seccomp_fd,     cfg->env_fd, cfg->event_fd,
		      cfg->relay_dir_fd, cfg->control_dir_fd, cfg->log_fd, cfg->stderr_fd };
	const size_t fd_count = sizeof fds / sizeof fds[0];
	for (size_t i = 0; i < fd_count; i++)
		for (size_t j = i + 1; j < fd_count; j++)
			if (fds[i] >= 0 && fds[i] == fds[j])
				die(OPTIONS_STEP, 0, "fd %d is given for two options", fds[i]);
}
