#ifndef KDL_CCURL_SHIM_H
#define KDL_CCURL_SHIM_H
#include <curl/curl.h>

/* curl_easy_setopt/getinfo are variadic, which Swift cannot call: one typed wrapper per argument kind. */
static inline CURLcode ccurl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_setopt_str(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_setopt_ptr(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode ccurl_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }

typedef size_t (*ccurl_io_cb)(char *buffer, size_t size, size_t count, void *context);
static inline CURLcode ccurl_setopt_io(CURL *h, CURLoption o, ccurl_io_cb f) { return curl_easy_setopt(h, o, f); }

typedef int (*ccurl_xferinfo_cb)(void *context, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow);
static inline CURLcode ccurl_setopt_xferinfo(CURL *h, ccurl_xferinfo_cb f) { return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, f); }

static inline CURLcode ccurl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode ccurl_getinfo_off(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }

/* Returned by a read callback to abort the transfer. */
static inline size_t ccurl_readfunc_abort(void) { return CURL_READFUNC_ABORT; }
#endif
