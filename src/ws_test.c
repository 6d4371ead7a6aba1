#include "ws_test.h"

#include <string.h>

#include "ws.h"

/* core.ws_test_sha1(bytes) -> 40 hex digits */
static int ws_test_sha1(lua_State *L) {
    size_t len = 0;
    const char *data = luaL_checklstring(L, 1, &len);
    unsigned char digest[20];
    char hex[41];
    fish_ws_sha1(data, len, digest);
    for (int i = 0; i < 20; i++) {
        hex[2 * i] = "0123456789abcdef"[digest[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[digest[i] & 15];
    }
    lua_pushlstring(L, hex, 40);
    return 1;
}

/* core.ws_test_accept(key) -> the Sec-WebSocket-Accept for key */
static int ws_test_accept(lua_State *L) {
    char accept[29];
    fish_ws_accept_for(luaL_checkstring(L, 1), accept);
    lua_pushstring(L, accept);
    return 1;
}

/* core.ws_test_frame(opcode, payload, mask) -> one masked client frame */
static int ws_test_frame(lua_State *L) {
    int opcode = (int)luaL_checkinteger(L, 1);
    size_t len = 0, mlen = 0;
    const char *payload = luaL_checklstring(L, 2, &len);
    const char *mask = luaL_checklstring(L, 3, &mlen);
    if (mlen != 4) return luaL_argerror(L, 3, "mask must be 4 bytes");
    unsigned char header[FISH_WS_HEADER_MAX];
    size_t hlen = fish_ws_frame_header(header, opcode, (uint64_t)len, (const unsigned char *)mask);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, (const char *)header, hlen);
    for (size_t i = 0; i < len; i++) luaL_addchar(&b, (char)(payload[i] ^ mask[i & 3]));
    luaL_pushresult(&b);
    return 1;
}

static void set_string(lua_State *L, const char *key, const void *bytes, size_t len) {
    lua_pushlstring(L, bytes ? (const char *)bytes : "", len);
    lua_setfield(L, -2, key);
}

/* core.ws_test_decode(bytes, max_message [, piece]) -> events, consumed.
 * The bytes go in `piece` bytes at a time (default: all at once); each
 * event is { event = "message"|"ping"|"pong"|"close"|"error", data =,
 * code =, reason =, kind =, message = }. */
static int ws_test_decode(lua_State *L) {
    size_t len = 0;
    const unsigned char *bytes = (const unsigned char *)luaL_checklstring(L, 1, &len);
    lua_Number max = luaL_checknumber(L, 2);
    /* Converting a negative or NaN number to an unsigned type is undefined. */
    if (!(max >= 0)) return luaL_argerror(L, 2, "must be a non-negative number");
    size_t piece = (size_t)luaL_optinteger(L, 3, 0);
    if (piece == 0) piece = len ? len : 1;
    fish_ws_decoder d;
    fish_ws_decoder_init(&d, max >= 1.8e19 ? UINT64_MAX : (uint64_t)max);
    lua_newtable(L);
    int n = 0;
    size_t at = 0;
    int stop = 0;
    while (!stop && at < len) {
        size_t chunk = len - at < piece ? len - at : piece;
        const unsigned char *p = bytes + at;
        size_t left = chunk;
        while (!stop) {
            size_t used = 0;
            fish_ws_event ev = fish_ws_decode(&d, p, left, &used);
            p += used;
            left -= used;
            at += used;
            if (ev == FISH_WS_NEED_MORE) break;
            lua_newtable(L);
            switch (ev) {
            case FISH_WS_MESSAGE:
                lua_pushliteral(L, "message");
                lua_setfield(L, -2, "event");
                set_string(L, "data", d.message.data, d.message.len);
                break;
            case FISH_WS_PING:
            case FISH_WS_PONG:
                lua_pushstring(L, ev == FISH_WS_PING ? "ping" : "pong");
                lua_setfield(L, -2, "event");
                set_string(L, "data", d.control, d.control_len);
                break;
            case FISH_WS_CLOSE:
                lua_pushliteral(L, "close");
                lua_setfield(L, -2, "event");
                lua_pushinteger(L, d.close_code);
                lua_setfield(L, -2, "code");
                set_string(L, "reason", d.close_reason, d.close_reason_len);
                stop = 1;
                break;
            default:
                lua_pushliteral(L, "error");
                lua_setfield(L, -2, "event");
                lua_pushstring(L, d.error_kind == FISH_WS_TOO_LARGE ? "too_large" : "protocol");
                lua_setfield(L, -2, "kind");
                lua_pushstring(L, d.error);
                lua_setfield(L, -2, "message");
                stop = 1;
                break;
            }
            lua_rawseti(L, -2, ++n);
        }
    }
    fish_ws_decoder_free(&d);
    lua_pushinteger(L, (lua_Integer)at);
    return 2;
}

/* core.ws_test_head(bytes [, accept [, eof]]) -> { complete =, error =,
 * status =, head_len =, headers = { lower-case name = value },
 * upgrade_error =, body =, body_complete =, body_error = } */
static int ws_test_head(lua_State *L) {
    size_t len = 0;
    const char *bytes = luaL_checklstring(L, 1, &len);
    const char *accept = luaL_optstring(L, 2, "");
    int eof = lua_toboolean(L, 3);
    fish_ws_head head;
    const char *error = NULL;
    int r = fish_ws_parse_head(bytes, len, &head, &error);
    lua_newtable(L);
    lua_pushboolean(L, r == 1);
    lua_setfield(L, -2, "complete");
    if (r < 0) {
        lua_pushstring(L, error);
        lua_setfield(L, -2, "error");
    }
    if (r != 1) return 1;
    lua_pushinteger(L, head.status);
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, (lua_Integer)head.head_len);
    lua_setfield(L, -2, "head_len");
    lua_newtable(L);
    for (size_t i = 0; i < head.count; i++) {
        char name[256];
        size_t n = head.headers[i].name_len < sizeof name ? head.headers[i].name_len : sizeof name;
        for (size_t j = 0; j < n; j++) {
            char c = head.headers[i].name[j];
            name[j] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        lua_pushlstring(L, name, n);
        lua_pushlstring(L, head.headers[i].value, head.headers[i].value_len);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    const char *why = fish_ws_check_upgrade(&head, accept);
    if (why) {
        lua_pushstring(L, why);
        lua_setfield(L, -2, "upgrade_error");
    }
    fish_buffer body;
    fish_buffer_init(&body);
    error = NULL;
    int done = fish_ws_refusal_body(&head, bytes + head.head_len, len - head.head_len, eof,
                                    64 * 1024, &body, &error);
    set_string(L, "body", body.data, body.len);
    fish_buffer_free(&body);
    lua_pushboolean(L, done == 1);
    lua_setfield(L, -2, "body_complete");
    if (done < 0) {
        lua_pushstring(L, error);
        lua_setfield(L, -2, "body_error");
    }
    return 1;
}

int fish_ws_test_open(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"ws_test_sha1", ws_test_sha1},     {"ws_test_accept", ws_test_accept},
        {"ws_test_frame", ws_test_frame},   {"ws_test_decode", ws_test_decode},
        {"ws_test_head", ws_test_head},     {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
    return 0;
}
