/* request — one request's state, and what session.c, respond.c and reqpool.c share.
 *
 * Private to the session module (pier__ names, src/ only). A request's state comes from the
 * worker's pool when its first byte arrives and goes back when it is answered, so keep-alive
 * requests reuse warm buffers without malloc.
 */
#ifndef PIER__REQUEST_H
#define PIER__REQUEST_H

#include "pier/chunked.h"
#include "pier/metrics.h"
#include "pier/session.h"

#define PIER_KEEP_BUF_BYTES (64 * 1024) /* request buffers bigger than this are not pooled */

struct pier_reqstate {
    struct pier_reqstate *next;
    pier_buf_t head; /* the head's bytes when they span reads, or must outlive the read */
    pier_buf_t body;
    const char *base; /* the head's first byte: in the read buffer, or head.data */
    uint32_t head_len;
    uint64_t body_bytes;
    uint64_t start_ns;
    int route;
    struct pier_head h;
    struct pier_header views[PIER_MAX_HEADERS];
    struct pier_request req;
    struct pier_chunked chunked; /* a chunked body's framing (llhttp), from on_head */
    char rid[33];
    char allow[80];
};

/* reqpool.c */
struct pier_reqstate *pier__reqstate_get(struct pier_env *env);
void pier__reqstate_put(struct pier_env *env, struct pier_reqstate *rq);

/* respond.c: serialize `res` into env->out, then count and log the request. */
void pier__emit(struct pier_session *s, struct pier_response *res, int closing, int head_only);
/* Answer the current request with an error and close the connection afterwards. */
void pier__fail(struct pier_session *s, int status, const char *message,
                enum pier_bad_reason reason);

#endif
