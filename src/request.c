/* Request objects. libcurl callbacks here only touch C memory: they never
 * call Lua and never see a lua_State (design.md, "Rules in the C core"). The
 * engine's step hands completions back to Lua on the state that asked. */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "request.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "class.h"
#include "engine.h"
#include "lmsgpack.h"
#include "options.h"
#include "platform.h"
#include "transport.h"

/* A 10 MB error page must not be read whole into memory: keep its head. */
#define DEFAULT_ERROR_BODY_LIMIT (64 * 1024)

/* libcurl 7.88's own limits, which it reports as something else: a longer
 * URL is refused by setopt (CURL_MAX_INPUT_LENGTH); a request line plus
 * headers over 1 MB (DYN_HTTP_REQUEST) and one response header line over
 * 100 KB (CURL_MAX_HTTP_HEADER) both end in CURLE_OUT_OF_MEMORY. */
#define CURL_URL_LIMIT 8000000
#define CURL_REQUEST_HEAD_LIMIT (1024 * 1024)
/* What libcurl adds to our URL and headers (Host, Accept, Content-Type,
 * Content-Length, Expect, ...) stays far below this. */
#define REQUEST_HEAD_SLACK (16 * 1024)

/* Without max_bytes, a Content-Length is trusted this far for the one
 * up-front reservation; past it the buffer grows as bytes arrive, so a
 * server that claims a petabyte costs nothing until it sends one. */
#define RESERVE_LIMIT ((size_t)64 * 1024 * 1024)

static int is_success(long status) { return status >= 200 && status < 300; }

/* ---- temporary files left at exit ------------------------------------ */

/* Requests whose temporary file exists and is not committed. __gc removes
 * them, but os.exit() ends the process without collecting anything, so an
 * atexit handler removes what is left. The list is process-wide (several
 * Lua states may run on several threads), hence the lock. */
static fish_request *temp_files;

static void track_temp(fish_request *r) {
    r->file_owner = fish_process_id();
    fish_lock();
    r->temp_prev = NULL;
    r->temp_next = temp_files;
    if (temp_files) temp_files->temp_prev = r;
    temp_files = r;
    fish_unlock();
}

static void untrack_temp(fish_request *r) {
    if (!r->file_created) return;
    fish_lock();
    if (r->temp_prev) r->temp_prev->temp_next = r->temp_next;
    else if (temp_files == r) temp_files = r->temp_next;
    if (r->temp_next) r->temp_next->temp_prev = r->temp_prev;
    r->temp_prev = r->temp_next = NULL;
    fish_unlock();
}

/* Only names are removed, no FILE is closed: another thread may still be
 * writing through it while the process exits. A forked child that exits
 * leaves its parent's files alone. */
static void remove_temp_files(void) {
    long self = fish_process_id();
    fish_lock();
    for (fish_request *r = temp_files; r; r = r->temp_next)
        if (r->file_owner == self) remove(r->file_path);
    fish_unlock();
}

void fish_request_init_process(void) { atexit(remove_temp_files); }

/* ---- libcurl callbacks ------------------------------------------------ */

static int open_sink_file(fish_request *r) {
    errno = 0;
    r->file = fish_create_exclusive(r->file_path, r->file_mode);
    if (!r->file) return errno ? errno : EIO;
    r->file_created = 1;
    track_temp(r);
    return 0;
}

static size_t keep_error_body(fish_request *r, const char *ptr, size_t n) {
    size_t room = r->error_body_limit - r->error_body.len;
    size_t keep = n < room ? n : room;
    if (fish_buffer_append(&r->error_body, ptr, keep) != 0) return 0;
    if (keep < n) {
        /* Returning short makes libcurl stop reading the rest. */
        r->error_body_truncated = 1;
        return 0;
    }
    return n;
}

/* ---- easy handles ------------------------------------------------------ */

/* curl_easy_init builds a handle's whole state and curl_easy_cleanup frees
 * it (about 11,000 instructions a request with libcurl 7.88); a handle
 * cleared with curl_easy_reset costs less than half of that to set up
 * again. So a closed request leaves its handle, reset, for the next one: a
 * few, process-wide (Lua states on other threads share them), under
 * fish_lock. Connections are not in the handle but in the engine's multi
 * handle; what reset keeps (a TLS session cache) is matched by libcurl
 * against each request's TLS settings before any reuse. */
#define EASY_POOL 4
static CURL *easy_pool[EASY_POOL];
static int easy_pooled;

static CURL *easy_get(void) {
    CURL *e = NULL;
    fish_lock();
    if (easy_pooled > 0) e = easy_pool[--easy_pooled];
    fish_unlock();
    return e ? e : curl_easy_init();
}

/* Every option the request set is cleared here, before the handle waits. */
static void easy_put(CURL *e) {
    curl_easy_reset(e);
    fish_lock();
    if (easy_pooled < EASY_POOL) {
        easy_pool[easy_pooled++] = e;
        e = NULL;
    }
    fish_unlock();
    if (e) curl_easy_cleanup(e);
}

/* ---- a spare answer buffer -------------------------------------------- */
/* (drop_caches, at the end, empties both caches when a Lua state closes.) */

/* Sequential calls each need a buffer the size of their answer. Freeing a
 * large one and allocating the next, the allocator hands the pages back to
 * the system and faults them in again (a 1 MB answer: ~256 page faults, in
 * system time); instead the buffer of the last request closed is kept for
 * the next. Only large ones (malloc recycles small blocks well by itself),
 * and none over SPARE_MAX, which bounds what stays allocated while idle.
 * Process-wide (Lua states on other threads share it): under fish_lock. */
#define SPARE_MIN ((size_t)64 * 1024)
#define SPARE_MAX ((size_t)8 * 1024 * 1024)
static fish_buffer spare;

