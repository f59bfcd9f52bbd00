/* router — pattern matching over the route table; see include/pier/router.h.
 *
 * The table is small (a dozen rows), so a linear scan beats any index: no allocation, and the
 * order of the table is the order of precedence. A row without parameters matches only a path
 * of its exact length, so most rows cost one compare of two numbers.
 */
#include "pier/router.h"

#include <string.h>

/* Does `pattern` match `path` segment by segment? Fills params for {name} segments. */
static int pattern_match(const char *pattern, size_t pattern_len, struct pier_str path,
                         struct pier_param *params, size_t *nparams) {
    const char *pp = pattern, *pend = pattern + pattern_len;
    const char *sp = path.p, *end = path.p + path.n;
    size_t np = 0;
    /* both start with '/' */
    while (pp < pend && sp < end) {
        if (*pp != '/' || *sp != '/')
            return 0;
        pp++;
        sp++;
        const char *pseg_end = memchr(pp, '/', (size_t)(pend - pp));
        size_t plen = pseg_end ? (size_t)(pseg_end - pp) : (size_t)(pend - pp);
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
    if (pp != pend || sp != end)
        return 0;
    *nparams = np;
    return 1;
}

/* Add `method` to the Allow list unless it is there already. */
static void allow_add(char *allow, size_t size, const char *method) {
    size_t n = strlen(allow), m = strlen(method);
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

int pier_router_match(const struct pier_route *routes, size_t nroutes, int method,
                      struct pier_str path, unsigned skip_flags, struct pier_param *params,
                      size_t *nparams, char *allow, size_t allow_size) {
    int path_known = 0;
    if (allow_size)
        allow[0] = '\0';
    for (size_t i = 0; i < nroutes; i++) {
        const struct pier_route *r = &routes[i];
        if (r->flags & skip_flags)
            continue;
        size_t np = 0;
        struct pier_param tmp[PIER_MAX_PARAMS];
        if (!(r->flags & PIER_ROUTE_PARAMS)) {
            if (r->pattern_len != path.n || memcmp(r->pattern, path.p, path.n) != 0)
                continue;
        } else if (!pattern_match(r->pattern, r->pattern_len, path, tmp, &np)) {
            continue;
        }
        if (r->method_id == method || (method == PIER_M_HEAD && r->method_id == PIER_M_GET)) {
            memcpy(params, tmp, np * sizeof tmp[0]);
            *nparams = np;
            return (int)i;
        }
        /* the path is known, the method is not: collect what Allow lists */
        path_known = 1;
        allow_add(allow, allow_size, r->method);
        if (r->method_id == PIER_M_GET)
            allow_add(allow, allow_size, "HEAD");
    }
    if (!path_known)
        return PIER_ROUTE_NONE;
    allow_add(allow, allow_size, "OPTIONS");
    return PIER_ROUTE_WRONG_METHOD;
}
