/* net — socket-address helpers shared by the listener, the probe and the config check. */
#ifndef PIER_NET_H
#define PIER_NET_H

#include <sys/socket.h>

/* Fill `ss` from an IPv4 or IPv6 literal and a port. Returns 0, or -22 (EINVAL) when `host`
 * is not an IP address (pier does no DNS lookups). `len` receives the address's size. */
int pier_net_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len);
/* The port of a bound or parsed address. */
int pier_net_port(const struct sockaddr_storage *ss);

#endif
