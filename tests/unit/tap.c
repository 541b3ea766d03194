#include "tap.h"
#include <stdarg.h>

static int count, failed;

int tap_ok(int cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	count++;
	printf("%sok %d - ", cond ? "" : "not ", count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!cond) {
		failed++;
		printf("#   failed at %s:%d\n", file, line);
	}
	fflush(stdout);
	return cond;
}

int tap_done(void)
{
	printf("1..%d\n", count);
	return failed != 0;
}
