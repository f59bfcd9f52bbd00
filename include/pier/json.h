/* json — a strict JSON validator (RFC 8259), without building a tree.
 *
 * /echo answers with the document it was sent, so all it needs to know is whether the bytes
 * are exactly one JSON value: the whole input (surrounding whitespace aside), valid UTF-8,
 * strings without raw control characters, numbers in JSON's grammar, no trailing data.
 * The check is one pass with no allocation and no recursion (nesting is tracked in a bit
 * stack), so its cost is linear in the input and its stack use fixed.
 */
#ifndef PIER_JSON_H
#define PIER_JSON_H

#include <stddef.h>

/* Deeper nesting than this is refused (a document that deep is an attack, not data). */
#define PIER_JSON_MAX_DEPTH 512

struct pier_json_error {
    size_t offset;    /* byte where the input stops being JSON */
    const char *what; /* what is wrong there, for a person: "trailing data after the value" */
};

/* 0 when p[0..n) is exactly one JSON value, possibly surrounded by whitespace; then *start
 * and *len (when not NULL) give the value without that whitespace. Else -1 and *err says
 * where and what. */
int pier_json_check(const char *p, size_t n, size_t *start, size_t *len,
                    struct pier_json_error *err);

#endif
