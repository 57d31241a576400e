/*
 * carapace-launch: makes host directories that the sandbox's uid cannot reach by path reachable
 * for one bwrap, then becomes that uid and runs it.
 *
 *   carapace-launch --uid U --gid G [--alias FD PATH]... -- PROGRAM [ARGS...]
 *
 * Why: bwrap runs as the sandbox's unprivileged host uid, and even with --bind-fd it turns the fd
 * back into a path with realpath(3) and mounts that path, so it cannot bind a workspace under a
 * parent only root may search (/root/p/ws with /root 0700). Changing the host's modes is not ours to
 * do. Instead, as root, each FD (opened by Carapace without following any symlink a sandbox may
 * have planted) is cloned into a detached mount with open_tree(2) - exactly that inode, no path
 * resolved again - and, in a mount namespace of our own, attached with move_mount(2) at PATH, an
 * empty directory or file Carapace made under the sandbox's runtime directory. (A plain bind of
 * /proc/self/fd/FD would not do: after unshare the fd's mount belongs to another namespace, which
 * mount(2) refuses as a source.) Then the uid drops and PROGRAM (bwrap) runs in this namespace,
 * where it finds each source at its alias.
 *
 * The namespace is a slave of the host's: the host's later mounts still propagate in, ours never
 * propagate out; the host never sees an alias, and nothing remains when bwrap exits (the namespace
 * dies with its last process). Run by root only; every step is checked, and a failure says which
 * step and why, exits 125, and runs nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#define EXIT_FAILED 125

static void fail(const char *step, const char *detail)
{
	fprintf(stderr, "carapace-launch: %s%s%s: %s\n", step, detail ? " " : "", detail ? detail : "",
		strerror(errno));
	exit(EXIT_FAILED);
}

static void usage(const char *why)
{
	fprintf(stderr, "carapace-launch: %s\n"
			"usage: carapace-launch --uid U --gid G [--alias FD PATH]... -- PROGRAM [ARGS...]\n",
		why);
	exit(EXIT_FAILED);
}

static long number(const char *text, long min, long max)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
		usage("expected a number");
	return v;
}

int main(int argc, char **argv)
{
	long uid = -1, gid = -1;
	int i = 1;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--uid") == 0 && i + 1 < argc)
			uid = number(argv[++i], 1, 0xfffffffeL);
		else if (strcmp(argv[i], "--gid") == 0 && i + 1 < argc)
			gid = number(argv[++i], 1, 0xfffffffeL);
		else if (strcmp(argv[i], "--alias") == 0 && i + 2 < argc)
			i += 2; /* taken in the second pass, inside the new namespace */
		else
			usage("unknown option or missing value");
	}
	if (uid < 0 || gid < 0)
		usage("--uid and --gid are required (never 0)");
	if (i + 1 >= argc)
		usage("missing '--' and the program to run");
	if (geteuid() != 0)
		usage("must be run as root");

	/* Detached copies first, while the fds' mounts are still in our namespace. */
	int trees[argc];
	const char *aliases[argc];
	int count = 0;
	for (int j = 1; j < i; j++) {
		if (strcmp(argv[j], "--alias") != 0) {
			j++;
			continue;
		}
		int fd = (int)number(argv[j + 1], 3, 1 << 20);
		const char *alias = argv[j + 2];
		if (alias[0] != '/')
			usage("an alias must be an absolute path");
		trees[count] = open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
		if (trees[count] < 0)
			fail("open_tree", argv[j + 1]);
		if (close(fd) < 0)
			fail("close", argv[j + 1]);
		aliases[count++] = alias;
		j += 2;
	}

	if (unshare(CLONE_NEWNS) < 0)
		fail("unshare", "(CLONE_NEWNS)");
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		fail("mount", "--make-rslave /");
	for (int k = 0; k < count; k++) {
		if (move_mount(trees[k], "", AT_FDCWD, aliases[k], MOVE_MOUNT_F_EMPTY_PATH) < 0)
			fail("move_mount", aliases[k]);
		if (close(trees[k]) < 0)
			fail("close", aliases[k]);
	}

	/* Groups first, then the gid, then the uid: after setuid nothing else could be dropped. */
	if (setgroups(0, NULL) < 0)
		fail("setgroups", NULL);
	if (setgid((gid_t)gid) < 0)
		fail("setgid", NULL);
	if (setuid((uid_t)uid) < 0)
		fail("setuid", NULL);
	if (getuid() != (uid_t)uid || geteuid() != (uid_t)uid || getgid() != (gid_t)gid) {
		errno = EPERM;
		fail("drop", "to the sandbox's uid");
	}

	execvp(argv[i + 1], &argv[i + 1]);
	fail("exec", argv[i + 1]);
}
