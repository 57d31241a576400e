/* carapace (the front): what its files share. See carapace-front.c. */
#ifndef CARAPACE_FRONT_H
#define CARAPACE_FRONT_H

#include <stdbool.h>
#include <stddef.h>

#define PATIENCE_MS 15000
#define HEAD_MAX (16 * 1024)
/* The status of a run Carapace lost (the gateway went away, a step of the exec failed): 125, as a
 * sandbox that could not start, never a status the command itself could have given. */
#define RUN_LOST 125

/* Ends the run (RUN_LOST) with a line saying which step failed; the terminal is put back first. */
_Noreturn void front_fail(const char *step);

/* The exec's request line for `carapace run [--env N=V]... -- CMD...`, or NULL for the CLI. */
char *front_request_line(int argc, char **argv, bool tty, unsigned cols, unsigned rows);

/* The socket of the caller's gateway, as src/cli/gateway/gateway-endpoint.ts finds it. */
bool front_gateway_socket(char *out, size_t size);

/* front_open_run's answer when the gateway took the connection but did not answer in PATIENCE_MS
 * (said on stderr): the CLI is told not to wait for it again (--no-gateway). */
#define FRONT_NO_ANSWER (-2)

/* The upgraded socket with the request sent (what followed the 101 in `rest`), FRONT_NO_ANSWER,
 * or -1 (no gateway, or it declined: the CLI asks again and says why). */
int front_open_run(const char *path, const char *line, char *rest, size_t *rest_len);

bool front_write_all(int fd, const void *buf, size_t len);

/* Whether `s` is well-formed UTF-8 (utf8.h's rules). */
bool front_valid_utf8(const char *s);

/* The gateway's word (`len` bytes, not NUL-ended) escaped as the Node CLI escapes such text, in a
 * new NUL-ended string; ends the run (front_fail) when it cannot be allocated. */
char *front_printable_text(const unsigned char *s, size_t len);

#endif
