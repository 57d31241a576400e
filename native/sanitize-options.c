/*
 * Linked into the sanitizer build only (make sanitize). The init runs with an empty environment
 * (the host hands the agent's environment over on --env-fd, never through ours), so
 * ASAN_OPTIONS cannot be set from outside: the defaults live here.
 *
 * Leak checking stays off: PID 1 and the agent child end with _exit, which skips it anyway, and
 * the one path that returns from main (--probe) holds nothing worth reporting.
 */
const char *__asan_default_options(void);
const char *__ubsan_default_options(void);

const char *__asan_default_options(void)
{
	return "detect_leaks=0:halt_on_error=1:abort_on_error=0:print_summary=1";
}

const char *__ubsan_default_options(void)
{
	return "halt_on_error=1:print_stacktrace=1";
}
