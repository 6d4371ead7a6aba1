/* Live sockets (the contract with src/fish's live layer):
 *
 *   core.live_socket{ url = "ws[s]://...", headers = {"Name: value", ...},
 *                     connect_timeout =, max_message =, ca_file =, proxy =,
 *                     proxy_tunnel = }                  -> socket
 *   engine:add_live(socket) -> id;  engine:perform(finished, changed)
 *   socket:send(bytes) socket:receive() socket:state() socket:failure()
 *   socket:handshake() socket:close_info() socket:shutdown([code [, reason]])
 *   socket:close() socket:activity() socket:pending() socket:fd() socket:id()
 *
 * Details the contract leaves open, as built: engine:perform's count is of
 * requests only (sockets still connecting are left out); a perform without
 * a `changed` table keeps the news for the next one that has it; shutdown
 * before the socket is open drops the connection (there is no WebSocket
 * to close yet, and no failure); send after our close frame drops the
 * message (RFC 6455 allows no data then) and raises only once closed;
 * close_info gives 1005 for a close frame without a code; engine:close()
 * fails its open sockets as "network", "the engine was closed"; through an
 * HTTP proxy the socket always tunnels (proxy_tunnel is accepted and
 * changes nothing); max_message is a whole number >= 1.
 *
 * libcurl makes the connection with CONNECT_ONLY inside the engine's multi
 * handle, so DNS, proxies, TLS and the CA options are the HTTP ones and
 * nothing blocks; the Upgrade request and the frames are ours (ws.c). No
 * libcurl callback is involved at all: every byte moves in engine:perform
 * or socket:send, on the Lua state that called them. */
#include "live.h"
#include "watch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "class.h"
#include "engine.h"
#include "options.h"
#include "platform.h"
#include "transport.h"

#define DEFAULT_MAX_MESSAGE ((uint64_t)32 * 1024 * 1024)
/* A refusal's body is for the error message: its head is enough. */
#define REFUSAL_BODY_CAP (64 * 1024)
/* Raw bytes of a refusal kept to decode that much (chunk framing included). */
#define REFUSAL_RAW_CAP (2 * REFUSAL_BODY_CAP + 4096)
/* One perform reads at most this much per socket, so a peer that floods
 * cannot hold the engine (and every other transfer) in one step; the rest
 * waits for the next perform, which poll then does not delay. */
#define STEP_READ_BUDGET ((size_t)1024 * 1024)

static const char *const state_names[] = {"connecting", "handshake", "open", "closing", "closed"};

/* ---- failure and release ---------------------------------------------- */

/* Tell the engine's socket-mode watch what this socket waits for (read,
 * plus write while output is pending), so a host loop driving the engine by
 * socket events (fish.nvim, fish.openresty) wakes for it too. libcurl stops
 * watching a CONNECT_ONLY fd once it reports the connection made, so from
 * then on the socket registers its fd itself. `gone`: the fd is about to be
 * closed. */
static void sync_watch(fish_live *s, int gone) {
    if (!s->engine) return;
    curl_socket_t fd = CURL_SOCKET_BAD;
    int what = -1;
    if (!gone && s->easy && s->connected && s->state != LIVE_CLOSED && s->fd != CURL_SOCKET_BAD) {
        fd = s->fd;
        what = s->out_at < s->out.len ? FISH_WATCH_INOUT : FISH_WATCH_IN;
    }
    if (fd == s->watched_fd && what == s->watched_what) return;
    if (s->watched_fd != CURL_SOCKET_BAD && s->watched_fd != fd)
        fish_watch_fd(s->engine, s->watched_fd, FISH_WATCH_REMOVE);
    /* Out of memory: the host will not see the fd; blocking waits and
     * fish.step still do (curl_multi_poll's extra fds). */
    if (fd != CURL_SOCKET_BAD && fish_watch_fd(s->engine, fd, what) != 0) fd = CURL_SOCKET_BAD, what = -1;
    s->watched_fd = fd;
    s->watched_what = what;
}

