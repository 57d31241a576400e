/*
 * carapace-mask: puts a running sandbox's masks back where the host's replacement of a file took
 * them away.
 *
 *   carapace-mask --pid PID --start TICKS [--] SOURCE TARGET [SOURCE TARGET]...
 *
 * Why: the sandbox's /etc is a bind of the host's, and the masks over /etc/shadow, the synthesized
 * /etc/passwd and the like are binds on those names. When the host replaces one through a rename
 * (useradd, passwd, a package upgrade), the kernel detaches every mount on the old name in every
 * other mount namespace: the sandbox would see the host's new file there until it restarts. The
 * host notices (src/sandbox/mask-guard.ts) and runs this, which enters the sandbox's mount
 * namespace and binds each SOURCE (a file or directory Carapace bound read-only under /.carapace,
 * inside the sandbox) on TARGET again: open_tree(2) clones exactly the source's mount, read-only
 * as it is, and move_mount(2) attaches it on the target's inode. Both paths are inside the
 * sandbox's tree and resolved without following any symlink (openat2 RESOLVE_NO_SYMLINKS,
 * RESOLVE_IN_ROOT from the sandbox's root): a name the sandbox could have planted is never
 * followed. A target that is already the source's inode is left alone (one run can be asked for
 * every mask, and repeats are harmless); an absent target is skipped.
 *
 * Whose sandbox: PID is the init's host pid, TICKS its start time (/proc/PID/stat field 22). The
 * process is pinned with a pidfd before its start time is read, and still alive after its mount
 * namespace is opened, so a reused pid is never entered; a namespace that is our own is refused.
 * As root the mount namespace is entered directly (root holds every capability over the user
 * namespaces beneath its own). Rootless, the user owns the sandbox's outer user namespace, the
 * owner of its mount namespace, and joins it first (the init itself lives in a nested one that
 * bwrap's --disable-userns made, which holds no power over the mounts).
 *
 * Output: one line per target, `masked T`, `kept T`, `absent T`, or `renamed T` (the host renamed
 * over it again and again while we bound it: the next run does it). Exit 0 when every target is
 * masked, kept, absent or renamed; 1 when one could not be (its line says why, the others are
 * still done); 3 when PID is not that sandbox any more; 125 when nothing could be done (bad
 * arguments, a kernel without pidfds, open_tree or openat2).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/nsfs.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXIT_SOME_FAILED 1
#define EXIT_GONE 3
#define EXIT_FAILED 125

static void fail(int code, const char *step)
{
	fprintf(stderr, "carapace-mask: %s: %s\n", step, strerror(errno));
	exit(code);
}

static void usage(const char *why)
{
	fprintf(stderr,
		"carapace-mask: %s\n"
		"usage: carapace-mask --pid PID --start TICKS [--] SOURCE TARGET [SOURCE TARGET]...\n",
		why);
	exit(EXIT_FAILED);
}

static long long number(const char *text)
{
	char *end;
	errno = 0;
	long long v = strtoll(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v <= 0)
		usage("expected a positive number");
	return v;
}

/* Field 22 of /proc/PID/stat, the process's start time in clock ticks since boot; -1 if unreadable. */
static long long start_time(int pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* The command name (field 2) may hold spaces and parentheses: count from the last ')'. */
	char *p = strrchr(buf, ')');
	if (p == NULL)
		return -1;
	for (int field = 2; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (p == NULL)
			return -1;
	}
	return strtoll(p + 1, NULL, 10);
}

