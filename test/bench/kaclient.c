/* kaclient — the benchmark's small measuring tools, in one binary.
 *
 *   kaclient run PORT PATH N [CONNS [BODY]]
 *       Open CONNS (default 1) keep-alive connections to 127.0.0.1:PORT and send N `GET PATH`
 *       requests in all, each connection keeping one request in flight (as wrk does). Used for
 *       the deterministic instructions-per-request figure: run it under a server started by
 *       callgrind with N = 1,000 and N = 11,000 and subtract. Retries the first connect for up
 *       to 60 s, because a server under valgrind takes seconds to start. Exit 0 when every
 *       response was 2xx. BODY `chunked` or `length` sends `POST PATH` with a 38-byte JSON
 *       body instead: in two chunks and the last chunk, or with Content-Length.
 *
 *   kaclient idle PORT PATH N STEP PID...
 *       Open N keep-alive connections, STEP at a time; each sends one `GET PATH` and reads its
 *       2xx answer, then stays open and idle. Before the first and after each step it reads the
 *       summed VmRSS of the PIDs (the server's processes) and prints "conns rss_kib"; the last
 *       line is "slope BYTES", the least-squares bytes of server RSS per idle connection.
 *
 *   kaclient start PORT PATH PIDFILE LOGFILE -- COMMAND [ARGS...]
 *       fork + exec COMMAND (stdout and stderr to LOGFILE), then poll 127.0.0.1:PORT with
 *       `GET PATH` every 100 µs until a 2xx answer, and print the milliseconds from just
 *       before the fork to that answer. The server keeps running; its PID goes to PIDFILE so
 *       the caller stops it by PID. Gives up (exit 1) after 10 s.
 *
 * Requests look like wrk's: a request line and a Host header, nothing else (a POST adds
 * Content-Type and its framing field).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
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

static int request_for(char *req, size_t size, const char *path, int port) {
    return snprintf(req, size, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
}

#define POST_JSON "{\"id\":1,\"items\":[1,2,3],\"name\":\"pier\"}"

/* POST PATH with POST_JSON, framed as `body` says ("chunked" or "length"); -1 otherwise. */
static int post_for(char *req, size_t size, const char *path, int port, const char *body) {
    const char *head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                       "Content-Type: application/json\r\n";
    int n = snprintf(req, size, head, path, port);
    if (strcmp(body, "chunked") == 0) /* two chunks, split inside the JSON, and the last one */
        return n + snprintf(req + n, size - (size_t)n,
                            "Transfer-Encoding: chunked\r\n\r\n10\r\n%.16s\r\n%zx\r\n%s\r\n"
                            "0\r\n\r\n",
                            POST_JSON, sizeof POST_JSON - 1 - 16, POST_JSON + 16);
    if (strcmp(body, "length") == 0)
        return n + snprintf(req + n, size - (size_t)n, "Content-Length: %zu\r\n\r\n%s",
                            sizeof POST_JSON - 1, POST_JSON);
    return -1;
}

/* 10,000 idle connections need more descriptors than the usual soft limit of 1,024. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

struct ka_conn {
    int fd;
    size_t have;
    char buf[1 << 14];
};

static int run(int port, const char *path, long n, int conns, const char *body) {
    char req[512];
    int len = body ? post_for(req, sizeof req, path, port, body)
                   : request_for(req, sizeof req, path, port);
    if (len < 0) {
        fprintf(stderr, "kaclient: BODY is chunked or length, not %s\n", body);
        return 2;
    }
    if (conns < 1 || conns > 1024 || n < conns) {
        fprintf(stderr, "kaclient: run needs 1 <= CONNS <= 1024 and N >= CONNS\n");
        return 2;
    }
    struct ka_conn *c = calloc((size_t)conns, sizeof *c);
    struct pollfd *pfd = calloc((size_t)conns, sizeof *pfd);
    if (!c || !pfd)
        return 1;
    double give_up = now_ms() + 60000;
    for (int i = 0; i < conns; i++) {
        while ((c[i].fd = dial(port)) < 0) {
            if (now_ms() > give_up) {
                fprintf(stderr, "kaclient: cannot connect to 127.0.0.1:%d\n", port);
                return 1;
            }
            usleep(20000);
        }
        pfd[i].fd = c[i].fd;
        pfd[i].events = POLLIN;
    }
    long sent = 0, done = 0;
    for (int i = 0; i < conns; i++, sent++)
        if (send_all(c[i].fd, req, (size_t)len) != 0) {
            fprintf(stderr, "kaclient: write failed\n");
            return 1;
        }
    while (done < n) {
        if (poll(pfd, (nfds_t)conns, 60000) <= 0) {
            fprintf(stderr, "kaclient: no answer for 60 s after %ld responses\n", done);
            return 1;
        }
        for (int i = 0; i < conns; i++) {
            if (!pfd[i].revents)
                continue;
            /* one response per wakeup: each connection has exactly one request in flight */
            int status = read_response(c[i].fd, c[i].buf, sizeof c[i].buf, &c[i].have);
            if (status < 200 || status > 299) {
                fprintf(stderr, "kaclient: response %ld: status %d\n", done, status);
                return 1;
            }
            done++;
            if (sent < n) {
                if (send_all(c[i].fd, req, (size_t)len) != 0) {
                    fprintf(stderr, "kaclient: write failed after %ld responses\n", done);
                    return 1;
                }
                sent++;
            } else {
                pfd[i].fd = -1; /* this connection is finished */
            }
        }
    }
    for (int i = 0; i < conns; i++)
        close(c[i].fd);
    free(c);
    free(pfd);
    return 0;
}

