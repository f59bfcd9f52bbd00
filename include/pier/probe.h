/* probe — `pier --probe [URL]`: a tiny HTTP client for container health checks.
 * Images built FROM scratch have no shell and no curl; the binary probes itself. */
#ifndef PIER_PROBE_H
#define PIER_PROBE_H

/* GET url (http://HOST[:PORT]/PATH, HOST an IP literal or "localhost") with a total timeout.
 * Returns 0 for a 2xx answer, 1 for anything else; writes one line about it to `why`. */
int pier_probe(const char *url, int timeout_ms, char *why, unsigned why_size);

#endif
