/* metrics — counters and histograms, per worker, summed when scraped.
 *
 * Each worker owns one pier_metrics and is its only writer, so counting a request is a few
 * relaxed loads and stores into memory the worker already has: no allocation, no lock, no
 * atomic read-modify-write. A scrape (on any worker) reads every worker's block with relaxed
 * loads and adds them up; a value may be a request behind, never torn.
 * Label sets are fixed-size arrays indexed by route, method and status, which is also what
 * keeps their cardinality bounded.
 */
#ifndef PIER_METRICS_H
#define PIER_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "pier/buf.h"

#define PIER_METRIC_ROUTES  16 /* routes in the table, plus one for "unmatched" */
#define PIER_METRIC_METHODS 8
#define PIER_METRIC_CODES   20
#define PIER_HIST_BUCKETS   16

enum pier_bad_reason {
    PIER_BAD_MALFORMED,
    PIER_BAD_HEADER_TOO_LARGE,
    PIER_BAD_BODY_TOO_LARGE,
    PIER_BAD_HEADER_TIMEOUT,
    PIER_BAD_REQUEST_TIMEOUT,
    PIER_BAD_NOT_IMPLEMENTED,
    PIER_BAD_EXPECTATION,
    PIER_BAD_OVERLOAD,
    PIER_BAD_REASONS
};

typedef _Atomic uint64_t pier_counter_t;

struct pier_metrics {
    pier_counter_t requests[PIER_METRIC_ROUTES][PIER_METRIC_METHODS][PIER_METRIC_CODES];
    pier_counter_t buckets[PIER_METRIC_ROUTES][PIER_HIST_BUCKETS + 1]; /* +1: above the last */
    pier_counter_t sum_ns[PIER_METRIC_ROUTES];
    pier_counter_t connections_active;
    pier_counter_t connections_total;
    pier_counter_t bad[PIER_BAD_REASONS];
};

/* Written by its one owner: a plain load and store, never a locked instruction. */
static inline void pier_counter_add(pier_counter_t *c, uint64_t v) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}
static inline void pier_counter_sub(pier_counter_t *c, uint64_t v) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - v,
                          memory_order_relaxed);
}
static inline uint64_t pier_counter_get(const pier_counter_t *c) {
    return atomic_load_explicit(c, memory_order_relaxed);
}

int pier_metrics_method_index(int method); /* enum pier_method, or -1 */
int pier_metrics_code_index(int status);
/* Count one answered request: route index (or PIER_METRIC_ROUTES-1 for unmatched). */
void pier_metrics_observe(struct pier_metrics *m, int route, int method_index, int status,
                          uint64_t duration_ns);

struct pier_app;
struct pier_config;
/* Write the Prometheus text exposition (format 0.0.4) of every worker, summed. */
void pier_metrics_render(const struct pier_app *app, const struct pier_config *cfg,
                         pier_buf_t *out);

#endif
