/* reqpool — the worker's shared session environment and its pool of request states.
 *
 * A request's state (its copied head if any, its body, the parsed head, the request view) is
 * a few KiB; the pool keeps up to POOL_MAX of them warm per worker so that keep-alive requests
 * reuse them without malloc, and buffers that grew past KEEP_BUF_BYTES are trimmed on return.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "pier/clock.h"
#include "pier/log.h"
#include "pier/router.h"
#include "request.h"

#define POOL_MAX 64

void pier_env_init(struct pier_env *env, const struct pier_config *cfg, struct pier_app *app,
                   struct pier_metrics *metrics) {
    memset(env, 0, sizeof *env);
    env->cfg = cfg;
    env->app = app;
    env->metrics = metrics;
    pier_buf_init(&env->out);
    pier_buf_init(&env->body);
    pier_buf_init(&env->logbatch);
    if (getrandom(env->rng, sizeof env->rng, 0) != (ssize_t)sizeof env->rng) {
        env->rng[0] = (uint64_t)pier_now_ns() ^ (uint64_t)(uintptr_t)env;
        env->rng[1] = 0x9e3779b97f4a7c15u ^ (uint64_t)time(NULL);
    }
    env->rng[0] |= 1;
    env->date_sec = -1;
}

static void reqstate_free(struct pier_reqstate *rq) {
    pier_buf_free(&rq->head);
    pier_buf_free(&rq->body);
    free(rq);
}

void pier_env_destroy(struct pier_env *env) {
    pier_env_flush_log(env);
    while (env->pool) {
        struct pier_reqstate *rq = env->pool;
        env->pool = rq->next;
        reqstate_free(rq);
    }
    pier_buf_free(&env->out);
    pier_buf_free(&env->body);
    pier_buf_free(&env->logbatch);
}

void pier_env_flush_log(struct pier_env *env) {
    pier_log_flush_batch(&env->logbatch);
}

struct pier_reqstate *pier__reqstate_get(struct pier_env *env) {
    struct pier_reqstate *rq = env->pool;
    if (rq) {
        env->pool = rq->next;
        env->pool_len--;
    } else {
        rq = malloc(sizeof *rq);
        if (rq == NULL)
            return NULL;
        pier_buf_init(&rq->head);
        pier_buf_init(&rq->body);
    }
    /* only what a request reads before writing it is reset: the views and spans are
     * written as the head is parsed */
    pier_buf_reset(&rq->head);
    pier_buf_reset(&rq->body);
    rq->next = NULL;
    rq->base = NULL;
    rq->head_len = 0;
    rq->body_bytes = 0;
    rq->start_ns = 0;
    rq->route = PIER_ROUTE_NONE;
    rq->rid[0] = '\0';
    rq->allow[0] = '\0';
    rq->h.target.len = 0;
    rq->h.query = 0;
    rq->h.nfields = 0;
    memset(rq->h.first, 0, sizeof rq->h.first);
    memset(rq->h.count, 0, sizeof rq->h.count);
    memset(&rq->req, 0, sizeof rq->req);
    return rq;
}

void pier__reqstate_put(struct pier_env *env, struct pier_reqstate *rq) {
    pier_buf_shrink(&rq->head, PIER_KEEP_BUF_BYTES);
    pier_buf_shrink(&rq->body, PIER_KEEP_BUF_BYTES);
    if (env->pool_len >= POOL_MAX) {
        reqstate_free(rq);
        return;
    }
    rq->next = env->pool;
    env->pool = rq;
    env->pool_len++;
}
