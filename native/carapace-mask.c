/*
 * carapace-mask: puts a running sandbox's masks back where the host's replacement of a file took
 * them away.
 *
 *   carapace-mask --pid PID --start TICKS [--file-mask PATH] [--] SOURCE TARGET [SOURCE TARGET]...
 *
 * Why: the sandbox's /etc is a bind of the host's, and the masks over /etc/shadow, the synthesized
 * /etc/passwd and the like are mounts on those names. When the host replaces one through a rename
 * (useradd, passwd, a package upgrade), the kernel detaches every mount on the old name in every
 * other mount namespace: the sandbox would see the host's new file there until it restarts. The
 * host notices (src/sandbox/mounts/mask-guard.ts) and runs this, which enters the sandbox's mount
 * namespace and masks each TARGET again. A SOURCE is a file or directory Carapace bound read-only
 * under /.carapace, inside the sandbox: open_tree(2) clones exactly the source's mount, read-only
 * as it is, and move_mount(2) attaches it on the target's inode. SOURCE `empty-dir` is no path: a
 * fresh empty read-only tmpfs (fsopen, fsmount) masks the target, as bwrap's read-only --tmpfs did
 * at the start. Both paths are inside the sandbox's tree and resolved without following any
 * symlink (openat2 RESOLVE_NO_SYMLINKS, RESOLVE_IN_ROOT from the sandbox's root): a name the
 * sandbox could have planted is never followed. A target that is already its mask (the source's
 * inode; for `empty-dir`, the root of an empty read-only tmpfs) is left alone (one run can be
 * asked for every mask, and repeats are harmless); an absent target is skipped.
 *
 * A target the host made another kind of file (a directory where a masked file was, a file where a
 * masked directory was) cannot take its source: a file mounts on a file, a directory on a
 * directory. It is masked by the empty one of its kind instead - `empty-dir`, or --file-mask (the
 * unreadable empty file) - so the host's new content stays hidden; the sandbox's own file at that
 * name is gone until the host puts the right kind back, and the next run masks it as before.
 *
 * Whose sandbox: PID is the init's host pid, TICKS its start time (/proc/PID/stat field 22). The
 * process is pinned with a pidfd before its start time is read, and still alive after its mount
 * namespace is opened, so a reused pid is never entered; a namespace that is our own is refused.
 * As root the mount namespace is entered directly (root holds every capability over the user
 * namespaces beneath its own). Rootless, the user owns the sandbox's outer user namespace, the
 * owner of its mount namespace, and joins it first (the init itself lives in a nested one that
 * bwrap's --disable-userns made, which holds no power over the mounts).
 *
 * Output: one line per target, `masked T`, `emptied T` (masked by the empty one of the other kind,
 * above), `kept T`, `absent T`, or `renamed T` (the host renamed over it again and again while we
 * bound it: the next run does it). Exit 0 when every target is masked, emptied, kept, absent or
 * renamed; 1 when one could not be (its line says why, the others are still done); 3 when PID is
 * not that sandbox any more; 125 when nothing could be done (bad arguments, a kernel without
 * pidfds, open_tree, fsopen or openat2).
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
#include <dirent.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXIT_SOME_FAILED 1
#define EXIT_GONE 3
#define EXIT_FAILED 125

/* The SOURCE that is no path: a fresh empty read-only tmpfs. */
#define EMPTY_DIR "empty-dir"

static void fail(int code, const char *step)
{
	fprintf(stderr, "carapace-mask: %s: %s\n", step, strerror(errno));
	exit(code);
}

static void usage(const char *why)
{
	fprintf(stderr,
		"carapace-mask: %s\n"
		"usage: carapace-mask --pid PID --start TICKS [--file-mask PATH] [--] SOURCE TARGET...\n",
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

/* A fresh empty read-only tmpfs, detached, to be moved onto a directory; -1 with errno. */
static int empty_dir_tree(void)
{
	int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
	if (fs < 0)
		return -1;
	int tree = -1;
	if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "mode", "0555", 0) == 0 &&
	    syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "nr_inodes", "1", 0) == 0 &&
	    syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
		tree = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC,
				    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
	int saved = errno;
	close(fs);
	errno = saved;
	return tree;
}

/*
 * Whether the directory T (at TARGET) is an `empty-dir` mask already: the root of a read-only
 * tmpfs (its parent is on another filesystem) with nothing in it. Whoever mounted it, an empty
 * read-only directory there hides what a mask hides.
 */
