/* fmt — the few formatters on pier's hot paths (response heads, access-log lines, bodies).
 *
 * Each writes at p, which the caller has made room for, and returns the end of what it wrote.
 * Decimal numbers go two digits per step from a 200-byte table; hex needs no division.
 */
#ifndef PIER_FMT_H
#define PIER_FMT_H

#include <stdint.h>
#include <string.h>

#define PIER_FMT_U64_MAX 20 /* digits of UINT64_MAX */

static inline char *pier_fmt_mem(char *p, const void *src, size_t n) {
    if (n)
        memcpy(p, src, n);
    return p + n;
}
#define pier_fmt_lit(p, lit) pier_fmt_mem((p), (lit), sizeof(lit) - 1)

/* v in decimal; at most PIER_FMT_U64_MAX bytes */
char *pier_fmt_u64(char *p, uint64_t v);
/* s[0..n) as the inside of a JSON string: '"', '\\', controls, DEL and every byte above it
 * as escapes (so the output is ASCII and valid JSON whatever the input); at most 6n bytes */
char *pier_fmt_json_chars(char *p, const char *s, size_t n);
/* v as 16 lower-case hex digits, least significant nibble first (an id, not a number) */
char *pier_fmt_hex64(char *p, uint64_t v);

#endif