/* Drop the connection; the socket keeps what it received. */
static void release_transport(fish_live *s) {
    sync_watch(s, 1);
    if (s->easy) {
        if (s->in_multi && s->engine) curl_multi_remove_handle(s->engine->multi, s->easy);
        s->in_multi = 0;
        curl_easy_cleanup(s->easy); /* closes the connection CONNECT_ONLY kept */
        s->easy = NULL;
    }
    s->fd = CURL_SOCKET_BAD;
    s->more = 0;
    fish_buffer_free(&s->out);
    s->out_at = 0;
    fish_buffer_free(&s->early);
}

static void set_closed(fish_live *s) {
    release_transport(s);
    if (s->state != LIVE_CLOSED) s->changed = 1;
    s->state = LIVE_CLOSED;
}

/* The first failure is the one reported. */
static void fail(fish_live *s, const char *kind, const char *message) {
    if (!s->failure_kind) {
        s->failure_kind = kind;
        snprintf(s->failure, sizeof s->failure, "%s", message);
    }
    set_closed(s);
}

static void fail_curl(fish_live *s, CURLcode rc, const char *doing) {
    char message[sizeof s->failure];
    const char *text = s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc);
    snprintf(message, sizeof message, "%s: %s", doing, text);
    fail(s, rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network", message);
}

/* ---- output ------------------------------------------------------------ */

static int next_mask(fish_live *s, unsigned char mask[4]) {
    if (s->masks_left < 4) {
        if (fish_random_bytes(s->masks, sizeof s->masks) != 0) return -1;
        s->masks_left = sizeof s->masks;
    }
    memcpy(mask, s->masks + sizeof s->masks - s->masks_left, 4);
    s->masks_left -= 4;
    return 0;
}

/* Append one masked frame to `to`. -1: no memory or no random bytes. */
static int add_frame(fish_live *s, fish_buffer *to, int opcode, const void *payload,
                     size_t len) {
    unsigned char mask[4], header[FISH_WS_HEADER_MAX];
    if (next_mask(s, mask) != 0) return -1;
    size_t hlen = fish_ws_frame_header(header, opcode, (uint64_t)len, mask);
    if (len > SIZE_MAX - hlen || fish_buffer_reserve(to, hlen + len) != 0) return -1;
    memcpy(to->data + to->len, header, hlen);
    fish_ws_mask((unsigned char *)to->data + to->len + hlen, payload, len, mask);
    to->len += hlen + len;
    return 0;
}

static int add_close_frame(fish_live *s, int code, const char *reason, size_t reason_len) {
    unsigned char payload[FISH_WS_CONTROL_MAX];
    size_t n = 0;
    if (code) {
        payload[n++] = (unsigned char)(code >> 8);
        payload[n++] = (unsigned char)code;
        if (reason_len > sizeof payload - 2) reason_len = sizeof payload - 2;
        if (reason_len) memcpy(payload + n, reason, reason_len);
        n += reason_len;
    }
    s->sent_close = 1;
    return add_frame(s, &s->out, FISH_WS_OP_CLOSE, payload, n);
}

/* Write what the socket takes now; the rest waits for POLLOUT. */
static void flush(fish_live *s) {
    while (s->easy && s->out_at < s->out.len) {
        size_t n = 0;
        s->errbuf[0] = '\0';
        CURLcode rc = curl_easy_send(s->easy, s->out.data + s->out_at, s->out.len - s->out_at, &n);
        if (rc == CURLE_AGAIN) return;
        if (rc != CURLE_OK) {
            fail_curl(s, rc, "sending");
            return;
        }
        if (n == 0) return;
        s->out_at += n;
    }
    if (s->out_at == s->out.len) {
        fish_buffer_reset(&s->out);
        s->out_at = 0;
    }
}

/* Both close frames have passed and ours is written: the RFC lets the
 * client drop the TCP connection now instead of waiting for the server. */
static void finish_close(fish_live *s) {
    if (s->state == LIVE_CLOSING && s->sent_close && s->got_close && s->out_at == s->out.len)
        set_closed(s);
}

/* A protocol error: tell the peer why if the socket takes it at once, then
 * drop the connection. */
static void fail_frames(fish_live *s, const char *kind, const char *message, int code) {
    if (!s->sent_close && add_close_frame(s, code, NULL, 0) == 0) flush(s);
    fail(s, kind, message);
}

