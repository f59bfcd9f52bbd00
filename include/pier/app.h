/* app — the process-wide state that handlers may read: lifecycle, start time, metrics.
 *
 * The server owns it and is its only writer; handlers get a const pointer through the
 * request. Nothing here is libuv: tests and fuzzers build one by hand.
 */
#ifndef PIER_APP_H
#define PIER_APP_H

#include <stdatomic.h>
#include <stdint.h>

#include "pier/metrics.h"

enum pier_lifecycle { PIER_RUNNING, PIER_GRACE, PIER_DRAINING };

/* A library pier is built on and its version, as the running process reports it. */
struct pier_component {
    const char *name;
    char version[32];
};
#define PIER_COMPONENTS 4 /* libuv, llhttp, cjson, libyaml */

struct pier_route;

struct pier_app {
    atomic_int lifecycle;   /* enum pier_lifecycle */
    int64_t start_unix_ms;  /* wall clock at start, for process_start_time_seconds */
    uint64_t start_mono_ns; /* monotonic clock at start, for uptime */
    struct pier_metrics **worker_metrics;
    int nworkers;
    /* The route table, for the metrics' route labels: handed in by whoever builds the app, so
     * that metrics.c does not reach up to the table whose /metrics row reaches back to it. */
    const struct pier_route *routes;
    size_t nroutes;
    pier_counter_t reloads_success;
    pier_counter_t reloads_failure;
    _Atomic int64_t last_reload_success_unix_ms;
    /* Collected once at start by the server, so handlers need no library headers. */
    struct pier_component components[PIER_COMPONENTS];
    /* SIGUSR1 sets it, SIGUSR2 clears it: answer every request with Connection: close, so
     * a proxy stops reusing its connections to this process, which keeps serving. */
    atomic_int close_connections;
};

/* Fill app->components from the libraries linked in (once, at start). */
void pier_app_collect_components(struct pier_app *app);

static inline int pier_app_draining(const struct pier_app *app) {
    return atomic_load_explicit((atomic_int *)&app->lifecycle, memory_order_relaxed) !=
           PIER_RUNNING;
}

#endif
