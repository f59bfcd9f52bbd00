/* metrics — counting on the request path, summing and rendering at scrape time.
 * See include/pier/metrics.h for why there is no lock. */
#include "pier/metrics.h"
#include "pier/parse.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "pier/app.h"
#include "pier/build_info.h"
#include "pier/config.h"
#include "pier/router.h"

#include "fdbudget.h"

/* Upper bounds of the latency buckets, in nanoseconds (100 µs … 10 s). */
static const uint64_t bucket_ns[PIER_HIST_BUCKETS] = {
    100000,   250000,    500000,    1000000,   2500000,    5000000,     10000000,    25000000,
    50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000u, 5000000000u, 10000000000u};
static const char *const bucket_le[PIER_HIST_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5",    "10"};

static const char *const method_names[PIER_METRIC_METHODS] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"};
static const int codes[PIER_METRIC_CODES] = {200, 204, 400, 404, 405, 408, 411, 413, 415, 417,
                                             431, 500, 501, 503, 505, 401, 414, 0,   0,   0};
static const char *const bad_names[PIER_BAD_REASONS] = {
    "malformed",       "header_too_large", "body_too_large", "header_timeout",
    "request_timeout", "not_implemented",  "expectation",    "overload"};

int pier_metrics_method_index(int m) {
    switch (m) {
    case PIER_M_GET:
        return 0;
    case PIER_M_HEAD:
        return 1;
    case PIER_M_POST:
        return 2;
    case PIER_M_PUT:
        return 3;
    case PIER_M_DELETE:
        return 4;
    case PIER_M_PATCH:
        return 5;
    case PIER_M_OPTIONS:
        return 6;
    default:
        return 7;
    }
}

int pier_metrics_code_index(int status) {
    for (int i = 0; i < PIER_METRIC_CODES && codes[i]; i++)
        if (codes[i] == status)
            return i;
    return 11; /* never reached for statuses pier sends; counted as 500 rather than lost */
}

void pier_metrics_observe(struct pier_metrics *m, int route, int method_index, int status,
                          uint64_t ns) {
    if (route < 0 || route >= PIER_METRIC_ROUTES)
        route = PIER_METRIC_ROUTES - 1;
    pier_counter_add(&m->requests[route][method_index][pier_metrics_code_index(status)], 1);
    int b = 0;
    while (b < PIER_HIST_BUCKETS && ns > bucket_ns[b])
        b++;
    pier_counter_add(&m->buckets[route][b], 1);
    pier_counter_add(&m->sum_ns[route], ns);
}

/* ---- rendering ------------------------------------------------------------------------- */

static uint64_t sum_workers(const struct pier_app *app, size_t offset) {
    uint64_t total = 0;
    for (int i = 0; i < app->nworkers; i++) {
        if (app->worker_metrics[i] == NULL)
            continue;
        const char *base = (const char *)app->worker_metrics[i];
        total += pier_counter_get((const pier_counter_t *)(const void *)(base + offset));
    }
    return total;
}
#define SUM(app, field) sum_workers((app), offsetof(struct pier_metrics, field))

static const char *route_label(const struct pier_app *app, int r) {
    return app->routes && r < (int)app->nroutes ? app->routes[r].pattern : "unmatched";
}

static void header(pier_buf_t *o, const char *name, const char *type, const char *help) {
    pier_buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void process_metrics(const struct pier_app *app, pier_buf_t *o) {
    header(o, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch.");
    pier_buf_printf(o, "process_start_time_seconds %.3f\n", (double)app->start_unix_ms / 1000.0);

    long page = sysconf(_SC_PAGESIZE), ticks = sysconf(_SC_CLK_TCK);
    unsigned long utime = 0, stime = 0, vsize = 0;
    long rss = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        /* the command name may hold spaces and parens: fields start after the last ')' */
        char *p = strrchr(buf, ')');
        if (p)
            sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d "
                   "%*u %lu %ld",
                   &utime, &stime, &vsize, &rss);
    }
    header(o, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
    pier_buf_printf(o, "process_cpu_seconds_total %.2f\n",
                    ticks > 0 ? (double)(utime + stime) / (double)ticks : 0.0);
    header(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    pier_buf_printf(o, "process_resident_memory_bytes %ld\n", rss * page);
    header(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    pier_buf_printf(o, "process_virtual_memory_bytes %lu\n", vsize);

    long fds = pier_fd_count();
    if (fds < 0)
        fds = 0;
    header(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    pier_buf_printf(o, "process_open_fds %ld\n", fds);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    header(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    pier_buf_printf(o, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
}

void pier_metrics_render(const struct pier_app *app, const struct pier_config *cfg, pier_buf_t *o) {
    header(o, "pier_build_info", "gauge", "Build of the running pier; always 1.");
    pier_buf_puts(o, "pier_build_info{version=");
    pier_buf_put_json_str(o, PIER_VERSION, strlen(PIER_VERSION));
    pier_buf_puts(o, ",commit=");
    pier_buf_put_json_str(o, PIER_COMMIT, strlen(PIER_COMMIT));
    pier_buf_puts(o, ",environment=");
    pier_buf_put_json_str(o, cfg->environment, strlen(cfg->environment));
    pier_buf_puts(o, "} 1\n");

    header(o, "pier_http_requests_total", "counter",
           "HTTP requests answered, by route pattern, method and status code.");
    int nroutes = (int)app->nroutes;
    for (int r = 0; r < PIER_METRIC_ROUTES; r++) {
        if (r >= nroutes && r != PIER_METRIC_ROUTES - 1)
            continue;
        int label = r == PIER_METRIC_ROUTES - 1 ? nroutes : r;
        for (int m = 0; m < PIER_METRIC_METHODS; m++)
            for (int c = 0; c < PIER_METRIC_CODES && codes[c]; c++) {
                uint64_t v = SUM(app, requests[r][m][c]);
                if (v == 0)
                    continue;
                pier_buf_printf(o,
                                "pier_http_requests_total{route=\"%s\",method=\"%s\",code=\"%d\"} "
                                "%llu\n",
                                route_label(app, label), method_names[m], codes[c],
                                (unsigned long long)v);
            }
    }

    header(o, "pier_http_request_duration_seconds", "histogram",
           "Time from the first byte of a request to its response, by route pattern.");
    for (int r = 0; r < PIER_METRIC_ROUTES; r++) {
        if (r >= nroutes && r != PIER_METRIC_ROUTES - 1)
            continue;
        const char *route = route_label(app, r == PIER_METRIC_ROUTES - 1 ? nroutes : r);
        uint64_t cum = 0;
        uint64_t counts[PIER_HIST_BUCKETS + 1];
        for (int b = 0; b <= PIER_HIST_BUCKETS; b++) {
            counts[b] = SUM(app, buckets[r][b]);
            cum += counts[b];
        }
        if (cum == 0)
            continue;
        uint64_t running = 0;
        for (int b = 0; b < PIER_HIST_BUCKETS; b++) {
            running += counts[b];
            pier_buf_printf(o,
                            "pier_http_request_duration_seconds_bucket{route=\"%s\",le=\"%s\"} "
                            "%llu\n",
                            route, bucket_le[b], (unsigned long long)running);
        }
        pier_buf_printf(o,
                        "pier_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} "
                        "%llu\n",
                        route, (unsigned long long)cum);
        pier_buf_printf(o, "pier_http_request_duration_seconds_sum{route=\"%s\"} %.9f\n", route,
                        (double)SUM(app, sum_ns[r]) / 1e9);
        pier_buf_printf(o, "pier_http_request_duration_seconds_count{route=\"%s\"} %llu\n", route,
                        (unsigned long long)cum);
    }

    header(o, "pier_http_connections_active", "gauge", "Client connections open now.");
    pier_buf_printf(o, "pier_http_connections_active %llu\n",
                    (unsigned long long)SUM(app, connections_active));
    header(o, "pier_http_connections_total", "counter", "Client connections accepted.");
    pier_buf_printf(o, "pier_http_connections_total %llu\n",
                    (unsigned long long)SUM(app, connections_total));
    header(o, "pier_http_bad_requests_total", "counter",
           "Requests refused before reaching a handler, by reason.");
    for (int i = 0; i < PIER_BAD_REASONS; i++)
        pier_buf_printf(o, "pier_http_bad_requests_total{reason=\"%s\"} %llu\n", bad_names[i],
                        (unsigned long long)SUM(app, bad[i]));

    header(o, "pier_config_reloads_total", "counter", "Config reloads (SIGHUP), by result.");
    pier_buf_printf(o, "pier_config_reloads_total{result=\"success\"} %llu\n",
                    (unsigned long long)pier_counter_get(&app->reloads_success));
    pier_buf_printf(o, "pier_config_reloads_total{result=\"failure\"} %llu\n",
                    (unsigned long long)pier_counter_get(&app->reloads_failure));
    header(o, "pier_config_last_reload_success_timestamp_seconds", "gauge",
           "When the config was last loaded successfully (start or reload), unix seconds.");
    int64_t last = atomic_load(&((struct pier_app *)app)->last_reload_success_unix_ms);
    pier_buf_printf(o, "pier_config_last_reload_success_timestamp_seconds %.3f\n",
                    (double)(last ? last : app->start_unix_ms) / 1000.0);
    process_metrics(app, o);
}