/* ---- input ------------------------------------------------------------- */

static void queue_message(fish_live *s) {
    fish_live_message *m = malloc(sizeof *m);
    if (!m) {
        fail_frames(s, "too_large", "out of memory while keeping a message", 1009);
        return;
    }
    m->next = NULL;
    fish_ws_decoder_take(&s->decoder, &m->bytes);
    if (s->last) s->last->next = m;
    else s->first = m;
    s->last = m;
    s->message_at = s->byte_at; /* the read that completed it */
    s->changed = 1;
}

static void got_close(fish_live *s) {
    const fish_ws_decoder *d = &s->decoder;
    s->got_close = 1;
    s->close_code = d->close_code ? d->close_code : 1005; /* 1005: no code was sent */
    s->close_reason_len = d->close_reason_len;
    memcpy(s->close_reason, d->close_reason, d->close_reason_len);
    if (!s->sent_close && add_close_frame(s, d->close_code, NULL, 0) != 0) {
        fail(s, "network", "cannot answer the close frame (out of memory)");
        return;
    }
    s->state = LIVE_CLOSING;
    s->changed = 1;
}

static void decode(fish_live *s, const unsigned char *bytes, size_t len) {
    while (s->state == LIVE_OPEN || (s->state == LIVE_CLOSING && !s->got_close)) {
        size_t used = 0;
        fish_ws_event ev = fish_ws_decode(&s->decoder, bytes, len, &used);
        bytes += used;
        len -= used;
        switch (ev) {
        case FISH_WS_NEED_MORE: return;
        case FISH_WS_MESSAGE: queue_message(s); break;
        case FISH_WS_PING:
            /* Pings after our close frame go unanswered (RFC 6455 5.5.1). */
            if (!s->sent_close &&
                add_frame(s, &s->out, FISH_WS_OP_PONG, s->decoder.control, s->decoder.control_len) != 0)
                fail(s, "network", "cannot answer a ping (out of memory)");
            break;
        case FISH_WS_PONG: break;
        case FISH_WS_CLOSE: got_close(s); return;
        case FISH_WS_ERROR:
            if (s->decoder.error_kind == FISH_WS_TOO_LARGE)
                fail_frames(s, "too_large", s->decoder.error, 1009);
            else
                fail_frames(s, "protocol", s->decoder.error, 1002);
            return;
        }
    }
}

/* A refusal's body is complete (or as complete as it gets): closed. */
static void check_refusal(fish_live *s, int eof) {
    fish_ws_head head;
    const char *error = NULL;
    if (fish_ws_parse_head(s->in.data, s->head_len, &head, &error) != 1) return;
    const char *raw = s->in.data + s->head_len;
    size_t raw_len = s->in.len - s->head_len;
    if (raw_len >= REFUSAL_RAW_CAP) eof = 1;
    if (fish_ws_refusal_body(&head, raw, raw_len, eof, REFUSAL_BODY_CAP, &s->body, &error) == 0)
        return;
    char message[96];
    snprintf(message, sizeof message, "the server refused the WebSocket upgrade with HTTP %d",
             s->status);
    fail(s, "refused", message);
}

/* The answer's head is whole: a 101 opens the socket, anything else is a
 * refusal whose body comes next. */
static void end_head(fish_live *s, const fish_ws_head *head) {
    s->head_len = head->head_len;
    s->status = head->status;
    s->changed = 1;
    if (head->status != 101) {
        check_refusal(s, 0);
        return;
    }
    const char *why = fish_ws_check_upgrade(head, s->accept);
    if (why) {
        fail(s, "protocol", why);
        return;
    }
    s->state = LIVE_OPEN;
    s->connected_at = s->byte_at; /* the read that brought the 101 */
    /* What was sent while connecting goes out now, after the Upgrade. */
    if (s->early.len) {
        if (fish_buffer_append(&s->out, s->early.data, s->early.len) != 0) {
            fail(s, "network", "out of memory");
            return;
        }
        fish_buffer_free(&s->early);
    }
    /* Frames that came in the same read as the head. */
    size_t extra = s->in.len - s->head_len;
    if (extra) {
        fish_buffer frames;
        fish_buffer_init(&frames);
        if (fish_buffer_append(&frames, s->in.data + s->head_len, extra) != 0) {
            fail(s, "network", "out of memory");
            return;
        }
        s->in.len = s->head_len;
        decode(s, (const unsigned char *)frames.data, frames.len);
        fish_buffer_free(&frames);
    }
}

