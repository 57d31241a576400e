/*
 * The agent's environment, handed over on --env-fd.
 *
 * The host never gives the agent's environment to bwrap or to us as our own: bwrap runs on the
 * host, and variables such as LD_PRELOAD, LD_LIBRARY_PATH or GLIBC_TUNABLES would act on it there,
 * before any namespace exists, and on us. Nor is it put in argv, which /proc/<pid>/cmdline shows
 * to every process of the sandbox's uid. So bwrap and PID 1 start with an empty environment, and
 * the agent's arrives on a pipe: "NAME=VALUE\0" entries read to end of file, before the fork. The
 * only use made of it is the agent's execve (and the PATH search for its command).
 *
 * The entries are the host's, not the agent's, but their shape is checked: each ends with NUL,
 * has a non-empty name and an '='; the whole is at most ENV_MAX_BYTES. The kernel bounds the rest
 * (E2BIG from execve).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "init.h"

#define ENV_STEP "environment"
#define ENV_MAX_BYTES (4 * 1024 * 1024) /* twice what execve accepts with the default stack limit */

extern char **environ;

static char **agent_environment;

static void read_all(int fd, char **text, size_t *size)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		die(ENV_STEP, ENOMEM, "allocate %zu bytes for the environment", cap);
	for (;;) {
		if (len == cap) {
			if (cap > ENV_MAX_BYTES)
				die(ENV_STEP, E2BIG, "the environment on --env-fd %d is larger than %d bytes", fd,
				    ENV_MAX_BYTES);
			cap *= 2;
			char *grown = realloc(buf, cap);
			if (!grown)
				die(ENV_STEP, ENOMEM, "allocate %zu bytes for the environment", cap);
			buf = grown;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die(ENV_STEP, errno, "read the environment from --env-fd %d", fd);
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > ENV_MAX_BYTES)
		die(ENV_STEP, E2BIG, "the environment on --env-fd %d is larger than %d bytes", fd, ENV_MAX_BYTES);
	*text = buf;
	*size = len;
}

void environment_read(int fd)
{
	if (fd < 0)
		return; /* the agent gets ours, as bwrap gave it (tests that run the init by hand) */
	char *text;
	size_t size;
	read_all(fd, &text, &size);
	if (close(fd) < 0)
		die(ENV_STEP, errno, "close --env-fd %d", fd);
	if (size > 0 && text[size - 1] != '\0')
		die(ENV_STEP, EINVAL, "the environment on --env-fd %d does not end with a NUL byte", fd);

	size_t count = 0;
	for (size_t i = 0; i < size; i++)
		count += text[i] == '\0';
	char **entries = calloc(count + 1, sizeof *entries);
	if (!entries)
		die(ENV_STEP, ENOMEM, "allocate %zu environment entries", count + 1);
	size_t n = 0;
	for (char *entry = text; entry < text + size; entry += strlen(entry) + 1) {
		const char *eq = strchr(entry, '=');
		if (!eq || eq == entry)
			die(ENV_STEP, EINVAL, "entry %zu on --env-fd %d is not NAME=VALUE", n + 1, fd);
		entries[n++] = entry;
	}
	agent_environment = entries;
}

char **environment_for_agent(void)
{
	return agent_environment ? agent_environment : environ;
}

const char *environment_get(const char *name)
{
	size_t len = strlen(name);
	for (char **entry = environment_for_agent(); *entry; entry++) {
		if (strncmp(*entry, name, len) == 0 && (*entry)[len] == '=')
			return *entry + len + 1;
	}
	return NULL;
}
