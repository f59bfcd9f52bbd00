/* handlers/health — what load balancers and orchestrators ask, constantly.
 *
 * The body follows the IETF "Health Check Response Format for HTTP APIs" draft
 * (application/health+json). It is written with plain appends rather than a JSON library:
 * this is the hottest endpoint, and it must not allocate.
 */
#include <string.h>

#include "pier/app.h"
#include "pier/build_info.h"
#include "pier/handlers.h"

static void put_field(pier_buf_t *b, const char *key, const char *value) {
    pier_buf_putc(b, ',');
    pier_buf_put_json_str(b, key, strlen(key));
    pier_buf_putc(b, ':');
    pier_buf_put_json_str(b, value, strlen(value));
}

void pier_handle_health(const struct pier_request *req, struct pier_response *res) {
    int fail = pier_app_draining(req->app);
    pier_response_begin(res, fail ? 503 : 200, "application/health+json");
    res->no_store = 1;
    pier_buf_t *b = res->body;
    pier_buf_puts(b, fail ? "{\"status\":\"fail\"" : "{\"status\":\"pass\"");
    put_field(b, "version", PIER_VERSION);
    put_field(b, "releaseId", PIER_COMMIT);
    put_field(b, "serviceId", "pier");
    put_field(b, "description", fail ? "pier is shutting down" : "pier HTTP service");
    put_field(b, "environment", req->cfg->environment);
    pier_buf_puts(b, ",\"uptime_s\":");
    pier_buf_put_u64(b, (pier_now_ns() - req->app->start_mono_ns) / 1000000000u);
    pier_buf_puts(b, "}\n");
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
