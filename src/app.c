/* app — see include/pier/app.h. The one place that asks the libraries for their versions, so
 * handlers include none of their headers. */
#include "pier/app.h"

#include <stdio.h>

#include <cjson/cJSON.h>
#include <llhttp.h>
#include <uv.h>
#include <yaml.h>

void pier_app_collect_components(struct pier_app *app) {
    struct pier_component *c = app->components;
    c[0].name = "libuv";
    snprintf(c[0].version, sizeof c[0].version, "%s", uv_version_string());
    c[1].name = "llhttp"; /* llhttp has no run-time version call: its header's */
    snprintf(c[1].version, sizeof c[1].version, "%d.%d.%d", LLHTTP_VERSION_MAJOR,
             LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
    c[2].name = "cjson";
    snprintf(c[2].version, sizeof c[2].version, "%s", cJSON_Version());
    c[3].name = "libyaml";
    snprintf(c[3].version, sizeof c[3].version, "%s", yaml_get_version_string());
}