/* Frees b, keeping its memory as the spare when it is the better one. */
static void keep_spare(fish_buffer *b) {
    if (b->cap >= SPARE_MIN && b->cap <= SPARE_MAX) {
        fish_lock();
        if (b->cap > spare.cap) {
            fish_buffer kept = spare;
            spare = *b;
            *b = kept;
        }
        fish_unlock();
    }
    fish_buffer_free(b);
}

/* Gives the empty b the spare's memory, if that holds `want` bytes, cut
 * to `want` (shrinking in place costs no fault, and the answer holds no
 * more than it needs). */
static void take_spare(fish_buffer *b, size_t want) {
    if (want < SPARE_MIN || b->len != 0 || b->cap >= want) return;
    fish_lock();
    int taken = spare.cap >= want;
    if (taken) {
        fish_buffer mine = *b;
        *b = spare;
        spare = mine;
    }
    fish_unlock();
    if (!taken) return;
    b->len = 0;
    if (b->cap > want) {
        char *cut = realloc(b->data, want);
        if (cut) {
            b->data = cut;
            b->cap = want;
        }
    }
}

/* At the first 2xx byte of the buffer sink: a declared length over
 * max_bytes fails now, before any of it is read; else the buffer takes its
 * whole size at once instead of doubling its way up from 256 bytes. A
 * stream keeps only what has not been taken, so it neither fails early nor
 * reserves. Returns -1 to stop. */
static int size_from_length(fish_request *r) {
    curl_off_t length = -1;
    r->sized = 1;
    if (r->sink != SINK_BUFFER ||
        curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) != CURLE_OK ||
        length <= 0)
        return 0;
    if (r->max_bytes >= 0 && (int64_t)length > r->max_bytes) {
        r->too_large = 1;
        return -1;
    }
    uint64_t want = (uint64_t)length;
    if (r->max_bytes < 0 && want > RESERVE_LIMIT) want = RESERVE_LIMIT;
    if (want > SIZE_MAX) want = SIZE_MAX;
    take_spare(&r->response, (size_t)want);
    /* Best effort: if it fails, the buffer grows as the bytes come. */
    (void)fish_buffer_reserve_exact(&r->response, (size_t)want);
    return 0;
}

/* max_bytes caps the bytes held in r->response. For the buffer sink that
 * is the whole body. For the stream sink it is only what r:take() has not
 * taken yet, so a consumer that keeps up never hits the cap: it must only
 * be above what one engine step can read (libcurl reads a few hundred KB
 * to a few MB per curl_multi_perform). */
static int keep_in_memory(fish_request *r, const char *ptr, size_t n) {
    if (r->max_bytes >= 0 && (uint64_t)r->response.len + n > (uint64_t)r->max_bytes) {
        r->too_large = 1;
        return -1;
    }
    if (fish_buffer_append(&r->response, ptr, n) != 0) {
        r->out_of_memory = 1;
        return -1;
    }
    return 0;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
    fish_request *r = userdata;
    size_t n = size * nmemb;
    r->last_activity_at = fish_now();
    if (r->status == 0) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    if (!is_success(r->status)) return keep_error_body(r, ptr, n);
    if (!r->sized && size_from_length(r) != 0) return 0;

    switch (r->sink) {
    case SINK_FILE:
        if (!r->file && (r->file_errno = open_sink_file(r)) != 0) return 0;
        if (fwrite(ptr, 1, n, r->file) != n) {
            r->file_errno = errno ? errno : EIO;
            return 0;
        }
        break;
    case SINK_BUFFER:
    case SINK_STREAM:
        /* Returning short stops the transfer; the flags say why. */
        if (keep_in_memory(r, ptr, n) != 0) return 0;
        break;
    }
    r->delivered += (curl_off_t)n;
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata) {
    fish_request *r = userdata;
    (void)ptr;
    r->last_activity_at = fish_now();
    if (r->first_byte_at == 0) r->first_byte_at = r->last_activity_at;
    return size * nmemb;
}

/* Transfer info: only copied here; Lua reads it with r:transfer() from the
 * engine's step. Never stops the transfer. */
static int on_xferinfo(void *userdata, curl_off_t receive_total, curl_off_t received,
                       curl_off_t send_total, curl_off_t sent) {
    fish_request *r = userdata;
    r->sent = sent;
    r->send_total = send_total;
    r->received = received;
    r->receive_total = receive_total;
    return 0;
}

/* A multipart file part. Its size is fixed when the request is created, and
 * libcurl declares Content-Length from it, so the bytes sent must be exactly
 * that many whatever happens to the file meanwhile: a file that ends early
 * or has bytes beyond the size aborts the transfer. */
typedef struct fish_upload {
    FILE *file;
    curl_off_t size, offset;
    fish_request *request;
    char path[]; /* for the error message */
} fish_upload;

/* Read up to `want` bytes of a file whose size was fixed at `size`, from
 * *offset (where f stands). Returns the count, or CURL_READFUNC_ABORT with
 * the reason recorded in r: a read error, or a file that ended early or has
 * bytes beyond its size (file_changed). Mime parts and writer bodies both
 * read their files through here. */
static size_t read_fixed(fish_request *r, FILE *f, const char *path, curl_off_t size,
                         curl_off_t *offset, char *buf, size_t want) {
    curl_off_t left = size - *offset;
    if ((uint64_t)want > (uint64_t)left) want = (size_t)left;
    errno = 0;
    size_t got = want ? fread(buf, 1, want, f) : 0;
    *offset += (curl_off_t)got;
    if (got < want && ferror(f)) {
        r->upload_failed = path;
        r->upload_errno = errno ? errno : EIO;
        return CURL_READFUNC_ABORT;
    }
    /* libcurl stops asking once `size` bytes are read, so growth is looked
     * for in the same call that reads the last byte. */
    if (got < want || (*offset == size && getc(f) != EOF)) {
        r->upload_changed = path;
        return CURL_READFUNC_ABORT;
    }
    return got;
}

