/* preprocess.c - what esg-load does to an image before a model sees it:
 * channel conversion, 2D slices, intensity normalisation, crop / pad to a
 * multiple; the affine follows every geometric change. */
#include "image/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- selection and percentiles --------------------------------------- */

static void swapf(float *a, float *b)
{
	float t = *a;
	*a = *b;
	*b = t;
}

/* Rearrange x[0..n) so that x[k] is the k-th smallest (Hoare quickselect). */
static void select_k(float *x, int64_t n, int64_t k)
{
	int64_t lo = 0, hi = n - 1;
	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2;
		if (x[mid] < x[lo]) swapf(&x[mid], &x[lo]);
		if (x[hi] < x[lo]) swapf(&x[hi], &x[lo]);
		if (x[hi] < x[mid]) swapf(&x[hi], &x[mid]);
		float pivot = x[mid];
		int64_t i = lo, j = hi;
		while (i <= j) {
			while (x[i] < pivot) i++;
			while (x[j] > pivot) j--;
			if (i <= j) {
				swapf(&x[i], &x[j]);
				i++;
				j--;
			}
		}
		if (k <= j)
			hi = j;
		else if (k >= i)
			lo = i;
		else
			return;
	}
}

/* numpy.percentile(..., method='linear') of the n values in x (reordered). */
static double percentile_inplace(float *x, int64_t n, double p)
{
	double pos = p / 100.0 * (double)(n - 1);
	int64_t k = (int64_t)floor(pos);
	if (k >= n - 1) {
		select_k(x, n, n - 1);
		return x[n - 1];
	}
	select_k(x, n, k);
	float next = x[k + 1];
	for (int64_t m = k + 2; m < n; m++) /* smallest of the upper part */
		if (x[m] < next)
			next = x[m];
	double frac = pos - (double)k;
	return (double)x[k] + ((double)next - (double)x[k]) * frac;
}

int esg_percentile(const float *x, int64_t n, const double *p, int np, double *out)
{
	if (n <= 0)
		return esg_set_error("percentile of no values");
	float *c = malloc((size_t)n * sizeof *c);
	if (!c)
		return esg_set_error("out of memory");
	memcpy(c, x, (size_t)n * sizeof *c);
	for (int q = 0; q < np; q++) {
		if (!(p[q] >= 0 && p[q] <= 100)) {
			free(c);
			return esg_set_error("percentile %g is outside [0, 100]", p[q]);
		}
		out[q] = percentile_inplace(c, n, p[q]);
	}
	free(c);
	return 0;
}

/* ---- normalisation ---------------------------------------------------- */

static int use(float v, int nonzero) { return !nonzero || v != 0; }

int esg_normalise(float *x, int64_t n, esg_norm mode, double lo, double hi, int nonzero)
{
	if (mode == ESG_NORM_NONE)
		return 0;
	int64_t cnt = 0;
	double mn = INFINITY, mx = -INFINITY, sum = 0;
	for (int64_t k = 0; k < n; k++) {
		if (!isfinite(x[k]))
			return esg_set_error("the image has non-finite values (NaN or Inf); "
					     "cannot normalise it");
		if (!use(x[k], nonzero))
			continue;
		cnt++;
		sum += x[k];
		if (x[k] < mn) mn = x[k];
		if (x[k] > mx) mx = x[k];
	}
	if (cnt == 0)
		return 0; /* all zero with nonzero: nothing to normalise */
	double shift, scale = 0, clo = -INFINITY, chi = INFINITY;
	if (mode == ESG_NORM_MINMAX) {
		shift = mn;
		scale = mx > mn ? 1.0 / (mx - mn) : 0;
	} else if (mode == ESG_NORM_ZSCORE) {
		double mean = sum / (double)cnt, ss = 0;
		for (int64_t k = 0; k < n; k++)
			if (use(x[k], nonzero))
				ss += ((double)x[k] - mean) * ((double)x[k] - mean);
		double sd = sqrt(ss / (double)cnt);
		shift = mean;
		scale = sd > 0 ? 1.0 / sd : 0;
	} else if (mode == ESG_NORM_PERCENTILE) {
		if (!(lo >= 0 && lo < hi && hi <= 100))
			return esg_set_error("percentiles %g,%g: want 0 <= LO < HI <= 100", lo, hi);
		float *v = malloc((size_t)cnt * sizeof *v);
		if (!v)
			return esg_set_error("out of memory");
		int64_t m = 0;
		for (int64_t k = 0; k < n; k++)
			if (use(x[k], nonzero))
				v[m++] = x[k];
		clo = percentile_inplace(v, cnt, lo);
		chi = percentile_inplace(v, cnt, hi);
		free(v);
		shift = clo;
		scale = chi > clo ? 1.0 / (chi - clo) : 0;
	} else {
		return esg_set_error("unknown normalisation mode %d", (int)mode);
	}
	for (int64_t k = 0; k < n; k++) {
		if (!use(x[k], nonzero))
			continue;
		double v = x[k];
		v = v < clo ? clo : v > chi ? chi : v;
		x[k] = (float)((v - shift) * scale);
	}
	return 0;
}

