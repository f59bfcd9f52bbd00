/* Unit tests for route matching: exact paths, {params}, 404 vs 405, Allow sets. */
#include "check.h"
#include "pier/handlers.h"
#include "pier/metrics.h"
#include "pier/router.h"

static struct pier_str S(const char *s) {
    struct pier_str r = {s, strlen(s)};
    return r;
}

static int
match(const char *method, const char *path, char *allow) {
    struct pier_param params[PIER_MAX_PARAMS];
    size_t n = 0;
    char local[80];
    return pier_router_match(pier_routes, pier_routes_count, method, S(path), 0, params, &n,
                             allow ? allow : local, 80);
}

int main(void) {
    char allow[80];
    CHECK(pier_routes_count < PIER_METRIC_ROUTES); /* metrics keep one slot for "unmatched" */
    CHECK(match("GET", "/health", NULL) >= 0);
    CHECK(pier_routes[match("GET", "/health", NULL)].handler == pier_handle_health);
    CHECK(pier_routes[match("HEAD", "/health", NULL)].handler == pier_handle_health);
    CHECK(pier_routes[match("GET", "/health/live", NULL)].handler == pier_handle_live);
    CHECK(pier_routes[match("GET", "/", NULL)].handler == pier_handle_index);
    CHECK(match("GET", "/health/", NULL) == PIER_ROUTE_NONE);
    CHECK(match("GET", "/healthz", NULL) == PIER_ROUTE_NONE);
    CHECK(match("GET", "/health/live/x", NULL) == PIER_ROUTE_NONE);
    CHECK(match("GET", "", NULL) == PIER_ROUTE_NONE);

    CHECK(match("DELETE", "/health", allow) == PIER_ROUTE_WRONG_METHOD);
    CHECK(strcmp(allow, "GET, HEAD, OPTIONS") == 0);
    CHECK(match("GET", "/echo", allow) == PIER_ROUTE_WRONG_METHOD);
    CHECK(strcmp(allow, "POST, OPTIONS") == 0);
    CHECK(match("HEAD", "/echo", allow) == PIER_ROUTE_WRONG_METHOD);

    /* parameters */
    struct pier_param params[PIER_MAX_PARAMS];
    size_t n = 0;
    int r = pier_router_match(pier_routes, pier_routes_count, "GET", S("/version/libuv"), 0, params,
                              &n, allow, sizeof allow);
    CHECK(r >= 0 && pier_routes[r].handler == pier_handle_version_component);
    CHECK(n == 1);
    CHECK(n == 1 && params[0].value.n == 5 && memcmp(params[0].value.p, "libuv", 5) == 0);
    CHECK(n == 1 && params[0].name.n == 9 && memcmp(params[0].name.p, "component", 9) == 0);
    CHECK(match("GET", "/version/", NULL) == PIER_ROUTE_NONE); /* {x} needs a non-empty segment */

    /* a route with a skipped flag does not exist */
    r = pier_router_match(pier_routes, pier_routes_count, "GET", S("/metrics"), PIER_ROUTE_METRICS,
                          params, &n, allow, sizeof allow);
    CHECK(r == PIER_ROUTE_NONE);
    CHECK(match("GET", "/metrics", NULL) >= 0);
    return check_report("router");
}
