/* Live sockets: one WebSocket client connection each, for Fish's live TTS.
 * libcurl makes the connection (CONNECT_ONLY: DNS, TCP, proxy, TLS) inside
 * the engine's multi handle; from then on the socket writes the Upgrade
 * request and the frames itself with curl_easy_send/recv, and the engine's
 * perform and poll move it along with the HTTP transfers. */
#ifndef FISH_LIVE_H
#define FISH_LIVE_H

#include <curl/curl.h>

#include "buffer.h"
#include "compat.h"
#include "ws.h"

#define FISH_LIVE_MT "fish.live_socket"

typedef enum {
    LIVE_CONNECTING, /* libcurl is connecting (or add_live was not called yet) */
    LIVE_HANDSHAKE,  /* connected; the Upgrade request and its answer */
    LIVE_OPEN,
    LIVE_CLOSING,    /* a close frame went out; waiting for the peer's */
    LIVE_CLOSED
} fish_live_state;

/* A whole binary message waiting for receive(). */
typedef struct fish_live_message {
    struct fish_live_message *next;
    fish_buffer bytes;
} fish_live_message;

struct fish_engine;

typedef struct fish_live {
    CURL *easy;               /* NULL once the connection is gone */
    fish_live_state state;
    int released;             /* close() ran: nothing is left to read */
    int in_multi;             /* easy is in engine->multi */
    int connected;            /* libcurl reported the connection made */
    curl_socket_t fd;
    fish_buffer out;          /* bytes to write, from out_at on */
    size_t out_at;
    fish_buffer early;        /* frames sent before the 101, written after it */
    fish_buffer in;           /* the answer's head, then a refusal's raw body */
    size_t head_len;          /* bytes of head in `in`, 0 until it is whole */
    int status;
    fish_buffer body;         /* a refusal's decoded body */
    fish_ws_decoder decoder;
    fish_live_message *first, *last;
    int more;                 /* reading stopped at the per-step budget */
    int sent_close, got_close;
    int close_code;
    char close_reason[FISH_WS_CONTROL_MAX];
    size_t close_reason_len;
    const char *failure_kind; /* NULL while all is well */
    char failure[CURL_ERROR_SIZE + 64];
    double connected_at, byte_at, message_at; /* fish_now(); 0: not yet */
    char key[25], accept[29];
    unsigned char masks[256]; /* mask keys from the CSPRNG, used up 4 at a time */
    size_t masks_left;
    int changed;              /* to report in the next engine:perform */
    lua_Integer id;
    struct fish_engine *engine; /* set by add_live, until close */
    struct fish_live *prev, *next;
    char errbuf[CURL_ERROR_SIZE];
} fish_live;

/* Register the class and core.live_socket. */
int fish_live_open(lua_State *L);

fish_live *fish_live_check(lua_State *L, int idx);

/* engine:add_live: the socket joins the engine (its list and multi). */
void fish_live_attach(fish_live *s, struct fish_engine *e, lua_Integer id);

/* The engine read CURLMSG_DONE for the socket's handle: connected, or not. */
void fish_live_connected(fish_live *s, CURLcode result);

/* Move the socket along without blocking: write, read until libcurl has
 * nothing more, decode, answer. Returns 1 when the socket changed (new
 * messages, a new state) since the last report; `report` says whether this
 * call reports (a perform without a `changed` table keeps the news for the
 * next one that has it). */
int fish_live_step(fish_live *s, int report);

/* What poll should wait for on the socket: 0 for nothing, else
 * CURL_WAIT_POLLIN and maybe CURL_WAIT_POLLOUT; *fd is set. -1: the socket
 * has bytes to read now (poll must not sleep). */
int fish_live_wait(const fish_live *s, curl_socket_t *fd);

/* The engine closes under the socket: drop the connection, fail it. */
void fish_live_engine_closed(fish_live *s);

#endif
