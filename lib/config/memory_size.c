/* memory_size.c - the memory budget's text (config.h), apart from config.c
 * so that every tool's option parsing can take it without the config's
 * dependencies. */
#include "config/config.h"
#include "stream/stream.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int esg_memory_parse(const char *text, uint64_t *bytes, double *share)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (errno || end == text || !isfinite(v) || v <= 0)
		return esg_set_error("'%s' is not a size (6G, 500M, 50%%)", text);
	if (!strcmp(end, "%")) {
		if (v > 100)
			return esg_set_error("%s is more than 100%%", text);
		*share = v / 100;
		*bytes = 0;
		return 0;
	}
	double unit = !*end ? 1 : !strcmp(end, "K") ? 1 << 10 : !strcmp(end, "M") ? 1 << 20 :
		      !strcmp(end, "G") ? 1 << 30 : !strcmp(end, "T") ? (double)(1ULL << 40) : 0;
	if (!unit)
		return esg_set_error("'%s' is not a size (6G, 500M, 50%%: units K M G T, 1024-based)", text);
	if (v * unit < (double)(64 << 20))
		return esg_set_error("%s is less than 64M", text);
	*bytes = (uint64_t)(v * unit);
	return 0;
}
