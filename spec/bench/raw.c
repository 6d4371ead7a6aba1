/* raw.c: the reference point of `make bench`. A minimal client written
 * directly on libcurl that does the same HTTP work as fish's bench
 * (spec/bench/fish_bench.lua), against the same local server, in the same
 * run: the easy interface with one reused handle for sequential work, the
 * multi interface for concurrency. It sends the bytes fish sends (the same
 * msgpack body, the same headers that matter) and keeps what a small C
 * program would keep (the answer in a reused buffer), nothing more.
 *
 *   raw freeport                      a free loopback TCP port
 *   raw seq URL COUNT BYTES           COUNT sequential POSTs on one handle;
 *                                     CPU time per request
 *   raw upload URL FILE string|file   one POST with FILE as a 30 MB inline
 *                                     reference: from memory (POSTFIELDS)
 *                                     or streamed from the file (read
 *                                     callback); time and peak RSS growth
 *   raw latency URL COUNT             blocking requests: median latency
 *   raw frames URL COUNT              the same requests from a 60 fps loop
 *                                     that calls curl_multi_perform once a
 *                                     frame: latency until the frame that
 *                                     sees the answer
 *   raw waiting URL N STATS FRAMES    N requests waiting on a slow answer;
 *                                     the time of one non-blocking
 *                                     curl_multi_perform pass, once a frame
 *   raw load URL N                    N concurrent GETs (a load generator
 *                                     for the OpenResty row), until done
 *   raw seq_lua URL COUNT BYTES       built with -DRAW_LUA and a Lua's
 *                                     headers and library: seq, then each
 *                                     answer made a Lua string
 *                                     (lua_pushlstring) that the next one
 *                                     replaces, collected as usual. What any
 *                                     binding that returns the answer as a
 *                                     Lua string pays at least: the floor
 *                                     of fish's CPU-per-request rows
 *
 * Results are printed as "key value" lines. Build: cc -O2 raw.c -lcurl. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <curl/curl.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef RAW_LUA
#include <lauxlib.h>
#include <malloc.h>
#include <lua.h>
#include <lualib.h>
#endif

#define FRAME (1.0 / 60.0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {}
}

static void die(const char *what, const char *why) {
    fprintf(stderr, "raw: %s: %s\n", what, why);
    exit(1);
}

/* ---- the answer: appended to a buffer that is reused ---------------------- */

struct buf {
    char *data;
    size_t len, cap;
};

static size_t on_write(char *p, size_t size, size_t n, void *ud) {
    struct buf *b = ud;
    size_t add = size * n;
    if (b->len + add > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + add) cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) return 0;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, add);
    b->len += add;
    return add;
}

static size_t discard(char *p, size_t size, size_t n, void *ud) {
    (void)p;
    (void)ud;
    return size * n;
}

/* ---- the request fish sends --------------------------------------------- */

/* fish.convert{ text = "hello" } as msgpack: { "text": "hello" } */
static const char BODY[] = "\x81\xa4text\xa5hello";
#define BODY_LEN (sizeof BODY - 1)

static struct curl_slist *tts_headers(void) {
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Authorization: Bearer k");
    h = curl_slist_append(h, "Content-Type: application/msgpack");
    h = curl_slist_append(h, "model: s2-pro");
    h = curl_slist_append(h, "Expect:");
    return h;
}

static CURL *tts_easy(const char *url, struct curl_slist *headers, struct buf *b) {
    CURL *e = curl_easy_init();
    if (!e) die("curl_easy_init", "failed");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "raw-libcurl-bench");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, BODY);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)BODY_LEN);
    if (b) {
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)b);
    } else {
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    }
    return e;
}

static void perform_ok(CURL *e, struct buf *b, size_t want) {
    if (b) b->len = 0;
    CURLcode rc = curl_easy_perform(e);
    if (rc != CURLE_OK) die("curl_easy_perform", curl_easy_strerror(rc));
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        char s[32];
        snprintf(s, sizeof s, "HTTP %ld", status);
        die("answer", s);
    }
    if (b && want && b->len != want) die("answer", "wrong size");
}

/* ---- statistics ----------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least p of the samples <= it. */
static double percentile(double *v, int n, double p) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)ceil(p * n) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return v[i];
}

/* ---- memory: peak RSS since the last reset (Linux) ----------------------- */

static long status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+). */
static int reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

/* ---- modes ---------------------------------------------------------------- */

static int mode_freeport(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(s, (struct sockaddr *)&a, &len) != 0)
        die("freeport", "cannot bind");
    printf("%d\n", ntohs(a.sin_port));
    close(s);
    return 0;
}

