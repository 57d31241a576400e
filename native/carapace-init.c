/*
 * carapace-init: PID 1 of every Carapace sandbox.
 *
 * `carapace-init --probe` prints, as one JSON object, what the running kernel can enforce
 * (Landlock ABI, seccomp filter mode); `carapace doctor` and the sandbox start-up read it.
 */
#include <errno.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif

static int landlock_abi(void)
{
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	return abi < 0 ? 0 : (int)abi;
}

static int seccomp_filter_available(void)
{
	/* PR_GET_SECCOMP fails with EINVAL when the kernel lacks CONFIG_SECCOMP. Filter mode is then
	 * probed by asking for an invalid filter: EFAULT means the mode exists, EINVAL that it does not. */
	if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0 && errno == EINVAL)
		return 0;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, NULL, 0, 0) < 0 && errno == EFAULT)
		return 1;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--probe") == 0) {
		printf("{\"landlock_abi\":%d,\"seccomp_filter\":%s}\n", landlock_abi(),
		       seccomp_filter_available() ? "true" : "false");
		return 0;
	}
	fprintf(stderr, "carapace-init: usage: carapace-init --probe\n");
	return 125;
}
