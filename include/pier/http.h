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
#include "pier/parse.h"

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
    int method; /* enum pier_method */
    const char *method_name;
    struct pier_str target;     /* as sent: "/prod/health?x=1" or "http://h/prod/health" */
    struct pier_str path;       /* "/prod/health" */
    struct pier_str route_path; /* "/health": the path below the prefix */
    struct pier_str query;      /* "x=1" */
    uint8_t http_major, http_minor;
    const struct pier_header *headers;
    size_t nheaders;
    const uint8_t *fields; /* per enum pier_field: 1 + index in headers of the first; or NULL */
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
    size_t content_type_len;
    pier_buf_t *body;
    char allow[80];       /* Allow header, or "" */
    uint32_t retry_after; /* seconds, 0 for none */
    uint8_t no_store;     /* Cache-Control: no-store */
};

/* Every status pier sends, with its reason phrase: one list for pier_status_text and the
 * response writer's status lines. */
#define PIER_STATUSES(X)                                                                           \
    X(100, "Continue")                                                                             \
    X(200, "OK")                                                                                   \
    X(204, "No Content")                                                                           \
    X(400, "Bad Request")                                                                          \
    X(401, "Unauthorized")                                                                         \
    X(404, "Not Found")                                                                            \
    X(405, "Method Not Allowed")                                                                   \
    X(408, "Request Timeout")                                                                      \
    X(411, "Length Required")                                                                      \
    X(413, "Content Too Large")                                                                    \
    X(414, "URI Too Long")                                                                         \
    X(415, "Unsupported Media Type")                                                               \
    X(417, "Expectation Failed")                                                                   \
    X(431, "Request Header Fields Too Large")                                                      \
    X(500, "Internal Server Error")                                                                \
    X(501, "Not Implemented")                                                                      \
    X(503, "Service Unavailable")                                                                  \
    X(505, "HTTP Version Not Supported")
const char *pier_status_text(int status);
int pier_str_eq_n(struct pier_str s, const char *lit, size_t n);
int pier_str_ieq_n(struct pier_str s, const char *lit, size_t n);
/* The literals these compare with are measured where they are written (inline: the strlen of
 * a literal is a constant), not on every call. */
static inline int pier_str_eq(struct pier_str s, const char *lit) {
    return pier_str_eq_n(s, lit, __builtin_strlen(lit));
}
static inline int pier_str_ieq(struct pier_str s, const char *lit) {
    return pier_str_ieq_n(s, lit, __builtin_strlen(lit));
}
/* The first header called `name` (case-insensitive); returns 1 and fills `out` if present. */
int pier_request_header(const struct pier_request *req, const char *name, struct pier_str *out);
/* The same for a field the parser knows by name, without comparing names. */
int pier_request_field(const struct pier_request *req, enum pier_field f, struct pier_str *out);
/* Is the request's Content-Type `type` (case-insensitive), bare or with parameters such as
 * "; charset=utf-8"? */
int pier_request_content_type_is(const struct pier_request *req, const char *type);
/* Start a response: status, content type, empty body. */
static inline void pier_response_begin(struct pier_response *res, int status,
                                       const char *content_type) {
    res->status = (uint16_t)status;
    res->content_type = content_type;
    res->content_type_len = content_type ? __builtin_strlen(content_type) : 0;
    pier_buf_reset(res->body);
}
/* A JSON error: {"error":{"status":N,"message":"…"}}. */
void pier_response_error(struct pier_response *res, int status, const char *message);

/* "Sun, 06 Nov 1994 08:49:37 GMT" for `t` into out (30 bytes, NUL-terminated). */
void pier_http_date(time_t t, char out[30]);

#endif
