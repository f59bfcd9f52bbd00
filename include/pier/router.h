/* router — the route table: method + path pattern -> handler.
 *
 * Routes are one array (src/routes.c). A pattern is matched segment by segment against the
 * path below the prefix; a segment written `{name}` matches any one non-empty segment and is
 * handed to the handler as a parameter. HEAD is served by every GET route (the session drops
 * the body), and OPTIONS is answered by the session from the Allow set the router computes.
 */
#ifndef PIER_ROUTER_H
#define PIER_ROUTER_H

#include <stddef.h>

#include "pier/http.h"

typedef void (*pier_handler_fn)(const struct pier_request *req, struct pier_response *res);

enum pier_route_flags {
    PIER_ROUTE_BODY = 1,    /* the handler reads the request body (others discard it) */
    PIER_ROUTE_METRICS = 2, /* exists only while metrics.enabled */
    PIER_ROUTE_PARAMS = 4,  /* the pattern has {name} segments: matched segment by segment */
};

/* One row. PIER_ROUTE(GET, "/x", ...) fills the method's name and number and the pattern's
 * length, so matching compares lengths and numbers before any byte. */
struct pier_route {
    const char *method;
    int method_id; /* enum pier_method */
    const char *pattern;
    size_t pattern_len;
    pier_handler_fn handler;
    unsigned flags;
    const char *summary;
    const char *body_type; /* the media type the body must be declared as (else 415), or NULL */
};

extern const struct pier_route pier_routes[];
extern const size_t pier_routes_count;

enum { PIER_ROUTE_NONE = -1, PIER_ROUTE_WRONG_METHOD = -2 };

/* Match `method` and `path` (below the prefix). Returns the route's index, PIER_ROUTE_NONE
 * when no pattern matches, or PIER_ROUTE_WRONG_METHOD when a pattern matches but not for this
 * method. For the last two and for OPTIONS, `allow` receives the methods the path supports
 * ("GET, HEAD, OPTIONS"). Routes carrying a flag in `skip_flags` do not exist. */
#define PIER_ROUTE(method, pattern, ...)                                                           \
    { #method, PIER_M_##method, pattern, sizeof(pattern) - 1, __VA_ARGS__ }

int pier_router_match(const struct pier_route *routes, size_t nroutes, int method,
                      struct pier_str path, unsigned skip_flags, struct pier_param *params,
                      size_t *nparams, char *allow, size_t allow_size);

#endif