static void take_bytes(fish_live *s, const unsigned char *bytes, size_t len) {
    if (s->state != LIVE_HANDSHAKE) {
        decode(s, bytes, len);
        return;
    }
    if (s->head_len) { /* a refusal's body */
        size_t room = s->head_len + REFUSAL_RAW_CAP - s->in.len;
        if (fish_buffer_append(&s->in, bytes, len < room ? len : room) != 0) {
            fail(s, "network", "out of memory");
            return;
        }
        check_refusal(s, 0);
        return;
    }
    if (fish_buffer_append(&s->in, bytes, len) != 0) {
        fail(s, "network", "out of memory");
        return;
    }
    fish_ws_head head;
    const char *error = NULL;
    int parsed = fish_ws_parse_head(s->in.data, s->in.len, &head, &error);
    if (parsed < 0) fail(s, "protocol", error);
    else if (parsed > 0) end_head(s, &head);
}

static void at_eof(fish_live *s) {
    switch (s->state) {
    case LIVE_HANDSHAKE:
        if (s->head_len) check_refusal(s, 1);
        else fail(s, "network", "the server closed the connection during the WebSocket handshake");
        break;
    case LIVE_OPEN:
        fail(s, "network", "the server closed the connection without a close frame");
        break;
    case LIVE_CLOSING:
        /* After our close frame a plain hang-up is an answer too. */
        set_closed(s);
        break;
    default:
        break;
    }
}

/* Read until libcurl has nothing more: TLS may hold decrypted bytes that
 * poll cannot see, so stopping early could sleep on data already here. */
static void receive_all(fish_live *s) {
    unsigned char buf[32 * 1024];
    size_t budget = STEP_READ_BUDGET;
    s->more = 0;
    while (s->easy && s->state != LIVE_CLOSED && !(s->state == LIVE_CLOSING && s->got_close)) {
        if (budget == 0) {
            s->more = 1;
            return;
        }
        size_t n = 0;
        s->errbuf[0] = '\0';
        CURLcode rc = curl_easy_recv(s->easy, buf, sizeof buf, &n);
        if (rc == CURLE_AGAIN) return;
        if (rc != CURLE_OK) {
            fail_curl(s, rc, "receiving");
            return;
        }
        if (n == 0) {
            at_eof(s);
            return;
        }
        s->byte_at = fish_now();
        budget = n < budget ? budget - n : 0;
        take_bytes(s, buf, n);
    }
}

/* ---- engine hooks ------------------------------------------------------ */

void fish_live_attach(fish_live *s, fish_engine *e, lua_Integer id) {
    s->engine = e;
    s->id = id;
    s->prev = NULL;
    s->next = e->live;
    if (e->live) e->live->prev = s;
    e->live = s;
    s->in_multi = 1;
}

static void unlink_live(fish_live *s) {
    fish_engine *e = s->engine;
    if (!e) return;
    if (s->prev) s->prev->next = s->next;
    else e->live = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->engine = NULL;
}