/* COUNT sequential requests on one handle, after one that connects (as
 * fish's bench does); `keep`, if given, gets each answer inside the timed
 * loop. */
static void run_seq(const char *url, int count, size_t bytes, void (*keep)(const struct buf *, void *),
                    void *ud) {
    struct curl_slist *h = tts_headers();
    struct buf b = {0};
    CURL *e = tts_easy(url, h, &b);
    perform_ok(e, &b, bytes);
    double c0 = cpu(), t0 = now();
    for (int i = 0; i < count; i++) {
        perform_ok(e, &b, bytes);
        if (keep) keep(&b, ud);
    }
    double c1 = cpu(), t1 = now();
    printf("cpu_us %.3f\nwall_us %.3f\n", (c1 - c0) / count * 1e6, (t1 - t0) / count * 1e6);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(b.data);
}

static int mode_seq(const char *url, int count, size_t bytes) {
    run_seq(url, count, bytes, NULL, NULL);
    return 0;
}

#ifdef RAW_LUA
/* The answer as a Lua string in a global, as a caller would hold it; the
 * previous one becomes garbage. */
static void keep_in_lua(const struct buf *b, void *ud) {
    lua_State *L = ud;
    lua_pushlstring(L, b->data, b->len);
    lua_setglobal(L, "answer");
}

static int mode_seq_lua(const char *url, int count, size_t bytes) {
    /* glibc keeps what is freed instead of handing it back to the system
     * and faulting it in again for the next answer: a floor must not be
     * raised by page faults that a binding can avoid (fish's spare answer
     * buffer keeps its heap from shrinking between calls). LuaJIT's own
     * allocator maps and unmaps each large string regardless. */
    mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024); /* glibc's maximum */
    lua_State *L = luaL_newstate();
    if (!L) die("luaL_newstate", "out of memory");
    luaL_openlibs(L);
    run_seq(url, count, bytes, keep_in_lua, L);
    lua_close(L);
    return 0;
}
#endif

/* fish.convert{ text = "hello", references = { { audio = <N bytes>,
 * text = "reference" } } } as msgpack, around the audio bytes. */
static const char REF_PREFIX[] = "\x82\xa4text\xa5hello\xaareferences\x91\x82\xa5" "audio\xc6";
static const char REF_SUFFIX[] = "\xa4text\xa9reference";
#define REF_PREFIX_LEN (sizeof REF_PREFIX - 1)
#define REF_SUFFIX_LEN (sizeof REF_SUFFIX - 1)

struct upload {
    unsigned char prefix[REF_PREFIX_LEN + 4];
    size_t at; /* bytes handed to libcurl so far */
    size_t size;
    FILE *file;
};

static size_t on_read(char *p, size_t size, size_t n, void *ud) {
    struct upload *u = ud;
    size_t room = size * n, out = 0;
    size_t head = sizeof u->prefix, tail_at = head + u->size;
    if (u->at < head) {
        size_t k = head - u->at < room ? head - u->at : room;
        memcpy(p, u->prefix + u->at, k);
        u->at += k, out += k;
    }
    if (out < room && u->at < tail_at) {
        size_t want = tail_at - u->at < room - out ? tail_at - u->at : room - out;
        size_t got = fread(p + out, 1, want, u->file);
        if (got == 0) return CURL_READFUNC_ABORT;
        u->at += got, out += got;
    }
    if (out < room && u->at >= tail_at) {
        size_t off = u->at - tail_at;
        size_t k = REF_SUFFIX_LEN - off < room - out ? REF_SUFFIX_LEN - off : room - out;
        memcpy(p + out, REF_SUFFIX + off, k);
        u->at += k, out += k;
    }
    return out;
}