static size_t read_upload(char *buf, size_t size, size_t nitems, void *arg) {
    fish_upload *u = arg;
    return read_fixed(u->request, u->file, u->path, u->size, &u->offset, buf, size * nitems);
}

/* libcurl rewinds a body it must send again (a reused connection that
 * turned out dead). */
static int seek_upload(void *arg, curl_off_t offset, int origin) {
    fish_upload *u = arg;
    if (origin != SEEK_SET || offset < 0 || offset > u->size) return CURL_SEEKFUNC_CANTSEEK;
    if (fish_seek(u->file, (int64_t)offset) != 0) return CURL_SEEKFUNC_FAIL;
    u->offset = offset;
    return CURL_SEEKFUNC_OK;
}

static void free_upload(void *arg) {
    fish_upload *u = arg;
    fclose(u->file);
    free(u);
}

/* A writer's body on the wire: its buffer, with each referenced file's
 * bytes read from disk where the reference stands. The length was declared
 * (Content-Length) when the request was made; a file that no longer has
 * its size fails the transfer as file_changed, like a mime file. */
typedef struct fish_body_file {
    FILE *file;         /* NULL when it could not be opened or had changed */
    curl_off_t offset;  /* where file stands, in the file */
} fish_body_file;

/* Copy up to room bytes of the n at `from`, starting `skip` in. */
static size_t copy_piece(char *out, size_t room, const char *from, size_t n, size_t skip) {
    size_t take = n - skip < room ? n - skip : room;
    memcpy(out, from + skip, take);
    return take;
}

/* Copy from body position r->body_pos; returns the count or an abort. */
static size_t read_body_piece(fish_request *r, char *out, size_t room) {
    const fish_mp_body *b = r->stream_body;
    int64_t start = 0; /* body position of the piece being looked at */
    size_t at = 0;     /* its offset in b->buf */
    for (size_t i = 0;; i++) {
        size_t end = i < b->nrefs ? b->refs[i].at : b->buf.len;
        int64_t n = (int64_t)(end - at);
        if (r->body_pos < start + n)
            return copy_piece(out, room, b->buf.data + at, (size_t)n, (size_t)(r->body_pos - start));
        start += n;
        at = end;
        if (i == b->nrefs) return 0; /* past the end */
        const fish_mp_file_ref *ref = &b->refs[i];
        if (r->body_pos < start + ref->size) {
            if (ref->data) /* a Lua string the request holds */
                return copy_piece(out, room, ref->data, (size_t)ref->size, (size_t)(r->body_pos - start));
            fish_body_file *bf = &r->body_files[i];
            curl_off_t want_at = (curl_off_t)(r->body_pos - start);
            if (!bf->file) return CURL_READFUNC_ABORT;
            if (bf->offset != want_at) {
                if (fish_seek(bf->file, (int64_t)want_at) != 0) {
                    r->upload_failed = ref->path;
                    r->upload_errno = errno ? errno : EIO;
                    return CURL_READFUNC_ABORT;
                }
                bf->offset = want_at;
            }
            return read_fixed(r, bf->file, ref->path, (curl_off_t)ref->size, &bf->offset, out,
                              room);
        }
        start += ref->size;
    }
}

static size_t read_body(char *buf, size_t size, size_t nitems, void *arg) {
    fish_request *r = arg;
    size_t room = size * nitems, done = 0;
    /* A file that failed when the request was made fails it before any
     * byte of the body goes out. */
    if (r->upload_changed || r->upload_failed) return CURL_READFUNC_ABORT;
    while (done < room && r->body_pos < r->body_length) {
        size_t got = read_body_piece(r, buf + done, room - done);
        if (got == CURL_READFUNC_ABORT) return CURL_READFUNC_ABORT;
        if (got == 0) break;
        r->body_pos += (int64_t)got;
        done += got;
    }
    return done;
}

/* libcurl rewinds the body to send it again (a reused connection that
 * turned out dead); the files follow lazily, in read_body_piece. */
