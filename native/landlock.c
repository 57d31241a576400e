/*
 * Landlock: the agent's second, independent wall around the filesystem and the network.
 *
 * bwrap's mounts decide what exists inside the sandbox; Landlock decides what the agent may do
 * with it, enforced by the kernel on the agent and everything it starts, and not removable by
 * them. It holds even if a mount is wrong or a mount-namespace escape is found.
 *
 * The ruleset, at the highest ABI the kernel offers (capped by --landlock-abi-max):
 *   --ro PATH   read_file, read_dir, execute beneath PATH
 *   --rw PATH   every filesystem right the ABI handles beneath PATH (refer from ABI 2, truncate
 *               from 3, ioctl_dev from 5)
 *   --write-files PATH
 *               write_file and truncate beneath PATH, added to what --ro grants there: files that
 *               exist may be written, nothing may be created, removed or renamed. For /proc, where
 *               shells write /proc/self/oom_score_adj (docs/security.md, "Writable /proc")
 *   --list PATH read_dir beneath PATH: the names of what is there, no file's content
 *   anything else: denied (EACCES)
 *   ABI >= 4    TCP bind only to the --bind-port ports; TCP connect only to the relay port and to
 *               the --bind-port ports (the network namespace holds nothing but the sandbox's own
 *               sockets, so such a connect reaches only a server of the sandbox's own: an agent's
 *               gateway and its CLI talk over loopback)
 *   ABI >= 6    the agent may not signal, nor connect to an abstract unix socket of, a process
 *               outside its Landlock domain - PID 1 and the relay among them
 * A rule on a file (not a directory) keeps only the rights that apply to files. A path that does
 * not exist is skipped, and listed under "skipped" in the status line: there is nothing there to
 * grant access to.
 *
 * best_effort uses what the kernel has and lists the missing features in the status line.
 * hard_requirement refuses to start (exit 125) when any feature of the full ruleset is missing,
 * i.e. when the usable ABI is below 6. ABI 7 adds only audit-logging flags, which are left at the
 * kernel's defaults (denials are not logged after the agent's execve): Carapace's audit trail is
 * the host's, and an agent must not be able to flood the kernel log.
 *
 * The ruleset is built here, in PID 1 before the fork, so that a bad path fails before any agent
 * exists; the agent child only calls landlock_restrict_self().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "init.h"
#include "landlock-abi.h"

#define LANDLOCK_STEP "landlock"
#define LANDLOCK_ABI_REQUIRED 6 /* what hard_requirement insists on: the full ruleset */

#define FS_RIGHTS_ABI1 ((1ULL << 13) - 1) /* EXECUTE .. MAKE_SYM */
#define FS_RIGHTS_WRITE_EXISTING (LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_TRUNCATE)
#define FS_RIGHTS_READ_EXECUTE                                                                     \
	(LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)
#define FS_RIGHTS_FOR_FILES                                                                        \
	(LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE | \
	 LANDLOCK_ACCESS_FS_TRUNCATE | LANDLOCK_ACCESS_FS_IOCTL_DEV)

static const struct {
	const char *name;
	int abi;
} features[] = {
	{ "filesystem", 1 },
	{ "refer", 2 },
	{ "truncate", 3 },
	{ "tcp_bind", 4 },
	{ "tcp_connect", 4 },
	{ "ioctl_dev", 5 },
	{ "scope_abstract_unix_socket", 6 },
	{ "scope_signal", 6 },
};
#define FEATURE_COUNT (sizeof features / sizeof features[0])

int landlock_kernel_abi(void)
{
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	/* ENOSYS: not built in; EOPNOTSUPP: built in but not enabled at boot. */
	return abi < 0 ? 0 : (int)abi;
}

static uint64_t fs_rights_for_abi(int abi)
{
	uint64_t rights = 0;
	if (abi >= 1)
		rights |= FS_RIGHTS_ABI1;
	if (abi >= 2)
		rights |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 5)
		rights |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	return rights;
}

/* What one prepared ruleset holds, for the status line. */
struct ruleset_summary {
	struct landlock_ruleset_attr attr;
	unsigned rules;
	const char **skipped;
	size_t skipped_count;
};

