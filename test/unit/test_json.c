/* Unit tests for the strict JSON check behind POST /echo: what RFC 8259 accepts, what it
 * refuses, and where the error is reported. */
#include "check.h"
#include "pier/json.h"

static int ok(const char *s) {
    return pier_json_check(s, strlen(s), NULL, NULL, NULL) == 0;
}

/* The error's offset and text for a refused input (offset SIZE_MAX if accepted). */
static size_t err_at(const char *s, size_t n, const char **what) {
    struct pier_json_error e = {0, NULL};
    if (pier_json_check(s, n, NULL, NULL, &e) == 0)
        return (size_t)-1;
    *what = e.what;
    return e.offset;
}

int main(void) {
    /* accepted: one value of each kind, with whitespace around and inside */
    const char *good[] = {"{}",
                          "[]",
                          "0",
                          "-0",
                          "1.5e-3",
                          "-12E+2",
                          "\"\"",
                          "true",
                          "false",
                          "null",
                          " \t\r\n{\"a\" : [1, 2 , {\"b\":null}] }\n",
                          "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"",
                          "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
                          "[[[[]]]]"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!ok(good[i]))
            fprintf(stderr, "refused: %s\n", good[i]);
        CHECK(ok(good[i]));
    }

    /* refused, with what is wrong */
    struct {
        const char *in;
        size_t at;
        const char *what;
    } bad[] = {
        {"{\"a\":1} trailing garbage", 8, "trailing data"},
        {"{}{}", 2, "trailing data"},
        {"1 2", 2, "trailing data"},
        {"", 0, "no JSON value"},
        {"   ", 3, "no JSON value"},
        {"{\"a\":1", 6, "unexpected end"},
        {"[1,]", 3, "unexpected character"},
        {"[1 2]", 3, "expected ',' or ']'"},
        {"{\"a\" 1}", 5, "expected ':'"},
        {"{a:1}", 1, "expected a string key"},
        {"{\"a\":1,}", 7, "expected a string key"},
        {"01", 1, "trailing data"},
        {"1.", 2, "decimal point"},
        {"1e", 2, "exponent"},
        {"+1", 0, "unexpected character"},
        {".5", 0, "unexpected character"},
        {"-", 1, "invalid number"},
        {"NaN", 0, "unexpected character"},
        {"tru", 0, "unexpected character"},
        {"'a'", 0, "unexpected character"},
        {"\"a\x01"
         "b\"",
         2, "control character"},
        {"\"a\nb\"", 2, "control character"},
        {"\"\\x\"", 1, "invalid escape"},
        {"\"\\u12g4\"", 1, "four hex digits"},
        {"\"\\ud800\"", 1, "high surrogate"},
        {"\"\\udc00\"", 1, "low surrogate"},
        {"\"abc", 4, "unterminated string"},
        {"\"\xc3\"", 1, "invalid UTF-8"},             /* truncated sequence */
        {"\"\xc0\xaf\"", 1, "invalid UTF-8"},         /* overlong '/' */
        {"\"\xed\xa0\x80\"", 1, "invalid UTF-8"},     /* an encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", 1, "invalid UTF-8"}, /* above U+10FFFF */
        {"\"\xff\"", 1, "invalid UTF-8"},
        {"\xef\xbb\xbf{}", 0, "unexpected character"}, /* a byte order mark is not JSON */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *what = NULL;
        size_t at = err_at(bad[i].in, strlen(bad[i].in), &what);
        if (at != bad[i].at || what == NULL || strstr(what, bad[i].what) == NULL)
            fprintf(stderr, "case %zu (%s): at %zu, %s\n", i, bad[i].in, at, what ? what : "-");
        CHECK(at == bad[i].at);
        CHECK_STR_CONTAINS(what, bad[i].what);
    }

    /* a NUL byte is not whitespace, and a body is not a C string */
    const char *what = NULL;
    CHECK(err_at("{}\0{}", 5, &what) == 2);
    CHECK_STR_CONTAINS(what, "trailing data");

    /* the value without the whitespace around it */
    size_t start = 0, len = 0;
    CHECK(pier_json_check(" \n[1, 2]\t ", 10, &start, &len, NULL) == 0);
    CHECK(start == 2 && len == 6);

    /* nesting: PIER_JSON_MAX_DEPTH levels are fine, one more is refused, and neither costs
     * stack (no recursion) */
    static char deep[2 * PIER_JSON_MAX_DEPTH + 4];
    memset(deep, '[', PIER_JSON_MAX_DEPTH);
    memset(deep + PIER_JSON_MAX_DEPTH, ']', PIER_JSON_MAX_DEPTH);
    CHECK(pier_json_check(deep, 2 * PIER_JSON_MAX_DEPTH, NULL, NULL, NULL) == 0);
    memset(deep, '[', PIER_JSON_MAX_DEPTH + 1);
    memset(deep + PIER_JSON_MAX_DEPTH + 1, ']', PIER_JSON_MAX_DEPTH + 1);
    CHECK(err_at(deep, 2 * PIER_JSON_MAX_DEPTH + 2, &what) == PIER_JSON_MAX_DEPTH);
    CHECK_STR_CONTAINS(what, "nesting");
    return check_report("json");
}