static int mode_upload(const char *url, const char *path, const char *kind) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path, "cannot open");
    fseek(f, 0, SEEK_END);
    size_t size = (size_t)ftell(f);
    fclose(f);
    struct upload u;
    memcpy(u.prefix, REF_PREFIX, REF_PREFIX_LEN);
    for (int i = 0; i < 4; i++) u.prefix[REF_PREFIX_LEN + i] = (unsigned char)(size >> (24 - 8 * i));
    u.at = 0;
    u.size = size;
    u.file = NULL;
    size_t total = sizeof u.prefix + size + REF_SUFFIX_LEN;

    struct curl_slist *h = tts_headers();
    struct buf b = {0};
    CURL *e = tts_easy(url, h, &b);
    perform_ok(e, &b, 0); /* connect first */

    char *body = NULL;
    int from_memory = strcmp(kind, "string") == 0;
    if (from_memory) {
        /* The audio is already in memory, laid out with its framing: the
         * string case starts from bytes the program holds. */
        body = malloc(total);
        if (!body) die("malloc", "failed");
        memcpy(body, u.prefix, sizeof u.prefix);
        f = fopen(path, "rb");
        if (!f || fread(body + sizeof u.prefix, 1, size, f) != size) die(path, "cannot read");
        fclose(f);
        memcpy(body + sizeof u.prefix + size, REF_SUFFIX, REF_SUFFIX_LEN);
    } else if (strcmp(kind, "file") != 0) {
        die("upload", "kind must be string or file");
    }

    int peak_ok = reset_peak();
    long rss0 = status_kb("VmRSS");
    double t0 = now();
    if (from_memory) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)total);
    } else {
        u.file = fopen(path, "rb");
        if (!u.file) die(path, "cannot open");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, (void *)&u);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)total);
    }
    perform_ok(e, &b, 0);
    if (u.file) fclose(u.file);
    double t1 = now();
    long hwm = status_kb("VmHWM");
    printf("seconds %.6f\n", t1 - t0);
    if (peak_ok && rss0 >= 0 && hwm >= 0) printf("peak_kb %ld\n", hwm - rss0);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(body);
    free(b.data);
    return 0;
}

static int mode_latency(const char *url, int count) {
    struct curl_slist *h = tts_headers();
    struct buf b = {0};
    CURL *e = tts_easy(url, h, &b);
    perform_ok(e, &b, 0);
    double *lat = malloc(sizeof *lat * (size_t)count);
    for (int i = 0; i < count; i++) {
        double t0 = now();
        perform_ok(e, &b, 0);
        lat[i] = now() - t0;
    }
    printf("latency_ms %.3f\n", percentile(lat, count, 0.5) * 1e3);
    free(lat);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(b.data);
    return 0;
}

/* Where in its frame request i is made: spread over the frame the same way
 * in fish's bench (the golden ratio's fractional parts). */
static double spawn_offset(int i) {
    double x = (i + 1) * 0.6180339887498949;
    return (x - floor(x)) * FRAME;
}

