/* The transport options every easy handle of fish carries (transport.h). */
#include "transport.h"

/* Longer waits are cut to this (24 days): the milliseconds must fit a long
 * even where it is 32 bits. */
#define MAX_TIMEOUT_SECONDS (24.0 * 24 * 3600)

void fish_transport_safe(CURL *e) {
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
}

/* ca_file is the whole trust store, not an addition to the system's:
 * libcurl's built-in default also names a CA directory (Debian:
 * /etc/ssl/certs, see curl-config --configure), which OpenSSL would still
 * search. There is no other default store: OpenSSL's own (SSL_CERT_FILE,
 * SSL_CERT_DIR) is used only by libcurls built with --with-ca-fallback, and
 * native stores only with CURLSSLOPT_NATIVE_CA. */
CURLcode fish_transport_ca_file(CURL *e, const char *ca_file) {
    if (!ca_file) return CURLE_OK;
    CURLcode rc = curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
    if (rc == CURLE_OK) rc = curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
    return rc;
}

/* Proxies never come from the environment: fish decides in Lua and always
 * says. An absent or empty proxy means none, and no_proxy is not read
 * (libcurl reads http_proxy, https_proxy, all_proxy and no_proxy only
 * while CURLOPT_PROXY and CURLOPT_NOPROXY are unset). */
CURLcode fish_transport_proxy(CURL *e, const char *proxy, int tunnel) {
    CURLcode rc = curl_easy_setopt(e, CURLOPT_PROXY, proxy ? proxy : "");
    if (rc != CURLE_OK) return rc;
    curl_easy_setopt(e, CURLOPT_NOPROXY, "");
    /* CONNECT even for http://, so the proxy relays bytes it cannot read
     * when the target is https (libcurl tunnels https anyway). */
    curl_easy_setopt(e, CURLOPT_HTTPPROXYTUNNEL, tunnel ? 1L : 0L);
    /* Our headers (Authorization) go to the server only, never into the
     * CONNECT request the proxy reads. This is libcurl's default since
     * 7.42.1; said here so that no build can differ. */
    curl_easy_setopt(e, CURLOPT_HEADEROPT, CURLHEADER_SEPARATE);
    return CURLE_OK;
}

void fish_transport_connect_timeout(CURL *e, double seconds) {
    if (!(seconds > 0)) return;
    if (seconds > MAX_TIMEOUT_SECONDS) seconds = MAX_TIMEOUT_SECONDS;
    long ms = (long)(seconds * 1000);
    /* 0 would mean libcurl's default. */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms > 0 ? ms : 1L);
}
