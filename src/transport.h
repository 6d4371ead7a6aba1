/* The transport options every easy handle of fish carries, HTTP requests
 * (request.c) and live sockets (live.c) alike. They live here once, so
 * that the TLS checks, the protocols allowed and the proxy rules cannot
 * drift apart between the two kinds of handle. */
#ifndef FISH_TRANSPORT_H
#define FISH_TRANSPORT_H

#include <curl/curl.h>

/* No signals, no redirects, http and https only, TLS peer and host
 * verified, TCP keepalive. Options that cannot fail. */
void fish_transport_safe(CURL *e);

/* ca_file as the whole trust store. NULL leaves libcurl's default. */
CURLcode fish_transport_ca_file(CURL *e, const char *ca_file);

/* The proxy fish chose in Lua ("" or NULL: none), never one from the
 * environment; `tunnel`: CONNECT even for http://. */
CURLcode fish_transport_proxy(CURL *e, const char *proxy, int tunnel);

/* A connect timeout in seconds; 0 or less leaves libcurl's default. */
void fish_transport_connect_timeout(CURL *e, double seconds);

#endif