static int mode_frames(const char *url, int count) {
    struct curl_slist *h = tts_headers();
    struct buf b = {0};
    CURL *e = tts_easy(url, h, &b);
    CURLM *m = curl_multi_init();
    /* The connection is made first, as fish's warm-up call makes it. The
     * multi handle keeps its own connections: warm it through the multi. */
    int warm = 1;
    curl_multi_add_handle(m, e);
    while (warm) {
        curl_multi_perform(m, &warm);
        if (warm) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    while (curl_multi_info_read(m, &warm) != NULL) {}
    curl_multi_remove_handle(m, e);
    double *lat = malloc(sizeof *lat * (size_t)count);
    double frame = now();
    for (int i = 0; i < count; i++) {
        int running;
        /* A frame: perform, then the game's update makes the request
         * somewhere inside the frame. */
        frame += FRAME;
        sleep_until(frame);
        curl_multi_perform(m, &running);
        sleep_until(frame + spawn_offset(i));
        b.len = 0;
        double t0 = now();
        curl_multi_add_handle(m, e);
        int done = 0;
        while (!done) {
            frame += FRAME;
            sleep_until(frame);
            curl_multi_perform(m, &running);
            CURLMsg *msg;
            int left;
            while ((msg = curl_multi_info_read(m, &left)) != NULL) {
                if (msg->msg != CURLMSG_DONE) continue;
                if (msg->data.result != CURLE_OK) die("transfer", curl_easy_strerror(msg->data.result));
                done = 1;
            }
        }
        lat[i] = now() - t0;
        curl_multi_remove_handle(m, e);
        frame += FRAME; /* a frame with nothing waiting */
        sleep_until(frame);
    }
    printf("latency_ms %.3f\n", percentile(lat, count, 0.5) * 1e3);
    free(lat);
    curl_multi_cleanup(m);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(b.data);
    return 0;
}

/* How many requests the server holds in its delayed answer right now. */
static long server_waiting(CURL *stats, struct buf *b) {
    b->len = 0;
    if (curl_easy_perform(stats) != CURLE_OK) return -1;
    if (!on_write("", 1, 1, b)) return -1; /* a NUL */
    const char *p = strstr(b->data, "waiting ");
    return p ? strtol(p + 8, NULL, 10) : -1;
}

static int mode_waiting(const char *url, int n, const char *stats_url, int frames) {
    struct curl_slist *h = tts_headers();
    CURLM *m = curl_multi_init();
    CURL **easy = malloc(sizeof *easy * (size_t)n);
    for (int i = 0; i < n; i++) {
        easy[i] = tts_easy(url, h, NULL);
        curl_multi_add_handle(m, easy[i]);
    }
    struct buf sb = {0};
    CURL *stats = curl_easy_init();
    curl_easy_setopt(stats, CURLOPT_URL, stats_url);
    curl_easy_setopt(stats, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(stats, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(stats, CURLOPT_WRITEDATA, (void *)&sb);

    /* Until every request has reached the server and waits there. */
    double t0 = now(), next_check = t0;
    long waiting = 0;
    int running = n;
    while (waiting < n) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 10, NULL);
        if (now() >= next_check) {
            waiting = server_waiting(stats, &sb);
            next_check = now() + 0.1;
        }
        if (now() - t0 > 30) die("waiting", "the requests did not all reach the server within 30 s");
    }
    double settled = now() - t0;

    double *step = malloc(sizeof *step * (size_t)frames);
    double frame = now();
    for (int f = 0; f < frames; f++) {
        frame += FRAME;
        sleep_until(frame);
        double s0 = now();
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left, finished = 0;
        while ((msg = curl_multi_info_read(m, &left)) != NULL)
            if (msg->msg == CURLMSG_DONE) finished++;
        long timeout_ms;
        curl_multi_timeout(m, &timeout_ms);
        step[f] = now() - s0;
        if (finished) die("waiting", "a request finished while it should wait");
    }
    waiting = server_waiting(stats, &sb);
    printf("settle_s %.3f\nwaiting_after %ld\n", settled, waiting);
    printf("median_ms %.4f\n", percentile(step, frames, 0.5) * 1e3);
    printf("p90_ms %.4f\n", percentile(step, frames, 0.9) * 1e3);
    printf("p99_ms %.4f\n", percentile(step, frames, 0.99) * 1e3);
    fflush(stdout);
    _exit(0); /* the server sees the sockets close */
}

static int mode_load(const char *url, int n) {
    CURLM *m = curl_multi_init();
    for (int i = 0; i < n; i++) {
        CURL *e = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
        curl_multi_add_handle(m, e);
    }
    double t0 = now();
    int running = n, ok = 0, failed = 0;
    int by_status[600] = {0}, by_curl[100] = {0}; /* what the failures were */
    while (running) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE) continue;
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            if (msg->data.result == CURLE_OK && status == 200) {
                ok++;
                continue;
            }
            failed++;
            if (msg->data.result != CURLE_OK) by_curl[msg->data.result < 100 ? msg->data.result : 99]++;
            else by_status[status > 0 && status < 600 ? status : 0]++;
        }
        if (running) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    printf("ok %d\nfailed %d\nseconds %.3f\n", ok, failed, now() - t0);
    for (int i = 0; i < 600; i++)
        if (by_status[i]) printf("failed_http_%d %d\n", i, by_status[i]);
    for (int i = 0; i < 100; i++)
        if (by_curl[i]) printf("failed_curl_%d %d (%s)\n", i, by_curl[i], curl_easy_strerror((CURLcode)i));
    fflush(stdout);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc < 2) die("usage", "raw freeport|seq|upload|latency|frames|waiting|load ...");
    curl_global_init(CURL_GLOBAL_ALL);
    const char *mode = argv[1];
    if (strcmp(mode, "freeport") == 0) return mode_freeport();
    if (strcmp(mode, "seq") == 0 && argc == 5) return mode_seq(argv[2], atoi(argv[3]), (size_t)atol(argv[4]));
    if (strcmp(mode, "upload") == 0 && argc == 5) return mode_upload(argv[2], argv[3], argv[4]);
    if (strcmp(mode, "latency") == 0 && argc == 4) return mode_latency(argv[2], atoi(argv[3]));
    if (strcmp(mode, "frames") == 0 && argc == 4) return mode_frames(argv[2], atoi(argv[3]));
    if (strcmp(mode, "waiting") == 0 && argc == 6) return mode_waiting(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]));
    if (strcmp(mode, "load") == 0 && argc == 4) return mode_load(argv[2], atoi(argv[3]));
#ifdef RAW_LUA
    if (strcmp(mode, "seq_lua") == 0 && argc == 5) return mode_seq_lua(argv[2], atoi(argv[3]), (size_t)atol(argv[4]));
#endif
    die("usage", "wrong mode or arguments");
    return 1;
}