void fish_live_connected(fish_live *s, CURLcode result) {
    if (s->state != LIVE_CONNECTING) return;
    if (result != CURLE_OK) {
        fail_curl(s, result, "connecting");
        return;
    }
    curl_socket_t fd = CURL_SOCKET_BAD;
    if (curl_easy_getinfo(s->easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK ||
        fd == CURL_SOCKET_BAD) {
        fail(s, "network", "libcurl connected but kept no socket");
        return;
    }
    s->connected = 1;
    s->fd = fd;
    s->state = LIVE_HANDSHAKE;
    s->changed = 1;
}

int fish_live_step(fish_live *s, int report) {
    if (s->easy && s->connected && s->state != LIVE_CLOSED) {
        flush(s);
        receive_all(s);
        flush(s);
        finish_close(s);
    }
    sync_watch(s, 0);
    if (!report || !s->changed) return 0;
    s->changed = 0;
    return 1;
}

int fish_live_wait(const fish_live *s, curl_socket_t *fd) {
    if (!s->easy || !s->connected || s->state == LIVE_CLOSED) return 0;
    if (s->more) return -1;
    *fd = s->fd;
    int events = CURL_WAIT_POLLIN;
    if (s->out_at < s->out.len) events |= CURL_WAIT_POLLOUT;
    return events;
}

void fish_live_engine_closed(fish_live *s) {
    if (s->state != LIVE_CLOSED) fail(s, "network", "the engine was closed");
    release_transport(s);
    unlink_live(s);
}

/* ---- construction ------------------------------------------------------ */

fish_live *fish_live_check(lua_State *L, int idx) {
    fish_live *s = luaL_checkudata(L, idx, FISH_LIVE_MT);
    if (s->released) luaL_argerror(L, idx, "live socket is closed");
    return s;
}

/* The options table's readers (options.h), named for core.live_socket. */
static int opt_error(lua_State *L, const char *key, const char *problem) {
    return fish_opt_error(L, "live_socket", key, problem);
}

static const char *opt_string(lua_State *L, const char *key) {
    return fish_opt_string(L, "live_socket", 1, key, NULL);
}

static double opt_number(lua_State *L, const char *key, double fallback) {
    return fish_opt_number(L, "live_socket", 1, key, fallback);
}

static void check_curl(lua_State *L, CURLcode rc, const char *what) {
    if (rc != CURLE_OK) luaL_error(L, "libcurl refused %s: %s", what, curl_easy_strerror(rc));
}

/* The socket writes these itself; a caller's copy would contradict them. */
static int is_handshake_header(const char *line, size_t name_len) {
    static const char *const ours[] = {
        "host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
        "sec-websocket-extensions", "sec-websocket-protocol", "content-length",
        "transfer-encoding", NULL};
    for (int i = 0; ours[i]; i++) {
        if (strlen(ours[i]) != name_len) continue;
        size_t j = 0;
        while (j < name_len && (line[j] | 0x20) == ours[i][j]) j++;
        if (j == name_len) return 1;
    }
    return 0;
}

/* headers = { "Name: value", ... }, appended to the Upgrade request. */
static void add_headers(lua_State *L, fish_live *s) {
    lua_getfield(L, 1, "headers");
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1)) opt_error(L, "headers", "must be an array of strings");
        int n = (int)lua_rawlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            size_t len = 0;
            const char *line = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
            if (!line)
                luaL_argerror(L, 1, lua_pushfstring(L, "live_socket header %d must be a string", i));
            for (size_t j = 0; j < len; j++)
                if (line[j] == '\r' || line[j] == '\n' || line[j] == '\0')
                    luaL_argerror(L, 1, lua_pushfstring(
                                            L, "live_socket header %d contains CR, LF or NUL", i));
            const char *colon = memchr(line, ':', len);
            if (!colon || colon == line)
                luaL_argerror(L, 1, lua_pushfstring(
                                        L, "live_socket header %d is not 'Name: value'", i));
            if (is_handshake_header(line, (size_t)(colon - line)))
                luaL_argerror(L, 1, lua_pushfstring(
                                        L, "live_socket header %d is set by the socket itself", i));
            if (fish_buffer_append(&s->out, line, len) != 0 ||
                fish_buffer_append(&s->out, "\r\n", 2) != 0)
                luaL_error(L, "out of memory");
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

static void append_or_raise(lua_State *L, fish_buffer *b, const char *text) {
    if (fish_buffer_append(b, text, strlen(text)) != 0) luaL_error(L, "out of memory");
}

/* The ws:// or wss:// URL becomes the http:// or https:// one libcurl
 * connects to (7.88 knows no ws scheme), and the start of the Upgrade
 * request: its target and Host. */