int esg_image_normalise(esg_image *im, esg_norm mode, double lo, double hi, int nonzero)
{
	int64_t vox = esg_image_voxels(im);
	for (int64_t b = 0; b < im->n * im->c; b++)
		if (esg_normalise(im->data + b * vox, vox, mode, lo, hi, nonzero) < 0)
			return -1;
	return 0;
}

/* ---- geometry --------------------------------------------------------- */

int esg_fit_multiple(int nsp, const int64_t *dim, const int64_t *mult, int crop,
		     int at_end, int64_t *off, int64_t *newdim)
{
	for (int a = 0; a < nsp; a++) {
		int64_t m = mult[a], d = dim[a];
		if (m < 1)
			return esg_set_error("multiple %lld must be at least 1", (long long)m);
		int64_t nd = crop ? d / m * m : (d + m - 1) / m * m;
		if (nd == 0)
			return esg_set_error("cannot crop axis %d of size %lld to a multiple of %lld",
					     a, (long long)d, (long long)m);
		/* removed (crop, > 0) or added (pad, < 0) voxels; centre: odd one after */
		int64_t diff = d - nd;
		int64_t before = diff >= 0 ? diff / 2 : -((-diff) / 2);
		off[a] = at_end ? 0 : before;
		newdim[a] = nd;
	}
	return 0;
}

void esg_affine_shift(double A[16], const char *axes, const int64_t *off)
{
	for (int a = 0; axes[a]; a++) {
		int col = axes[a] - 'i';
		if (col < 0 || col > 2)
			continue;
		for (int r = 0; r < 3; r++)
			A[r * 4 + 3] += A[r * 4 + col] * (double)off[a];
	}
}

int esg_image_crop_pad(esg_image *im, const int64_t *off, const int64_t *newdim, float pad_value)
{
	/* work in 3D with leading unit axes */
	int64_t od[3] = { 1, 1, 1 }, nd[3] = { 1, 1, 1 }, o[3] = { 0, 0, 0 };
	int lead = 3 - im->nsp;
	for (int a = 0; a < im->nsp; a++) {
		if (newdim[a] < 1)
			return esg_set_error("bad crop size %lld", (long long)newdim[a]);
		od[lead + a] = im->dim[a];
		nd[lead + a] = newdim[a];
		o[lead + a] = off[a];
	}
	int64_t ovox = od[0] * od[1] * od[2], nvox = nd[0] * nd[1] * nd[2];
	int64_t blocks = im->n * im->c;
	float *out = malloc((size_t)(nvox * blocks) * sizeof *out);
	if (!out)
		return esg_set_error("out of memory cropping / padding");
	/* the range of new x whose old x = x + o[2] is inside [0, od[2]) */
	int64_t x0 = o[2] < 0 ? -o[2] : 0, x1 = od[2] - o[2];
	if (x1 > nd[2]) x1 = nd[2];
	for (int64_t b = 0; b < blocks; b++) {
		const float *src = im->data + b * ovox;
		float *dst = out + b * nvox;
		for (int64_t z = 0; z < nd[0]; z++)
			for (int64_t y = 0; y < nd[1]; y++) {
				float *row = dst + (z * nd[1] + y) * nd[2];
				int64_t sz = z + o[0], sy = y + o[1];
				int inside = sz >= 0 && sz < od[0] && sy >= 0 && sy < od[1] && x1 > x0;
				for (int64_t x = 0; x < nd[2]; x++)
					row[x] = pad_value;
				if (inside)
					memcpy(row + x0, src + (sz * od[1] + sy) * od[2] + x0 + o[2],
					       (size_t)(x1 - x0) * sizeof *row);
			}
	}
	free(im->data);
	im->data = out;
	esg_affine_shift(im->affine, im->axes, off);
	for (int a = 0; a < im->nsp; a++)
		im->dim[a] = newdim[a];
	return 0;
}

