/* routes — every endpoint pier serves, one row each, below the configured prefix.
 * Order is precedence. The index page (GET /) lists this table. */
#include "pier/handlers.h"
#include "pier/router.h"

const struct pier_route pier_routes[] = {
    {"GET", "/", pier_handle_index, 0, "Service index: name, environment, routes"},
    {"GET", "/health", pier_handle_health, 0, "Health (IETF health+json); 503 while draining"},
    {"GET", "/health/live", pier_handle_live, 0, "Liveness: the event loop answers"},
    {"GET", "/health/ready", pier_handle_ready, 0, "Readiness: 503 while draining"},
    {"GET", "/version", pier_handle_version, 0, "Version, commit, build and library versions"},
    {"GET", "/version/{component}", pier_handle_version_component, 0, "One library's version"},
    {"POST", "/echo", pier_handle_echo, PIER_ROUTE_BODY, "Echo a JSON body back",
     "application/json"},
    {"GET", "/metrics", pier_handle_metrics, PIER_ROUTE_METRICS, "Prometheus metrics"},
};
const size_t pier_routes_count = sizeof pier_routes / sizeof pier_routes[0];