static int open_in_root(int root, const char *path)
{
	struct open_how how = {
		.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	return (int)syscall(SYS_openat2, root, path, &how, sizeof how);
}

/*
 * A target the host renames over again between our open and our bind is a deleted name by the
 * bind (move_mount: ENOENT): it is opened again, the new file there masked. After this many tries
 * (a host that renames without pause) it is `renamed`, not a failure: each of those renames is an
 * inotify event to the guard, which runs us again once this run ends.
 */
#define RENAMED_TRIES 16

/* Binds SOURCE on TARGET unless it is there already; prints the line; returns 0 or -1. */
static int mask(int root, const char *source, const char *target)
{
	int s = open_in_root(root, source);
	if (s < 0) {
		printf("failed %s: open the source %s: %s\n", target, source, strerror(errno));
		return -1;
	}
	int rc = -1;
	for (int tries = 1;; tries++) {
		int t = open_in_root(root, target);
		if (t < 0) {
			if (errno == ENOENT) {
				printf("absent %s\n", target);
				rc = 0;
			} else {
				printf("failed %s: open: %s\n", target, strerror(errno));
			}
			break;
		}
		struct stat ss, ts;
		int again = 0;
		if (fstat(s, &ss) < 0 || fstat(t, &ts) < 0) {
			printf("failed %s: stat: %s\n", target, strerror(errno));
		} else if (ss.st_dev == ts.st_dev && ss.st_ino == ts.st_ino) {
			printf("kept %s\n", target);
			rc = 0;
		} else {
			int tree = (int)syscall(SYS_open_tree, s, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
			if (tree < 0) {
				printf("failed %s: open_tree: %s\n", target, strerror(errno));
			} else {
				if (syscall(SYS_move_mount, tree, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) == 0) {
					printf("masked %s\n", target);
					rc = 0;
				} else if (errno == ENOENT && tries < RENAMED_TRIES) {
					again = 1;
				} else if (errno == ENOENT) {
					printf("renamed %s\n", target);
					rc = 0;
				} else {
					printf("failed %s: move_mount: %s\n", target, strerror(errno));
				}
				close(tree);
			}
		}
		close(t);
		if (!again)
			break;
	}
	close(s);
	return rc;
}

int main(int argc, char **argv)
{
	int pid = 0;
	long long start = 0;
	int i = 1;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--pid") == 0 && i + 1 < argc) {
			long long v = number(argv[++i]);
			if (v > 4194304)
				usage("--pid is out of range");
			pid = (int)v;
		} else if (strcmp(argv[i], "--start") == 0 && i + 1 < argc) {
			start = number(argv[++i]);
		} else if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else if (argv[i][0] == '-') {
			usage("unknown option");
		} else {
			break;
		}
	}
	if (pid == 0 || start == 0)
		usage("--pid and --start are required");
	if (i >= argc || (argc - i) % 2 != 0)
		usage("expected SOURCE TARGET pairs");
	for (int k = i; k < argc; k++)
		if (argv[k][0] != '/')
			usage("SOURCE and TARGET are absolute paths inside the sandbox");

	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		if (errno == ESRCH)
			fail(EXIT_GONE, "the sandbox's init");
		fail(EXIT_FAILED, "pidfd_open");
	}
	if (start_time(pid) != start) {
		fprintf(stderr, "carapace-mask: pid %d is not the sandbox's init any more\n", pid);
		return EXIT_GONE;
	}
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/ns/mnt", pid);
	int mnt = open(path, O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof path, "/proc/%d/root", pid);
	int root = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	/* Still the pinned process: what was just opened under /proc/PID was its own. */
	if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0 || mnt < 0 || root < 0) {
		fprintf(stderr, "carapace-mask: the sandbox's init ended\n");
		return EXIT_GONE;
	}
	struct stat theirs, ours;
	if (fstat(mnt, &theirs) < 0 || stat("/proc/self/ns/mnt", &ours) < 0)
		fail(EXIT_FAILED, "stat the mount namespaces");
	if (theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino) {
		fprintf(stderr, "carapace-mask: pid %d shares our mount namespace: not a sandbox\n", pid);
		return EXIT_FAILED;
	}
	if (geteuid() != 0) {
		int owner = ioctl(mnt, NS_GET_USERNS);
		if (owner < 0)
			fail(EXIT_FAILED, "find the owner of the sandbox's mount namespace");
		if (setns(owner, CLONE_NEWUSER) < 0)
			fail(EXIT_FAILED, "enter the sandbox's user namespace");
		close(owner);
	}
	if (setns(mnt, CLONE_NEWNS) < 0)
		fail(EXIT_FAILED, "enter the sandbox's mount namespace");

	int failed = 0;
	for (; i < argc; i += 2)
		if (mask(root, argv[i], argv[i + 1]) < 0)
			failed = 1;
	fflush(stdout);
	return failed ? EXIT_SOME_FAILED : 0;
}