static void add_path_rules(int ruleset_fd, const char **paths, size_t count, uint64_t access,
			   struct ruleset_summary *summary)
{
	for (size_t i = 0; i < count; i++) {
		int fd = open(paths[i], O_PATH | O_CLOEXEC);
		if (fd < 0) {
			if (errno != ENOENT && errno != ENOTDIR)
				die(LANDLOCK_STEP, errno, "open %s", paths[i]);
			summary->skipped[summary->skipped_count++] = paths[i];
			continue;
		}
		struct stat st;
		if (fstat(fd, &st) < 0)
			die(LANDLOCK_STEP, errno, "stat %s", paths[i]);
		struct landlock_path_beneath_attr rule = {
			.allowed_access = access & summary->attr.handled_access_fs,
			.parent_fd = fd,
		};
		if (!S_ISDIR(st.st_mode))
			rule.allowed_access &= FS_RIGHTS_FOR_FILES;
		if (syscall(SYS_landlock_add_rule, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) < 0)
			die(LANDLOCK_STEP, errno, "add the rule for %s (access 0x%llx)", paths[i],
			    (unsigned long long)rule.allowed_access);
		summary->rules++;
		if (close(fd) < 0)
			die(LANDLOCK_STEP, errno, "close %s", paths[i]);
	}
}

static void add_port_rule(int ruleset_fd, uint64_t access, unsigned port, struct ruleset_summary *summary)
{
	struct landlock_net_port_attr rule = { .allowed_access = access, .port = port };
	if (syscall(SYS_landlock_add_rule, ruleset_fd, LANDLOCK_RULE_NET_PORT, &rule, 0) < 0)
		die(LANDLOCK_STEP, errno, "add the rule for TCP port %u (access 0x%llx)", port,
		    (unsigned long long)access);
	summary->rules++;
}

static void report_plan(const struct init_config *cfg, const struct landlock_plan *plan,
			const struct ruleset_summary *summary, const char *const *missing, size_t missing_count)
{
	/* The relay port, then each non-zero --bind-port once, in the order given. */
	unsigned *connect_ports = calloc(cfg->bind_count + 1, sizeof *connect_ports);
	if (!connect_ports)
		die(LANDLOCK_STEP, ENOMEM, "allocate the list of connect ports");
	size_t connect_count = 0;
	connect_ports[connect_count++] = cfg->relay_port;
	for (size_t i = 0; i < cfg->bind_count; i++) {
		bool seen = cfg->bind_ports[i] == 0;
		for (size_t j = 0; j < connect_count && !seen; j++)
			seen = connect_ports[j] == cfg->bind_ports[i];
		if (!seen)
			connect_ports[connect_count++] = cfg->bind_ports[i];
	}

	struct status_line line;
	line_begin(&line, "landlock");
	line_string(&line, "mode", cfg->landlock_mode == LANDLOCK_HARD_REQUIREMENT ? "hard_requirement" : "best_effort");
	line_number(&line, "abi", plan->abi);
	line_number(&line, "kernel_abi", plan->kernel_abi);
	if (cfg->landlock_abi_max >= 0)
		line_number(&line, "abi_max", cfg->landlock_abi_max);
	else
		line_null(&line, "abi_max");
	line_hex(&line, "handled_fs", summary->attr.handled_access_fs);
	line_hex(&line, "handled_net", summary->attr.handled_access_net);
	line_hex(&line, "scoped", summary->attr.scoped);
	line_hex(&line, "ro_access", FS_RIGHTS_READ_EXECUTE & summary->attr.handled_access_fs);
	line_hex(&line, "rw_access", summary->attr.handled_access_fs);
	line_hex(&line, "write_files_access", FS_RIGHTS_WRITE_EXISTING & summary->attr.handled_access_fs);
	if (summary->attr.handled_access_net) {
		line_numbers(&line, "connect_ports", connect_ports, connect_count);
		line_numbers(&line, "bind_ports", cfg->bind_ports, cfg->bind_count);
	} else {
		line_null(&line, "connect_ports");
		line_null(&line, "bind_ports");
	}
	line_number(&line, "rules", summary->rules);
	line_strings(&line, "skipped", summary->skipped, summary->skipped_count);
	line_strings(&line, "missing", missing, missing_count);
	line_send(&line);
	free(connect_ports);
}

