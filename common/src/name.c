/* Function-name validation and splitting of /function/ and /async-function/
 * routes into the name segment and the sub-path. */
#include "cmn/name.h"

#include <string.h>

bool cmn_name_label_valid(const char *label, size_t len)
{
    if (len == 0 || len > CMN_NAME_MAX - 1)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = label[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && i > 0 && i + 1 < len))
            return false;
    }
    return true;
}

enum cmn_status cmn_name_parse(const char *full, size_t len, const char *default_ns,
                               struct cmn_fn_name *out, struct cmn_err *err)
{
    const char *dot = NULL;
    for (size_t i = len; i > 0; i--)
        if (full[i - 1] == '.') {
            dot = full + i - 1;
            break;
        }
    size_t name_len = dot ? (size_t)(dot - full) : len;
    const char *ns = dot ? dot + 1 : default_ns;
    size_t ns_len = dot ? len - name_len - 1 : (default_ns ? strlen(default_ns) : 0);
    if (!cmn_name_label_valid(full, name_len))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "invalid function name \"%.*s\"",
                           (int)(name_len > 80 ? 80 : name_len), full);
    if (!cmn_name_label_valid(ns, ns_len))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "invalid namespace \"%.*s\"",
                           (int)(ns_len > 80 ? 80 : ns_len), ns ? ns : "");
    memcpy(out->name, full, name_len);
    out->name[name_len] = '\0';
    memcpy(out->ns, ns, ns_len);
    out->ns[ns_len] = '\0';
    return CMN_OK;
}

enum cmn_status cmn_route_split(const char *rest, const char **name, size_t *name_len,
                                const char **sub_path)
{
    const char *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    if (n == 0)
        return CMN_ERR_INVALID;
    *name = rest;
    *name_len = n;
    *sub_path = slash ? slash : rest + n;
    return CMN_OK;
}
