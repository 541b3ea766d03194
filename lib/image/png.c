/* png.c - 2D PNG through libpng: [1, C, H, W] with the stored sample
 * values (8 bit: 0..255, 16 bit: 0..65535; bit depths below 8 unscaled,
 * palettes expanded to RGB / RGBA).  C = 1 gray, 2 gray + alpha, 3 RGB,
 * 4 RGBA.  Axes: i = row (top first), j = column; the affine is identity. */
#include "image/format.h"

#include <errno.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

struct png_ctx {
	jmp_buf jb;
	char msg[200];
};

static void on_error(png_structp p, png_const_charp msg)
{
	struct png_ctx *ctx = png_get_error_ptr(p);
	snprintf(ctx->msg, sizeof ctx->msg, "%s", msg);
	longjmp(ctx->jb, 1);
}

static void on_warning(png_structp p, png_const_charp msg)
{
	(void)p; /* the library never prints */
	(void)msg;
}

/* Fill im (already allocated) from rows; returns 0. */
static void rows_to_planes(png_bytep *rows, int64_t H, int64_t W, int C, int bytes, float *out)
{
	int64_t plane = H * W;
	for (int64_t y = 0; y < H; y++) {
		const png_byte *r = rows[y];
		for (int64_t x = 0; x < W; x++)
			for (int c = 0; c < C; c++) {
				size_t at = (size_t)(x * C + c) * bytes;
				float v = bytes == 2 ? (float)(r[at] << 8 | r[at + 1]) : (float)r[at];
				out[c * plane + y * W + x] = v;
			}
	}
}

static esg_image *read_png(FILE *f, const char *path, const esg_load_opts *o)
{
	struct png_ctx ctx = { .msg = "" };
	png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
	png_infop info = p ? png_create_info_struct(p) : NULL;
	esg_image *volatile im = NULL;
	png_bytep *volatile rows = NULL;
	volatile int64_t nrows = 0;
	if (!info) {
		png_destroy_read_struct(&p, NULL, NULL);
		esg_set_error("'%s': out of memory", path);
		return NULL;
	}
	if (setjmp(ctx.jb)) {
		if (strcmp(ctx.msg, "Read Error") == 0) /* png_default_read_data: short read */
			esg_set_error("'%s': truncated PNG", path);
		else
			esg_set_error("'%s': bad PNG: %s", path, ctx.msg);
		goto fail;
	}
	png_init_io(p, f);
	png_read_info(p, info);
	png_uint_32 W = png_get_image_width(p, info), H = png_get_image_height(p, info);
	int depth = png_get_bit_depth(p, info), type = png_get_color_type(p, info);
	if (type == PNG_COLOR_TYPE_PALETTE)
		png_set_palette_to_rgb(p);
	if (png_get_valid(p, info, PNG_INFO_tRNS))
		png_set_tRNS_to_alpha(p);
	if (depth < 8)
		png_set_packing(p); /* one byte per sample, values unscaled */
	png_set_interlace_handling(p);
	png_read_update_info(p, info);
	int C = png_get_channels(p, info);
	int bytes = png_get_bit_depth(p, info) == 16 ? 2 : 1;
	size_t rowbytes = png_get_rowbytes(p, info);

	im = calloc(1, sizeof *im);
	if (!im) {
		esg_set_error("'%s': out of memory", path);
		goto fail;
	}
	im->n = 1;
	im->c = C;
	im->nsp = 2;
	im->dim[0] = H;
	im->dim[1] = W;
	strcpy(im->axes, "ij");
	im->spacing[0] = im->spacing[1] = 1;
	for (int a = 0; a < 4; a++)
		im->affine[a * 5] = 1;
	im->data = malloc((size_t)H * W * C * sizeof(float));
	rows = calloc(H, sizeof *rows);
	if (!im->data || !rows) {
		esg_set_error("'%s': out of memory (%ux%u)", path, (unsigned)W, (unsigned)H);
		goto fail;
	}
	for (png_uint_32 y = 0; y < H; y++, nrows++)
		if (!(rows[y] = malloc(rowbytes))) {
			esg_set_error("'%s': out of memory", path);
			goto fail;
		}
	png_read_image(p, rows);
	png_read_end(p, NULL);
	rows_to_planes(rows, H, W, C, bytes, im->data);
	for (int64_t y = 0; y < nrows; y++)
		free(rows[y]);
	free(rows);
	png_destroy_read_struct(&p, &info, NULL);
	if (o && o->reverse && esg_image_reverse(im) < 0) {
		esg_image_free(im);
		return NULL;
	}
	return im;
fail:
	if (rows)
		for (int64_t y = 0; y < nrows; y++)
			free(rows[y]);
	free(rows);
	esg_image_free(im);
	png_destroy_read_struct(&p, &info, NULL);
	return NULL;
}

static esg_image *load_png(const char *path, const esg_load_opts *o)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		esg_set_error("cannot open '%s': %s", path, strerror(errno));
		return NULL;
	}
	esg_image *im = read_png(f, path, o);
	fclose(f);
	return im;
}

static int sniff_png(const unsigned char *b, size_t got, const char *path)
{
	(void)path;
	return got >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0;
}

const esg_image_format esg_format_png = { ESG_FMT_PNG, sniff_png, load_png };
