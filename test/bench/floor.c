/* floor — the cheapest server of pier's design, for the benchmark's CPU-per-request floor.
 *
 *   floor PORT RESPONSE_FILE
 *
 * One thread, one level-triggered epoll loop on 127.0.0.1:PORT. A readable connection gets one
 * read(2) and, when it returned bytes, one write(2) of RESPONSE_FILE's bytes (the harness puts
 * pier's own /health answer there, so both send the same bytes). No parsing: one read is taken
 * as one request, which holds for wrk (one request in flight per connection). What pier spends
 * above this is what its parsing, routing and bookkeeping cost.
 */
#define _GNU_SOURCE /* accept4 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

int main(int argc, char **argv) {
    static char resp[1 << 16], in[1 << 16];
    FILE *f = argc == 3 ? fopen(argv[2], "rb") : NULL;
    if (!f) {
        fprintf(stderr, "usage: floor PORT RESPONSE_FILE\n");
        return 2;
    }
    size_t resp_len = fread(resp, 1, sizeof resp, f);
    fclose(f);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0) {
        perror("floor: bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as pier */
                    ev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            ssize_t r = read(fd, in, sizeof in);
            if (r > 0 && write(fd, resp, resp_len) == (ssize_t)resp_len)
                continue;
            if (r < 0)
                continue; /* EAGAIN: a spurious wakeup */
            close(fd);    /* end of stream, or a short write this floor does not finish */
        }
    }
}
