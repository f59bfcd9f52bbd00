/* Unit tests for the session seam: bytes in, bytes out, no socket. */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "pier/router.h"
#include "pier/clock.h"
#include "pier/log.h"
#include "pier/session.h"

static struct pier_config cfg;
static struct pier_app app;
static struct pier_metrics metrics;
static struct pier_metrics *mlist[1] = {&metrics};
static struct pier_env env;

/* Feed `in` in one piece; return the output as a NUL-terminated string (static). */
static const char *feed(struct pier_session *s, const char *in, int *closing) {
    static char out[65536];
    pier_buf_reset(&env.out);
    *closing = pier_session_feed(s, in, strlen(in));
    snprintf(out, sizeof out, "%.*s", (int)env.out.len, env.out.data ? env.out.data : "");
    return out;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* The status of the first final answer to `in` on a fresh session fed in pieces of `step`
 * bytes (0: all at once), and whether the session closed. */
static int status_of(const char *in, size_t step, int *closing) {
    struct pier_session s;
    pier_session_init(&s, &env);
    pier_buf_reset(&env.out);
    size_t n = strlen(in), off = 0;
    *closing = 0;
    if (step == 0)
        step = n;
    while (off < n && !*closing) {
        size_t k = n - off < step ? n - off : step;
        *closing = pier_session_feed(&s, in + off, k) == PIER_FEED_CLOSE;
        off += k;
    }
    pier_session_reset(&s);
    const char *o = env.out.data ? env.out.data : "";
    size_t len = env.out.len;
    while (len >= 12 && strncmp(o, "HTTP/1.1 100 ", 13) == 0) { /* skip 100 Continue */
        const char *e = memmem(o, len, "\r\n\r\n", 4);
        if (e == NULL)
            return -1;
        len -= (size_t)(e + 4 - o);
        o = e + 4;
    }
    return len >= 12 ? atoi(o + 9) : 0;
}

/* Each worker thread runs sessions of its own; nothing they share may be written without
 * synchronisation (ThreadSanitizer checks this under the tsan preset). */
static void *worker(void *arg) {
    (void)arg;
    struct pier_env wenv;
    struct pier_metrics *m = calloc(1, sizeof *m); /* one writer per metrics block */
    if (m == NULL)
        return NULL;
    pier_env_init(&wenv, &cfg, &app, m);
    for (int i = 0; i < 200; i++) {
        struct pier_session s;
        pier_session_init(&s, &wenv);
        pier_session_feed(&s, "GET /prod/nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 40);
        static const char chunked[] = "POST /prod/echo HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                      "application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      "2\r\n{}\r\n0\r\n\r\n";
        pier_session_feed(&s, chunked, sizeof chunked - 1);
        pier_session_reset(&s);
        pier_buf_reset(&wenv.out);
    }
    pier_env_destroy(&wenv);
    free(m);
    return NULL;
}

int main(void) {
    pier_buf_t e;
    pier_buf_init(&e);
    const char *sets[] = {"prefix=/prod", "environment=unit", "limits.max_body_bytes=64"};
    if (pier_config_load(&cfg, NULL, sets, 3, &e) != 0)
        return 2;
    app.worker_metrics = mlist;
    app.nworkers = 1;
    app.routes = pier_routes;
    app.nroutes = pier_routes_count;
    app.start_mono_ns = pier_now_ns();
    pier_app_collect_components(&app);
    int devnull = open("/dev/null", O_WRONLY);
    pier_log_set_fd(devnull);
    pier_env_init(&env, &cfg, &app, &metrics);

    /* first, two worker threads side by side, before this thread has run any session: what
     * a session shares between workers must be ready (or constant) before they start */
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, worker, NULL) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);

    struct pier_session s;
    int closing;
    pier_session_init(&s, &env);
    const char *out = feed(&s, "GET /prod/health HTTP/1.1\r\nHost: x\r\n\r\n", &closing);
    CHECK(!closing);
    CHECK(strncmp(out, "HTTP/1.1 200 OK\r\nDate: ", 23) == 0);
    CHECK_STR_CONTAINS(out, "\"environment\":\"unit\"");
    CHECK(s.phase == PIER_PHASE_IDLE);

    /* pipelined: three answers, in order, in one output */
    out = feed(&s,
               "GET /prod/health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /prod/x HTTP/1.1\r\nHost: "
               "x\r\n\r\nHEAD /prod/health HTTP/1.1\r\nHost: x\r\n\r\n",
               &closing);
    CHECK(!closing);
    CHECK(count(out, "HTTP/1.1 ") == 3);
    const char *a = strstr(out, "200 OK"), *b = strstr(out, "404 Not Found");
    CHECK(a && b && a < b);
    CHECK(count(out, "\"status\":\"pass\"") == 1); /* HEAD sent no body */

    /* a request split across feeds */
    out = feed(
        &s, "POST /prod/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Le",
        &closing);
    CHECK(out[0] == '\0' && s.phase == PIER_PHASE_HEADERS);
    out = feed(&s, "ngth: 7\r\n\r\n[1,", &closing);
    CHECK(out[0] == '\0' && s.phase == PIER_PHASE_BODY);
    out = feed(&s, "2,3]", &closing);
    CHECK_STR_CONTAINS(out, "{\"received\":[1,2,3],\"bytes\":7}");

    /* body over the limit: 413 from Content-Length, before the body, and close */
    out = feed(&s, "POST /prod/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n", &closing);
    CHECK(closing);
    CHECK_STR_CONTAINS(out, "HTTP/1.1 413 Content Too Large");
    CHECK_STR_CONTAINS(out, "Connection: close");
    out = feed(&s, "GET /prod/health HTTP/1.1\r\n\r\n", &closing);
    CHECK(closing && out[0] == '\0'); /* nothing more is parsed once closing */
    pier_session_reset(&s);

    /* smuggling shape: Content-Length with Transfer-Encoding */
    pier_session_init(&s, &env);
    out = feed(
        &s, "POST /prod/echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        &closing);
    CHECK(closing);
    CHECK_STR_CONTAINS(out, "HTTP/1.1 400 Bad Request");
    pier_session_reset(&s);

    /* 100-continue */
    pier_session_init(&s, &env);
    out = feed(&s,
               "POST /prod/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: "
               "application/json\r\nContent-Length: 2\r\n\r\n",
               &closing);
    CHECK(strcmp(out, "HTTP/1.1 100 Continue\r\n\r\n") == 0);
    out = feed(&s, "{}", &closing);
    CHECK_STR_CONTAINS(out, "HTTP/1.1 200 OK");
    pier_session_reset(&s);

    /* timeout before the first byte: closed without an answer */
    pier_session_init(&s, &env);
    pier_buf_reset(&env.out);
    CHECK(pier_session_timeout(&s) == 1 && env.out.len == 0);
    pier_session_reset(&s);

    /* timeout while headers are incomplete: 408 */
    pier_session_init(&s, &env);
    feed(&s, "GET /prod/hea", &closing);
    pier_buf_reset(&env.out);
    CHECK(pier_session_timeout(&s) == 1);
    pier_buf_putc(&env.out, '\0');
    CHECK_STR_CONTAINS(env.out.data, "HTTP/1.1 408 Request Timeout");
    pier_session_reset(&s);

    /* RFC 9112 3.2: Host */
    CHECK(status_of("GET /prod/health HTTP/1.1\r\n\r\n", 0, &closing) == 400 && closing);
    CHECK(status_of("GET /prod/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, &closing) == 400);
    CHECK(status_of("GET /prod/health HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 0, &closing) == 400);
    CHECK(status_of("GET /prod/health HTTP/1.1\r\nHost: a b\r\n\r\n", 0, &closing) == 400);
    CHECK(status_of("GET /prod/health HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, &closing) == 400);
    CHECK(status_of("GET /prod/health HTTP/1.0\r\n\r\n", 0, &closing) == 200 && closing);
    CHECK(status_of("GET /prod/health HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 0, &closing) == 200);
    CHECK(status_of("GET /prod/health HTTP/1.1\r\nHost:\r\n\r\n", 0, &closing) == 200);

    /* methods: unknown tokens are 501, whole or dripped a byte at a time; garbage is 400 */
    for (size_t step = 0; step <= 1; step++) {
        CHECK(status_of("FROB /prod/health HTTP/1.1\r\nHost: a\r\n\r\n", step, &closing) == 501 &&
              closing);
        CHECK(status_of("GETX /prod/health HTTP/1.1\r\nHost: a\r\n\r\n", step, &closing) == 501);
        CHECK(status_of("get /prod/health HTTP/1.1\r\nHost: a\r\n\r\n", step, &closing) == 501);
        CHECK(status_of("PLAY /prod/health HTTP/1.1\r\nHost: a\r\n\r\n", step, &closing) == 501);
        /* an RTSP method is 501 whatever follows it: told by the method llhttp parsed, not by
         * the reason text of the error llhttp gives for what follows */
        CHECK(status_of("PLAY /prod/health XTTP/1.1\r\nHost: a\r\n\r\n", step, &closing) == 501);
        CHECK(status_of("SETUP /prod/health RTSP/1.0\r\nHost: a\r\n\r\n", step, &closing) == 501);
        CHECK(status_of("FLUSH /prod/health HTTP/1.0\r\n\r\n", step, &closing) == 501);
        /* an HTTP method with a protocol that is none: malformed */
        CHECK(status_of("GET /prod/health XTTP/1.1\r\nHost: a\r\n\r\n", step, &closing) == 400);
        CHECK(status_of("G(T /prod/health HTTP/1.1\r\nHost: a\r\n\r\n", step, &closing) == 400);
        CHECK(status_of(" GET /prod/health HTTP/1.1\r\nHost: a\r\n\r\n", step, &closing) == 400);
        CHECK(status_of("FRO\r\n", step, &closing) == 400);
    }
    CHECK(status_of("FROBNICATE", 1, &closing) == 0 && !closing); /* undecided: waits */

    /* the request line alone over limits.max_header_bytes: 414; the headers over it: 431 */
    {
        size_t max = (size_t)cfg.max_header_bytes;
        char *big = malloc(max + 200);
        int n = snprintf(big, max + 200, "GET /prod/health?%0*d HTTP/1.1\r\nHost: a\r\n\r\n",
                         (int)max, 0);
        CHECK(n > 0 && status_of(big, 0, &closing) == 414 && closing);
        CHECK(status_of(big, 1000, &closing) == 414);
        snprintf(big, max + 200, "GET /prod/health HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n",
                 (int)max, 0);
        CHECK(status_of(big, 0, &closing) == 431 && closing);
        CHECK(status_of(big, 1000, &closing) == 431);
        /* the largest request line that fits still gets its answer */
        snprintf(big, max + 200, "GET /prod/health?%0*d HTTP/1.1\r\n\r\n", (int)max - 40, 0);
        CHECK(status_of(big, 0, &closing) == 400); /* parsed: refused for its missing Host */
        free(big);
    }

    /* header fields: 64 are accepted ("more than 64" is the limit), the 65th gets 431; the
     * count holds however the head is split across reads */
    {
        char head[4096];
        for (int fields = 63; fields <= 65; fields++) {
            int n = snprintf(head, sizeof head, "GET /prod/health HTTP/1.1\r\nHost: a\r\n");
            for (int i = 1; i < fields; i++) /* Host is the first field */
                n += snprintf(head + n, sizeof head - (size_t)n, "X-%d: v\r\n", i);
            snprintf(head + n, sizeof head - (size_t)n, "\r\n");
            for (size_t step = 0; step <= 7; step += 7) {
                int want = fields <= 64 ? 200 : 431;
                int got = status_of(head, step, &closing);
                if (got != want)
                    fprintf(stderr, "  %d header fields (step %zu): %d, expected %d\n", fields,
                            step, got, want);
                CHECK(got == want && closing == (want == 431));
            }
        }
    }

    /* a fragment in the target */
    CHECK(status_of("GET /prod/health#top HTTP/1.1\r\nHost: a\r\n\r\n", 0, &closing) == 400);

    /* 100 Continue only for a body that will be read; otherwise the answer at once */
    const char *post = "POST %s HTTP/1.1\r\nHost: a\r\nContent-Type: %s\r\nContent-Length: "
                       "2\r\nExpect: 100-continue\r\n\r\n";
    struct {
        const char *path, *type;
        int status;
    } cont[] = {{"/prod/echo", "application/json", 100},
                {"/prod/nowhere", "application/json", 404},
                {"/prod/health", "application/json", 405},
                {"/prod/echo", "text/plain", 415}};
    for (size_t i = 0; i < sizeof cont / sizeof cont[0]; i++) {
        char req[256];
        snprintf(req, sizeof req, post, cont[i].path, cont[i].type);
        struct pier_session s2;
        pier_session_init(&s2, &env);
        out = feed(&s2, req, &closing);
        CHECK(atoi(out + 9) == cont[i].status);
        CHECK(cont[i].status == 100 ? !closing : closing && strstr(out, " 100 ") == NULL);
        pier_session_reset(&s2);
    }

    /* counters moved */
    CHECK(pier_counter_get(&metrics.bad[PIER_BAD_BODY_TOO_LARGE]) == 1);
    CHECK(pier_counter_get(&metrics.bad[PIER_BAD_HEADER_TIMEOUT]) == 1);

    /* chunked bodies (llhttp walks them, src/chunked.c): the same answer whole, a byte at a
     * time and in 7-byte pieces; the rules pier adds to llhttp 8.1's are the last rows. Each
     * refused body has data, so that accepting it by mistake would answer 200. */
    {
        static const struct {
            const char *body;
            int status;
        } cases[] = {
            {"2\r\n{}\r\n0\r\n\r\n", 200},
            {"2;a=\"x y\";b\r\n{}\r\n0;c=d\r\nX-T: v\r\nY:\r\n\r\n", 200},
            {"1\r\n[\r\n00000001\r\n]\r\n0\r\n\r\n", 200},
            {"zz\r\n{}\r\n0\r\n\r\n", 400},
            {"1ffffffffffffffff\r\n", 400},
            {"2 \r\n{}\r\n0\r\n\r\n", 400},
            {"2\n{}\r\n0\r\n\r\n", 400},
            {"2\r\r{}\r\n0\r\n\r\n", 400},
            {"2\r\n{}XX0\r\n\r\n", 400},
            {"2\r\n{}\r0\r\n\r\n", 400},
            {"2;a=\x01\r\n{}\r\n0\r\n\r\n", 400},
            {"2\r\n{}\r\n0\r\nBad Name: x\r\n\r\n", 400},
            {"2\r\n{}\r\n0\r\nX : y\r\n\r\n", 400},
            {"2\r\n{}\r\n0\r\nX: a\x01\r\n\r\n", 400},
            {"2\r\n{}\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
            {"41\r\n", 413}, /* more than max_body_bytes (64) */
            {"20\r\n{\"k\":\"012345678901234567890123\"}\r\n21\r\n", 413}, /* 32 + 33 */
            {"2\r\n{}\r\n0\r\n\n", 400},                 /* bare LF ending the message */
            {"2\r\n{}\r\n0\r\nX: a\r\n\n", 400},         /* the same after a trailer */
            {"2\r\n{}\r\n0\r\nX: a\r\n b\r\n\r\n", 400}, /* obs-fold in a trailer */
            {"2\r\n{}\r\n0\r\nX: a\r\n\tb\r\nY: c\r\n\r\n", 400},
            {"2\r\n{}\r\n0\r\n: y\r\n\r\n", 400}, /* empty trailer name */
        };
        const char *head = "POST /prod/echo HTTP/1.1\r\nHost: a\r\nContent-Type: "
                           "application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        char req[512];
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            snprintf(req, sizeof req, "%s%s", head, cases[i].body);
            for (size_t step = 0; step <= 7; step += step ? 6 : 1) {
                int got = status_of(req, step, &closing);
                if (got != cases[i].status)
                    fprintf(stderr, "  chunked case %zu (step %zu): %d, expected %d\n", i, step,
                            got, cases[i].status);
                CHECK(got == cases[i].status && closing == (cases[i].status != 200));
            }
        }
        /* the next request follows the last chunk in the same bytes: both are answered */
        snprintf(req, sizeof req,
                 "%s2\r\n{}\r\n0\r\nX: y\r\n\r\nGET /prod/x HTTP/1.1\r\nHost: a\r\n\r\n", head);
        for (size_t step = 0; step <= 7; step++) {
            pier_session_init(&s, &env);
            pier_buf_reset(&env.out);
            for (size_t off = 0, n = strlen(req); off < n; off += step ? step : n)
                CHECK(pier_session_feed(&s, req + off, step && n - off > step ? step : n - off) ==
                      PIER_FEED_OK);
            pier_buf_putc(&env.out, '\0');
            CHECK(count(env.out.data, "HTTP/1.1 ") == 2);
            CHECK_STR_CONTAINS(env.out.data, "{\"received\":{},\"bytes\":2}");
            CHECK_STR_CONTAINS(env.out.data, "HTTP/1.1 404 Not Found");
            pier_session_reset(&s);
        }
        /* extensions and trailers each get limits.max_header_bytes */
        size_t max = (size_t)cfg.max_header_bytes, size = max + 512;
        char *big = malloc(size);
        int n = snprintf(big, size, "%s0\r\nX:%*s\r\n\r\n", head, (int)max, "a");
        CHECK(n > 0 && status_of(big, 0, &closing) == 431 && closing);
        CHECK(status_of(big, 4096, &closing) == 431);
        snprintf(big, size, "%s2;%0*d\r\n{}\r\n0\r\n\r\n", head, (int)max, 0);
        CHECK(status_of(big, 0, &closing) == 400 && closing);
        CHECK(status_of(big, 4096, &closing) == 400);
        snprintf(big, size, "%s2\r\n{}\r\n0\r\nX:%*s\r\n\r\n", head, (int)max - 100, "a");
        CHECK(status_of(big, 0, &closing) == 200); /* under the budget */
        free(big);
    }

    pier_env_destroy(&env);
    pier_buf_free(&e);
    close(devnull);
    return check_report("session");
}
