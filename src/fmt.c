/* fmt — number formatting; see include/pier/fmt.h. */
#include "pier/fmt.h"

static const char pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233"
    "34353637383940414243444546474849505152535455565758596061626364656667"
    "6869707172737475767778798081828384858687888990919293949596979899";

char *pier_fmt_u64(char *p, uint64_t v) {
    unsigned n = 1; /* digits: counted first, so they are written in place, last pair first */
    for (uint64_t x = v; x >= 10; x /= 10)
        n++;
    char *end = p + n;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        end -= 2;
        end[0] = pairs[2 * r];
        end[1] = pairs[2 * r + 1];
    }
    if (v >= 10) {
        p[0] = pairs[2 * v];
        p[1] = pairs[2 * v + 1];
    } else {
        p[0] = (char)('0' + v);
    }
    return p + n;
}

/* byte b as its low then its high hex digit: the order request ids have always been written in */
static const char nibbles[513] = "00102030405060708090a0b0c0d0e0f001112131415161718191a1b1c1d1e1f1"
                                 "02122232425262728292a2b2c2d2e2f203132333435363738393a3b3c3d3e3f3"
                                 "04142434445464748494a4b4c4d4e4f405152535455565758595a5b5c5d5e5f5"
                                 "06162636465666768696a6b6c6d6e6f607172737475767778797a7b7c7d7e7f7"
                                 "08182838485868788898a8b8c8d8e8f809192939495969798999a9b9c9d9e9f9"
                                 "0a1a2a3a4a5a6a7a8a9aaabacadaeafa0b1b2b3b4b5b6b7b8b9babbbcbdbebfb"
                                 "0c1c2c3c4c5c6c7c8c9cacbcccdcecfc0d1d2d3d4d5d6d7d8d9dadbdcdddedfd"
                                 "0e1e2e3e4e5e6e7e8e9eaebecedeeefe0f1f2f3f4f5f6f7f8f9fafbfcfdfefff";

char *pier_fmt_hex64(char *p, uint64_t v) {
    for (int i = 0; i < 16; i += 2, v >>= 8)
        memcpy(p + i, nibbles + 2 * (v & 255), 2);
    return p + 16;
}

/* 1 for the bytes a JSON string cannot hold as they are */
static const unsigned char needs_escape[256] = {
    [0 ... 0x1f] = 1,
    ['"'] = 1,
    ['\\'] = 1,
    [0x7f ... 0xff] = 1,
};

char *pier_fmt_json_chars(char *p, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    while (i < n) {
        /* the run of bytes that need no escape goes in one copy: usually the whole value */
        size_t run = i;
        while (run < n && !needs_escape[(unsigned char)s[run]])
            run++;
        p = pier_fmt_mem(p, s + i, run - i);
        if (run == n)
            break;
        unsigned char c = (unsigned char)s[run];
        *p++ = '\\';
        if (c == '"' || c == '\\') {
            *p++ = (char)c;
        } else {
            p = pier_fmt_lit(p, "u00");
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
        i = run + 1;
    }
    return p;
}
