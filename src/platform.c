#ifndef _WIN32
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, fdopen, fsync, lstat, clock_gettime */
#define _FILE_OFFSET_BITS 64    /* sizes and seeks past 2 GB on 32-bit hosts */
#endif
#include "platform.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef _WIN32
#include <io.h>
#include <process.h>
#include <winsock2.h> /* before windows.h, which would pull in winsock 1 */
#include <windows.h>
/* After windows.h: */
#include <ntsecapi.h>
#ifdef _MSC_VER
/* RtlGenRandom; MinGW links advapi32 by default, MSVC only when asked. */
#pragma comment(lib, "advapi32.lib")
#endif
#else
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#ifdef __linux__
#include <sys/epoll.h>
#include <sys/random.h>
#endif
#include <time.h>
#include <unistd.h>
#endif

#ifdef _WIN32

FILE *fish_create_exclusive(const char *path, int mode) {
    /* _O_NOINHERIT is Windows' close-on-exec; _O_BINARY keeps bytes as sent.
     * Windows has no permission bits to copy. */
    (void)mode;
    int fd = _open(path, _O_WRONLY | _O_CREAT | _O_EXCL | _O_BINARY | _O_NOINHERIT,
                   _S_IREAD | _S_IWRITE);
    if (fd < 0) return NULL;
    FILE *f = _fdopen(fd, "wb");
    if (!f) {
        int err = errno;
        _close(fd);
        remove(path);
        errno = err;
    }
    return f;
}

int fish_open_regular(const char *path, FILE **out, int64_t *size) {
    struct _stat64 st;
    *out = NULL;
    if (_stat64(path, &st) != 0) return errno;
    if ((st.st_mode & _S_IFMT) != _S_IFREG) return FISH_ENOTREG;
    FILE *f = fopen(path, "rbN"); /* N: not inherited */
    if (!f) return errno;
    if (_fstat64(_fileno(f), &st) != 0 || (st.st_mode & _S_IFMT) != _S_IFREG) {
        fclose(f);
        return FISH_ENOTREG;
    }
    *size = (int64_t)st.st_size;
    *out = f;
    return 0;
}

int fish_seek(FILE *f, int64_t offset) { return _fseeki64(f, offset, SEEK_SET); }

int fish_sync(FILE *f) {
    if (fflush(f) != 0) return errno ? errno : EIO;
    return _commit(_fileno(f)) == 0 ? 0 : errno;
}

int fish_replace(const char *from, const char *to) {
    if (MoveFileExA(from, to, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) return 0;
    return GetLastError() == ERROR_PATH_NOT_FOUND ? ENOENT : EACCES;
}

int fish_stat(const char *path, int link_itself, fish_stat_info *out) {
    struct _stat64 st;
    (void)link_itself;
    if (_stat64(path, &st) != 0) return errno;
    switch (st.st_mode & _S_IFMT) {
    case _S_IFREG: out->type = FISH_TYPE_FILE; break;
    case _S_IFDIR: out->type = FISH_TYPE_DIRECTORY; break;
    case _S_IFCHR: out->type = FISH_TYPE_CHAR; break;
    case _S_IFIFO: out->type = FISH_TYPE_FIFO; break;
    default: out->type = FISH_TYPE_OTHER; break;
    }
    out->size = (int64_t)st.st_size;
    out->mode = (unsigned)(st.st_mode & 0777);
    out->writable = _access(path, 2) == 0;
    return 0;
}

int fish_descriptors_exhausted(void) { return 0; }

/* Statically initialised, so no first-use race. */
static SRWLOCK lock = SRWLOCK_INIT;
void fish_lock(void) { AcquireSRWLockExclusive(&lock); }
void fish_unlock(void) { ReleaseSRWLockExclusive(&lock); }

long fish_process_id(void) { return (long)_getpid(); }

void fish_ignore_sigpipe(void) {}

double fish_now(void) {
    /* The performance counter is Windows' monotonic clock; its frequency is
     * fixed at boot, so asking each time costs little and needs no state. */
    LARGE_INTEGER count, freq;
    QueryPerformanceCounter(&count);
    QueryPerformanceFrequency(&freq);
    return (double)count.QuadPart / (double)freq.QuadPart;
}

/* RtlGenRandom (advapi32, which every Windows program links) is the CSPRNG
 * that needs no provider handle. */
int fish_random_bytes(void *out, size_t n) {
    while (n > 0) {
        ULONG chunk = n > 0x10000 ? 0x10000 : (ULONG)n;
        if (!RtlGenRandom(out, chunk)) return EIO;
        out = (unsigned char *)out + chunk;
        n -= chunk;
    }
    return 0;
}

#else /* POSIX */

FILE *fish_create_exclusive(const char *path, int mode) {
    mode_t bits = mode < 0 ? 0666 : (mode_t)(mode & 0777);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, bits);
    if (fd < 0) return NULL;
    /* open() applied the umask; a copied mode must be exact. */
    FILE *f = mode < 0 || fchmod(fd, bits) == 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        int err = errno;
        close(fd);
        unlink(path); /* ours: O_EXCL created it */
        errno = err;
    }
    return f;
}

