/* llhttp_cost — what llhttp alone spends on the bodies of the benchmark's POST /echo.
 *
 *   llhttp_cost MODE N
 *       Repeat N times, then print a checksum of the results:
 *         announce  llhttp_init and the head src/chunked.c announces (what each chunked body
 *                   would cost if that head were parsed for every body)
 *         chunked   a copy of the parser as that head left it (what src/chunked.c does), then
 *                   the chunked body kaclient sends (two chunks and the last one)
 *         length    llhttp_init, a head announcing this body's Content-Length (it differs per
 *                   request, so it would be parsed for each), then the 38 bytes
 * Run under callgrind with N = 1,000 and N = 11,000; the difference / 10,000 is the cost of one
 * body (test/bench/run.sh, part post). Build: cc -O2 -DLLHTTP_STRICT_MODE=1 with llhttp's C
 * sources, as third_party/llhttp builds them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#define JSON "{\"id\":1,\"items\":[1,2,3],\"name\":\"pier\"}" /* kaclient's POST_JSON */
static const char ANNOUNCE[] = "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
static const char CHUNKED[] = "10\r\n{\"id\":1,\"items\":\r\n16\r\n[1,2,3],\"name\":\"pier\"}\r\n"
                              "0\r\n\r\n";

static size_t body_bytes;

static int on_body(llhttp_t *p, const char *at, size_t len) {
    (void)p;
    (void)at;
    body_bytes += len;
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    (void)p;
    return HPE_PAUSED;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: llhttp_cost announce|chunked|length N\n");
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    llhttp_t announced, p;
    llhttp_init(&announced, HTTP_REQUEST, &settings);
    if (llhttp_execute(&announced, ANNOUNCE, sizeof ANNOUNCE - 1) != HPE_OK)
        return 1;
    char head[64];
    long done = 0;
    for (long i = 0; i < n; i++) {
        llhttp_errno_t err;
        if (strcmp(mode, "announce") == 0) {
            llhttp_init(&p, HTTP_REQUEST, &settings);
            err = llhttp_execute(&p, ANNOUNCE, sizeof ANNOUNCE - 1);
            done += err == HPE_OK;
        } else if (strcmp(mode, "chunked") == 0) {
            p = announced;
            err = llhttp_execute(&p, CHUNKED, sizeof CHUNKED - 1);
            done += err == HPE_PAUSED;
        } else if (strcmp(mode, "length") == 0) {
            int k = snprintf(head, sizeof head, "PUT / HTTP/1.1\r\nContent-Length: %zu\r\n\r\n",
                             sizeof JSON - 1);
            llhttp_init(&p, HTTP_REQUEST, &settings);
            err = llhttp_execute(&p, head, (size_t)k);
            if (err == HPE_OK)
                err = llhttp_execute(&p, JSON, sizeof JSON - 1);
            done += err == HPE_PAUSED;
        } else {
            fprintf(stderr, "llhttp_cost: unknown mode %s\n", mode);
            return 2;
        }
    }
    printf("%ld of %ld bodies parsed, %zu data bytes\n", done, n, body_bytes);
    return done == n ? 0 : 1;
}