int esg_image_slice(esg_image *im, char letter, int64_t index)
{
	const char *at = strchr(im->axes, letter);
	if (!letter || !at)
		return esg_set_error("no voxel axis '%c' to slice (the image's axes are %s)",
				     letter ? letter : '?', im->axes);
	if (im->nsp < 2)
		return esg_set_error("cannot take a slice of a 1D image");
	int a = (int)(at - im->axes);
	if (index < 0 || index >= im->dim[a])
		return esg_set_error("slice %c=%lld is outside the image (0 to %lld)", letter,
				     (long long)index, (long long)im->dim[a] - 1);
	int64_t off[ESG_MAX_SPATIAL] = { 0 }, nd[ESG_MAX_SPATIAL];
	for (int d = 0; d < im->nsp; d++)
		nd[d] = im->dim[d];
	off[a] = index;
	nd[a] = 1;
	if (esg_image_crop_pad(im, off, nd, 0) < 0)
		return -1;
	/* drop the unit axis; the data layout does not change */
	for (int d = a; d < im->nsp - 1; d++) {
		im->dim[d] = im->dim[d + 1];
		im->spacing[d] = im->spacing[d + 1];
		im->axes[d] = im->axes[d + 1];
	}
	im->nsp--;
	im->axes[im->nsp] = 0;
	return 0;
}

/* ---- records and channels --------------------------------------------- */

esg_image *esg_image_record(const esg_image *im, int64_t r)
{
	if (r < 0 || r >= im->n) {
		esg_set_error("record %lld out of range", (long long)r);
		return NULL;
	}
	esg_image *o = malloc(sizeof *o);
	if (!o) {
		esg_set_error("out of memory");
		return NULL;
	}
	*o = *im;
	o->n = 1;
	size_t sz = (size_t)(im->c * esg_image_voxels(im));
	if (!(o->data = malloc(sz * sizeof(float)))) {
		free(o);
		esg_set_error("out of memory");
		return NULL;
	}
	memcpy(o->data, im->data + r * (int64_t)sz, sz * sizeof(float));
	return o;
}

static void shape_str(const esg_image *im, char *buf, size_t n)
{
	int64_t s[ESG_MAX_DIMS] = { im->n, im->c };
	for (int a = 0; a < im->nsp; a++)
		s[2 + a] = im->dim[a];
	esg_shape_str(2 + im->nsp, s, buf, n);
}

int esg_image_cat_channels(esg_image *a, esg_image *b)
{
	int same = a->n == b->n && a->nsp == b->nsp;
	for (int d = 0; same && d < a->nsp; d++)
		same = a->dim[d] == b->dim[d];
	if (!same) {
		char sa[128], sb[128];
		shape_str(a, sa, sizeof sa);
		shape_str(b, sb, sizeof sb);
		esg_image_free(b);
		return esg_set_error("shapes differ: %s vs %s ([N, C, spatial...])", sb, sa);
	}
	int64_t vox = esg_image_voxels(a), c = a->c + b->c;
	float *out = malloc((size_t)(a->n * c * vox) * sizeof *out);
	if (!out) {
		esg_image_free(b);
		return esg_set_error("out of memory");
	}
	for (int64_t r = 0; r < a->n; r++) {
		memcpy(out + r * c * vox, a->data + r * a->c * vox, (size_t)(a->c * vox) * sizeof *out);
		memcpy(out + (r * c + a->c) * vox, b->data + r * b->c * vox,
		       (size_t)(b->c * vox) * sizeof *out);
	}
	free(a->data);
	a->data = out;
	a->c = c;
	esg_image_free(b);
	return 0;
}

int esg_image_channels(esg_image *im, esg_chan mode)
{
	if (mode == ESG_CHAN_KEEP)
		return 0;
	int64_t c = im->c;
	if (c < 1 || c > 4)
		return esg_set_error("channel conversion needs a gray, gray+alpha, RGB or RGBA "
				     "image (this one has %lld channels)", (long long)c);
	int color = c >= 3, alpha = c == 2 || c == 4;
	int64_t want = mode == ESG_CHAN_GRAY ? 1 : mode == ESG_CHAN_RGB ? 3 : c - alpha;
	int64_t vox = esg_image_voxels(im);
	float *out = malloc((size_t)(im->n * want * vox) * sizeof *out);
	if (!out)
		return esg_set_error("out of memory");
	for (int64_t r = 0; r < im->n; r++) {
		const float *s = im->data + r * c * vox;
		float *d = out + r * want * vox;
		for (int64_t v = 0; v < vox; v++) {
			float g = color ? 0.299f * s[v] + 0.587f * s[vox + v] + 0.114f * s[2 * vox + v]
					: s[v];
			for (int64_t k = 0; k < want; k++)
				d[k * vox + v] = want == 1 ? g : color ? s[k * vox + v] : s[v];
		}
	}
	free(im->data);
	im->data = out;
	im->c = want;
	return 0;
}
