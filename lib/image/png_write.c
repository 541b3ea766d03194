/* png_write.c - 8-bit PNG output through libpng: RGB canvases to a stream,
 * and gray / RGB / palette images to memory (the HTML report's data: URIs). */
#include "image/image.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

static char png_msg[160];

/* libpng reports through these; keep the text, never print it. */
static void on_error(png_structp png, png_const_charp msg)
{
	snprintf(png_msg, sizeof png_msg, "%s", msg);
	png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
	(void)png;
	(void)msg;
}

/* A growing memory buffer behind png_set_write_fn. */
struct membuf { unsigned char *p; size_t n, cap; };

static void mem_write(png_structp png, png_bytep data, png_size_t len)
{
	struct membuf *m = png_get_io_ptr(png);
	if (m->n + len > m->cap) {
		size_t cap = m->cap ? m->cap : 4096;
		while (cap < m->n + len)
			cap *= 2;
		unsigned char *p = realloc(m->p, cap);
		if (!p)
			png_error(png, "out of memory");
		m->p = p;
		m->cap = cap;
	}
	memcpy(m->p + m->n, data, len);
	m->n += len;
}

static void mem_flush(png_structp png) { (void)png; }

/* The one encoder: to f, or to *mem when f is NULL. */
static int encode(FILE *f, struct membuf *mem, const esg_png_image *im)
{
	int chans = im->type == ESG_PNG_RGB ? 3 : 1;
	if (im->w < 1 || im->h < 1 || im->w > 0x7fffffff / 3 || im->h > 0x7fffffff)
		return esg_set_error("cannot write a %lldx%lld PNG", (long long)im->w, (long long)im->h);
	if (im->type == ESG_PNG_PALETTE && (im->n_palette < 1 || im->n_palette > 256))
		return esg_set_error("cannot write a PNG with %d palette entries", im->n_palette);
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, on_error, on_warning);
	if (!png)
		return esg_set_error("cannot start libpng");
	png_infop info = png_create_info_struct(png);
	png_bytep *volatile rows = NULL; /* survives longjmp */
	if (!info) {
		png_destroy_write_struct(&png, NULL);
		return esg_set_error("cannot start libpng");
	}
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_write_struct(&png, &info);
		free(rows);
		return esg_set_error("cannot write PNG: %s", png_msg);
	}
	rows = malloc((size_t)im->h * sizeof *rows);
	if (!rows)
		png_error(png, "out of memory");
	for (int64_t r = 0; r < im->h; r++)
		rows[r] = (png_bytep)im->pixels + chans * r * im->w;
	if (f)
		png_init_io(png, f);
	else
		png_set_write_fn(png, mem, mem_write, mem_flush);
	int ctype = im->type == ESG_PNG_RGB ? PNG_COLOR_TYPE_RGB
		    : im->type == ESG_PNG_GRAY ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_PALETTE;
	png_set_IHDR(png, info, (png_uint_32)im->w, (png_uint_32)im->h, 8, ctype,
		     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	if (im->type == ESG_PNG_PALETTE) {
		png_color pal[256];
		for (int i = 0; i < im->n_palette; i++) {
			pal[i].red = im->palette[4 * i];
			pal[i].green = im->palette[4 * i + 1];
			pal[i].blue = im->palette[4 * i + 2];
		}
		png_set_PLTE(png, info, pal, im->n_palette);
		png_byte trns[256];
		for (int i = 0; i < im->n_palette; i++)
			trns[i] = im->palette[4 * i + 3];
		png_set_tRNS(png, info, trns, im->n_palette, NULL);
	}
	if (!f) /* the HTML report inlines every byte */
		png_set_compression_level(png, 9);
	/* palette indices here rise with the value (a colour map), so the
	 * filters that predict from neighbours pay off as for gray */
	if (im->type == ESG_PNG_PALETTE)
		png_set_filter(png, 0, PNG_ALL_FILTERS);
	png_write_info(png, info);
	png_write_image(png, rows);
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	free(rows);
	if (f && ferror(f))
		return esg_set_error("cannot write PNG: write error");
	return 0;
}

int esg_png_write(FILE *f, const esg_canvas *im)
{
	esg_png_image pi = { .type = ESG_PNG_RGB, .w = im->w, .h = im->h, .pixels = im->rgb };
	return encode(f, NULL, &pi);
}

int esg_png_encode(const esg_png_image *im, unsigned char **out, size_t *n)
{
	struct membuf m = { NULL, 0, 0 };
	*out = NULL;
	*n = 0;
	if (encode(NULL, &m, im) < 0) {
		free(m.p);
		return -1;
	}
	*out = m.p;
	*n = m.n;
	return 0;
}

void esg_canvas_free(esg_canvas *im)
{
	if (im) {
		free(im->rgb);
		im->rgb = NULL;
	}
}