static int seek_body(void *arg, curl_off_t offset, int origin) {
    fish_request *r = arg;
    if (origin != SEEK_SET || offset < 0 || (int64_t)offset > r->body_length)
        return CURL_SEEKFUNC_CANTSEEK;
    r->body_pos = (int64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static void close_body_files(fish_request *r) {
    if (r->body_files && r->stream_body)
        for (size_t i = 0; i < r->stream_body->nrefs; i++)
            if (r->body_files[i].file) fclose(r->body_files[i].file);
    free(r->body_files);
    r->body_files = NULL;
    fish_mp_body_release(r->stream_body);
    r->stream_body = NULL;
}

/* ---- construction ----------------------------------------------------- */

fish_request *fish_check_request(lua_State *L, int idx) {
    fish_request *r = luaL_checkudata(L, idx, FISH_REQUEST_MT);
    if (r->state == REQ_CLOSED) luaL_argerror(L, idx, "request is closed");
    return r;
}

/* The options table's readers (options.h), named for core.request. Bodies
 * and mime data, which are passed with their length, are read elsewhere. */
static int opt_error(lua_State *L, const char *key, const char *problem) {
    return fish_opt_error(L, "request", key, problem);
}

static const char *opt_string(lua_State *L, int opts, const char *key, size_t *len) {
    return fish_opt_string(L, "request", opts, key, len);
}

static double opt_number(lua_State *L, int opts, const char *key, double fallback) {
    return fish_opt_number(L, "request", opts, key, fallback);
}

/* A byte count: a whole number >= 0, or -1 when absent. Anything from 2^63
 * up (math.huge too) means "no limit" and is clamped, not converted. */
static int64_t opt_count(lua_State *L, int opts, const char *key) {
    lua_getfield(L, opts, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return -1;
    }
    if (lua_type(L, -1) != LUA_TNUMBER) opt_error(L, key, "must be an integer >= 0");
    double v = (double)lua_tonumber(L, -1);
    if (v != v) opt_error(L, key, "is NaN");
    if (v < 0 || v != floor(v)) opt_error(L, key, "must be an integer >= 0");
    int64_t n;
    if (v >= 9223372036854775808.0) n = INT64_MAX;
#if LUA_VERSION_NUM >= 503
    /* Above 2^53 the float has lost digits the integer still holds. */
    else if (lua_isinteger(L, -1)) n = (int64_t)lua_tointeger(L, -1);
#endif
    else n = (int64_t)v;
    lua_pop(L, 1);
    return n;
}

static int opt_boolean(lua_State *L, int opts, const char *key) {
    lua_getfield(L, opts, key);
    int t = lua_type(L, -1);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN) opt_error(L, key, "must be a boolean");
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static void fail_curl(lua_State *L, CURLcode code, const char *what) {
    luaL_error(L, "libcurl refused %s: %s", what, curl_easy_strerror(code));
}

static void set_headers(lua_State *L, fish_request *r, int opts) {
    lua_getfield(L, opts, "headers");
    if (lua_istable(L, -1)) {
        int n = (int)lua_rawlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            size_t len = 0;
            const char *line = lua_tolstring(L, -1, &len);
            if (!line) luaL_argerror(L, 1, lua_pushfstring(L, "request header %d must be a string", i));
            if (strlen(line) != len)
                luaL_argerror(L, 1, lua_pushfstring(L, "request header %d contains a NUL byte", i));
            struct curl_slist *grown = curl_slist_append(r->headers, line);
            if (!grown) luaL_error(L, "out of memory");
            r->headers = grown;
            r->request_head += len + 2;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (r->headers) curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
}

/* Open a part's file now, so that a missing or changed file is an error of
 * this call, naming the path, and the size is fixed before anything is sent
 * (`expected`: the size fish.file recorded, or -1). */
static void attach_file(lua_State *L, fish_request *r, curl_mimepart *p, const char *path,
                        int64_t expected) {
    FILE *f = NULL;
    int64_t size = 0;
    int err = fish_open_regular(path, &f, &size);
    if (err == FISH_ENOTREG) luaL_error(L, "cannot upload %s: not a regular file", path);
    if (err) luaL_error(L, "cannot open %s: %s", path, strerror(err));
    if (expected >= 0 && size != expected) {
        fclose(f);
        char sizes[64];
        snprintf(sizes, sizeof sizes, "%lld bytes, expected %lld", (long long)size,
                 (long long)expected);
        luaL_error(L, "%s is %s (it changed after fish.file)", path, sizes);
    }
    size_t len = strlen(path);
    fish_upload *u = malloc(sizeof *u + len + 1);
    if (!u) {
        fclose(f);
        luaL_error(L, "out of memory");
    }
    u->file = f;
    u->size = (curl_off_t)size;
    u->offset = 0;
    u->request = r;
    memcpy(u->path, path, len + 1);
    /* From here libcurl owns u and frees it with the mime (free_upload). */
    CURLcode rc = curl_mime_data_cb(p, u->size, read_upload, seek_upload, free_upload, u);
    if (rc != CURLE_OK) {
        free_upload(u);
        fail_curl(L, rc, "a mime file part");
    }
}

/* One part of a multipart body: { name=, data= | file=, size=, filename=,
 * type= }. Files are read from disk while sending (read_upload). */
static void add_mime_part(lua_State *L, fish_request *r, int part) {
    const char *name = opt_string(L, part, "name", NULL);
    const char *file = opt_string(L, part, "file", NULL);
    const char *filename = opt_string(L, part, "filename", NULL);
    const char *type = opt_string(L, part, "type", NULL);
    int64_t size = opt_count(L, part, "size");
    curl_mimepart *p = curl_mime_addpart(r->mime);
    if (!p) luaL_error(L, "out of memory");
    CURLcode rc = curl_mime_name(p, name);
    if (rc == CURLE_OK && file) attach_file(L, r, p, file, size);
    if (rc == CURLE_OK && !file) {
        lua_getfield(L, part, "data");
        size_t len = 0;
        const char *data = lua_tolstring(L, -1, &len);
        if (!data) luaL_error(L, "mime part '%s' needs data or file", name ? name : "?");
        rc = curl_mime_data(p, data, len); /* libcurl copies it */
        lua_pop(L, 1);
    }
    /* A part has a filename only when one is given: data_cb, unlike
     * curl_mime_filedata, implies none. */
    if (rc == CURLE_OK && filename) rc = curl_mime_filename(p, filename);
    if (rc == CURLE_OK && type) rc = curl_mime_type(p, type);
    if (rc != CURLE_OK) fail_curl(L, rc, "a mime part");
}

static void set_mime(lua_State *L, fish_request *r, int opts) {
    lua_getfield(L, opts, "mime");
    if (lua_istable(L, -1)) {
        int parts = lua_gettop(L);
        r->mime = curl_mime_init(r->easy);
        if (!r->mime) luaL_error(L, "out of memory");
        int n = (int)lua_rawlen(L, parts);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, parts, i);
            if (!lua_istable(L, -1)) luaL_error(L, "mime part %d must be a table", i);
            add_mime_part(L, r, lua_gettop(L));
            lua_pop(L, 1);
        }
        curl_easy_setopt(r->easy, CURLOPT_MIMEPOST, r->mime);
    }
    lua_pop(L, 1);
}

/* body = a msgpack writer: sent as it stands, never copied. The request
 * shares the writer's body (fish_mp_body_retain), so closing or collecting
 * the writer under a running transfer frees nothing it reads, and once the
 * request is made (request_new) the body is frozen so that every request
 * made from it sends the same bytes. Each
 * file is opened now with its size checked; one that cannot be opened or
 * has changed size fails the transfer (read / file_changed), not this
 * call, so a retry sees the same error as the first attempt would. */
static void set_stream_body(lua_State *L, fish_request *r, fish_mp_body *b) {
    fish_mp_body_retain(b);
    r->stream_body = b;
    if (b->nrefs) {
        r->body_files = calloc(b->nrefs, sizeof *r->body_files);
        if (!r->body_files) luaL_error(L, "out of memory");
    }
    for (size_t i = 0; i < b->nrefs; i++) {
        const fish_mp_file_ref *ref = &b->refs[i];
        if (ref->data) continue; /* a Lua string: nothing to open */
        FILE *f = NULL;
        int64_t size = 0;
        int err = fish_open_regular(ref->path, &f, &size);
        if (err == FISH_ENOTREG) {
            r->upload_changed = ref->path; /* no longer the regular file it was */
            continue;
        }
        if (err) {
            r->upload_failed = ref->path;
            r->upload_errno = err;
            continue;
        }
        r->body_files[i].file = f;
        if (size != ref->size) r->upload_changed = ref->path;
    }
    r->body_length = fish_mp_body_length(b);
    if (b->nrefs == 0) {
        /* All in memory: libcurl reads the frozen buffer in place (no copy),
         * and a small body leaves in the same packet as the headers, where
         * a read callback would cost a second send. */
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_length);
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, b->buf.data ? b->buf.data : "");
        return;
    }
    curl_easy_setopt(r->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(r->easy, CURLOPT_READFUNCTION, read_body);
    curl_easy_setopt(r->easy, CURLOPT_READDATA, (void *)r);
    curl_easy_setopt(r->easy, CURLOPT_SEEKFUNCTION, seek_body);
    curl_easy_setopt(r->easy, CURLOPT_SEEKDATA, (void *)r);
    /* A known length: Content-Length, not chunked. */
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_length);
}