int fish_open_regular(const char *path, FILE **out, int64_t *size) {
    struct stat st;
    *out = NULL;
    if (stat(path, &st) != 0) return errno;
    if (!S_ISREG(st.st_mode)) return FISH_ENOTREG;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    /* Checked again on what was opened: the name may have been replaced. */
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return FISH_ENOTREG;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int err = errno;
        close(fd);
        return err;
    }
    *size = (int64_t)st.st_size;
    *out = f;
    return 0;
}

int fish_seek(FILE *f, int64_t offset) { return fseeko(f, (off_t)offset, SEEK_SET); }

int fish_sync(FILE *f) {
    if (fflush(f) != 0) return errno ? errno : EIO;
    return fsync(fileno(f)) == 0 ? 0 : errno;
}

int fish_replace(const char *from, const char *to) {
    return rename(from, to) == 0 ? 0 : errno;
}

static fish_file_type type_of(mode_t m) {
    if (S_ISREG(m)) return FISH_TYPE_FILE;
    if (S_ISDIR(m)) return FISH_TYPE_DIRECTORY;
    if (S_ISFIFO(m)) return FISH_TYPE_FIFO;
    if (S_ISCHR(m)) return FISH_TYPE_CHAR;
    if (S_ISBLK(m)) return FISH_TYPE_BLOCK;
    if (S_ISSOCK(m)) return FISH_TYPE_SOCKET;
    if (S_ISLNK(m)) return FISH_TYPE_LINK;
    return FISH_TYPE_OTHER;
}

int fish_stat(const char *path, int link_itself, fish_stat_info *out) {
    struct stat st;
    if ((link_itself ? lstat(path, &st) : stat(path, &st)) != 0) return errno;
    out->type = type_of(st.st_mode);
    out->size = (int64_t)st.st_size;
    out->mode = (unsigned)(st.st_mode & 07777);
    out->writable = access(path, W_OK) == 0;
    return 0;
}

int fish_descriptors_exhausted(void) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return errno == EMFILE || errno == ENFILE;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
void fish_lock(void) { pthread_mutex_lock(&lock); }
void fish_unlock(void) { pthread_mutex_unlock(&lock); }

long fish_process_id(void) { return (long)getpid(); }

void fish_ignore_sigpipe(void) {
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPIPE, &ignore, NULL);
}

double fish_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The kernel's CSPRNG: getrandom(2) on Linux (no descriptor, works in a
 * chroot), else /dev/urandom. */
int fish_random_bytes(void *out, size_t n) {
    unsigned char *p = out;
#ifdef __linux__
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            if (errno == ENOSYS) break; /* a kernel before 3.17 */
            return errno;
        }
        p += got;
        n -= (size_t)got;
    }
    if (n == 0) return 0;
#endif
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    while (n > 0) {
        ssize_t got = read(fd, p, n);
        if (got <= 0) {
            if (got < 0 && errno == EINTR) continue;
            int err = got < 0 ? errno : EIO;
            close(fd);
            return err;
        }
        p += got;
        n -= (size_t)got;
    }
    close(fd);
    return 0;
}

#endif

/* ---- sockets ready now --------------------------------------------------- */

