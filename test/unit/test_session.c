/* Unit tests for the session seam: bytes in, bytes out, no socket. */
#include <unistd.h>
#include <fcntl.h>

#include "check.h"
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

int main(void) {
    pier_buf_t e;
    pier_buf_init(&e);
    const char *sets[] = {"prefix=/prod", "environment=unit", "limits.max_body_bytes=64"};
    if (pier_config_load(&cfg, NULL, sets, 3, &e) != 0)
        return 2;
    app.worker_metrics = mlist;
    app.nworkers = 1;
    app.start_mono_ns = pier_now_ns();
    int devnull = open("/dev/null", O_WRONLY);
    pier_log_set_fd(devnull);
    pier_env_init(&env, &cfg, &app, &metrics);

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
               "GET /prod/health/live HTTP/1.1\r\n\r\nGET /prod/x HTTP/1.1\r\n\r\n"
               "HEAD /prod/health HTTP/1.1\r\n\r\n",
               &closing);
    CHECK(!closing);
    CHECK(count(out, "HTTP/1.1 ") == 3);
    const char *a = strstr(out, "200 OK"), *b = strstr(out, "404 Not Found");
    CHECK(a && b && a < b);
    CHECK(count(out, "\"status\":\"pass\"") == 1); /* HEAD sent no body */

    /* a request split across feeds */
    out = feed(&s, "POST /prod/echo HTTP/1.1\r\nContent-Type: application/json\r\nContent-Le",
               &closing);
    CHECK(out[0] == '\0' && s.phase == PIER_PHASE_HEADERS);
    out = feed(&s, "ngth: 7\r\n\r\n[1,", &closing);
    CHECK(out[0] == '\0' && s.phase == PIER_PHASE_BODY);
    out = feed(&s, "2,3]", &closing);
    CHECK_STR_CONTAINS(out, "{\"received\":[1,2,3],\"bytes\":7}");

    /* body over the limit: 413 from Content-Length, before the body, and close */
    out = feed(&s, "POST /prod/echo HTTP/1.1\r\nContent-Length: 65\r\n\r\n", &closing);
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
               "POST /prod/echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Type: "
               "application/json\r\nContent-Length: 2\r\n\r\n",
               &closing);
    CHECK(strcmp(out, "HTTP/1.1 100 Continue\r\n\r\n") == 0);
    out = feed(&s, "{}", &closing);
    CHECK_STR_CONTAINS(out, "HTTP/1.1 200 OK");
    pier_session_reset(&s);

    /* timeout while headers are incomplete: 408 */
    pier_session_init(&s, &env);
    feed(&s, "GET /prod/hea", &closing);
    pier_buf_reset(&env.out);
    CHECK(pier_session_timeout(&s) == 1);
    pier_buf_putc(&env.out, '\0');
    CHECK_STR_CONTAINS(env.out.data, "HTTP/1.1 408 Request Timeout");
    pier_session_reset(&s);

    /* counters moved */
    CHECK(pier_counter_get(&metrics.bad[PIER_BAD_BODY_TOO_LARGE]) == 1);
    CHECK(pier_counter_get(&metrics.bad[PIER_BAD_HEADER_TIMEOUT]) == 1);

    pier_env_destroy(&env);
    pier_buf_free(&e);
    close(devnull);
    return check_report("session");
}
