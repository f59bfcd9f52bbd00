/* json — strict JSON validation; see include/pier/json.h.
 *
 * A loop over the bytes with one state ("what may come next") and a bit stack saying, for
 * each open container, whether it is an object or an array. Strings are checked in one
 * helper: escapes, \u surrogate pairs, raw control characters and UTF-8 (the shortest form,
 * no surrogates, nothing past U+10FFFF: RFC 3629).
 */
#include "pier/json.h"

#include <stdint.h>
#include <string.h>

enum want {
    W_VALUE,        /* a value (top level, after ':' or after ',' in an array) */
    W_VALUE_OR_END, /* just after '[': a value or ']' */
    W_KEY_OR_END,   /* just after '{': a key or '}' */
    W_KEY,          /* after ',' in an object */
    W_COLON,        /* after a key */
    W_NEXT,         /* after a value: ',' or the container's end, or the end of input */
};

static int is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Four hex digits at p[0..4) as a code unit, or -1. */
static long hex4(const unsigned char *p, size_t left) {
    if (left < 4)
        return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Length of the UTF-8 sequence at p (1..4), or 0 when it is not valid UTF-8. */
static size_t utf8_len(const unsigned char *p, size_t left) {
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* no overlong forms */
        else if (c == 0xed)
            hi = 0x9f; /* no UTF-16 surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (left < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* A string starting at s[*i] == '"'; on success *i is past the closing quote. */
static const char *check_string(const unsigned char *s, size_t n, size_t *i) {
    size_t k = *i + 1;
    while (k < n) {
        unsigned char c = s[k];
        if (c == '"') {
            *i = k + 1;
            return NULL;
        }
        if (c < 0x20) {
            *i = k;
            return "control character in a string (escape it, like \\n or \\u0001)";
        }
        if (c == '\\') {
            if (k + 1 >= n)
                break;
            unsigned char e = s[k + 1];
            if (strchr("\"\\/bfnrt", e) && e != '\0') {
                k += 2;
                continue;
            }
            if (e != 'u') {
                *i = k;
                return "invalid escape in a string";
            }
            long u = hex4(s + k + 2, n - k - 2);
            if (u < 0) {
                *i = k;
                return "invalid \\u escape: expected four hex digits";
            }
            k += 6;
            if (u >= 0xdc00 && u <= 0xdfff) {
                *i = k - 6;
                return "invalid \\u escape: a low surrogate without a high one";
            }
            if (u >= 0xd800 && u <= 0xdbff) {
                long lo =
                    k + 1 < n && s[k] == '\\' && s[k + 1] == 'u' ? hex4(s + k + 2, n - k - 2) : -1;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    *i = k - 6;
                    return "invalid \\u escape: a high surrogate without a low one";
                }
                k += 6;
            }
            continue;
        }
        size_t len = utf8_len(s + k, n - k);
        if (len == 0) {
            *i = k;
            return "invalid UTF-8";
        }
        k += len;
    }
    *i = n;
    return "unterminated string";
}

/* A number starting at s[*i]; on success *i is past it. */
static const char *check_number(const unsigned char *s, size_t n, size_t *i) {
    size_t k = *i;
    if (k < n && s[k] == '-')
        k++;
    if (k < n && s[k] == '0') {
        k++;
    } else if (k < n && s[k] >= '1' && s[k] <= '9') {
        while (k < n && s[k] >= '0' && s[k] <= '9')
            k++;
    } else {
        *i = k;
        return "invalid number";
    }
    if (k < n && s[k] == '.') {
        k++;
        if (k >= n || s[k] < '0' || s[k] > '9') {
            *i = k;
            return "invalid number: digits must follow the decimal point";
        }
        while (k < n && s[k] >= '0' && s[k] <= '9')
            k++;
    }
    if (k < n && (s[k] == 'e' || s[k] == 'E')) {
        k++;
        if (k < n && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k >= n || s[k] < '0' || s[k] > '9') {
            *i = k;
            return "invalid number: digits must follow the exponent";
        }
        while (k < n && s[k] >= '0' && s[k] <= '9')
            k++;
    }
    *i = k;
    return NULL;
}

int pier_json_check(const char *text, size_t n, size_t *start, size_t *len,
                    struct pier_json_error *err) {
    const unsigned char *s = (const unsigned char *)text;
    uint64_t objects[PIER_JSON_MAX_DEPTH / 64] = {0}; /* bit set: that level is an object */
    size_t depth = 0, i = 0, first = 0;
    enum want want = W_VALUE;
    const char *what = NULL;
    int seen_value = 0;

    for (;;) {
        while (i < n && is_ws(s[i]))
            i++;
        if (i >= n) {
            if (want == W_NEXT && depth == 0)
                break;
            what = seen_value || depth ? "unexpected end of input" : "no JSON value";
            goto fail;
        }
        unsigned char c = s[i];
        switch (want) {
        case W_KEY_OR_END:
        case W_KEY:
            if (c == '}' && want == W_KEY_OR_END)
                goto close;
            if (c != '"') {
                what = "expected a string key";
                goto fail;
            }
            if ((what = check_string(s, n, &i)) != NULL)
                goto fail;
            want = W_COLON;
            continue;
        case W_COLON:
            if (c != ':') {
                what = "expected ':' after the key";
                goto fail;
            }
            i++;
            want = W_VALUE;
            continue;
        case W_NEXT: {
            int in_object = depth && ((objects[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1);
            if (depth == 0) {
                what = "trailing data after the JSON value";
                goto fail;
            }
            if (c == ',') {
                i++;
                want = in_object ? W_KEY : W_VALUE;
                continue;
            }
            if (c == (in_object ? '}' : ']'))
                goto close;
            what = in_object ? "expected ',' or '}'" : "expected ',' or ']'";
            goto fail;
        }
        case W_VALUE_OR_END:
            if (c == ']')
                goto close;
            /* fall through */
        case W_VALUE:
            if (depth == 0)
                first = i;
            seen_value = 1;
            if (c == '{' || c == '[') {
                if (depth == PIER_JSON_MAX_DEPTH) {
                    what = "nesting deeper than 512 levels";
                    goto fail;
                }
                uint64_t bit = (uint64_t)1 << (depth % 64);
                if (c == '{')
                    objects[depth / 64] |= bit;
                else
                    objects[depth / 64] &= ~bit;
                depth++;
                i++;
                want = c == '{' ? W_KEY_OR_END : W_VALUE_OR_END;
                continue;
            }
            if (c == '"') {
                what = check_string(s, n, &i);
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                what = check_number(s, n, &i);
            } else {
                static const char *const words[] = {"true", "false", "null"};
                what = "unexpected character";
                for (int w = 0; w < 3; w++) {
                    size_t wl = strlen(words[w]);
                    if (n - i >= wl && memcmp(s + i, words[w], wl) == 0) {
                        i += wl;
                        what = NULL;
                        break;
                    }
                }
            }
            if (what)
                goto fail;
            want = W_NEXT;
            continue;
        }
    close:
        depth--;
        i++;
        want = W_NEXT;
    }
    if (start)
        *start = first;
    if (len) {
        size_t end = n;
        while (end > first && is_ws(s[end - 1]))
            end--;
        *len = end - first;
    }
    return 0;
fail:
    if (err) {
        err->offset = i;
        err->what = what;
    }
    return -1;
}
