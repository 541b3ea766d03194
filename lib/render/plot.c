/* plot.c - line plots: deletion / insertion curves (esg-render
 * --curve-plot; see render.h). */
#include "render/render.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLOT_W 480
#define PLOT_H 360
#define PLOT_M 24

/* A line 2 pixels thick, clipped to the canvas. */
static void plot_line(esg_canvas *c, double x0, double y0, double x1, double y1,
		      const unsigned char rgb[3])
{
	double n = fmax(fabs(x1 - x0), fabs(y1 - y0));
	int steps = (int)n + 1;
	for (int i = 0; i <= steps; i++) {
		double t = (double)i / steps;
		int64_t x = llround(x0 + t * (x1 - x0)), y = llround(y0 + t * (y1 - y0));
		for (int dy = 0; dy < 2; dy++)
			if (x >= 0 && x < c->w && y + dy >= 0 && y + dy < c->h)
				memcpy(c->rgb + 3 * ((y + dy) * c->w + x), rgb, 3);
	}
}

int esg_plot_curves(const esg_curve *curves, int n, esg_canvas *out)
{
	esg_canvas c = { PLOT_W, PLOT_H, malloc(PLOT_W * PLOT_H * 3) };
	if (!c.rgb)
		return esg_set_error("out of memory");
	memset(c.rgb, 255, PLOT_W * PLOT_H * 3);
	static const unsigned char black[3] = { 0, 0, 0 }, grey[3] = { 190, 190, 190 };
	static const unsigned char pal[8][3] = { { 31, 119, 180 }, { 255, 127, 14 }, { 44, 160, 44 },
		{ 214, 39, 40 }, { 148, 103, 189 }, { 140, 86, 75 }, { 227, 119, 194 }, { 127, 127, 127 } };
	const double x0 = PLOT_M, x1 = PLOT_W - PLOT_M, y0 = PLOT_H - PLOT_M, y1 = PLOT_M;
	/* y from -0.25 to 1.25: a little room around [0, 1] */
#define PX(f) (x0 + (f) * (x1 - x0))
#define PY(v) (y0 + ((v) + 0.25) / 1.5 * (y1 - y0))
	plot_line(&c, PX(0), PY(0), PX(1), PY(0), grey);
	plot_line(&c, PX(0), PY(1), PX(1), PY(1), grey);
	plot_line(&c, x0, y0, x1, y0, black);
	plot_line(&c, x0, y0, x0, y1, black);
	esg_draw_text(&c, (int64_t)x0 - 8, (int64_t)PY(0) - 3, "0", black);
	esg_draw_text(&c, (int64_t)x0 - 8, (int64_t)PY(1) - 3, "1", black);
	esg_draw_text(&c, (int64_t)PX(1) - 2, (int64_t)y0 + 6, "1", black);
	for (int s = 0; s < n; s++) {
		const esg_curve *cu = &curves[s];
		double px = 0, py = 0;
		for (int64_t i = 0; i < cu->n; i++) {
			double x = PX(cu->x[i]), y = PY(fmin(1.25, fmax(-0.25, cu->y[i])));
			if (i)
				plot_line(&c, px, py, x, y, pal[s % 8]);
			px = x;
			py = y;
		}
		char lab[16];
		snprintf(lab, sizeof lab, "%d", s);
		esg_draw_text(&c, (int64_t)px + 3, (int64_t)py - 3, lab, pal[s % 8]);
	}
#undef PX
#undef PY
	*out = c;
	return 0;
}
