/* A request object: one HTTP exchange. It owns its curl easy handle and
 * everything libcurl reads from or writes to after the call that set it up
 * has returned (body, header list, mime, response buffers, output file). */
#ifndef FISH_REQUEST_H
#define FISH_REQUEST_H

#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>

#include "buffer.h"
#include "compat.h"

#define FISH_REQUEST_MT "fish.request"

/* Where the bytes of a 2xx body go. */
typedef enum { SINK_BUFFER, SINK_STREAM, SINK_FILE } fish_sink;

typedef enum { REQ_IDLE, REQ_RUNNING, REQ_DONE, REQ_CLOSED } fish_request_state;

struct fish_engine;

typedef struct fish_request {
    CURL *easy;
    struct curl_slist *headers;
    curl_mime *mime;
    fish_buffer body;        /* a string body; CURLOPT_POSTFIELDS points into it */
    /* A writer's body, sent through read_body without being copied: its
     * buffer and files, opened when the request was made. */
    struct fish_mp_body *stream_body;
    struct fish_body_file *body_files; /* one per file reference */
    int64_t body_length, body_pos;
    int holds_strings;       /* the uservalue holds the body's Lua strings at [2] */
    fish_buffer response;    /* 2xx bytes: the whole body, or the untaken part */
    fish_buffer error_body;  /* non-2xx body, kept up to error_body_limit */
    size_t error_body_limit;
    int error_body_truncated;
    fish_sink sink;
    int64_t max_bytes;       /* cap on response.len; -1: none */
    int sized;               /* the first 2xx byte has been seen (and Content-Length read) */
    int too_large;           /* we stopped the body at max_bytes */
    int out_of_memory;       /* response could not grow */
    char *file_path;         /* SINK_FILE: the temporary file, created on the first 2xx byte */
    int file_mode;           /* its permission bits (the target's), or -1 for the default */
    FILE *file;
    int file_created;        /* file_path is ours (O_EXCL made it): close removes it... */
    int committed;           /* ...unless commit renamed it into place */
    long file_owner;         /* process that created it */
    struct fish_request *temp_prev, *temp_next; /* the list of files to remove at exit */
    int file_errno;          /* why writing the file failed, 0 if it did not */
    const char *upload_changed; /* path of an uploaded file that changed size */
    const char *upload_failed;  /* path of an uploaded file that could not be read... */
    int upload_errno;           /* ...and why */
    int descriptors_exhausted;  /* connect/resolve failed while no fd was free */
    size_t url_length;
    size_t request_head;     /* bytes of URL, method and header lines we gave libcurl */
    long status;             /* HTTP status, 0 until the body starts or ends */
    curl_off_t delivered;    /* 2xx bytes handed to the sink */
    /* Transfer progress, copied by on_xferinfo only for requests made with
     * progress = true (the others never set the callback): body bytes sent
     * and to send, response body bytes received and announced. */
    int watch_transfer;
    curl_off_t sent, send_total, received, receive_total;
    double started_at, first_byte_at, last_activity_at;
    fish_request_state state;
    CURLcode result;
    int canceled;
    lua_Integer id;
    char errbuf[CURL_ERROR_SIZE];
    /* The engine this request runs in, and its list of running requests. */
    struct fish_engine *engine;
    struct fish_request *prev, *next;
} fish_request;

int fish_open_request(lua_State *L);

/* Once per process, before the first request: remove the temporary files of
 * requests still open when the process exits (os.exit skips __gc). */
void fish_request_init_process(void);

fish_request *fish_check_request(lua_State *L, int idx);

/* Called by the engine once libcurl reports the transfer finished, or when
 * the engine is closed under it: finish the sink and mark it done. */
void fish_request_finish(fish_request *r, CURLcode result, int canceled);

#endif
