/* router — pattern matching over the route table; see include/pier/router.h.
 *
 * The table is small (a dozen rows) and patterns are short, so a linear scan that compares
 * segments in place beats any index: no allocation, no preprocessing, and the order of the
 * table is the order of precedence.
 */
#include "pier/router.h"

#include <string.h>

/* Does `pattern` match `path`? Fills params for {name} segments. */
static int pattern_match(const char *pattern, struct pier_str path, struct pier_param *params,
                         size_t *nparams) {
    const char *pp = pattern;
    const char *sp = path.p, *end = path.p + path.n;
    size_t np = 0;
    /* both start with '/'; walk segment by segment */
    while (*pp && sp < end) {
        if (*pp != '/' || *sp != '/')
            return 0;
        pp++;
        sp++;
        const char *pseg_end = strchr(pp, '/');
        size_t plen = pseg_end ? (size_t)(pseg_end - pp) : strlen(pp);
        const char *sseg_end = memchr(sp, '/', (size_t)(end - sp));
        size_t slen = sseg_end ? (size_t)(sseg_end - sp) : (size_t)(end - sp);
        if (plen >= 2 && pp[0] == '{' && pp[plen - 1] == '}') {
            if (slen == 0 || np == PIER_MAX_PARAMS)
                return 0;
            params[np].name.p = pp + 1;
            params[np].name.n = plen - 2;
            params[np].value.p = sp;
            params[np].value.n = slen;
            np++;
        } else if (plen != slen || memcmp(pp, sp, plen) != 0) {
            return 0;
        }
        pp += plen;
        sp += slen;
    }
    if (*pp || sp != end)
        return 0;
    *nparams = np;
    return 1;
}

static void allow_add(char *allow, size_t size, const char *method) {
    size_t n = strlen(allow), m = strlen(method);
    /* skip duplicates: "GET" twice, or HEAD added for GET and listed too */
    for (const char *p = allow; (p = strstr(p, method)) != NULL; p += m) {
        if ((p == allow || p[-1] == ' ') && (p[m] == ',' || p[m] == '\0'))
            return;
    }
    if (n + m + 3 > size)
        return;
    if (n) {
        memcpy(allow + n, ", ", 2);
        n += 2;
    }
    memcpy(allow + n, method, m + 1);
}

int pier_router_match(const struct pier_route *routes, size_t nroutes, const char *method,
                      struct pier_str path, unsigned skip_flags, struct pier_param *params,
                      size_t *nparams, char *allow, size_t allow_size) {
    int path_known = 0;
    int is_head = strcmp(method, "HEAD") == 0;
    if (allow_size)
        allow[0] = '\0';
    for (size_t i = 0; i < nroutes; i++) {
        const struct pier_route *r = &routes[i];
        if (r->flags & skip_flags)
            continue;
        size_t np = 0;
        struct pier_param tmp[PIER_MAX_PARAMS];
        if (!pattern_match(r->pattern, path, tmp, &np))
            continue;
        if (strcmp(r->method, method) == 0 || (is_head && strcmp(r->method, "GET") == 0)) {
            memcpy(params, tmp, np * sizeof tmp[0]);
            *nparams = np;
            return (int)i;
        }
        path_known = 1;
        allow_add(allow, allow_size, r->method);
        if (strcmp(r->method, "GET") == 0)
            allow_add(allow, allow_size, "HEAD");
    }
    if (!path_known)
        return PIER_ROUTE_NONE;
    allow_add(allow, allow_size, "OPTIONS");
    return PIER_ROUTE_WRONG_METHOD;
}
