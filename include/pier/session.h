/* session — one HTTP/1.1 connection's protocol state, without the socket.
 *
 * Bytes go in (pier_session_feed), response bytes come out (appended to env->out): pier's parser
 * (src/parse.c) walks a head once, llhttp (src/chunked.c) a chunked body's framing, the router
 * dispatches, handlers answer, and the response is serialized (src/respond.c) — all in memory.
 * The connection layer (src/conn.c) owns the socket and the timers and moves bytes; the fuzzer
 * feeds this directly. Pipelined requests in one feed are
 * answered in order into the same output buffer, so they leave in one write.
 *
 * Memory: an idle session holds only its parser state (16 bytes) and a few words; llhttp's
 * state lives in the request state, for the length of a chunked body. A request's copied
 * head and body live in a pier_reqstate taken from the worker's pool when the request starts
 * and given back when it ends, so keep-alive requests reuse warm buffers without malloc.
 */
#ifndef PIER_SESSION_H
#define PIER_SESSION_H

#include <stdint.h>
#include <time.h>

#include "pier/app.h"
#include "pier/buf.h"
#include "pier/config.h"
#include "pier/http.h"
#include "pier/parse.h"

struct pier_reqstate;

/* What all sessions of one worker share. No libuv in here. */
struct pier_env {
    const struct pier_config *cfg;
    struct pier_app *app;
    struct pier_metrics *metrics;
    pier_buf_t out;      /* responses produced by the current feed */
    pier_buf_t body;     /* response body scratch, reused by every handler call */
    pier_buf_t logbatch; /* access-log lines waiting for the next flush */
    struct pier_reqstate *pool;
    unsigned pool_len;
    uint64_t rng[2];
    time_t date_sec;
    char date[30];
    size_t fed;            /* input bytes the last pier_session_feed consumed */
    char rid_fallback[33]; /* a request id for an answer given before any request state */
};

/* Responses queued past this stop a feed at the next request boundary (PIER_FEED_PAUSE), so
 * a read full of pipelined requests cannot turn into megabytes of queued responses. */
#define PIER_OUT_HIGH_WATER (256 * 1024)

void pier_env_init(struct pier_env *env, const struct pier_config *cfg, struct pier_app *app,
                   struct pier_metrics *metrics);
void pier_env_destroy(struct pier_env *env);

enum pier_phase {
    PIER_PHASE_IDLE,    /* between requests on a kept-alive connection */
    PIER_PHASE_HEADERS, /* waiting for (the rest of) a request line and headers */
    PIER_PHASE_BODY,    /* headers in, waiting for the body */
};

enum pier_session_flags {
    PIER_S_RESPONDED = 1 << 1, /* this request was already answered (an early error) */
    PIER_S_CLOSE = 1 << 2,     /* close the connection once env->out is written */
    PIER_S_KEEP_BODY = 1 << 3,
};

struct pier_peer {
    uint8_t family; /* 0 unknown, 4 or 6; 1 a Unix socket (logged as "unix") */
    uint16_t port;
    uint8_t addr[16];
};

struct pier_session {
    struct pier_parser parser;
    struct pier_env *env;
    struct pier_reqstate *rq;
    uint8_t flags;
    uint8_t phase;
    uint32_t nrequests; /* requests answered so far */
    struct pier_peer peer;
};

void pier_session_init(struct pier_session *s, struct pier_env *env);
/* Release what the session holds (its request state goes back to the pool). */
void pier_session_reset(struct pier_session *s);
enum pier_feed_result {
    PIER_FEED_OK = 0,    /* all consumed */
    PIER_FEED_CLOSE = 1, /* close the connection once env->out is written */
    PIER_FEED_PAUSE = 2, /* env->out is full: only env->fed bytes were consumed; write env->out,
                            then feed the rest (pipelined requests wait their turn) */
};
/* Feed received bytes; responses are appended to env->out. Returns a pier_feed_result and
 * sets env->fed to the bytes consumed. */
int pier_session_feed(struct pier_session *s, const char *data, size_t len);
/* A timeout fired: answer 408 into env->out when a request is under way; a connection that
 * has not begun one gets no answer (returns 1: close either way). */
int pier_session_timeout(struct pier_session *s);
/* Answer 503 Retry-After into env->out for a connection refused at max_connections. */
void pier_session_overload(struct pier_session *s);
/* Request start time (monotonic ns) of the request under way, 0 if none. */
uint64_t pier_session_request_start(const struct pier_session *s);
/* Flush the access-log batch if it holds anything. */
void pier_env_flush_log(struct pier_env *env);

#endif
