/* The few calls that POSIX and Windows spell differently: files (create,
 * open for upload, stat, sync, replace), a process-wide lock, and a
 * monotonic clock. Only platform.c looks at _WIN32, so the rest of the core
 * is ISO C plus libcurl and `make check-windows` can compile all of it with
 * MinGW. Functions that fail return an errno value (0 on success) unless
 * they say otherwise. */
#ifndef FISH_PLATFORM_H
#define FISH_PLATFORM_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Returned instead of an errno when a path names something other than a
 * regular file. Negative, so it never clashes with an errno. */
#define FISH_ENOTREG (-1)

/* Create `path` for binary writing. It must not exist yet (the name is
 * ours alone: never clobber a stranger's file), and child processes do not
 * inherit it. mode < 0: 0666 less the umask, as open(2) does. Else exactly
 * those permission bits (mode & 0777), umask or not, so a temporary file
 * can take the mode of the file it will replace; it is created no wider
 * than that. Windows ignores mode. Returns NULL with errno set on failure.
 * Names are passed through as Lua's io.open does. */
FILE *fish_create_exclusive(const char *path, int mode);

/* Open a regular file for binary reading and tell its size. A FIFO or a
 * device is refused before it is opened (opening a FIFO would block).
 * Returns 0, an errno value, or FISH_ENOTREG. */
int fish_open_regular(const char *path, FILE **out, int64_t *size);

/* fseek for files over 2 GB (long is 32 bits on Windows). 0 on success. */
int fish_seek(FILE *f, int64_t offset);

/* Flush f and ask the OS to put its bytes on disk (fsync). */
int fish_sync(FILE *f);

/* rename(from, to), replacing `to` if it exists, on Windows too. */
int fish_replace(const char *from, const char *to);

typedef enum {
    FISH_TYPE_FILE,
    FISH_TYPE_DIRECTORY,
    FISH_TYPE_FIFO,
    FISH_TYPE_CHAR,
    FISH_TYPE_BLOCK,
    FISH_TYPE_SOCKET,
    FISH_TYPE_LINK,
    FISH_TYPE_OTHER
} fish_file_type;

typedef struct fish_stat_info {
    fish_file_type type;
    int64_t size;
    unsigned mode;  /* permission bits, st_mode & 07777 */
    int writable;   /* access(path, W_OK) succeeded */
} fish_stat_info;

/* stat(2), or lstat(2) when `link_itself` (Windows has no links to tell:
 * both are _stat). */
int fish_stat(const char *path, int link_itself, fish_stat_info *out);

/* True when the process has no file descriptor to spare (EMFILE, ENFILE):
 * libcurl reports that as "Couldn't connect" or "Could not resolve", so the
 * request asks here after such a failure. Always false on Windows. */
int fish_descriptors_exhausted(void);

/* One process-wide lock, for the little state the core keeps outside any
 * Lua state (the list of temporary files to remove at exit). */
void fish_lock(void);
void fish_unlock(void);

/* The current process id: a forked child must not remove its parent's
 * temporary files when it exits. */
long fish_process_id(void);

/* One socket for fish_poll_now: `want` is what to look for, `got` what is
 * ready, each a mix of FISH_POLL_IN, _OUT; `got` may also hold _ERR. */
#define FISH_POLL_IN 1
#define FISH_POLL_OUT 2
#define FISH_POLL_ERR 4
typedef struct fish_pollsock {
    curl_socket_t fd;
    int want;
    int got;
} fish_pollsock;

/* Which of these sockets are ready right now, never waiting (poll(2),
 * WSAPoll on Windows). Returns how many are, or -1 with errno set. */
int fish_poll_now(fish_pollsock *socks, size_t n);

/* A set of sockets kept in the kernel (epoll on Linux), so that asking
 * which are ready costs the same however many there are. Elsewhere
 * fish_poller_new returns NULL and callers use fish_poll_now over their own
 * list. */
typedef struct fish_poller fish_poller;
fish_poller *fish_poller_new(void);
void fish_poller_free(fish_poller *p);
/* Watch fd for `want` (FISH_POLL_IN, _OUT), or stop watching it (want 0).
 * Returns 0 or an errno value. */
int fish_poller_set(fish_poller *p, curl_socket_t fd, int want);
/* Fill out[0..cap) with the sockets ready now, never waiting. Returns how
 * many, or -1 with errno set. */
int fish_poller_ready(fish_poller *p, fish_pollsock *out, size_t cap);

/* Ignore SIGPIPE for the whole process, so that a write to a pipe whose
 * reader is gone fails with EPIPE instead of killing it. For programs (the
 * fish-audio command): a library never changes its host's signals. No-op
 * on Windows, which has no SIGPIPE. */
void fish_ignore_sigpipe(void);

/* Monotonic time in seconds. Timeouts and deadlines use it, never the wall
 * clock, so a clock change cannot fire or starve a timeout. */
double fish_now(void);

/* Fill out with n bytes from the OS's CSPRNG (WebSocket mask keys and
 * handshake nonces must be unpredictable). Returns 0 or an errno value. */
int fish_random_bytes(void *out, size_t n);

#endif
