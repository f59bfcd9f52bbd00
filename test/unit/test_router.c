/* Unit tests for route matching: exact paths, {params}, 404 vs 405, Allow sets. */
#include <stdlib.h>

#include "check.h"
#include "pier/app.h"
#include "pier/config.h"
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
    return pier_router_match(pier_routes, pier_routes_count, pier_method_id(method, strlen(method)),
                             S(path), 0, params, &n, allow ? allow : local, 80);
}

int main(void) {
    char allow[80];
    /* every route is counted under its own label, and unmatched requests under theirs */
    {
        struct pier_metrics *m = calloc(1, sizeof *m);
        struct pier_metrics *list[1] = {m};
        struct pier_app app = {.worker_metrics = list,
                               .nworkers = 1,
                               .routes = pier_routes,
                               .nroutes = pier_routes_count};
        struct pier_config cfg;
        pier_buf_t out, err;
        pier_buf_init(&out);
        pier_buf_init(&err);
        CHECK(m && pier_config_load(&cfg, NULL, NULL, 0, &err) == 0);
        for (size_t i = 0; m && i < pier_routes_count; i++)
            pier_metrics_observe(m, (int)i, 0, 200, 1000);
        if (m)
            pier_metrics_observe(m, PIER_ROUTE_NONE, 0, 404, 1000);
        pier_metrics_render(&app, &cfg, &out);
        pier_buf_putc(&out, '\0');
        for (size_t i = 0; i < pier_routes_count; i++) {
            char series[160];
            snprintf(series, sizeof series,
                     "pier_http_requests_total{route=\"%s\",method=\"GET\",code=\"200\"} 1\n",
                     pier_routes[i].pattern);
            CHECK_STR_CONTAINS(out.data, series);
        }
        CHECK_STR_CONTAINS(out.data, "{route=\"unmatched\",method=\"GET\",code=\"404\"} 1\n");
        pier_buf_free(&out);
        pier_buf_free(&err);
        free(m);
    }
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
    int r = pier_router_match(pier_routes, pier_routes_count, PIER_M_GET, S("/version/libuv"), 0,
                              params, &n, allow, sizeof allow);
    CHECK(r >= 0 && pier_routes[r].handler == pier_handle_version_component);
    CHECK(n == 1 && params[0].value.n == 5 && memcmp(params[0].value.p, "libuv", 5) == 0);
    CHECK(n == 1 && params[0].name.n == 9 && memcmp(params[0].name.p, "component", 9) == 0);
    CHECK(match("GET", "/version/", NULL) == PIER_ROUTE_NONE); /* {x} needs a non-empty segment */

    /* a route with a skipped flag does not exist */
    r = pier_router_match(pier_routes, pier_routes_count, PIER_M_GET, S("/metrics"),
                          PIER_ROUTE_METRICS, params, &n, allow, sizeof allow);
    CHECK(r == PIER_ROUTE_NONE);
    CHECK(match("GET", "/metrics", NULL) >= 0);
    return check_report("router");
}
