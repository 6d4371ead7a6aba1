/* The few calls that POSIX and Windows spell differently: creating a
 * download's output file, and a monotonic clock. Only platform.c looks at
 * _WIN32, so the rest of the core is ISO C plus libcurl and `make
 * check-windows` can compile all of it with MinGW. */
#ifndef FISH_PLATFORM_H
#define FISH_PLATFORM_H

#include <stdio.h>

/* Create `path` for binary writing. It must not exist yet (the name is
 * ours alone: never clobber a stranger's file), and child processes do not
 * inherit it. On POSIX the mode is 0666 less the umask. Returns NULL with
 * errno set on failure. Names are passed through as Lua's io.open does. */
FILE *fish_create_exclusive(const char *path);

/* Monotonic time in seconds. Timeouts and deadlines use it, never the wall
 * clock, so a clock change cannot fire or starve a timeout. */
double fish_now(void);

#endif
