/* http — the request and response that handlers see, and the helpers around them.
 *
 * A pier_request is a read-only view: every pier_str points into memory the connection owns
 * for the life of the request. A pier_response is what a handler fills: a status, a content
 * type and a body appended to a buffer the worker owns. The session (src/session.c) turns it
 * into bytes; handlers never see sockets.
 */
#ifndef PIER_HTTP_H
#define PIER_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "pier/buf.h"
#include "pier/config.h"

#define PIER_MAX_HEADERS    64
#define PIER_MAX_PARAMS     4
#define PIER_REQUEST_ID_MAX 128

struct pier_app;

struct pier_str {
    const char *p;
    size_t n;
};

struct pier_header {
    struct pier_str name;
    struct pier_str value;
};

struct pier_param {
    struct pier_str name;
    struct pier_str value;
};

struct pier_request {
    int method; /* llhttp_method_t */
    const char *method_name;
    struct pier_str target;     /* as sent: "/prod/health?x=1" or "http://h/prod/health" */
    struct pier_str path;       /* "/prod/health" */
    struct pier_str route_path; /* "/health": the path below the prefix */
    struct pier_str query;      /* "x=1" */
    uint8_t http_major, http_minor;
    const struct pier_header *headers;
    size_t nheaders;
    struct pier_str body;
    struct pier_param params[PIER_MAX_PARAMS];
    size_t nparams;
    struct pier_str request_id;
    const struct pier_config *cfg;
    const struct pier_app *app;
};

struct pier_response {
    uint16_t status;
    const char *content_type; /* NULL when there is no body */
    pier_buf_t *body;
    char allow[80];       /* Allow header, or "" */
    uint32_t retry_after; /* seconds, 0 for none */
    uint8_t no_store;     /* Cache-Control: no-store */
};

static inline uint64_t pier_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *pier_status_text(int status);
int pier_str_eq(struct pier_str s, const char *lit);
int pier_str_ieq(struct pier_str s, const char *lit);
/* The first header called `name` (case-insensitive); returns 1 and fills `out` if present. */
int pier_request_header(const struct pier_request *req, const char *name, struct pier_str *out);
/* Is the request's Content-Type `type` (case-insensitive), bare or with parameters such as
 * "; charset=utf-8"? */
int pier_request_content_type_is(const struct pier_request *req, const char *type);
/* Start a response: status, content type, empty body. */
void pier_response_begin(struct pier_response *res, int status, const char *content_type);
/* A JSON error: {"error":{"status":N,"message":"…"}}. */
void pier_response_error(struct pier_response *res, int status, const char *message);

/* "Sun, 06 Nov 1994 08:49:37 GMT" for `t` into out (30 bytes, NUL-terminated). */
void pier_http_date(time_t t, char out[30]);

#endif