static void set_url(lua_State *L, fish_live *s) {
    const char *url = opt_string(L, "url");
    if (!url) opt_error(L, "url", "is required");
    CURLU *u = curl_url();
    if (!u) luaL_error(L, "out of memory");
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *http = NULL;
    const char *problem = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        problem = "is not a valid URL";
    else if (strcmp(scheme, "ws") != 0 && strcmp(scheme, "wss") != 0)
        problem = "must start with ws:// or wss://";
    else if (curl_url_set(u, CURLUPART_SCHEME, strcmp(scheme, "ws") == 0 ? "http" : "https", 0) !=
                 CURLUE_OK ||
             curl_url_get(u, CURLUPART_URL, &http, 0) != CURLUE_OK ||
             curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        problem = "is not a valid URL";
    if (!problem) {
        (void)curl_url_get(u, CURLUPART_PORT, &port, 0);  /* none unless written */
        (void)curl_url_get(u, CURLUPART_QUERY, &query, 0);
        CURLcode rc = curl_easy_setopt(s->easy, CURLOPT_URL, http);
        int ok = rc == CURLE_OK;
        ok = ok && fish_buffer_append(&s->out, "GET ", 4) == 0;
        ok = ok && fish_buffer_append(&s->out, path, strlen(path)) == 0;
        if (query) {
            ok = ok && fish_buffer_append(&s->out, "?", 1) == 0;
            ok = ok && fish_buffer_append(&s->out, query, strlen(query)) == 0;
        }
        ok = ok && fish_buffer_append(&s->out, " HTTP/1.1\r\nHost: ", 17) == 0;
        ok = ok && fish_buffer_append(&s->out, host, strlen(host)) == 0;
        if (port) {
            ok = ok && fish_buffer_append(&s->out, ":", 1) == 0;
            ok = ok && fish_buffer_append(&s->out, port, strlen(port)) == 0;
        }
        if (!ok) problem = rc != CURLE_OK ? "was refused by libcurl" : "could not be stored";
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_free(http);
    curl_url_cleanup(u);
    if (problem) opt_error(L, "url", problem);
    append_or_raise(L, &s->out, "\r\n");
}

static void set_transport(lua_State *L, fish_live *s) {
    CURL *e = s->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)s);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
    /* Connect (DNS, TCP, proxy, TLS) and stop: the bytes after are ours. */
    curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
    /* Else ALPN offers h2 on TLS, a server picks it, and the Upgrade,
     * which exists only in HTTP/1.1, is never understood. */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    /* A connection of its own, never one an HTTP request left idle in the
     * multi's pool (the server may be closing it). FORBID_REUSE must stay
     * off: libcurl would close the connection the moment it is made. */
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    fish_transport_safe(e);
    /* ca_file is the whole trust store, as for requests. */
    check_curl(L, fish_transport_ca_file(e, opt_string(L, "ca_file")), "ca_file");
    /* Proxies as for requests: never from the environment. Through an HTTP
     * proxy the socket always tunnels (CONNECT): the Upgrade request and the
     * frames are raw bytes for the server, which a forwarding proxy would
     * read as HTTP. proxy_tunnel is accepted for symmetry and changes
     * nothing. */
    const char *proxy = opt_string(L, "proxy");
    lua_getfield(L, 1, "proxy_tunnel");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) opt_error(L, "proxy_tunnel", "must be a boolean");
    lua_pop(L, 1);
    check_curl(L, fish_transport_proxy(e, proxy, 1), "the proxy");
    double connect_timeout = opt_number(L, "connect_timeout", 0);
    if (connect_timeout < 0) opt_error(L, "connect_timeout", "must be >= 0");
    fish_transport_connect_timeout(e, connect_timeout);
}

/* Bytes, >= 1; from 2^62 up (math.huge too) it is clamped, not converted. */
static uint64_t opt_max_message(lua_State *L) {
    double v = opt_number(L, "max_message", (double)DEFAULT_MAX_MESSAGE);
    if (v < 1 || v != floor(v)) opt_error(L, "max_message", "must be a whole number of bytes >= 1");
    return v >= 4611686018427387904.0 ? (uint64_t)1 << 62 : (uint64_t)v;
}