void landlock_prepare(const struct init_config *cfg, struct landlock_plan *plan)
{
	plan->kernel_abi = landlock_kernel_abi();
	plan->abi = plan->kernel_abi < LANDLOCK_ABI_KNOWN ? plan->kernel_abi : LANDLOCK_ABI_KNOWN;
	if (cfg->landlock_abi_max >= 0 && plan->abi > cfg->landlock_abi_max)
		plan->abi = cfg->landlock_abi_max;
	plan->ruleset_fd = -1;

	const char *missing[FEATURE_COUNT];
	size_t missing_count = 0;
	char missing_text[256] = "";
	for (size_t i = 0; i < FEATURE_COUNT; i++) {
		if (features[i].abi <= plan->abi)
			continue;
		missing[missing_count++] = features[i].name;
		size_t used = strlen(missing_text);
		snprintf(missing_text + used, sizeof missing_text - used, "%s%s", used ? ", " : "", features[i].name);
	}

	if (cfg->landlock_mode == LANDLOCK_HARD_REQUIREMENT && plan->abi < LANDLOCK_ABI_REQUIRED) {
		char cap[64] = "";
		if (cfg->landlock_abi_max >= 0 && cfg->landlock_abi_max < plan->kernel_abi)
			snprintf(cap, sizeof cap, ", capped by --landlock-abi-max %d", cfg->landlock_abi_max);
		die(LANDLOCK_STEP, EOPNOTSUPP,
		    "hard_requirement needs Landlock ABI %d but ABI %d is usable (kernel ABI %d%s); missing %s",
		    LANDLOCK_ABI_REQUIRED, plan->abi, plan->kernel_abi, cap, missing_text);
	}

	struct ruleset_summary summary = { 0 };
	summary.skipped = calloc(cfg->ro_count + cfg->rw_count + cfg->write_count + cfg->list_count + 1,
				  sizeof *summary.skipped);
	if (!summary.skipped)
		die(LANDLOCK_STEP, ENOMEM, "allocate the list of skipped paths");

	if (plan->abi >= 1) {
		summary.attr.handled_access_fs = fs_rights_for_abi(plan->abi);
		if (plan->abi >= 4)
			summary.attr.handled_access_net =
				LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP;
		if (plan->abi >= 6)
			summary.attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL;

		plan->ruleset_fd = (int)syscall(SYS_landlock_create_ruleset, &summary.attr, sizeof summary.attr, 0);
		if (plan->ruleset_fd < 0)
			die(LANDLOCK_STEP, errno, "landlock_create_ruleset (ABI %d, fs 0x%llx, net 0x%llx, scoped 0x%llx)",
			    plan->abi, (unsigned long long)summary.attr.handled_access_fs,
			    (unsigned long long)summary.attr.handled_access_net,
			    (unsigned long long)summary.attr.scoped);

		add_path_rules(plan->ruleset_fd, cfg->ro_paths, cfg->ro_count, FS_RIGHTS_READ_EXECUTE, &summary);
		add_path_rules(plan->ruleset_fd, cfg->rw_paths, cfg->rw_count, ~0ULL, &summary);
		add_path_rules(plan->ruleset_fd, cfg->write_paths, cfg->write_count, FS_RIGHTS_WRITE_EXISTING, &summary);
		add_path_rules(plan->ruleset_fd, cfg->list_paths, cfg->list_count, LANDLOCK_ACCESS_FS_READ_DIR,
			       &summary);
		if (plan->abi >= 4) {
			add_port_rule(plan->ruleset_fd, LANDLOCK_ACCESS_NET_CONNECT_TCP, cfg->relay_port, &summary);
			/* Port 0 is an ephemeral bind; nobody connects to port 0. */
			for (size_t i = 0; i < cfg->bind_count; i++)
				add_port_rule(plan->ruleset_fd,
					      LANDLOCK_ACCESS_NET_BIND_TCP |
						      (cfg->bind_ports[i] ? LANDLOCK_ACCESS_NET_CONNECT_TCP : 0),
					      cfg->bind_ports[i], &summary);
		}
	}

	report_plan(cfg, plan, &summary, missing, missing_count);
	free(summary.skipped);
}

/* In the agent child, after no_new_privs (the kernel requires it, as the agent has no
 * CAP_SYS_ADMIN). Returns -1 with errno set on failure. */
int landlock_enforce(const struct landlock_plan *plan)
{
	if (plan->ruleset_fd < 0)
		return 0;
	if (syscall(SYS_landlock_restrict_self, plan->ruleset_fd, 0) < 0)
		return -1;
	return close(plan->ruleset_fd);
}
