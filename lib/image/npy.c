/* npy.c - NumPy .npy files (format versions 1.0, 2.0, 3.0).
 *
 * dtypes: b1 i1 u1 i2 u2 i4 u4 i8 u8 f2 f4 f8, little- or big-endian
 * (big-endian is converted), C or Fortran order.  Object, string,
 * structured and complex arrays are refused.  The parser works on a memory
 * buffer so that it can be fuzzed (tests/fuzz/fuzz_npy.c). */
#include "image/format.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAX_HEADER (1u << 20)

struct hdr {
	const char *p, *end, *name;
};

static void skip_ws(struct hdr *h)
{
	while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r'))
		h->p++;
}

static int expect(struct hdr *h, char c)
{
	skip_ws(h);
	if (h->p >= h->end || *h->p != c)
		return esg_set_error("'%s': bad NPY header: expected '%c'", h->name, c);
	h->p++;
	return 0;
}

/* A Python string literal ('...' or "...") without escapes into buf. */
static int parse_str(struct hdr *h, char *buf, size_t n)
{
	skip_ws(h);
	if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
		return esg_set_error("'%s': bad NPY header: expected a string", h->name);
	char q = *h->p++;
	size_t k = 0;
	while (h->p < h->end && *h->p != q) {
		if (*h->p == '\\' || k + 1 >= n)
			return esg_set_error("'%s': bad NPY header: unexpected string", h->name);
		buf[k++] = *h->p++;
	}
	if (h->p >= h->end)
		return esg_set_error("'%s': bad NPY header: unterminated string", h->name);
	h->p++;
	buf[k] = 0;
	return 0;
}

static int parse_bool(struct hdr *h, int *v)
{
	skip_ws(h);
	size_t left = (size_t)(h->end - h->p);
	if (left >= 4 && memcmp(h->p, "True", 4) == 0) {
		*v = 1;
		h->p += 4;
		return 0;
	}
	if (left >= 5 && memcmp(h->p, "False", 5) == 0) {
		*v = 0;
		h->p += 5;
		return 0;
	}
	return esg_set_error("'%s': bad NPY header: fortran_order must be True or False", h->name);
}

static int parse_shape(struct hdr *h, esg_npy *o)
{
	if (expect(h, '(') < 0)
		return -1;
	o->ndim = 0;
	for (;;) {
		skip_ws(h);
		if (h->p < h->end && *h->p == ')') {
			h->p++;
			return 0;
		}
		if (h->p >= h->end || *h->p < '0' || *h->p > '9')
			return esg_set_error("'%s': bad NPY header: bad shape", h->name);
		int64_t v = 0;
		while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
			if (v > (INT64_MAX - 9) / 10)
				return esg_set_error("'%s': bad NPY header: shape value too large",
						     h->name);
			v = v * 10 + (*h->p++ - '0');
		}
		if (h->p < h->end && *h->p == 'L') /* written by Python 2 */
			h->p++;
		if (o->ndim >= ESG_MAX_DIMS)
			return esg_set_error("'%s': NPY array has more than %d axes", h->name,
					     ESG_MAX_DIMS);
		o->shape[o->ndim++] = v;
		skip_ws(h);
		if (h->p < h->end && *h->p == ',')
			h->p++;
		else if (h->p >= h->end || *h->p != ')')
			return esg_set_error("'%s': bad NPY header: bad shape", h->name);
	}
}

