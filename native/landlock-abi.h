/*
 * The Landlock UAPI up to ABI 7, mirrored from the kernel's include/uapi/linux/landlock.h.
 *
 * Debian 12's headers stop at ABI 2 (no TRUNCATE, a one-field ruleset attribute), so this file
 * replaces <linux/landlock.h> rather than extending it: never include both. Layouts and values
 * were checked against the kernel source and against this machine's kernel (6.18, ABI 7).
 *
 *   ABI 1 (5.13)  filesystem rights, bits 0-12
 *   ABI 2 (5.19)  FS_REFER
 *   ABI 3 (6.2)   FS_TRUNCATE
 *   ABI 4 (6.7)   TCP bind and connect (handled_access_net, LANDLOCK_RULE_NET_PORT)
 *   ABI 5 (6.10)  FS_IOCTL_DEV
 *   ABI 6 (6.12)  scoping of abstract unix sockets and signals (the "scoped" field)
 *   ABI 7 (6.15)  audit logging flags for landlock_restrict_self
 */
#ifndef CARAPACE_LANDLOCK_ABI_H
#define CARAPACE_LANDLOCK_ABI_H

#include <stdint.h>
#include <sys/syscall.h>

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef SYS_landlock_add_rule
#define SYS_landlock_add_rule 445
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif

/* The kernel accepts this struct from any ABI as long as the fields it does not know are zero. */
struct landlock_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net; /* ABI 4 */
	uint64_t scoped;             /* ABI 6 */
};

#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)

#define LANDLOCK_RULE_PATH_BENEATH 1
#define LANDLOCK_RULE_NET_PORT 2 /* ABI 4 */

struct landlock_path_beneath_attr {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

struct landlock_net_port_attr {
	uint64_t allowed_access;
	uint64_t port; /* host byte order */
};

#define LANDLOCK_ACCESS_FS_EXECUTE (1ULL << 0)
#define LANDLOCK_ACCESS_FS_WRITE_FILE (1ULL << 1)
#define LANDLOCK_ACCESS_FS_READ_FILE (1ULL << 2)
#define LANDLOCK_ACCESS_FS_READ_DIR (1ULL << 3)
#define LANDLOCK_ACCESS_FS_REMOVE_DIR (1ULL << 4)
#define LANDLOCK_ACCESS_FS_REMOVE_FILE (1ULL << 5)
#define LANDLOCK_ACCESS_FS_MAKE_CHAR (1ULL << 6)
#define LANDLOCK_ACCESS_FS_MAKE_DIR (1ULL << 7)
#define LANDLOCK_ACCESS_FS_MAKE_REG (1ULL << 8)
#define LANDLOCK_ACCESS_FS_MAKE_SOCK (1ULL << 9)
#define LANDLOCK_ACCESS_FS_MAKE_FIFO (1ULL << 10)
#define LANDLOCK_ACCESS_FS_MAKE_BLOCK (1ULL << 11)
#define LANDLOCK_ACCESS_FS_MAKE_SYM (1ULL << 12)
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13)     /* ABI 2 */
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)  /* ABI 3 */
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */

#define LANDLOCK_ACCESS_NET_BIND_TCP (1ULL << 0)    /* ABI 4 */
#define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1) /* ABI 4 */

#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1)               /* ABI 6 */

/* ABI 7. Not used: see landlock.c. */
#define LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF (1U << 0)
#define LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON (1U << 1)
#define LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF (1U << 2)

/* The highest ABI whose features this program knows how to use. */
#define LANDLOCK_ABI_KNOWN 7

#endif
