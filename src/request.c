/* Request objects. libcurl callbacks here only touch C memory: they never
 * call Lua and never see a lua_State (design.md, "Rules in the C core"). The
 * engine's step hands completions back to Lua on the state that asked. */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "request.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "class.h"
#include "engine.h"
#include "platform.h"

/* A 10 MB error page must not be read whole into memory: keep its head. */
#define DEFAULT_ERROR_BODY_LIMIT (64 * 1024)

static int is_success(long status) { return status >= 200 && status < 300; }

/* ---- libcurl callbacks ------------------------------------------------ */

static int open_sink_file(fish_request *r) {
    errno = 0;
    r->file = fish_create_exclusive(r->file_path);
    return r->file ? 0 : errno ? errno : EIO;
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

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
    fish_request *r = userdata;
    size_t n = size * nmemb;
    r->last_activity_at = fish_now();
    if (r->status == 0) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    if (!is_success(r->status)) return keep_error_body(r, ptr, n);

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
        if (fish_buffer_append(&r->response, ptr, n) != 0) return 0;
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

/* ---- construction ----------------------------------------------------- */

fish_request *fish_check_request(lua_State *L, int idx) {
    fish_request *r = luaL_checkudata(L, idx, FISH_REQUEST_MT);
    if (r->state == REQ_CLOSED) luaL_argerror(L, idx, "request is closed");
    return r;
}

static const char *opt_string(lua_State *L, int opts, const char *key) {
    lua_getfield(L, opts, key);
    const char *s = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "request option '%s' must be a string", key);
        s = lua_tostring(L, -1);
    }
    lua_pop(L, 1); /* the string stays alive in the options table */
    return s;
}

static double opt_number(lua_State *L, int opts, const char *key, double fallback) {
    lua_getfield(L, opts, key);
    double v = fallback;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "request option '%s' must be a number", key);
        v = lua_tonumber(L, -1);
    }
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
            const char *line = lua_tostring(L, -1);
            if (!line) luaL_error(L, "request header %d must be a string", i);
            struct curl_slist *grown = curl_slist_append(r->headers, line);
            if (!grown) luaL_error(L, "out of memory");
            r->headers = grown;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (r->headers) curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
}

/* One part of a multipart body: { name=, data= | file=, filename=, type= }.
 * Files are streamed from disk by libcurl (curl_mime_filedata). */
static void add_mime_part(lua_State *L, fish_request *r, int part) {
    curl_mimepart *p = curl_mime_addpart(r->mime);
    if (!p) luaL_error(L, "out of memory");
    const char *name = opt_string(L, part, "name");
    const char *file = opt_string(L, part, "file");
    const char *filename = opt_string(L, part, "filename");
    const char *type = opt_string(L, part, "type");
    CURLcode rc = curl_mime_name(p, name);
    if (rc == CURLE_OK && file) rc = curl_mime_filedata(p, file);
    if (rc == CURLE_OK && !file) {
        lua_getfield(L, part, "data");
        size_t len = 0;
        const char *data = lua_tolstring(L, -1, &len);
        if (!data) luaL_error(L, "mime part '%s' needs data or file", name ? name : "?");
        rc = curl_mime_data(p, data, len); /* libcurl copies it */
        lua_pop(L, 1);
    }
    /* filedata sets the file's own basename; an explicit one replaces it. */
    if (rc == CURLE_OK && (filename || file)) rc = curl_mime_filename(p, filename);
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

static void set_body(lua_State *L, fish_request *r, int opts) {
    lua_getfield(L, opts, "body");
    if (!lua_isnil(L, -1)) {
        size_t len = 0;
        const char *body = lua_tolstring(L, -1, &len);
        if (!body) luaL_error(L, "request option 'body' must be a string");
        /* Our own copy: the Lua string may be collected mid-transfer. */
        if (fish_buffer_append(&r->body, body, len) != 0) luaL_error(L, "out of memory");
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body.data ? r->body.data : "");
    }
    lua_pop(L, 1);
}

static void set_method(lua_State *L, fish_request *r, int opts) {
    const char *method = opt_string(L, opts, "method");
    if (!method || strcmp(method, "GET") == 0) {
        if (r->body.len || r->mime) luaL_error(L, "a GET request cannot carry a body");
        curl_easy_setopt(r->easy, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "POST") != 0) {
        /* PATCH and DELETE: libcurl sends the body set above, if any. */
        curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, method);
    } else if (!r->body.len && !r->mime) {
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, "");
    }
}

static void set_sink(lua_State *L, fish_request *r, int opts) {
    const char *sink = opt_string(L, opts, "sink");
    if (!sink || strcmp(sink, "buffer") == 0) {
        r->sink = SINK_BUFFER;
    } else if (strcmp(sink, "stream") == 0) {
        r->sink = SINK_STREAM;
    } else if (strcmp(sink, "file") == 0) {
        const char *path = opt_string(L, opts, "path");
        if (!path) luaL_error(L, "a file sink needs 'path'");
        r->sink = SINK_FILE;
        r->file_path = strdup(path);
        if (!r->file_path) luaL_error(L, "out of memory");
    } else {
        luaL_error(L, "unknown sink '%s'", sink);
    }
}

