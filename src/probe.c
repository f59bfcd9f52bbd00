/* probe — a blocking one-shot HTTP GET with a deadline; see include/pier/probe.h.
 * Deliberately not libuv: it runs in a fresh process for one request and exits. */
#include "pier/probe.h"
#include "pier/net.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for `events` on fd until the deadline; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long long deadline) {
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, (int)left);
        if (rc > 0)
            return 1;
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

int pier_probe(const char *url, int timeout_ms, char *why, unsigned why_size) {
    char host[128], path[1024];
    int port = 80;
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(why, why_size, "unsupported URL %s: expected http://HOST[:PORT]/PATH", url);
        return 1;
    }
    const char *h = url + 7;
    const char *slash = strchr(h, '/');
    const char *hend = slash ? slash : h + strlen(h);
    snprintf(path, sizeof path, "%s", slash ? slash : "/");
    const char *colon = NULL;
    if (h[0] == '[') { /* [::1]:8000 */
        const char *rb = memchr(h, ']', (size_t)(hend - h));
        if (rb == NULL) {
            snprintf(why, why_size, "bad IPv6 host in %s", url);
            return 1;
        }
        snprintf(host, sizeof host, "%.*s", (int)(rb - h - 1), h + 1);
        colon = rb + 1 < hend && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(hend - h));
        snprintf(host, sizeof host, "%.*s", (int)((colon ? colon : hend) - h), h);
    }
    if (colon) {
        port = atoi(colon + 1);
        if (port <= 0 || port > 65535) {
            snprintf(why, why_size, "bad port in %s", url);
            return 1;
        }
    }
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");

    struct sockaddr_storage ss;
    socklen_t sl;
    if (pier_net_addr(host, port, &ss, &sl) != 0) {
        snprintf(why, why_size, "host %s is not an IP address (no DNS in a probe)", host);
        return 1;
    }

    long long deadline = now_ms() + timeout_ms;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, why_size, "socket: %s", strerror(errno));
        return 1;
    }
    int result = 1;
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
        snprintf(why, why_size, "connect %s:%d: %s", host, port, strerror(errno));
        goto out;
    }
    int rc = wait_fd(fd, POLLOUT, deadline);
    int soerr = 0;
    socklen_t el = sizeof soerr;
    if (rc == 1)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el);
    if (rc != 1 || soerr != 0) {
        snprintf(why, why_size, "connect %s:%d: %s", host, port,
                 rc == 0 ? "timed out" : strerror(soerr ? soerr : errno));
        goto out;
    }
    char req[1400];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: pier-probe\r\n"
                     "Connection: close\r\n\r\n",
                     path, host, port);
    if (n < 0 || (size_t)n >= sizeof req || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        snprintf(why, why_size, "cannot send the request");
        goto out;
    }
    char resp[64];
    size_t got = 0;
    while (got < 12) { /* "HTTP/1.1 200" */
        rc = wait_fd(fd, POLLIN, deadline);
        if (rc != 1) {
            snprintf(why, why_size, "no answer from %s:%d within %d ms", host, port, timeout_ms);
            goto out;
        }
        ssize_t r = recv(fd, resp + got, sizeof resp - 1 - got, 0);
        if (r <= 0) {
            snprintf(why, why_size, "connection closed before a status line");
            goto out;
        }
        got += (size_t)r;
    }
    resp[got] = '\0';
    if (strncmp(resp, "HTTP/1.", 7) != 0) {
        snprintf(why, why_size, "not an HTTP answer");
        goto out;
    }
    int status = atoi(resp + 9);
    snprintf(why, why_size, "%s -> %d", url, status);
    result = status >= 200 && status < 300 ? 0 : 1;
out:
    close(fd);
    return result;
}
