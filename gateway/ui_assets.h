/* The portal's static files, built into the gateway (cmake/embed.cmake
 * generates the table from gateway/ui/). Read-only data, any thread. */
#ifndef GW_UI_ASSETS_H
#define GW_UI_ASSETS_H

#include <stddef.h>

struct gw_ui_asset {
    const char *name;         /* "index.html", relative to /ui/ */
    const char *content_type; /* "text/html; charset=utf-8" */
    const unsigned char *data;
    size_t size; /* bytes, without the NUL the generator appends */
};

/* Ends with an entry whose name is NULL. */
extern const struct gw_ui_asset gw_ui_assets[];

#endif
