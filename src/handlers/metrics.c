/* handlers/metrics — GET {prefix}/metrics in the Prometheus text format 0.0.4.
 *
 * With metrics.token_file set, a scrape must carry "Authorization: Bearer <token>" (what
 * Prometheus sends with `authorization: credentials_file:`); anything else gets 401. */
#include <strings.h>

#include "pier/handlers.h"
#include "pier/metrics.h"

/* Equal, in a time that depends on the lengths only, not on where the first difference is. */
static int same_secret(struct pier_str got, const char *want, size_t want_n) {
    unsigned char diff = got.n != want_n;
    for (size_t i = 0; i < want_n; i++)
        diff |= (unsigned char)(want[i] ^ (i < got.n ? got.p[i] : 0));
    return diff == 0;
}

void pier_handle_metrics(const struct pier_request *req, struct pier_response *res) {
    const struct pier_config *cfg = req->cfg;
    if (cfg->metrics_token_len > 0) {
        static const char scheme[] = "Bearer ";
        struct pier_str auth;
        if (!pier_request_header(req, "Authorization", &auth) || auth.n < sizeof scheme - 1 ||
            strncasecmp(auth.p, scheme, sizeof scheme - 1) != 0) {
            pier_response_error(res, 401, "metrics need Authorization: Bearer <token>");
            return;
        }
        struct pier_str token = {auth.p + sizeof scheme - 1, auth.n - (sizeof scheme - 1)};
        if (!same_secret(token, cfg->metrics_token, cfg->metrics_token_len)) {
            pier_response_error(res, 401, "wrong bearer token for metrics");
            return;
        }
    }
    pier_response_begin(res, 200, "text/plain; version=0.0.4; charset=utf-8");
    res->no_store = 1;
    pier_metrics_render(req->app, cfg, res->body);
}