#ifdef _WIN32
typedef WSAPOLLFD fish_pollfd;
#define fish_poll(fds, n) WSAPoll((fds), (ULONG)(n), 0)
#else
typedef struct pollfd fish_pollfd;
#define fish_poll(fds, n) poll((fds), (nfds_t)(n), 0)
#endif

int fish_poll_now(fish_pollsock *socks, size_t n) {
    if (n == 0) return 0;
    fish_pollfd *fds = malloc(n * sizeof *fds);
    if (!fds) {
        errno = ENOMEM;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        fds[i].fd = socks[i].fd;
        fds[i].events = (short)(((socks[i].want & FISH_POLL_IN) ? POLLIN : 0) |
                                ((socks[i].want & FISH_POLL_OUT) ? POLLOUT : 0));
        fds[i].revents = 0;
    }
    int ready = fish_poll(fds, n);
    if (ready > 0) {
        for (size_t i = 0; i < n; i++) {
            short r = fds[i].revents;
            /* A hang-up is read as the end of the stream: libcurl must read. */
            socks[i].got = ((r & (POLLIN | POLLHUP)) ? FISH_POLL_IN : 0) | ((r & POLLOUT) ? FISH_POLL_OUT : 0) |
                           ((r & (POLLERR | POLLNVAL)) ? FISH_POLL_ERR : 0);
        }
    } else {
        for (size_t i = 0; i < n; i++) socks[i].got = 0;
    }
    free(fds);
    return ready < 0 ? -1 : ready;
}

/* ---- a kernel-side socket set ------------------------------------------- */

#ifdef __linux__

struct fish_poller {
    int epfd;
    struct epoll_event *evs; /* fish_poller_ready's buffer */
    size_t cap;
};

fish_poller *fish_poller_new(void) {
    fish_poller *p = malloc(sizeof *p);
    if (!p) return NULL;
    p->evs = NULL;
    p->cap = 0;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        free(p);
        return NULL;
    }
    return p;
}

void fish_poller_free(fish_poller *p) {
    if (!p) return;
    close(p->epfd);
    free(p->evs);
    free(p);
}

int fish_poller_set(fish_poller *p, curl_socket_t fd, int want) {
    if (want == 0) {
        /* Already closed (the kernel dropped it) or never added: fine. */
        if (epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL) != 0 && errno != ENOENT && errno != EBADF) return errno;
        return 0;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = ((want & FISH_POLL_IN) ? EPOLLIN : 0) | ((want & FISH_POLL_OUT) ? EPOLLOUT : 0);
    ev.data.fd = fd;
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) == 0) return 0;
    if (errno != ENOENT) return errno;
    return epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : errno;
}

int fish_poller_ready(fish_poller *p, fish_pollsock *out, size_t cap) {
    if (cap == 0) return 0;
    if (cap > INT_MAX) cap = INT_MAX;
    if (cap > p->cap) {
        struct epoll_event *evs = realloc(p->evs, cap * sizeof *evs);
        if (!evs) {
            errno = ENOMEM;
            return -1;
        }
        p->evs = evs;
        p->cap = cap;
    }
    /* One call for every ready socket: they are level-triggered, so a
     * second call would only return the first ones again. */
    int n = epoll_wait(p->epfd, p->evs, (int)cap, 0);
    if (n < 0) return -1;
    for (int i = 0; i < n; i++) {
        uint32_t r = p->evs[i].events;
        out[i].fd = p->evs[i].data.fd;
        out[i].want = 0;
        out[i].got = ((r & (EPOLLIN | EPOLLHUP)) ? FISH_POLL_IN : 0) | ((r & EPOLLOUT) ? FISH_POLL_OUT : 0) |
                     ((r & EPOLLERR) ? FISH_POLL_ERR : 0);
    }
    return n;
}

#else

fish_poller *fish_poller_new(void) { return NULL; }
void fish_poller_free(fish_poller *p) { (void)p; }
int fish_poller_set(fish_poller *p, curl_socket_t fd, int want) {
    (void)p;
    (void)fd;
    (void)want;
    return ENOSYS;
}
int fish_poller_ready(fish_poller *p, fish_pollsock *out, size_t cap) {
    (void)p;
    (void)out;
    (void)cap;
    errno = ENOSYS;
    return -1;
}

#endif
