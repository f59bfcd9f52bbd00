/* handlers/metrics — GET {prefix}/metrics in the Prometheus text format 0.0.4. */
#include "pier/handlers.h"
#include "pier/metrics.h"

void pier_handle_metrics(const struct pier_request *req, struct pier_response *res) {
    pier_response_begin(res, 200, "text/plain; version=0.0.4; charset=utf-8");
    res->no_store = 1;
    pier_metrics_render(req->app, req->cfg, res->body);
}
