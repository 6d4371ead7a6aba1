/* live_raw: the minimal C client `make bench` measures fish.live against.
 * A plain TCP socket to the local Fish-compatible server
 * (spec/support/fish_server.py), the same WebSocket Upgrade request fish
 * sends, and the same msgpack start/text/flush messages, masked as a client
 * must. No library but libc; never part of fish.
 *
 *   live_raw PORT KEY FLUSHES TEXT RATE
 *
 * Opens /v1/tts/live with format = pcm at RATE, then FLUSHES times: sends
 * TEXT, then a flush, and reads until that flush's audio is all in (the
 * server makes 0.05 s of audio per character of TEXT, at least 0.2 s: the
 * same rule as fish_server.py). For each flush it times, with the monotonic
 * clock, from the moment write() of the flush frame returned to:
 *   - the first bytes of the first audio message (first_byte),
 *   - the whole first audio message, decoded (first_message).
 * Then stop, until the server's finish. Prints "key value" lines: medians
 * and 90th percentiles in ms, the audio bytes, and the VmHWM. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "live_raw: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
    exit(1);
}

static int sock = -1;

static void write_all(const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(sock, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("write");
        p += w;
        n -= (size_t)w;
    }
}

/* ---- msgpack, the few shapes the client sends ---------------------------- */

typedef struct {
    unsigned char b[512];
    size_t n;
} buf;

static void put(buf *m, const void *p, size_t n) {
    if (m->n + n > sizeof m->b) die("message too long");
    memcpy(m->b + m->n, p, n);
    m->n += n;
}

static void put_byte(buf *m, unsigned c) {
    unsigned char b = (unsigned char)c;
    put(m, &b, 1);
}

static void put_str(buf *m, const char *s) {
    size_t n = strlen(s);
    if (n < 32) {
        put_byte(m, 0xa0u | (unsigned)n);
    } else if (n < 256) {
        put_byte(m, 0xd9);
        put_byte(m, (unsigned)n);
    } else {
        put_byte(m, 0xda);
        put_byte(m, (unsigned)(n >> 8));
        put_byte(m, (unsigned)(n & 0xff));
    }
    put(m, s, n);
}

static void put_uint(buf *m, unsigned long v) {
    if (v < 128) {
        put_byte(m, (unsigned)v);
    } else if (v < 65536) {
        put_byte(m, 0xcd);
        put_byte(m, (unsigned)(v >> 8));
        put_byte(m, (unsigned)(v & 0xff));
    } else {
        put_byte(m, 0xce);
        for (int i = 3; i >= 0; i--) put_byte(m, (unsigned)((v >> (8 * i)) & 0xff));
    }
}

/* One masked binary frame (FIN), written at once. */
static unsigned char mask_pool[4096];
static size_t mask_at = sizeof mask_pool;

static void send_frame(const buf *m) {
    unsigned char head[14];
    size_t h = 0;
    head[h++] = 0x82;
    if (m->n < 126) {
        head[h++] = (unsigned char)(0x80 | m->n);
    } else {
        head[h++] = 0x80 | 126;
        head[h++] = (unsigned char)(m->n >> 8);
        head[h++] = (unsigned char)(m->n & 0xff);
    }
    if (mask_at + 4 > sizeof mask_pool) {
        int fd = open("/dev/urandom", O_RDONLY);
        if (fd < 0 || read(fd, mask_pool, sizeof mask_pool) != (ssize_t)sizeof mask_pool) die("/dev/urandom");
        close(fd);
        mask_at = 0;
    }
    unsigned char *key = mask_pool + mask_at;
    mask_at += 4;
    unsigned char frame[sizeof head + 4 + sizeof m->b];
    memcpy(frame, head, h);
    memcpy(frame + h, key, 4);
    for (size_t i = 0; i < m->n; i++) frame[h + 4 + i] = m->b[i] ^ key[i % 4];
    write_all(frame, h + 4 + m->n);
}

/* ---- reading: frames, then the server's msgpack events -------------------- */

static unsigned char *in;
static size_t in_len, in_cap;

/* Read what the socket has (blocking for at least one byte). */
static void fill(void) {
    if (in_cap - in_len < 65536) {
        in_cap = in_cap ? in_cap * 2 : 1 << 20;
        in = realloc(in, in_cap);
        if (!in) die("out of memory");
    }
    ssize_t r;
    do r = read(sock, in + in_len, in_cap - in_len);
    while (r < 0 && errno == EINTR);
    if (r < 0) die("read");
    if (r == 0) {
        errno = 0;
        die("the server closed the connection");
    }
    in_len += (size_t)r;
}

