/* handlers/echo — POST {prefix}/echo: check a JSON body and send it back.
 * Useful to check a whole path (proxy, body handling, limits) end to end.
 *
 * The body must be exactly one JSON value in valid UTF-8 (src/json.c); anything else gets 400
 * with where and what is wrong. The answer carries the value as it was sent, byte for byte
 * (surrounding whitespace aside): no re-serialization, so what comes back is what went in,
 * numbers keep their digits, and the answer is never more than a few dozen bytes longer than
 * the request. The route declares its media type (src/routes.c), so a body that is not
 * application/json is refused (415) before this handler runs.
 */
#include <stdio.h>

#include "pier/handlers.h"
#include "pier/json.h"

/* Line and column of byte `off` in body, 1-based. */
static void position(struct pier_str body, size_t off, size_t *line, size_t *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < body.n; i++) {
        if (body.p[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

void pier_handle_echo(const struct pier_request *req, struct pier_response *res) {
    if (req->body.n == 0) {
        pier_response_error(res, 400, "empty body: expected a JSON document");
        return;
    }
    size_t start, len;
    struct pier_json_error err;
    if (pier_json_check(req->body.p, req->body.n, &start, &len, &err) != 0) {
        size_t line, col;
        position(req->body, err.offset, &line, &col);
        char msg[200];
        snprintf(msg, sizeof msg, "invalid JSON at line %zu, column %zu (byte %zu): %s", line, col,
                 err.offset, err.what);
        pier_response_error(res, 400, msg);
        return;
    }
    pier_response_begin(res, 200, "application/json");
    pier_buf_puts(res->body, "{\"received\":");
    pier_buf_append(res->body, req->body.p + start, len);
    pier_buf_printf(res->body, ",\"bytes\":%zu}\n", req->body.n);
}