static int is_empty_dir_mask(int root, const char *target, int t, const struct stat *ts)
{
	struct statfs sf;
	if (fstatfs(t, &sf) < 0 || sf.f_type != TMPFS_MAGIC || !(sf.f_flags & ST_RDONLY))
		return 0;
	char parent[4096];
	if (snprintf(parent, sizeof parent, "%s", target) >= (int)sizeof parent)
		return 0;
	char *slash = strrchr(parent, '/');
	if (slash == NULL)
		return 0;
	slash[slash == parent ? 1 : 0] = '\0';
	int p = open_in_root(root, parent);
	struct stat ps;
	int other_fs = p >= 0 && fstat(p, &ps) == 0 && ps.st_dev != ts->st_dev;
	if (p >= 0)
		close(p);
	if (!other_fs)
		return 0;
	int d = openat(t, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = d < 0 ? NULL : fdopendir(d);
	if (dir == NULL) {
		if (d >= 0)
			close(d);
		return 0;
	}
	int empty = 1;
	struct dirent *e;
	while (empty && (e = readdir(dir)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			empty = 0;
	closedir(dir);
	return empty;
}

/*
 * Masks TARGET with SOURCE (an O_PATH fd; -1: a fresh empty tmpfs) unless it is masked with it
 * already; says `done` then. Returns 0 (kept or masked), 1 (the host renamed over the target
 * between our open and our bind: open it again), -1 (failed; the line is printed).
 */
static int mask_with(int root, const char *target, int t, const struct stat *ts, int source, const char *done)
{
	if (source >= 0) {
		struct stat ss;
		if (fstat(source, &ss) < 0) {
			printf("failed %s: stat: %s\n", target, strerror(errno));
			return -1;
		}
		if (ss.st_dev == ts->st_dev && ss.st_ino == ts->st_ino) {
			printf("kept %s\n", target);
			return 0;
		}
	} else if (is_empty_dir_mask(root, target, t, ts)) {
		printf("kept %s\n", target);
		return 0;
	}
	int tree = source >= 0
		? (int)syscall(SYS_open_tree, source, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH)
		: empty_dir_tree();
	if (tree < 0) {
		printf("failed %s: %s: %s\n", target, source >= 0 ? "open_tree" : "a tmpfs", strerror(errno));
		return -1;
	}
	int rc = 0;
	if (syscall(SYS_move_mount, tree, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) == 0) {
		printf("%s %s\n", done, target);
	} else if (errno == ENOENT) {
		rc = 1;
	} else {
		printf("failed %s: move_mount: %s\n", target, strerror(errno));
		rc = -1;
	}
	close(tree);
	return rc;
}

/*
 * A target the host renames over again between our open and our bind is a deleted name by the
 * bind (move_mount: ENOENT): it is opened again, the new file there masked. After this many tries
 * (a host that renames without pause) it is `renamed`, not a failure: each of those renames is an
 * inotify event to the guard, which runs us again once this run ends.
 */
#define RENAMED_TRIES 16

/* Masks TARGET with SOURCE (or the empty one of the target's kind: see the top); returns 0 or -1. */
static int mask(int root, const char *source, const char *target, int file_mask)
{
	int s = -1;
	int source_dir = 1;
	if (strcmp(source, EMPTY_DIR) != 0) {
		struct stat ss;
		s = open_in_root(root, source);
		if (s < 0 || fstat(s, &ss) < 0) {
			printf("failed %s: open the source %s: %s\n", target, source, strerror(errno));
			if (s >= 0)
				close(s);
			return -1;
		}
		source_dir = S_ISDIR(ss.st_mode);
	}
	int rc = -1;
	for (int tries = 1;; tries++) {
		int t = open_in_root(root, target);
		if (t < 0) {
			/* ENOTDIR: a directory on the way is a file now, so nothing is at the name. */
			if (errno == ENOENT || errno == ENOTDIR) {
				printf("absent %s\n", target);
				rc = 0;
			} else {
				printf("failed %s: open: %s\n", target, strerror(errno));
			}
			break;
		}
		struct stat ts;
		int r = -1;
		if (fstat(t, &ts) < 0) {
			printf("failed %s: stat: %s\n", target, strerror(errno));
		} else if (S_ISDIR(ts.st_mode) == source_dir) {
			r = mask_with(root, target, t, &ts, s, "masked");
		} else if (S_ISDIR(ts.st_mode)) {
			r = mask_with(root, target, t, &ts, -1, "emptied");
		} else if (file_mask >= 0) {
			r = mask_with(root, target, t, &ts, file_mask, "emptied");
		} else {
			printf("failed %s: not a directory any more, and no file mask to lay over it\n", target);
		}
		close(t);
		if (r == 1 && tries < RENAMED_TRIES)
			continue;
		if (r == 1)
			printf("renamed %s\n", target);
		rc = r == -1 ? -1 : 0;
		break;
	}
	if (s >= 0)
		close(s);
	return rc;
}

int main(int argc, char **argv)
{
	int pid = 0;
	long long start = 0;
	const char *file_mask_path = NULL;
	int i = 1;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--pid") == 0 && i + 1 < argc) {
			long long v = number(argv[++i]);
			if (v > 4194304)
				usage("--pid is out of range");
			pid = (int)v;
		} else if (strcmp(argv[i], "--start") == 0 && i + 1 < argc) {
			start = number(argv[++i]);
		} else if (strcmp(argv[i], "--file-mask") == 0 && i + 1 < argc) {
			file_mask_path = argv[++i];
			if (file_mask_path[0] != '/')
				usage("--file-mask is an absolute path inside the sandbox");
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
		if (argv[k][0] != '/' && !((k - i) % 2 == 0 && strcmp(argv[k], EMPTY_DIR) == 0))
			usage("SOURCE and TARGET are absolute paths inside the sandbox (a SOURCE may be empty-dir)");

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
	/* Only a target of the other kind needs it: said there if it is missing and one comes. */
	int file_mask = file_mask_path != NULL ? open_in_root(root, file_mask_path) : -1;
	for (; i < argc; i += 2)
		if (mask(root, argv[i], argv[i + 1], file_mask) < 0)
			failed = 1;
	fflush(stdout);
	return failed ? EXIT_SOME_FAILED : 0;
}