/* The request at `req` holds the Lua strings the writer on top of the
 * stack refers to (it has some: nstrings > 0), in its uservalue
 * ({ [2] = strings }; e:add puts the engine at [1]): read_body copies from
 * them for as long as it may run. */
static void hold_strings(lua_State *L, fish_request *r, int req) {
    fish_mp_push_strings(L, -1);
    lua_createtable(L, 2, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 2);
    lua_setuservalue(L, req);
    r->holds_strings = 1;
}

static void set_body(lua_State *L, fish_request *r, int opts, int req) {
    lua_getfield(L, opts, "body");
    fish_mp_body *b = lua_isuserdata(L, -1) ? fish_mp_body_of(L, -1) : NULL;
    if (b) {
        if (b->nstrings) hold_strings(L, r, req);
        set_stream_body(L, r, b);
    } else if (!lua_isnil(L, -1)) {
        size_t len = 0;
        const char *body = lua_tolstring(L, -1, &len);
        if (!body) opt_error(L, "body", "must be a string or a msgpack writer");
        /* Our own copy: the Lua string may be collected mid-transfer. */
        if (fish_buffer_append(&r->body, body, len) != 0) luaL_error(L, "out of memory");
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body.data ? r->body.data : "");
    }
    lua_pop(L, 1);
}

static void set_method(lua_State *L, fish_request *r, int opts) {
    size_t len = 0;
    const char *method = opt_string(L, opts, "method", &len);
    r->request_head += len;
    int has_body = r->body.len || r->mime || r->stream_body;
    if (!method || strcmp(method, "GET") == 0) {
        if (has_body) luaL_error(L, "a GET request cannot carry a body");
        curl_easy_setopt(r->easy, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "POST") != 0) {
        /* PATCH and DELETE: libcurl sends the body set above, if any (a
         * writer's body is a POST whose method is renamed). */
        curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, method);
    } else if (!has_body) {
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, "");
    }
}

/* The file sink writes to `path`, a temporary name the request owns, and
 * r:commit(target) renames it into place. The temporary file takes the
 * target's permission bits when the target exists (a 0600 file stays
 * 0600); whether the target may be replaced at all is the Lua side's call. */
static void set_sink(lua_State *L, fish_request *r, int opts) {
    const char *sink = opt_string(L, opts, "sink", NULL);
    const char *path = opt_string(L, opts, "path", NULL);
    const char *target = opt_string(L, opts, "target", NULL);
    if (!sink || strcmp(sink, "buffer") == 0) {
        r->sink = SINK_BUFFER;
    } else if (strcmp(sink, "stream") == 0) {
        r->sink = SINK_STREAM;
    } else if (strcmp(sink, "file") == 0) {
        if (!path) luaL_error(L, "a file sink needs 'path'");
        r->sink = SINK_FILE;
        r->file_path = strdup(path);
        if (!r->file_path) luaL_error(L, "out of memory");
        fish_stat_info st;
        if (target && fish_stat(target, 0, &st) == 0 && st.type == FISH_TYPE_FILE)
            r->file_mode = (int)(st.mode & 0777);
    } else {
        luaL_error(L, "unknown sink '%s'", sink);
    }
    r->max_bytes = opt_count(L, opts, "max_bytes");
}

static void set_proxy(lua_State *L, fish_request *r, int opts) {
    const char *proxy = opt_string(L, opts, "proxy", NULL);
    int tunnel = opt_boolean(L, opts, "proxy_tunnel");
    CURLcode rc = fish_transport_proxy(r->easy, proxy, tunnel);
    if (rc != CURLE_OK) fail_curl(L, rc, "the proxy");
}

/* progress = true: libcurl reports transfer info to on_xferinfo. Without
 * it NOPROGRESS stays on, and libcurl does no progress work for the
 * request at all. */
