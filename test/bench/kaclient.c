/* kaclient — the benchmark's two small measuring tools, in one binary.
 *
 *   kaclient run PORT PATH N
 *       Open one keep-alive connection to 127.0.0.1:PORT and send N `GET PATH` requests one
 *       after another (each waits for its whole response, as wrk does per connection). Used
 *       for the deterministic instructions-per-request figure: run it under a server started
 *       by callgrind with N = 1,000 and N = 11,000 and subtract. Retries the connect for up to
 *       60 s, because a server under valgrind takes seconds to start. Exit 0 when every
 *       response was 2xx.
 *
 *   kaclient start PORT PATH PIDFILE LOGFILE -- COMMAND [ARGS...]
 *       fork + exec COMMAND (stdout and stderr to LOGFILE), then poll 127.0.0.1:PORT with
 *       `GET PATH` every 100 µs until a 2xx answer, and print the milliseconds from just
 *       before the fork to that answer. The server keeps running; its PID goes to PIDFILE so
 *       the caller stops it by PID. Gives up (exit 1) after 10 s.
 *
 * Requests look like wrk's: a request line and a Host header, nothing else.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read one whole response (head + Content-Length body) into buf; returns its status, or -1.
 * Bytes past it stay in buf (*have), for the next call. */
static int read_response(int fd, char *buf, size_t size, size_t *have) {
    for (;;) {
        char *end = NULL;
        if (*have >= 4) {
            buf[*have] = '\0';
            end = strstr(buf, "\r\n\r\n");
        }
        if (end) {
            size_t head = (size_t)(end - buf) + 4;
            size_t body = 0;
            for (char *p = strstr(buf, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n"))
                if (strncasecmp(p + 2, "Content-Length:", 15) == 0)
                    body = strtoul(p + 17, NULL, 10);
            if (*have >= head + body) {
                int status = (*have > 12 && strncmp(buf, "HTTP/1.", 7) == 0) ? atoi(buf + 9) : -1;
                memmove(buf, buf + head + body, *have - head - body);
                *have -= head + body;
                return status;
            }
        }
        if (*have + 1 >= size)
            return -1;
        ssize_t r = read(fd, buf + *have, size - 1 - *have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        *have += (size_t)r;
    }
}

static int run(int port, const char *path, long n) {
    char req[512];
    int len =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
    int fd = -1;
    double give_up = now_ms() + 60000;
    while ((fd = dial(port)) < 0) {
        if (now_ms() > give_up) {
            fprintf(stderr, "kaclient: cannot connect to 127.0.0.1:%d\n", port);
            return 1;
        }
        usleep(20000);
    }
    static char buf[1 << 16];
    size_t have = 0;
    for (long i = 0; i < n; i++) {
        if (send_all(fd, req, (size_t)len) != 0) {
            fprintf(stderr, "kaclient: write failed after %ld requests\n", i);
            return 1;
        }
        int status = read_response(fd, buf, sizeof buf, &have);
        if (status < 200 || status > 299) {
            fprintf(stderr, "kaclient: request %ld: status %d\n", i, status);
            return 1;
        }
    }
    close(fd);
    return 0;
}

/* One probe: connect, GET, 2xx? */
static int probe_once(int port, const char *req, size_t len) {
    int fd = dial(port);
    if (fd < 0)
        return 0;
    char buf[8192];
    size_t have = 0;
    int ok = send_all(fd, req, len) == 0;
    int status = ok ? read_response(fd, buf, sizeof buf, &have) : -1;
    close(fd);
    return status >= 200 && status <= 299;
}

static int start(int port, const char *path, const char *pidfile, const char *logfile,
                 char **argv) {
    char req[512];
    int len =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
    int logfd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        perror(logfile);
        return 1;
    }
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        dup2(logfd, 1);
        dup2(logfd, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    FILE *f = fopen(pidfile, "w");
    if (f) {
        fprintf(f, "%d\n", (int)pid);
        fclose(f);
    }
    double give_up = t0 + 10000;
    while (now_ms() < give_up) {
        if (probe_once(port, req, (size_t)len)) {
            printf("%.3f\n", now_ms() - t0);
            return 0;
        }
        usleep(100);
    }
    fprintf(stderr, "kaclient: no 2xx from 127.0.0.1:%d%s within 10 s\n", port, path);
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "run") == 0)
        return run(atoi(argv[2]), argv[3], atol(argv[4]));
    if (argc >= 8 && strcmp(argv[1], "start") == 0 && strcmp(argv[6], "--") == 0)
        return start(atoi(argv[2]), argv[3], argv[4], argv[5], argv + 7);
    fprintf(stderr, "usage: kaclient run PORT PATH N\n"
                    "       kaclient start PORT PATH PIDFILE LOGFILE -- COMMAND [ARGS...]\n");
    return 2;
}