static int live_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    fish_live *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->released = 1; /* until everything is set up, close is a no-op */
    s->fd = CURL_SOCKET_BAD;
    s->watched_fd = CURL_SOCKET_BAD;
    s->watched_what = -1;
    fish_buffer_init(&s->out);
    fish_buffer_init(&s->early);
    fish_buffer_init(&s->in);
    fish_buffer_init(&s->body);
    fish_ws_decoder_init(&s->decoder, DEFAULT_MAX_MESSAGE);
    luaL_getmetatable(L, FISH_LIVE_MT);
    lua_setmetatable(L, -2);
    s->released = 0;
    s->state = LIVE_CONNECTING;
    s->decoder.max_message = opt_max_message(L);

    /* Any error below leaves s owning what it allocated; __gc frees it. */
    s->easy = curl_easy_init();
    if (!s->easy) return luaL_error(L, "curl_easy_init failed");
    set_url(L, s);
    unsigned char nonce[16];
    if (fish_random_bytes(nonce, sizeof nonce) != 0)
        return luaL_error(L, "no random bytes for the WebSocket key");
    fish_ws_client_key(nonce, s->key);
    fish_ws_accept_for(s->key, s->accept);
    append_or_raise(L, &s->out,
                    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: ");
    append_or_raise(L, &s->out, s->key);
    append_or_raise(L, &s->out, "\r\n");
    add_headers(L, s);
    append_or_raise(L, &s->out, "\r\n");
    set_transport(L, s);
    return 1;
}

/* ---- Lua methods ------------------------------------------------------- */

/* One close for __gc, __close and s:close(): everything goes at once,
 * connection, queued output and unread messages. */
static int live_close(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    if (s->released) return 0;
    release_transport(s);
    unlink_live(s);
    fish_buffer_free(&s->in);
    s->head_len = 0; /* handshake() still answers, with the status alone */
    fish_buffer_free(&s->body);
    fish_ws_decoder_free(&s->decoder);
    while (s->first) {
        fish_live_message *m = s->first;
        s->first = m->next;
        fish_buffer_free(&m->bytes);
        free(m);
    }
    s->last = NULL;
    s->state = LIVE_CLOSED;
    s->released = 1;
    return 0;
}

/* s:send(bytes) -> true. One binary message; before the 101 it waits, and
 * after our close frame it is dropped (the RFC allows no data then). */
static int live_send(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    size_t len = 0;
    const char *bytes = luaL_checklstring(L, 2, &len);
    if (s->released || s->state == LIVE_CLOSED) return luaL_error(L, "live socket is closed");
    if (!s->sent_close) {
        fish_buffer *to = s->state == LIVE_OPEN ? &s->out : &s->early;
        if (add_frame(s, to, FISH_WS_OP_BINARY, bytes, len) != 0)
            return luaL_error(L, "cannot queue the message: out of memory or no random bytes");
        if (s->state == LIVE_OPEN) flush(s);
        sync_watch(s, 0); /* what flush could not write waits for POLLOUT */
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* s:receive() -> the next whole message, or nil. */
static int live_receive(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    fish_live_message *m = s->first;
    if (!m) return 0;
    lua_pushlstring(L, m->bytes.data ? m->bytes.data : "", m->bytes.len);
    s->first = m->next;
    if (!s->first) s->last = NULL;
    fish_buffer_free(&m->bytes);
    free(m);
    return 1;
}

static int live_state(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    lua_pushstring(L, state_names[s->state]);
    return 1;
}

/* s:failure() -> nil, or kind, message */
static int live_failure(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    if (!s->failure_kind) return 0;
    lua_pushstring(L, s->failure_kind);
    lua_pushstring(L, s->failure);
    return 2;
}

/* s:handshake() -> status, { lower-case name = value }, body */
static int live_handshake(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    lua_pushinteger(L, s->status);
    lua_newtable(L);
    fish_ws_head head;
    const char *error = NULL;
    if (s->head_len && fish_ws_parse_head(s->in.data, s->head_len, &head, &error) == 1) {
        for (size_t i = 0; i < head.count; i++) {
            const fish_ws_header *h = &head.headers[i];
            char name[256];
            size_t n = h->name_len < sizeof name ? h->name_len : sizeof name;
            for (size_t j = 0; j < n; j++)
                name[j] = (char)(h->name[j] >= 'A' && h->name[j] <= 'Z' ? h->name[j] + 32 : h->name[j]);
            /* A repeated header reads as one list, as HTTP defines. */
            lua_pushlstring(L, name, n);
            lua_pushvalue(L, -1);
            lua_rawget(L, -3);
            if (lua_isstring(L, -1)) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, h->value, h->value_len);
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, h->value, h->value_len);
            }
            lua_rawset(L, -3);
        }
    }
    lua_pushlstring(L, s->body.data ? s->body.data : "", s->body.len);
    return 3;
}