static void set_progress(lua_State *L, fish_request *r, int opts) {
    if (!opt_boolean(L, opts, "progress")) return;
    r->watch_transfer = 1;
    curl_easy_setopt(r->easy, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(r->easy, CURLOPT_XFERINFODATA, (void *)r);
    curl_easy_setopt(r->easy, CURLOPT_NOPROGRESS, 0L);
}

static void set_transport(lua_State *L, fish_request *r, int opts) {
    CURL *e = r->easy;
    size_t url_length = 0;
    const char *url = opt_string(L, opts, "url", &url_length);
    if (!url) luaL_error(L, "request option 'url' is required");
    if (url_length > CURL_URL_LIMIT) {
        char msg[96];
        snprintf(msg, sizeof msg, "is %zu bytes, over libcurl's limit of %d", url_length,
                 CURL_URL_LIMIT);
        opt_error(L, "url", msg);
    }
    CURLcode rc = curl_easy_setopt(e, CURLOPT_URL, url);
    if (rc != CURLE_OK) fail_curl(L, rc, "the URL");
    r->url_length = url_length;
    r->request_head += url_length;
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    fish_transport_safe(e);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)r);

    rc = fish_transport_ca_file(e, opt_string(L, opts, "ca_file", NULL));
    if (rc != CURLE_OK) fail_curl(L, rc, "ca_file");
    set_proxy(L, r, opts);
    fish_transport_connect_timeout(e, opt_number(L, opts, "connect_timeout", 0));
    double limit = opt_number(L, opts, "error_body_limit", DEFAULT_ERROR_BODY_LIMIT);
    if (limit <= 0) limit = DEFAULT_ERROR_BODY_LIMIT;
    /* (double)SIZE_MAX rounds up, so >= catches every value that would overflow. */
    r->error_body_limit = limit >= (double)SIZE_MAX ? SIZE_MAX : (size_t)limit;
}

/* core.request{ url=, method=, headers={...}, body= | mime={...},
 *               sink="buffer"|"stream"|"file", path=, target=, max_bytes=,
 *               connect_timeout=, ca_file=, proxy=, proxy_tunnel=,
 *               error_body_limit=, progress= }
 * Only fish's Lua half builds these tables, so unknown keys are not looked
 * for here (util.check_fields does that for the public calls). */
static int request_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    fish_request *r = lua_newuserdata(L, sizeof *r);
    memset(r, 0, sizeof *r);
    fish_buffer_init(&r->body);
    fish_buffer_init(&r->response);
    fish_buffer_init(&r->error_body);
    r->max_bytes = -1;
    r->file_mode = -1;
    r->state = REQ_CLOSED; /* until the easy handle exists, close is a no-op */
    luaL_getmetatable(L, FISH_REQUEST_MT);
    lua_setmetatable(L, -2);

    r->easy = easy_get();
    if (!r->easy) return luaL_error(L, "curl_easy_init failed");
    r->state = REQ_IDLE;

    /* Any error below leaves r owning what it allocated; __gc frees it. */
    set_transport(L, r, 1);
    set_headers(L, r, 1);
    set_body(L, r, 1, 2);
    set_mime(L, r, 1);
    set_method(L, r, 1);
    set_sink(L, r, 1);
    set_progress(L, r, 1);
    /* Frozen only now: a request that failed to be made (a GET with a
     * body, a sink that cannot be created) must not leave its writer
     * refusing writes. A writer only grows, so an options table whose
     * __index wrote to it since set_body shows in its length (libcurl
     * would read a buffer that moved). */
    if (r->stream_body) {
        if (fish_mp_body_length(r->stream_body) != r->body_length)
            return luaL_error(L, "option 'body': the writer changed while the request was made");
        r->stream_body->frozen = 1;
    }
    return 1;
}

/* ---- completion and close -------------------------------------------- */

static int is_connect_failure(CURLcode result) {
    return result == CURLE_COULDNT_RESOLVE_HOST || result == CURLE_COULDNT_RESOLVE_PROXY ||
           result == CURLE_COULDNT_CONNECT;
}

void fish_request_finish(fish_request *r, CURLcode result, int canceled) {
    r->state = REQ_DONE;
    r->result = result;
    r->canceled = canceled;
    long status = 0;
    if (curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status)
        r->status = status;
    /* libcurl may end a transfer without reporting its last bytes to
     * on_xferinfo: the final counts come from the handle. */
    if (r->watch_transfer) {
        curl_off_t n = 0;
        if (curl_easy_getinfo(r->easy, CURLINFO_SIZE_UPLOAD_T, &n) == CURLE_OK) r->sent = n;
        if (curl_easy_getinfo(r->easy, CURLINFO_SIZE_DOWNLOAD_T, &n) == CURLE_OK) r->received = n;
    }
    /* The file stays open for r:commit, which syncs it; a full disk shows
     * here already, in the result. */
    if (r->file && fflush(r->file) != 0 && !r->file_errno) r->file_errno = errno ? errno : EIO;
    /* libcurl says "Couldn't connect" or "Could not resolve" when socket()
     * or its resolver thread found no descriptor free (CURLINFO_OS_ERRNO
     * stays 0): ask now, while the shortage lasts. */
    if (!canceled && is_connect_failure(result))
        r->descriptors_exhausted = fish_descriptors_exhausted();
}

static void request_release(fish_request *r) {
    if (r->state == REQ_CLOSED) return;
    if (r->state == REQ_RUNNING) fish_engine_detach(r);
    untrack_temp(r);
    if (r->file) fclose(r->file);
    r->file = NULL;
    /* Ours (O_EXCL) and never committed: a failed, canceled or abandoned
     * download leaves no .part behind. */
    if (r->file_created && !r->committed) remove(r->file_path);
    easy_put(r->easy); /* after detach: the multi must let go first */
    r->easy = NULL;
    curl_mime_free(r->mime); /* closes the upload files (free_upload) */
    r->mime = NULL;
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    free(r->file_path);
    r->file_path = NULL;
    fish_buffer_free(&r->body);
    close_body_files(r);
    keep_spare(&r->response);
    fish_buffer_free(&r->error_body);
    r->state = REQ_CLOSED;
}