static void set_transport(lua_State *L, fish_request *r, int opts) {
    CURL *e = r->easy;
    const char *url = opt_string(L, opts, "url");
    if (!url) luaL_error(L, "request option 'url' is required");
    CURLcode rc = curl_easy_setopt(e, CURLOPT_URL, url);
    if (rc != CURLE_OK) fail_curl(L, rc, "the URL");
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    /* Signals and threads do not mix; libcurl must not use SIGALRM. */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* Never follow redirects: the bearer token must not reach another host. */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)r);

    const char *ca_file = opt_string(L, opts, "ca_file");
    if (ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
    double connect_timeout = opt_number(L, opts, "connect_timeout", 0);
    if (connect_timeout > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_timeout * 1000));
    double limit = opt_number(L, opts, "error_body_limit", DEFAULT_ERROR_BODY_LIMIT);
    r->error_body_limit = limit > 0 ? (size_t)limit : DEFAULT_ERROR_BODY_LIMIT;
}

/* core.request{ url=, method=, headers={...}, body= | mime={...},
 *               sink="buffer"|"stream"|"file", path=, connect_timeout=,
 *               ca_file=, error_body_limit= } */
static int request_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    fish_request *r = lua_newuserdata(L, sizeof *r);
    memset(r, 0, sizeof *r);
    fish_buffer_init(&r->body);
    fish_buffer_init(&r->response);
    fish_buffer_init(&r->error_body);
    r->state = REQ_CLOSED; /* until the easy handle exists, close is a no-op */
    luaL_getmetatable(L, FISH_REQUEST_MT);
    lua_setmetatable(L, -2);

    r->easy = curl_easy_init();
    if (!r->easy) return luaL_error(L, "curl_easy_init failed");
    r->state = REQ_IDLE;

    /* Any error below leaves r owning what it allocated; __gc frees it. */
    set_transport(L, r, 1);
    set_headers(L, r, 1);
    set_body(L, r, 1);
    set_mime(L, r, 1);
    set_method(L, r, 1);
    set_sink(L, r, 1);
    return 1;
}

/* ---- completion and close -------------------------------------------- */

void fish_request_finish(fish_request *r, CURLcode result, int canceled) {
    r->state = REQ_DONE;
    r->result = result;
    r->canceled = canceled;
    long status = 0;
    if (curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status)
        r->status = status;
    if (r->file) {
        if (fclose(r->file) != 0 && !r->file_errno) r->file_errno = errno ? errno : EIO;
        r->file = NULL;
    }
}

static void request_release(fish_request *r) {
    if (r->state == REQ_CLOSED) return;
    if (r->state == REQ_RUNNING) fish_engine_detach(r);
    if (r->file) fclose(r->file);
    r->file = NULL;
    curl_easy_cleanup(r->easy); /* after detach: the multi must let go first */
    r->easy = NULL;
    curl_mime_free(r->mime);
    r->mime = NULL;
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    free(r->file_path);
    r->file_path = NULL;
    fish_buffer_free(&r->body);
    fish_buffer_free(&r->response);
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

/* Why a finished transfer failed, as a word the Lua layer maps to an error
 * kind; nil when the exchange completed (whatever its HTTP status). */
static const char *failure_kind(const fish_request *r) {
    if (r->canceled) return "canceled";
    if (r->file_errno) return "write";
    switch (r->result) {
    case CURLE_OK:
        return NULL;
    case CURLE_WRITE_ERROR:
        /* We stopped reading an oversized error body on purpose. */
        return r->error_body_truncated ? NULL : "write";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return "connect";
    case CURLE_OPERATION_TIMEDOUT:
        return "connect_timeout";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
        return "tls";
    case CURLE_OUT_OF_MEMORY:
        return "memory";
    default:
        return "network";
    }
}

/* r:result() -> nil while running; else failure (string or nil), message */
static int request_result(lua_State *L) {
    fish_request *r = fish_check_request(L, 1);
    if (r->state != REQ_DONE) return 0;
    const char *kind = failure_kind(r);
    if (!kind) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, kind);
    if (r->file_errno)
        lua_pushfstring(L, "cannot write %s: %s", r->file_path, strerror(r->file_errno));
    else if (r->canceled)
        lua_pushliteral(L, "canceled");
    else
        lua_pushstring(L, r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result));
    return 2;
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

int fish_open_request(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"id", request_id},         {"state", request_state},
        {"status", request_status}, {"result", request_result},
        {"take", request_take},     {"error_body", request_error_body},
        {"header", request_header}, {"progress", request_progress},
        {"cancel", request_cancel}, {NULL, NULL},
    };
    fish_class_register(L, FISH_REQUEST_MT, methods, request_close, request_tostring);
    lua_pushcfunction(L, request_new);
    lua_setfield(L, -2, "request");
    return 0;
}
