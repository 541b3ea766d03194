/* png_write.c - 8-bit RGB PNG output through libpng. */
#include "esg_render.h"

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

int esg_png_write(FILE *f, const esg_canvas *im)
{
	if (im->w < 1 || im->h < 1 || im->w > 0x7fffffff / 3 || im->h > 0x7fffffff)
		return esg_set_error("cannot write a %lldx%lld PNG", (long long)im->w, (long long)im->h);
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
		rows[r] = im->rgb + 3 * r * im->w;
	png_init_io(png, f);
	png_set_IHDR(png, info, (png_uint_32)im->w, (png_uint_32)im->h, 8, PNG_COLOR_TYPE_RGB,
		     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_write_info(png, info);
	png_write_image(png, rows);
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	free(rows);
	if (ferror(f))
		return esg_set_error("cannot write PNG: write error");
	return 0;
}