static int request_close(lua_State *L) {
    fish_request *r = luaL_checkudata(L, 1, FISH_REQUEST_MT);
    request_release(r);
    return 0;
}

/* ---- Lua methods ------------------------------------------------------ */

static int request_id(lua_State *L) {
    lua_pushinteger(L, fish_check_request(L, 1)->id);
    return 1;
}

static int request_state(lua_State *L) {
    static const char *const names[] = {"idle", "running", "done", "closed"};
    fish_request *r = luaL_checkudata(L, 1, FISH_REQUEST_MT);
    lua_pushstring(L, names[r->state]);
    return 1;
}

static int request_status(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)fish_check_request(L, 1)->status);
    return 1;
}

static int out_of_descriptors(int err) { return err == EMFILE || err == ENFILE; }

/* Why a finished transfer failed: pushes a message and returns a word the
 * Lua layer maps to an error kind; returns NULL and pushes nothing when the
 * exchange completed (whatever its HTTP status). */
static const char *push_failure(lua_State *L, const fish_request *r) {
    if (r->canceled) {
        lua_pushliteral(L, "canceled");
        return "canceled";
    }
    if (r->too_large) {
        char msg[64];
        snprintf(msg, sizeof msg, "the answer exceeded %lld bytes", (long long)r->max_bytes);
        lua_pushstring(L, msg);
        return "too_large";
    }
    if (r->upload_changed) {
        lua_pushfstring(L, "%s changed size during the upload", r->upload_changed);
        return "file_changed";
    }
    if (r->upload_failed) {
        lua_pushfstring(L, "cannot read %s: %s", r->upload_failed, strerror(r->upload_errno));
        return "read";
    }
    if (r->out_of_memory) {
        lua_pushliteral(L, "out of memory while keeping the answer");
        return "memory";
    }
    if (r->file_errno) {
        if (out_of_descriptors(r->file_errno)) {
            lua_pushfstring(L, "out of file descriptors: cannot create %s (%s)", r->file_path,
                            strerror(r->file_errno));
            return "resources";
        }
        lua_pushfstring(L, "cannot write %s: %s", r->file_path, strerror(r->file_errno));
        return "write";
    }
    const char *text = r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result);
    const char *kind = "network";
    switch (r->result) {
    case CURLE_OK:
        return NULL;
    case CURLE_WRITE_ERROR:
        /* We stopped reading an oversized error body on purpose. */
        if (r->error_body_truncated) return NULL;
        kind = "write";
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        if (r->descriptors_exhausted) {
            lua_pushfstring(L, "out of file descriptors (%s): %s", strerror(EMFILE), text);
            return "resources";
        }
        kind = "connect";
        break;
    case CURLE_OPERATION_TIMEDOUT:
        kind = "connect_timeout";
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
        kind = "tls";
        break;
    case CURLE_OUT_OF_MEMORY:
        /* libcurl 7.88's words for two of its size limits (see the top). */
        if (r->request_head + REQUEST_HEAD_SLACK > CURL_REQUEST_HEAD_LIMIT) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "the request line and headers exceed libcurl's limit of %d bytes "
                     "(the URL is %zu bytes)",
                     CURL_REQUEST_HEAD_LIMIT, r->url_length);
            lua_pushstring(L, msg);
            return "too_large";
        }
        if (r->first_byte_at > 0 && r->delivered == 0 && r->error_body.len == 0) {
            lua_pushliteral(L, "a response header line exceeds libcurl's limit of 102400 bytes");
            return "too_large";
        }
        kind = "memory";
        break;
    case CURLE_RECV_ERROR:
        /* Debian's 7.88 caps all response headers together (CVE-2023-38039
         * fix) and says so only in the error buffer. */
        if (strncmp(r->errbuf, "Too large response headers", 26) == 0) {
            lua_pushfstring(L, "the response headers are too large for libcurl (%s)", r->errbuf);
            return "too_large";
        }
        break;
    default:
        break;
    }
    lua_pushstring(L, text);
    return kind;
}

/* r:result() -> nil while running or on success; else kind, message */
static int request_result(lua_State *L) {
    fish_request *r = fish_check_request(L, 1);
    if (r->state != REQ_DONE) return 0;
    const char *kind = push_failure(L, r);
    if (!kind) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, kind);
    lua_insert(L, -2);
    return 2;
}

static int fail_with(lua_State *L, const char *message) {
    lua_pushnil(L);
    lua_pushstring(L, message);
    return 2;
}

static const char *check_path(lua_State *L, int idx) {
    size_t len = 0;
    const char *path = luaL_checklstring(L, idx, &len);
    if (strlen(path) != len) luaL_argerror(L, idx, "path contains a NUL byte");
    return path;
}

/* r:commit(target) -> true | nil, message. After a transfer that succeeded
 * with a 2xx, put the download in place: flush, fsync and close the
 * temporary file, then rename it over target (one file system: Lua names
 * the temporary file beside the target). Until then the file is the
 * request's, and close() removes it. */
static int request_commit(lua_State *L) {
    fish_request *r = fish_check_request(L, 1);
    const char *target = check_path(L, 2);
    if (r->sink != SINK_FILE) return luaL_argerror(L, 1, "request has no file sink");
    if (r->state != REQ_DONE) return luaL_argerror(L, 1, "request has not finished");
    if (r->committed) return luaL_argerror(L, 1, "request was already committed");
    if (push_failure(L, r) || !is_success(r->status))
        return fail_with(L, "cannot commit: the transfer did not succeed");
    int err = 0;
    if (!r->file_created) { /* a 2xx with an empty body: an empty file */
        err = open_sink_file(r);
        if (err) {
            lua_pushnil(L);
            lua_pushfstring(L, "cannot create %s: %s", r->file_path, strerror(err));
            return 2;
        }
    }
    if (r->file) {
        err = fish_sync(r->file);
        if (fclose(r->file) != 0 && !err) err = errno ? errno : EIO;
        r->file = NULL;
        if (err) {
            r->file_errno = err; /* the result now says so, and commit refuses */
            lua_pushnil(L);
            lua_pushfstring(L, "cannot write %s: %s", r->file_path, strerror(err));
            return 2;
        }
    }
    err = fish_replace(r->file_path, target);
    if (err) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot move %s to %s: %s", r->file_path, target, strerror(err));
        return 2;
    }
    r->committed = 1;
    untrack_temp(r);
    lua_pushboolean(L, 1);
    return 1;
}