static long rss_kib(char **pids, int npids) {
    long total = 0;
    for (int i = 0; i < npids; i++) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%s/status", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            return -1;
        long kib = -1;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "VmRSS: %ld", &kib) == 1)
                break;
        fclose(f);
        if (kib < 0)
            return -1;
        total += kib;
    }
    return total;
}

static int idle(int port, const char *path, long n, long step, char **pids, int npids) {
    char req[512], buf[8192];
    int len = request_for(req, sizeof req, path, port);
    if (n < 1 || step < 1 || n / step < 2 || n / step > 1000) {
        fprintf(stderr, "kaclient: idle needs 2 to 1000 steps\n");
        return 2;
    }
    raise_fd_limit();
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int points = 0;
    for (long open_now = 0;; open_now += step) {
        usleep(300000); /* let the server finish its accept and read callbacks */
        long kib = rss_kib(pids, npids);
        if (kib < 0) {
            fprintf(stderr, "kaclient: cannot read the server's RSS (did it exit?)\n");
            return 1;
        }
        printf("%ld %ld\n", open_now, kib);
        double x = (double)open_now, y = (double)kib * 1024;
        sx += x, sy += y, sxx += x * x, sxy += x * y, points++;
        if (open_now + step > n)
            break;
        for (long i = 0; i < step; i++) {
            int fd = dial(port);
            size_t have = 0;
            int status = fd < 0 ? -1
                         : send_all(fd, req, (size_t)len) != 0
                             ? -1
                             : read_response(fd, buf, sizeof buf, &have);
            if (status < 200 || status > 299) {
                fprintf(stderr, "kaclient: idle connection %ld: %s %d\n", open_now + i,
                        fd < 0 ? strerror(errno) : "status", status);
                return 1;
            }
            /* left open on purpose: the process exit closes them all */
        }
    }
    double slope = (points * sxy - sx * sy) / (points * sxx - sx * sx);
    printf("slope %.0f\n", slope);
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
    int len = request_for(req, sizeof req, path, port);
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
    if (argc >= 5 && argc <= 7 && strcmp(argv[1], "run") == 0)
        return run(atoi(argv[2]), argv[3], atol(argv[4]), argc >= 6 ? atoi(argv[5]) : 1,
                   argc == 7 ? argv[6] : NULL);
    if (argc >= 7 && strcmp(argv[1], "idle") == 0)
        return idle(atoi(argv[2]), argv[3], atol(argv[4]), atol(argv[5]), argv + 6, argc - 6);
    if (argc >= 8 && strcmp(argv[1], "start") == 0 && strcmp(argv[6], "--") == 0)
        return start(atoi(argv[2]), argv[3], argv[4], argv[5], argv + 7);
    fprintf(stderr, "usage: kaclient run PORT PATH N [CONNS [chunked|length]]\n"
                    "       kaclient idle PORT PATH N STEP PID...\n"
                    "       kaclient start PORT PATH PIDFILE LOGFILE -- COMMAND [ARGS...]\n");
    return 2;
}
