/* handlers/health — what load balancers and orchestrators ask, constantly.
 *
 * The body follows the IETF "Health Check Response Format for HTTP APIs" draft
 * (application/health+json). It is written with plain appends rather than a JSON library:
 * this is the hottest endpoint, and it must not allocate.
 */
#include <stdio.h>
#include <string.h>

#include "pier/clock.h"
#include "pier/app.h"
#include "pier/build_info.h"
#include "pier/handlers.h"

static void put_field(pier_buf_t *b, const char *key, const char *value) {
    pier_buf_putc(b, ',');
    pier_buf_put_json_str(b, key, strlen(key));
    pier_buf_putc(b, ':');
    pier_buf_put_json_str(b, value, strlen(value));
}

/* Everything before the uptime depends only on the build, the environment and whether pier
 * is draining, so each worker thread builds it once and copies it: a health check costs a
 * memcpy and a number, not a JSON serialization. The key is compared by value, so a config
 * reload that changes the environment (or a test that reuses a config struct) rebuilds it.
 * The cache is a fixed array, not a heap buffer, so a worker thread leaves nothing behind. */
struct health_prefix {
    int fail;
    size_t len; /* 0: empty, or what did not fit */
    char environment[sizeof((struct pier_config *)0)->environment];
    char text[512];
};

static void health_body_prefix(pier_buf_t *b, const struct pier_config *cfg, int fail) {
    static _Thread_local struct health_prefix cache = {.fail = -1};
    if (cache.fail == fail && cache.len && strcmp(cache.environment, cfg->environment) == 0) {
        pier_buf_append(b, cache.text, cache.len);
        return;
    }
    size_t start = b->len;
    pier_buf_puts(b, fail ? "{\"status\":\"fail\"" : "{\"status\":\"pass\"");
    put_field(b, "version", PIER_VERSION);
    put_field(b, "releaseId", PIER_COMMIT);
    put_field(b, "serviceId", "pier");
    put_field(b, "description", fail ? "pier is shutting down" : "pier HTTP service");
    put_field(b, "environment", cfg->environment);
    pier_buf_puts(b, ",\"uptime_s\":");
    size_t n = b->len - start;
    cache.len = 0;
    if (!b->oom && n <= sizeof cache.text) {
        memcpy(cache.text, b->data + start, n);
        cache.len = n;
        cache.fail = fail;
        snprintf(cache.environment, sizeof cache.environment, "%s", cfg->environment);
    }
}

void pier_handle_health(const struct pier_request *req, struct pier_response *res) {
    int fail = pier_app_draining(req->app);
    pier_response_begin(res, fail ? 503 : 200, "application/health+json");
    res->no_store = 1;
    pier_buf_t *b = res->body;
    health_body_prefix(b, req->cfg, fail);
    pier_buf_put_u64(b, (pier_now_ns() - req->app->start_mono_ns) / 1000000000u);
    pier_buf_append(b, "}\n", 2);
}

static void probe(struct pier_response *res, int ok) {
    pier_response_begin(res, ok ? 200 : 503, "application/health+json");
    res->no_store = 1;
    pier_buf_puts(res->body, ok ? "{\"status\":\"pass\"}\n" : "{\"status\":\"fail\"}\n");
}

void pier_handle_live(const struct pier_request *req, struct pier_response *res) {
    (void)req; /* answering at all is the proof of life */
    probe(res, 1);
}

void pier_handle_ready(const struct pier_request *req, struct pier_response *res) {
    probe(res, !pier_app_draining(req->app));
}
