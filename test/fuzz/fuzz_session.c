/* fuzz_session — the whole HTTP pipeline over raw bytes, without a socket.
 *
 * pier_session_feed is the seam between the connection layer (src/conn.c) and the protocol:
 * bytes in, response bytes out in env->out. This harness drives it exactly as conn.c does —
 * feed what arrived, take the output, stop feeding once the session says close — so the
 * parser, the limits, the router, every handler and the response writer run together.
 *
 * Input layout (so seeds stay readable text):
 *   byte 0  flags: bits 0-1 pick one of four configs (see setup), bit 2 ends the input with a
 *           timeout (408 path), bit 3 runs it while the server is draining; bit 6 ('P'..'_')
 *           marks a valid request stream: the replay driver (not libFuzzer, whose mutations
 *           would break it) then also fails on any 4xx or 5xx answer; bit 7 turns keep-alive
 *           off after the first read, as SIGUSR1 does in the middle of a pipeline
 *   byte 1  delivery: (byte & 63) bytes per read, 0 = everything in one read ('@' = 0x40)
 *   rest    what the client sends
 * A seed such as "0@GET /prod/health HTTP/1.1\r\n\r\n" is config 0, one read; "PA..." is a
 * valid stream in config 0 sent one byte per read.
 *
 * Beyond the sanitizers, the harness checks what a client would see: output only ever starts
 * with a status line, a response that says "Connection: close" ends the connection, and
 * nothing is written after it.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "pier/router.h"
#include "pier/clock.h"
#include "pier/app.h"
#include "pier/config.h"
#include "pier/log.h"
#include "pier/session.h"

#define NVARIANTS 4

static struct pier_config cfgs[NVARIANTS];
static struct pier_metrics *metrics;
static struct pier_metrics *metrics_list[1];
static struct pier_app app;

static void setup(void) {
    static const char *const sets[NVARIANTS][4] = {
        /* 0: the shipped shape */
        {"prefix=/prod", NULL},
        /* 1: no prefix, the smallest limits: every limit is easy to reach */
        {"limits.max_header_bytes=1024", "limits.max_body_bytes=64", NULL},
        /* 2: metrics off (the route disappears), no access log */
        {"prefix=/staging", "metrics.enabled=false", "log.access=false", NULL},
        /* 3: no body accepted at all */
        {"prefix=/prod", "limits.max_body_bytes=0", NULL},
    };
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull >= 0)
        pier_log_set_fd(devnull);
    for (int i = 0; i < NVARIANTS; i++) {
        pier_buf_t errors;
        pier_buf_init(&errors);
        size_t n = 0;
        while (n < 4 && sets[i][n])
            n++;
        if (pier_config_load(&cfgs[i], NULL, sets[i], n, &errors) != 0) {
            fprintf(stderr, "fuzz_session: bad built-in config %d: %.*s\n", i, (int)errors.len,
                    errors.data);
            abort();
        }
        pier_buf_free(&errors);
    }
    metrics = calloc(1, sizeof *metrics);
    if (metrics == NULL)
        abort();
    metrics_list[0] = metrics;
    app.worker_metrics = metrics_list;
    app.nworkers = 1;
    app.routes = pier_routes;
    app.nroutes = pier_routes_count;
    app.start_unix_ms = 1700000000000;
    app.start_mono_ns = pier_now_ns();
    pier_app_collect_components(&app);
}

static int contains(const char *hay, size_t n, const char *needle) {
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

/* What one read produced, as a client would judge it. */
static void check_output(const pier_buf_t *out, int closing, int must_succeed) {
    if (out->len == 0)
        return;
#ifdef PIER_FUZZ_REPLAY
    for (const char *p = out->data; must_succeed && p < out->data + out->len - 9; p++) {
        p = memmem(p, (size_t)(out->data + out->len - p), "HTTP/1.1 ", 9);
        if (p == NULL || p + 9 >= out->data + out->len)
            break;
        if (p[9] >= '4') {
            fprintf(stderr, "fuzz_session: a valid request stream got %.12s\n", p);
            abort();
        }
    }
#else
    (void)must_succeed;
#endif
    if (out->len < 12 || memcmp(out->data, "HTTP/1.1 ", 9) != 0 || out->data[9] < '1' ||
        out->data[9] > '5') {
        fprintf(stderr, "fuzz_session: output does not start with a status line\n");
        abort();
    }
    if (!contains(out->data, out->len, "\r\n\r\n")) {
        fprintf(stderr, "fuzz_session: response head not terminated\n");
        abort();
    }
    if (!closing && contains(out->data, out->len, "\r\nConnection: close\r\n")) {
        fprintf(stderr, "fuzz_session: said Connection: close but kept the connection\n");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 2)
        return 0;
    unsigned flags = data[0];
    int must_succeed = (flags & 0x40) != 0;
    size_t step = data[1] & 63;
    const char *in = (const char *)data + 2;
    size_t len = size - 2;
    if (step == 0)
        step = len ? len : 1;

    atomic_store(&app.lifecycle, (flags & 8) ? PIER_DRAINING : PIER_RUNNING);
    atomic_store(&app.close_connections, 0);
    struct pier_env env;
    pier_env_init(&env, &cfgs[flags & 3], &app, metrics);
    struct pier_session s;
    pier_session_init(&s, &env);
    s.peer.family = 4;
    s.peer.port = 40000;
    memcpy(s.peer.addr, "\x7f\x00\x00\x01", 4);

    int closing = 0;
    for (size_t off = 0; off < len && !closing;) {
        size_t n = len - off < step ? len - off : step;
        int r = pier_session_feed(&s, in + off, n);
        /* a pause is the output's high water mark, never anything else; it may fall on the
         * last request of a read, and then the whole read was consumed (fed == n) */
        if (r == PIER_FEED_PAUSE && (env.fed > n || env.out.len < PIER_OUT_HIGH_WATER)) {
            fprintf(stderr, "fuzz_session: paused without cause (fed %zu of %zu, out %zu)\n",
                    env.fed, n, env.out.len);
            abort();
        }
        closing = r == PIER_FEED_CLOSE;
        check_output(&env.out, closing, must_succeed);
        pier_buf_reset(&env.out); /* written: as conn.c does, then feed the rest */
        off += r == PIER_FEED_PAUSE ? env.fed : n;
        if (flags & 0x80) /* SIGUSR1 arrives between two reads */
            atomic_store(&app.close_connections, 1);
    }
    if (!closing && (flags & 4)) {
        /* conn.c closes after any timeout; the session only has to say what to send */
        check_output(&env.out, pier_session_timeout(&s), 0);
        pier_buf_reset(&env.out);
    } else if (closing && pier_session_feed(&s, "GET / HTTP/1.1\r\n\r\n", 18) != 1) {
        fprintf(stderr, "fuzz_session: a closed session accepted more input\n");
        abort();
    }
    if (env.out.len != 0) {
        fprintf(stderr, "fuzz_session: a closed session wrote more output\n");
        abort();
    }
    pier_session_reset(&s);
    pier_env_destroy(&env);
    return 0;
}