static int parse_descr(struct hdr *h, esg_npy *o)
{
	skip_ws(h);
	if (h->p < h->end && *h->p == '[')
		return esg_set_error("'%s': structured NPY arrays are not supported", h->name);
	char d[32];
	if (parse_str(h, d, sizeof d) < 0)
		return -1;
	const char *s = d;
	o->big_endian = 0;
	if (*s == '<' || *s == '|' || *s == '=')
		s++;
	else if (*s == '>') {
		o->big_endian = 1;
		s++;
	}
	char kind = *s ? *s++ : 0;
	char *e;
	long size = *s >= '0' && *s <= '9' ? strtol(s, &e, 10) : 0;
	if (kind == 'O')
		return esg_set_error("'%s': NPY object arrays are not supported", h->name);
	int good = size > 0 && *e == 0 &&
		   ((kind == 'b' && size == 1) ||
		    ((kind == 'i' || kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
		    (kind == 'f' && (size == 2 || size == 4 || size == 8)));
	if (!good)
		return esg_set_error("'%s': unsupported NPY dtype '%s' (supported: b1 i1 u1 i2 u2 "
				     "i4 u4 i8 u8 f2 f4 f8)", h->name, d);
	o->kind = kind;
	o->itemsize = (int)size;
	if (size == 1)
		o->big_endian = 0;
	return 0;
}

static int parse_dict(struct hdr *h, esg_npy *o)
{
	int seen = 0;
	if (expect(h, '{') < 0)
		return -1;
	for (;;) {
		skip_ws(h);
		if (h->p < h->end && *h->p == '}') {
			h->p++;
			break;
		}
		char key[32];
		if (parse_str(h, key, sizeof key) < 0 || expect(h, ':') < 0)
			return -1;
		int r, bit;
		if (strcmp(key, "descr") == 0)
			r = parse_descr(h, o), bit = 1;
		else if (strcmp(key, "fortran_order") == 0)
			r = parse_bool(h, &o->fortran_order), bit = 2;
		else if (strcmp(key, "shape") == 0)
			r = parse_shape(h, o), bit = 4;
		else
			return esg_set_error("'%s': bad NPY header: unknown key '%s'", h->name, key);
		if (r < 0)
			return -1;
		if (seen & bit)
			return esg_set_error("'%s': bad NPY header: key '%s' twice", h->name, key);
		seen |= bit;
		skip_ws(h);
		if (h->p < h->end && *h->p == ',')
			h->p++;
		else if (h->p >= h->end || *h->p != '}')
			return esg_set_error("'%s': bad NPY header: expected ',' or '}'", h->name);
	}
	if (seen != 7)
		return esg_set_error("'%s': bad NPY header: missing %s", h->name,
				     !(seen & 1) ? "'descr'" : !(seen & 2) ? "'fortran_order'" : "'shape'");
	skip_ws(h);
	if (h->p != h->end)
		return esg_set_error("'%s': bad NPY header: text after the dictionary", h->name);
	return 0;
}

int esg_npy_parse(const void *buf, size_t size, const char *name, esg_npy *o)
{
	const unsigned char *b = buf;
	memset(o, 0, sizeof *o);
	if (size < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
		return esg_set_error("'%s': not an NPY file", name);
	int major = b[6];
	if (major < 1 || major > 3)
		return esg_set_error("'%s': unsupported NPY format version %d.%d", name, major, b[7]);
	size_t start = major == 1 ? 10 : 12;
	if (size < start)
		return esg_set_error("'%s': truncated NPY header", name);
	size_t hlen = major == 1 ? (size_t)(b[8] | b[9] << 8)
				 : (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 |
				   (size_t)b[11] << 24;
	if (hlen > NPY_MAX_HEADER)
		return esg_set_error("'%s': NPY header too large (%zu bytes)", name, hlen);
	if (hlen > size - start)
		return esg_set_error("'%s': truncated NPY header", name);
	struct hdr h = { (const char *)b + start, (const char *)b + start + hlen, name };
	if (parse_dict(&h, o) < 0)
		return -1;
	uint64_t n = 1;
	for (int a = 0; a < o->ndim; a++) {
		if (o->shape[a] != 0 && n > (uint64_t)INT64_MAX / 8 / (uint64_t)o->shape[a])
			return esg_set_error("'%s': NPY shape too large", name);
		n *= (uint64_t)o->shape[a];
	}
	o->data_offset = start + hlen;
	o->data_bytes = (size_t)(n * (uint64_t)o->itemsize);
	size_t have = size - o->data_offset;
	if (have < o->data_bytes)
		return esg_set_error("'%s': truncated NPY data (%zu of %zu bytes)", name, have,
				     o->data_bytes);
	if (have > o->data_bytes)
		return esg_set_error("'%s': %zu bytes of trailing data after the NPY array", name,
				     have - o->data_bytes);
	return 0;
}

static float half_to_float(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	float v = e == 0 ? ldexpf((float)m, -24)
		: e == 31 ? (m ? NAN : INFINITY)
		: ldexpf((float)(m | 0x400), e - 25);
	return h & 0x8000 ? -v : v;
}

/* Element k of the raw data as float (handles byte order). */
static float npy_get(const esg_npy *o, const unsigned char *d, int64_t k)
{
	unsigned char t[8];
	const unsigned char *s = d + (size_t)k * o->itemsize;
	int n = o->itemsize;
	for (int i = 0; i < n; i++)
		t[i] = o->big_endian ? s[n - 1 - i] : s[i];
	uint64_t u = 0;
	for (int i = n - 1; i >= 0; i--)
		u = u << 8 | t[i];
	switch (o->kind) {
	case 'b': return u != 0;
	case 'u': return (float)u;
	case 'i': {
		int sh = 64 - 8 * n;
		return (float)((int64_t)(u << sh) >> sh);
	}
	default:
		if (n == 2)
			return half_to_float((uint16_t)u);
		if (n == 4) {
			float f;
			uint32_t w = (uint32_t)u;
			memcpy(&f, &w, 4);
			return f;
		} else {
			double f;
			memcpy(&f, &u, 8);
			return (float)f;
		}
	}
}

/* Fast paths for the common little-endian types, else npy_get. */
static void npy_convert(const esg_npy *o, const unsigned char *d, int64_t n, float *out)
{
	if (!o->big_endian && o->kind == 'f' && o->itemsize == 4) {
		memcpy(out, d, (size_t)n * 4);
		return;
	}
	if (o->kind == 'u' && o->itemsize == 1) {
		for (int64_t k = 0; k < n; k++)
			out[k] = d[k];
		return;
	}
	for (int64_t k = 0; k < n; k++)
		out[k] = npy_get(o, d, k);
}

/* Roles of the array axes from the layout: 'N', 'C' or spatial 'S'. */
static int layout_roles(const esg_npy *o, const char *layout, const char *name, char *role)
{
	if (!layout) {
		if (o->ndim < 1 || o->ndim > ESG_MAX_SPATIAL)
			return esg_set_error("'%s': NPY array has %d axes; at most %d spatial axes "
					     "without --layout (e.g. --layout NCHW)", name, o->ndim,
					     ESG_MAX_SPATIAL);
		memset(role, 'S', (size_t)o->ndim);
		return 0;
	}
	if ((int)strlen(layout) != o->ndim)
		return esg_set_error("'%s': layout '%s' has %zu letters but the array has %d axes",
				     name, layout, strlen(layout), o->ndim);
	int nn = 0, nc = 0, ns = 0;
	for (int a = 0; a < o->ndim; a++) {
		char c = layout[a];
		role[a] = c == 'N' ? 'N' : c == 'C' ? 'C' : 'S';
		nn += c == 'N';
		nc += c == 'C';
		ns += role[a] == 'S';
	}
	if (nn > 1 || nc > 1 || ns < 1 || ns > ESG_MAX_SPATIAL)
		return esg_set_error("'%s': layout '%s': want at most one N, at most one C and "
				     "1 to %d spatial letters", name, layout, ESG_MAX_SPATIAL);
	return 0;
}

esg_image *esg_npy_image(const void *buf, size_t size, const char *name, const esg_load_opts *opts)
{
	esg_npy o;
	char role[ESG_MAX_DIMS];
	if (esg_npy_parse(buf, size, name, &o) < 0 ||
	    layout_roles(&o, opts ? opts->layout : NULL, name, role) < 0)
		return NULL;
	int64_t numel = 1;
	for (int a = 0; a < o.ndim; a++)
		numel *= o.shape[a];
	if (numel == 0) {
		esg_set_error("'%s': empty NPY array", name);
		return NULL;
	}
	/* element strides of the stored array (C or Fortran order) */
	int64_t stride[ESG_MAX_DIMS];
	int64_t s = 1;
	for (int a = 0; a < o.ndim; a++) {
		int ax = o.fortran_order ? a : o.ndim - 1 - a;
		stride[ax] = s;
		s *= o.shape[ax];
	}
	/* output axes: N, C, then spatial in array order */
	int order[ESG_MAX_DIMS], no = 0;
	int64_t odim[ESG_MAX_DIMS], ostr[ESG_MAX_DIMS];
	esg_image *im = calloc(1, sizeof *im);
	float *raw = malloc((size_t)numel * sizeof *raw);
	if (!im || !raw || !(im->data = malloc((size_t)numel * sizeof(float)))) {
		free(raw);
		esg_image_free(im);
		esg_set_error("'%s': out of memory", name);
		return NULL;
	}
	im->n = im->c = 1;
	for (const char *r = "NCS"; *r; r++)
		for (int a = 0; a < o.ndim; a++)
			if (role[a] == *r)
				order[no++] = a;
	for (int k = 0; k < no; k++) {
		int a = order[k];
		odim[k] = o.shape[a];
		ostr[k] = stride[a];
		if (role[a] == 'N')
			im->n = o.shape[a];
		else if (role[a] == 'C')
			im->c = o.shape[a];
		else {
			im->axes[im->nsp] = (char)('i' + im->nsp);
			im->spacing[im->nsp] = 1;
			im->dim[im->nsp++] = o.shape[a];
		}
	}
	for (int a = 0; a < 4; a++)
		im->affine[a * 5] = 1;
	npy_convert(&o, (const unsigned char *)buf + o.data_offset, numel, raw);
	/* gather in output order with an odometer */
	int64_t idx[ESG_MAX_DIMS] = { 0 }, src = 0;
	for (int64_t k = 0; k < numel; k++) {
		im->data[k] = raw[src];
		for (int a = no - 1; a >= 0; a--) {
			src += ostr[a];
			if (++idx[a] < odim[a])
				break;
			src -= ostr[a] * odim[a];
			idx[a] = 0;
		}
	}
	free(raw);
	if (opts && opts->reverse && esg_image_reverse(im) < 0) {
		esg_image_free(im);
		return NULL;
	}
	return im;
}

static esg_image *load_npy(const char *path, const esg_load_opts *opts)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		esg_set_error("cannot open '%s': %s", path, strerror(errno));
		return NULL;
	}
	char *buf = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 1 << 16;
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				esg_set_error("'%s': out of memory", path);
				return NULL;
			}
			buf = nb;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		esg_set_error("cannot read '%s'", path);
		return NULL;
	}
	esg_image *im = esg_npy_image(buf, n, path, opts);
	free(buf);
	return im;
}

static int sniff_npy(const unsigned char *b, size_t got, const char *path)
{
	(void)path;
	return got >= 6 && memcmp(b, "\x93NUMPY", 6) == 0;
}

const esg_image_format esg_format_npy = { ESG_FMT_NPY, sniff_npy, load_npy };
