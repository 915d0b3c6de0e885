/* Fuzzes Retry-After (seconds or an HTTP date), the configuration duration
 * syntax ("1m30s", "250ms") and RFC 3339 times (X-Not-Before, call records):
 * a parsed time formats and parses back to itself. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmn/duration.h"
#include "retry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    int64_t ms = -1;
    if (qw_retry_after_parse_ms(text, 1700000000, &ms) && ms < 0)
        abort(); /* a parsed Retry-After is never negative */
    struct cmn_err err;
    if (cmn_duration_parse_ms(text, &ms, &err) == CMN_OK) {
        char back[64];
        (void)cmn_duration_format(ms, back, sizeof(back));
    }
    int64_t at = 0, again = 0;
    if (cmn_time_parse(text, &at)) {
        char back[64];
        if (!cmn_time_parse(cmn_time_format(at, back, sizeof(back)), &again) || again != at)
            abort(); /* format(parse(x)) must parse back to the same instant */
    }
    free(text);
    return 0;
}
