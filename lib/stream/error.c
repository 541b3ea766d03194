/* error.c - the library's one error channel: a thread-local message. */
#include "stream/stream.h"

#include <stdarg.h>
#include <string.h>

#define ERROR_BYTES 1024

static _Thread_local char message[ERROR_BYTES];

const char *esg_error(void) { return message; }

int esg_set_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	return -1;
}

int esg_prefix_error(const char *fmt, ...)
{
	char prefix[ERROR_BYTES], old[ERROR_BYTES];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof prefix, fmt, ap);
	va_end(ap);
	memcpy(old, message, sizeof old);
	/* truncation is fine here: messages are one line, 1 KiB at most */
	size_t n = strlen(prefix);
	if (n > sizeof message - 3)
		n = sizeof message - 3;
	memcpy(message, prefix, n);
	memcpy(message + n, ": ", 2);
	size_t room = sizeof message - n - 3;
	size_t m = strlen(old);
	memcpy(message + n + 2, old, m < room ? m : room);
	message[n + 2 + (m < room ? m : room)] = 0;
	return -1;
}