static void consume(size_t n) {
    memmove(in, in + n, in_len - n);
    in_len -= n;
}

/* A whole unmasked server frame at the start of `in`: its opcode, payload
 * offset and length; 0 if more bytes are needed. */
static int frame_at(unsigned *op, size_t *off, uint64_t *len) {
    if (in_len < 2) return 0;
    *op = in[0] & 0x0f;
    uint64_t n = in[1] & 0x7f;
    size_t h = 2;
    if (n == 126) {
        if (in_len < 4) return 0;
        n = ((uint64_t)in[2] << 8) | in[3];
        h = 4;
    } else if (n == 127) {
        if (in_len < 10) return 0;
        n = 0;
        for (int i = 0; i < 8; i++) n = (n << 8) | in[2 + i];
        h = 10;
    }
    if (in_len < h + n) return 0;
    *off = h;
    *len = n;
    return 1;
}

/* msgpack: the length of a str or bin at p (its header skipped), or -1. */
static long str_or_bin(const unsigned char *p, const unsigned char *end, const unsigned char **data) {
    if (p >= end) return -1;
    unsigned c = *p;
    long n;
    size_t h;
    if ((c & 0xe0) == 0xa0) {
        n = c & 0x1f;
        h = 1;
    } else if (c == 0xd9 || c == 0xc4) {
        if (end - p < 2) return -1;
        n = p[1];
        h = 2;
    } else if (c == 0xda || c == 0xc5) {
        if (end - p < 3) return -1;
        n = ((long)p[1] << 8) | p[2];
        h = 3;
    } else if (c == 0xdb || c == 0xc6) {
        if (end - p < 5) return -1;
        n = ((long)p[1] << 24) | ((long)p[2] << 16) | ((long)p[3] << 8) | p[4];
        h = 5;
    } else {
        return -1;
    }
    if (end - p < (long)h + n) return -1;
    *data = p + h;
    return n;
}

/* One event from the /v1/tts/live endpoint: {"event": name, "audio": bin}
 * or {"event": "finish", "reason": ...}. Returns its name's first letter
 * ('a' audio, 'f' finish, '?' else) and the audio's length. */
static char event_of(const unsigned char *p, size_t n, long *audio) {
    const unsigned char *end = p + n, *s;
    *audio = 0;
    char kind = '?';
    if (n == 0 || (p[0] & 0xf0) != 0x80) return '?';
    unsigned pairs = p[0] & 0x0f;
    p++;
    for (unsigned i = 0; i < pairs; i++) {
        long kn = str_or_bin(p, end, &s);
        if (kn < 0) return '?';
        const unsigned char *key = s;
        p = s + kn;
        if (kn == 5 && memcmp(key, "event", 5) == 0) {
            long vn = str_or_bin(p, end, &s);
            if (vn < 1) return '?';
            kind = (char)s[0];
            p = s + vn;
        } else {
            long vn = str_or_bin(p, end, &s);
            if (vn < 0) return kind; /* a value of another type: done (audio events have none) */
            if (kn == 5 && memcmp(key, "audio", 5) == 0) *audio = vn;
            p = s + vn;
        }
    }
    return kind;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double at = q * (n - 1);
    int lo = (int)at;
    int hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (at - lo);
}