/* s:close_info() -> code, reason of the peer's close frame, or nothing */
static int live_close_info(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    if (!s->got_close) return 0;
    lua_pushinteger(L, s->close_code);
    lua_pushlstring(L, s->close_reason, s->close_reason_len);
    return 2;
}

static int sendable_code(lua_Integer code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* s:shutdown([code [, reason]]): the close handshake. Before the socket is
 * open there is no WebSocket to close: the connection just goes. */
static int live_shutdown(lua_State *L) {
    fish_live *s = fish_live_check(L, 1);
    lua_Integer code = 1000;
    if (!lua_isnoneornil(L, 2)) {
        if (!fish_isinteger(L, 2)) return luaL_argerror(L, 2, "close code must be an integer");
        code = lua_tointeger(L, 2);
        if (!sendable_code(code))
            return luaL_argerror(L, 2, "close code must be 1000-1003, 1007-1014 or 3000-4999");
    }
    size_t reason_len = 0;
    const char *reason = luaL_optlstring(L, 3, "", &reason_len);
    if (reason_len > FISH_WS_CONTROL_MAX - 2)
        return luaL_argerror(L, 3, "close reason must be at most 123 bytes");
    switch (s->state) {
    case LIVE_CONNECTING:
    case LIVE_HANDSHAKE:
        set_closed(s);
        break;
    case LIVE_OPEN:
        if (add_close_frame(s, (int)code, reason, reason_len) != 0)
            return luaL_error(L, "cannot queue the close frame: out of memory or no random bytes");
        s->state = LIVE_CLOSING;
        s->changed = 1;
        flush(s);
        sync_watch(s, 0);
        break;
    default:
        break;
    }
    return 0;
}

static void push_time(lua_State *L, double t) {
    if (t > 0) lua_pushnumber(L, t);
    else lua_pushnil(L);
}

/* s:activity() -> connected (101), last byte, last message: fish_now() times */
static int live_activity(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    push_time(L, s->connected_at);
    push_time(L, s->byte_at);
    push_time(L, s->message_at);
    return 3;
}

/* s:pending() -> bytes sent but not yet written to the connection */
static int live_pending(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    fish_pushint64(L, (int64_t)(s->out.len - s->out_at + s->early.len));
    return 1;
}

/* s:fd() -> the connection's descriptor, for a host loop to watch, or nil */
static int live_fd(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    if (!s->easy || !s->connected || s->fd == CURL_SOCKET_BAD) return 0;
    fish_pushint64(L, (int64_t)s->fd);
    return 1;
}

/* s:id() -> the id engine:add_live gave it, 0 before */
static int live_id(lua_State *L) {
    lua_pushinteger(L, ((fish_live *)luaL_checkudata(L, 1, FISH_LIVE_MT))->id);
    return 1;
}

static int live_tostring(lua_State *L) {
    fish_live *s = luaL_checkudata(L, 1, FISH_LIVE_MT);
    lua_pushfstring(L, "fish.live_socket %d (%s)", (int)s->id, state_names[s->state]);
    return 1;
}

int fish_live_open(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"send", live_send},         {"receive", live_receive},   {"state", live_state},
        {"failure", live_failure},   {"handshake", live_handshake},
        {"close_info", live_close_info}, {"shutdown", live_shutdown},
        {"activity", live_activity}, {"pending", live_pending},   {"fd", live_fd},
        {"id", live_id},
        {NULL, NULL},
    };
    fish_class_register(L, FISH_LIVE_MT, methods, live_close, live_tostring);
    lua_pushcfunction(L, live_new);
    lua_setfield(L, -2, "live_socket");
    return 0;
}
