/* Unit tests for response building: status texts, JSON errors, dates, JSON escaping. */
#include <time.h>

#include "check.h"
#include "pier/http.h"

int main(void) {
    CHECK(strcmp(pier_status_text(404), "Not Found") == 0);
    CHECK(strcmp(pier_status_text(431), "Request Header Fields Too Large") == 0);
    CHECK(strcmp(pier_status_text(413), "Content Too Large") == 0);

    pier_buf_t body;
    pier_buf_init(&body);
    struct pier_response res = {.body = &body};
    pier_response_error(&res, 415, "say \"json\"\n");
    pier_buf_putc(&body, '\0');
    CHECK(res.status == 415);
    CHECK(strcmp(res.content_type, "application/json") == 0);
    CHECK(strcmp(body.data,
                 "{\"error\":{\"status\":415,\"message\":\"say \\\"json\\\"\\u000a\"}}\n") == 0);

    char date[30];
    pier_http_date(784111777, date); /* RFC 9110's example */
    CHECK(strcmp(date, "Sun, 06 Nov 1994 08:49:37 GMT") == 0);
    pier_http_date(1795665600, date);
    CHECK(strlen(date) == 29);

    pier_buf_reset(&body);
    pier_buf_put_json_str(&body, "a\x01\xff\\", 4);
    pier_buf_putc(&body, '\0');
    CHECK(strcmp(body.data, "\"a\\u0001\\u00ff\\\\\"") == 0);

    pier_buf_reset(&body);
    pier_buf_put_u64(&body, 0);
    pier_buf_put_u64(&body, 18446744073709551615u);
    pier_buf_putc(&body, '\0');
    CHECK(strcmp(body.data, "018446744073709551615") == 0);

    /* header lookup is case-insensitive and returns the first */
    struct pier_header hs[2] = {{{"Content-Type", 12}, {"a/b", 3}},
                                {{"content-type", 12}, {"c", 1}}};
    struct pier_request req = {.headers = hs, .nheaders = 2};
    struct pier_str v;
    CHECK(pier_request_header(&req, "CONTENT-TYPE", &v) && v.n == 3);
    CHECK(!pier_request_header(&req, "Accept", &v));
    pier_buf_free(&body);
    return check_report("http");
}
