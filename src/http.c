/* http — status texts, header lookup and response helpers; see include/pier/http.h. */
#include "pier/http.h"

#include <string.h>
#include <strings.h>

const char *pier_status_text(int status) {
#define TEXT(code, text)                                                                           \
    case code:                                                                                     \
        return text;
    switch (status) {
        PIER_STATUSES(TEXT)
    default:
        return "Unknown";
    }
#undef TEXT
}

int pier_str_eq_n(struct pier_str s, const char *lit, size_t n) {
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

int pier_str_ieq_n(struct pier_str s, const char *lit, size_t n) {
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

int pier_request_header(const struct pier_request *req, const char *name, struct pier_str *out) {
    for (size_t i = 0; i < req->nheaders; i++) {
        if (pier_str_ieq(req->headers[i].name, name)) {
            *out = req->headers[i].value;
            return 1;
        }
    }
    return 0;
}

int pier_request_field(const struct pier_request *req, enum pier_field f, struct pier_str *out) {
    static const char *const names[PIER_F_COUNT] = {
        [PIER_F_HOST] = "Host",
        [PIER_F_CONTENT_LENGTH] = "Content-Length",
        [PIER_F_TRANSFER_ENCODING] = "Transfer-Encoding",
        [PIER_F_CONNECTION] = "Connection",
        [PIER_F_UPGRADE] = "Upgrade",
        [PIER_F_EXPECT] = "Expect",
        [PIER_F_CONTENT_TYPE] = "Content-Type",
        [PIER_F_REQUEST_ID] = "X-Request-Id",
    };
    if (req->fields == NULL) /* a request not made by the parser (tests) */
        return f != PIER_F_OTHER && pier_request_header(req, names[f], out);
    unsigned i = req->fields[f];
    if (i == 0)
        return 0;
    *out = req->headers[i - 1].value;
    return 1;
}

int pier_request_content_type_is(const struct pier_request *req, const char *type) {
    struct pier_str ct;
    if (!pier_request_field(req, PIER_F_CONTENT_TYPE, &ct))
        return 0;
    size_t n = strlen(type);
    if (ct.n < n || strncasecmp(ct.p, type, n) != 0)
        return 0;
    return ct.n == n || ct.p[n] == ';' || ct.p[n] == ' ' || ct.p[n] == '\t';
}

void pier_response_error(struct pier_response *res, int status, const char *message) {
    pier_response_begin(res, status, "application/json");
    pier_buf_printf(res->body, "{\"error\":{\"status\":%d,\"message\":", status);
    pier_buf_put_json_str(res->body, message, __builtin_strlen(message));
    pier_buf_puts(res->body, "}}\n");
}

void pier_http_date(time_t t, char out[30]) {
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&t, &tm);
    /* strftime's %a/%b follow the locale; HTTP wants English */
    memcpy(out, days[tm.tm_wday], 3);
    out[3] = ',';
    out[4] = ' ';
    out[5] = (char)('0' + tm.tm_mday / 10);
    out[6] = (char)('0' + tm.tm_mday % 10);
    out[7] = ' ';
    memcpy(out + 8, months[tm.tm_mon], 3);
    out[11] = ' ';
    int y = tm.tm_year + 1900;
    out[12] = (char)('0' + y / 1000 % 10);
    out[13] = (char)('0' + y / 100 % 10);
    out[14] = (char)('0' + y / 10 % 10);
    out[15] = (char)('0' + y % 10);
    out[16] = ' ';
    out[17] = (char)('0' + tm.tm_hour / 10);
    out[18] = (char)('0' + tm.tm_hour % 10);
    out[19] = ':';
    out[20] = (char)('0' + tm.tm_min / 10);
    out[21] = (char)('0' + tm.tm_min % 10);
    out[22] = ':';
    out[23] = (char)('0' + tm.tm_sec / 10);
    out[24] = (char)('0' + tm.tm_sec % 10);
    memcpy(out + 25, " GMT", 5);
}
