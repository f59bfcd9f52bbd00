/* handlers/info — what this service is: the route index and the build's versions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "pier/app.h"
#include "pier/build_info.h"
#include "pier/handlers.h"
#include "pier/router.h"

/* Write a cJSON tree as the response body and free it. */
static void send_json(struct pier_response *res, int status, cJSON *root) {
    char *text = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (text == NULL) {
        pier_response_error(res, 500, "out of memory");
        return;
    }
    pier_response_begin(res, status, "application/json");
    pier_buf_puts(res->body, text);
    pier_buf_putc(res->body, '\n');
    free(text);
}

static const char *compiler(void) {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown";
#endif
}

void pier_handle_version(const struct pier_request *req, struct pier_response *res) {
    const struct pier_component *c = req->app->components;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "service", "pier");
    cJSON_AddStringToObject(root, "version", PIER_VERSION);
    cJSON_AddStringToObject(root, "commit", PIER_COMMIT);
    cJSON_AddStringToObject(root, "build_time", PIER_BUILD_TIME);
    cJSON_AddStringToObject(root, "compiler", compiler());
    cJSON_AddStringToObject(root, "environment", req->cfg->environment);
    cJSON *libs = cJSON_AddObjectToObject(root, "libraries");
    for (int i = 0; i < PIER_COMPONENTS; i++)
        if (c[i].name)
            cJSON_AddStringToObject(libs, c[i].name, c[i].version);
    send_json(res, 200, root);
}

void pier_handle_version_component(const struct pier_request *req, struct pier_response *res) {
    const struct pier_component *c = req->app->components;
    struct pier_str want = req->params[0].value;
    for (int i = 0; i < PIER_COMPONENTS; i++) {
        if (c[i].name && pier_str_eq(want, c[i].name)) {
            cJSON *root = cJSON_CreateObject();
            cJSON_AddStringToObject(root, "name", c[i].name);
            cJSON_AddStringToObject(root, "version", c[i].version);
            send_json(res, 200, root);
            return;
        }
    }
    pier_response_error(res, 404, "unknown component; known: libuv, llhttp, cjson, libyaml");
}

void pier_handle_index(const struct pier_request *req, struct pier_response *res) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "service", "pier");
    cJSON_AddStringToObject(root, "version", PIER_VERSION);
    cJSON_AddStringToObject(root, "environment", req->cfg->environment);
    cJSON_AddStringToObject(root, "prefix", req->cfg->prefix);
    cJSON *routes = cJSON_AddArrayToObject(root, "routes");
    for (size_t i = 0; i < pier_routes_count; i++) {
        const struct pier_route *r = &pier_routes[i];
        if ((r->flags & PIER_ROUTE_METRICS) && !req->cfg->metrics_enabled)
            continue;
        char path[256];
        snprintf(path, sizeof path, "%s%s", req->cfg->prefix, r->pattern);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "method", r->method);
        cJSON_AddStringToObject(o, "path", path);
        cJSON_AddStringToObject(o, "summary", r->summary);
        cJSON_AddItemToArray(routes, o);
    }
    send_json(res, 200, root);
}
