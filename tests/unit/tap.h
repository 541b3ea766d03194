/* tap.h - tiny TAP producer for the C unit tests. */
#ifndef ESG_TAP_H
#define ESG_TAP_H
#include <math.h>
#include <stdio.h>

/* ok(cond, fmt, ...): one TAP line; returns cond. */
int tap_ok(int cond, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* |a - b| <= atol + rtol * |b| */
#define near(a, b, atol, rtol) (fabs((double)(a) - (double)(b)) <= (atol) + (rtol) * fabs((double)(b)))
/* Print the plan and return the exit status (1 if anything failed). */
int tap_done(void);
#endif