static long vm_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') kb = strtol(line + n + 1, NULL, 10);
    if (f) fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: live_raw PORT KEY FLUSHES TEXT RATE\n");
        return 2;
    }
    int port = atoi(argv[1]);
    const char *key = argv[2];
    int flushes = atoi(argv[3]);
    const char *text = argv[4];
    unsigned long rate = strtoul(argv[5], NULL, 10);
    if (port <= 0 || flushes <= 0 || rate == 0) {
        fprintf(stderr, "live_raw: bad arguments\n");
        return 2;
    }
    /* As fish_server.py: max(0.2, 0.05 * characters) seconds, 16-bit mono. */
    double seconds = 0.05 * (double)strlen(text);
    if (seconds < 0.2) seconds = 0.2;
    long per_flush = (long)(seconds * (double)rate + 0.5) * 2;

    sock = socket(AF_INET, SOCK_STREAM, 0);
    if (sock < 0) die("socket");
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as libcurl does */
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");

    /* The Upgrade request, header for header as fish's (src/live.c), but
     * for the User-Agent's text. The key need not be random for this
     * server; fish's is. */
    char request[1024];
    int rn = snprintf(request, sizeof request,
                      "GET /v1/tts/live HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: bGl2ZV9yYXcgYmVuY2ghIQ==\r\n"
                      "Authorization: Bearer %s\r\nUser-Agent: live_raw\r\nmodel: s2-pro\r\n\r\n",
                      port, key);
    if (rn <= 0 || (size_t)rn >= sizeof request) die("request too long");
    write_all((const unsigned char *)request, (size_t)rn);
    for (;;) {
        fill();
        unsigned char *end = NULL;
        for (size_t i = 0; i + 3 < in_len; i++)
            if (memcmp(in + i, "\r\n\r\n", 4) == 0) {
                end = in + i + 4;
                break;
            }
        if (!end) continue;
        if (in_len < 12 || memcmp(in, "HTTP/1.1 101", 12) != 0) {
            errno = 0;
            die("the server refused the upgrade");
        }
        consume((size_t)(end - in));
        break;
    }

    buf start = {{0}, 0}, text_msg = {{0}, 0}, flush = {{0}, 0}, stop = {{0}, 0};
    /* {"event":"start","request":{"text":"","format":"pcm","sample_rate":R}} */
    put_byte(&start, 0x82);
    put_str(&start, "event");
    put_str(&start, "start");
    put_str(&start, "request");
    put_byte(&start, 0x83);
    put_str(&start, "text");
    put_str(&start, "");
    put_str(&start, "format");
    put_str(&start, "pcm");
    put_str(&start, "sample_rate");
    put_uint(&start, rate);
    put_byte(&text_msg, 0x82);
    put_str(&text_msg, "event");
    put_str(&text_msg, "text");
    put_str(&text_msg, "text");
    put_str(&text_msg, text);
    put_byte(&flush, 0x81);
    put_str(&flush, "event");
    put_str(&flush, "flush");
    put_byte(&stop, 0x81);
    put_str(&stop, "event");
    put_str(&stop, "stop");
    send_frame(&start);

    double *first_byte = malloc(sizeof(double) * (size_t)flushes);
    double *first_message = malloc(sizeof(double) * (size_t)flushes);
    if (!first_byte || !first_message) die("out of memory");
    long long audio_total = 0;
    for (int k = 0; k < flushes; k++) {
        send_frame(&text_msg);
        send_frame(&flush);
        double t0 = now_s();
        long got = 0;
        int have_first = 0, seen = in_len > 0;
        first_byte[k] = 0;
        while (got < per_flush) {
            unsigned op;
            size_t off;
            uint64_t len;
            while (!frame_at(&op, &off, &len)) {
                fill();
                if (!seen) first_byte[k] = now_s() - t0;
                seen = 1;
            }
            if (op == 0x2) {
                long audio;
                char kind = event_of(in + off, (size_t)len, &audio);
                if (kind == 'a' && audio > 0) {
                    if (!have_first) first_message[k] = now_s() - t0;
                    have_first = 1;
                    got += audio;
                } else if (kind != 'a') {
                    errno = 0;
                    die("the server sent an event other than audio before the audio was in");
                }
            } else if (op == 0x8) {
                errno = 0;
                die("the server closed the session");
            } /* pings: the server sends none unless a fault asks */
            consume(off + (size_t)len);
        }
        audio_total += got;
    }
    send_frame(&stop);
    for (int finished = 0; !finished;) {
        unsigned op;
        size_t off;
        uint64_t len;
        while (!frame_at(&op, &off, &len)) fill();
        long audio;
        if (op == 0x2 && event_of(in + off, (size_t)len, &audio) == 'f') finished = 1;
        if (op == 0x8) finished = 1;
        consume(off + (size_t)len);
    }
    close(sock);
    printf("flushes %d\n", flushes);
    printf("audio_bytes %lld\n", audio_total);
    printf("first_byte_ms %.4f\n", percentile(first_byte, flushes, 0.5) * 1e3);
    printf("first_byte_p90_ms %.4f\n", percentile(first_byte, flushes, 0.9) * 1e3);
    printf("first_audio_ms %.4f\n", percentile(first_message, flushes, 0.5) * 1e3);
    printf("first_audio_p90_ms %.4f\n", percentile(first_message, flushes, 0.9) * 1e3);
    printf("hwm_kb %ld\n", vm_kb("VmHWM"));
    free(first_byte);
    free(first_message);
    free(in);
    return 0;
}
