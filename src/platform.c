#ifndef _WIN32
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, fdopen, clock_gettime */
#endif
#include "platform.h"

#include <errno.h>
#include <fcntl.h>

#ifdef _WIN32
#include <io.h>
#include <sys/stat.h>
#include <windows.h>
#else
#include <time.h>
#include <unistd.h>
#endif

FILE *fish_create_exclusive(const char *path) {
#ifdef _WIN32
    /* _O_NOINHERIT is Windows' close-on-exec; _O_BINARY keeps bytes as sent. */
    int fd = _open(path, _O_WRONLY | _O_CREAT | _O_EXCL | _O_BINARY | _O_NOINHERIT,
                   _S_IREAD | _S_IWRITE);
    if (fd < 0) return NULL;
    FILE *f = _fdopen(fd, "wb");
    if (!f) {
        int err = errno;
        _close(fd);
        errno = err;
    }
#else
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        int err = errno;
        close(fd);
        errno = err;
    }
#endif
    return f;
}

double fish_now(void) {
#ifdef _WIN32
    /* The performance counter is Windows' monotonic clock; its frequency is
     * fixed at boot, so asking each time costs little and needs no state. */
    LARGE_INTEGER count, freq;
    QueryPerformanceCounter(&count);
    QueryPerformanceFrequency(&freq);
    return (double)count.QuadPart / (double)freq.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
#endif
}
