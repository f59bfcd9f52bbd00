/* handlers/echo — POST {prefix}/echo: parse a JSON body and send it back.
 * Useful to check a whole path (proxy, body handling, limits) end to end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "pier/handlers.h"

static int is_json_type(const struct pier_request *req) {
    struct pier_str ct;
    if (!pier_request_header(req, "Content-Type", &ct))
        return 0;
    /* "application/json", optionally followed by parameters such as "; charset=utf-8" */
    static const char want[] = "application/json";
    size_t n = sizeof want - 1;
    if (ct.n < n || strncasecmp(ct.p, want, n) != 0)
        return 0;
    return ct.n == n || ct.p[n] == ';' || ct.p[n] == ' ' || ct.p[n] == '\t';
}

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
    if (!is_json_type(req)) {
        pier_response_error(res, 415, "send the body as Content-Type: application/json");
        return;
    }
    if (req->body.n == 0) {
        pier_response_error(res, 400, "empty body: expected a JSON document");
        return;
    }
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(req->body.p, req->body.n, &end, 0);
    if (doc == NULL) {
        size_t off = end && end >= req->body.p ? (size_t)(end - req->body.p) : 0;
        size_t line, col;
        position(req->body, off, &line, &col);
        char msg[160];
        snprintf(msg, sizeof msg, "invalid JSON at line %zu, column %zu (byte %zu)", line, col,
                 off);
        pier_response_error(res, 400, msg);
        return;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "received", doc);
    cJSON_AddNumberToObject(root, "bytes", (double)req->body.n);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (text == NULL) {
        pier_response_error(res, 500, "out of memory");
        return;
    }
    pier_response_begin(res, 200, "application/json");
    pier_buf_puts(res->body, text);
    pier_buf_putc(res->body, '\n');
    free(text);
}
