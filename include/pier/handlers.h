/* handlers — the endpoints. Each is pure: a request in, a response out, no libuv, no sockets,
 * so every one of them can be unit-tested by building a pier_request by hand. */
#ifndef PIER_HANDLERS_H
#define PIER_HANDLERS_H

#include "pier/http.h"

void pier_handle_health(const struct pier_request *req, struct pier_response *res);
void pier_handle_live(const struct pier_request *req, struct pier_response *res);
void pier_handle_ready(const struct pier_request *req, struct pier_response *res);
void pier_handle_version(const struct pier_request *req, struct pier_response *res);
void pier_handle_version_component(const struct pier_request *req, struct pier_response *res);
void pier_handle_index(const struct pier_request *req, struct pier_response *res);
void pier_handle_echo(const struct pier_request *req, struct pier_response *res);
void pier_handle_metrics(const struct pier_request *req, struct pier_response *res);

#endif
