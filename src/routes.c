/* routes — every endpoint pier serves, one row each, below the configured prefix.
 * Order is precedence. The index page (GET /) lists this table. */
#include "pier/handlers.h"
#include "pier/router.h"

#define H(fn) fn
#define ECHO  pier_handle_echo

/* Test builds only (cmake -DPIER_TEST_FAULT=..., see CMakeLists.txt): the images with which
 * test/delivery/deploy-test.sh checks that a deploy notices a bad release after the switch. A
 * normal build compiles none of this. */
#if defined(PIER_TEST_FAULT_SLOW_100MS)
#include <time.h>
#define SLOW(fn)                                                                                   \
    static void slow_##fn(const struct pier_request *req, struct pier_response *res) {             \
        const struct timespec t = {0, 100 * 1000 * 1000};                                          \
        nanosleep(&t, NULL); /* blocks the worker: fine for a test image */                        \
        fn(req, res);                                                                              \
    }
SLOW(pier_handle_index)
SLOW(pier_handle_health)
SLOW(pier_handle_live)
SLOW(pier_handle_ready)
SLOW(pier_handle_version)
SLOW(pier_handle_version_component)
SLOW(pier_handle_echo)
SLOW(pier_handle_metrics)
#undef H
#undef ECHO
#define H(fn) slow_##fn
#define ECHO  slow_pier_handle_echo
#elif defined(PIER_TEST_FAULT_ECHO_500)
static void failing_echo(const struct pier_request *req, struct pier_response *res) {
    (void)req;
    pier_response_error(res, 500, "test build: POST /echo always fails (PIER_TEST_FAULT=echo-500)");
}
#undef ECHO
#define ECHO failing_echo
#endif

const struct pier_route pier_routes[] = {
    PIER_ROUTE(GET, "/", H(pier_handle_index), 0, "Service index: name, environment, routes"),
    PIER_ROUTE(GET, "/health", H(pier_handle_health), 0,
               "Health (IETF health+json); 503 while draining"),
    PIER_ROUTE(GET, "/health/live", H(pier_handle_live), 0, "Liveness: the event loop answers"),
    PIER_ROUTE(GET, "/health/ready", H(pier_handle_ready), 0, "Readiness: 503 while draining"),
    PIER_ROUTE(GET, "/version", H(pier_handle_version), 0,
               "Version, commit, build and library versions"),
    PIER_ROUTE(GET, "/version/{component}", H(pier_handle_version_component), PIER_ROUTE_PARAMS,
               "One library's version"),
    PIER_ROUTE(POST, "/echo", ECHO, PIER_ROUTE_BODY, "Echo a JSON body back", "application/json"),
    PIER_ROUTE(GET, "/metrics", H(pier_handle_metrics), PIER_ROUTE_METRICS, "Prometheus metrics"),
};
const size_t pier_routes_count = sizeof pier_routes / sizeof pier_routes[0];