static void push_buffer(lua_State *L, const fish_buffer *b) {
    lua_pushlstring(L, b->data ? b->data : "", b->len);
}

/* r:take() -> the 2xx bytes received since the last take, or nil */
static int request_take(lua_State *L) {
    fish_request *r = fish_check_request(L, 1);
    if (r->response.len == 0) return 0;
    push_buffer(L, &r->response);
    fish_buffer_reset(&r->response);
    return 1;
}

/* r:buffered() -> bytes held for take(), bytes allocated for them. For
 * tests and diagnostics: shows what a body costs in memory. */
static int request_buffered(lua_State *L) {
    fish_request *r = fish_check_request(L, 1);
    fish_pushint64(L, (int64_t)r->response.len);
    fish_pushint64(L, (int64_t)r->response.cap);
    return 2;
}

/* r:error_body() -> the kept part of a non-2xx body, truncated? */
static int request_error_body(lua_State *L) {
    fish_request *r = fish_check_request(L, 1);
    push_buffer(L, &r->error_body);
    lua_pushboolean(L, r->error_body_truncated);
    return 2;
}

static int request_header(lua_State *L) {
    fish_request *r = fish_check_request(L, 1);
    const char *name = luaL_checkstring(L, 2);
#if LIBCURL_VERSION_NUM >= 0x075400
    struct curl_header *h = NULL;
    if (curl_easy_header(r->easy, name, 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h) {
        lua_pushstring(L, h->value);
        return 1;
    }
#else
    (void)r;
    (void)name;
#endif
    return 0;
}

/* r:progress() -> delivered bytes (an integer), started, first byte, last
 * activity (fish_now seconds) */
static int request_progress(lua_State *L) {
    fish_request *r = fish_check_request(L, 1);
    fish_pushint64(L, (int64_t)r->delivered);
    lua_pushnumber(L, r->started_at);
    lua_pushnumber(L, r->first_byte_at);
    lua_pushnumber(L, r->last_activity_at);
    return 4;
}

/* A total libcurl reports as 0 may be an unknown one: the handle knows
 * which (-1 when nothing announced a length). */
static void push_total(lua_State *L, fish_request *r, curl_off_t total, CURLINFO length_info) {
    curl_off_t length = -1;
    if (total == 0 && (curl_easy_getinfo(r->easy, length_info, &length) != CURLE_OK || length < 0))
        lua_pushnil(L);
    else
        fish_pushint64(L, (int64_t)total);
}

/* r:transfer() -> sent, send_total, received, receive_total: the body bytes
 * sent so far and the body's length (0 without one), the response body bytes
 * received so far and its Content-Length. A total is nil while unknown (no
 * answer yet, or an answer without Content-Length). Only requests made with
 * progress = true count; the others report zeros. */
static int request_transfer(lua_State *L) {
    fish_request *r = fish_check_request(L, 1);
    fish_pushint64(L, (int64_t)r->sent);
    push_total(L, r, r->send_total, CURLINFO_CONTENT_LENGTH_UPLOAD_T);
    fish_pushint64(L, (int64_t)r->received);
    push_total(L, r, r->receive_total, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T);
    return 4;
}

static int request_cancel(lua_State *L) {
    fish_request *r = fish_check_request(L, 1);
    if (r->state == REQ_RUNNING) {
        fish_engine_detach(r);
        fish_request_finish(r, CURLE_ABORTED_BY_CALLBACK, 1);
    } else if (r->state == REQ_IDLE) {
        r->state = REQ_DONE;
        r->canceled = 1;
    }
    return 0;
}

static int request_tostring(lua_State *L) {
    fish_request *r = luaL_checkudata(L, 1, FISH_REQUEST_MT);
    lua_pushfstring(L, "fish.request %d (%s)", (int)r->id,
                    r->state == REQ_CLOSED ? "closed" : "open");
    return 1;
}

/* When a Lua state closes, the module may be unloaded right after it
 * (dlclose), and what the caches hold would be lost for good: free it
 * now. A state still running elsewhere only fills them again. */
static int drop_caches(lua_State *L) {
    (void)L;
    CURL *handles[EASY_POOL];
    fish_lock();
    int n = easy_pooled;
    for (int i = 0; i < n; i++) handles[i] = easy_pool[i];
    easy_pooled = 0;
    fish_buffer kept = spare;
    fish_buffer_init(&spare);
    fish_unlock();
    for (int i = 0; i < n; i++) curl_easy_cleanup(handles[i]);
    fish_buffer_free(&kept);
    return 0;
}

int fish_open_request(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"id", request_id},         {"state", request_state},
        {"status", request_status}, {"result", request_result},
        {"take", request_take},     {"error_body", request_error_body},
        {"header", request_header}, {"progress", request_progress},
        {"cancel", request_cancel}, {"commit", request_commit},
        {"buffered", request_buffered}, {"transfer", request_transfer},
        {NULL, NULL},
    };
    fish_class_register(L, FISH_REQUEST_MT, methods, request_close, request_tostring);
    /* A registry anchor whose __gc runs when the state closes. */
    lua_newuserdata(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, drop_caches);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "fish.request.caches");
    lua_pushcfunction(L, request_new);
    lua_setfield(L, -2, "request");
    return 0;
}
