/* local.c - receptive-field-local evaluation of a voxel-sum score: how the
 * receptive field is found and how crops are batched (local.h). */
#include "attr/local.h"
#include "shim/esg_torch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ALIGN 64

static void off(esg_local *L, const char *fmt, const char *arg)
{
	L->on = 0;
	snprintf(L->info, sizeof L->info, fmt, arg ? arg : "");
}

/* Copy the box [lo, hi) of vol ([C, dims...]) into crop ([C, hi - lo...]),
 * or (back) add crop into that box of vol. */
static void crop_move(int C, int nsp, const int64_t *dims, float *vol, const int64_t *lo,
		      const int64_t *hi, float *crop, int back)
{
	int64_t idx[ESG_MAX_DIMS];
	size_t len = (size_t)(hi[nsp - 1] - lo[nsp - 1]), V = 1;
	for (int a = 0; a < nsp; a++)
		V *= (size_t)dims[a];
	for (int c = 0; c < C; c++) {
		memcpy(idx, lo, (size_t)nsp * sizeof *idx);
		for (;;) {
			size_t off = 0;
			for (int a = 0; a < nsp; a++)
				off = off * (size_t)dims[a] + (size_t)idx[a];
			float *v = vol + (size_t)c * V + off;
			if (back)
				for (size_t i = 0; i < len; i++)
					v[i] += crop[i];
			else
				memcpy(crop, v, len * sizeof *crop);
			crop += len;
			int a = nsp - 2;
			for (; a >= 0; a--) {
				if (++idx[a] < hi[a])
					break;
				idx[a] = lo[a];
			}
			if (a < 0)
				break;
		}
	}
}

static void crop_copy(int C, int nsp, const int64_t *dims, const float *src, const int64_t *lo,
		      const int64_t *hi, float *dst)
{
	crop_move(C, nsp, dims, (float *)src, lo, hi, dst, 0);
}

/* Flat spatial index of a voxel, and back. */
static size_t flat(int nsp, const int64_t *dims, const int64_t *v)
{
	size_t off = 0;
	for (int a = 0; a < nsp; a++)
		off = off * (size_t)dims[a] + (size_t)v[a];
	return off;
}

static void unflat(int nsp, const int64_t *dims, size_t off, int64_t *v)
{
	for (int a = nsp - 1; a >= 0; a--) {
		v[a] = (int64_t)(off % (size_t)dims[a]);
		off /= (size_t)dims[a];
	}
}

/* The whole-volume outputs of one item ([C, dims]): new, or NULL with the
 * reason in esg_error. */
static float *run_full(esg_local *L, const float *x, int check, int64_t *Cout)
{
	int64_t shape[ESG_MAX_DIMS] = { 1, L->C };
	memcpy(shape + 2, L->dims, (size_t)L->nsp * sizeof *shape);
	esg_tensor *out = NULL;
	if (esg_model_voxel_forward(L->model, x, L->nsp + 2, shape, check, &out))
		return NULL;
	int same = out->ndim == L->nsp + 2;
	for (int a = 0; same && a < L->nsp; a++)
		same = out->shape[2 + a] == L->dims[a];
	if (!same) {
		char s[128];
		esg_shape_str(out->ndim, out->shape, s, sizeof s);
		esg_torch_tensor_free(out);
		esg_set_error("its per-voxel output %s is not the input's spatial size", s);
		return NULL;
	}
	*Cout = out->shape[1];
	float *y = (float *)out->data;
	out->data = NULL;
	esg_torch_tensor_free(out);
	L->passes++;
	L->evaluations++;
	return y;
}

/* Probe: the block [c, c + K) of x0 (all channels) set to NaN (nan = 1) or
 * moved by 1000 (1 + |x|); the bounding box [mn, mx] of the output voxels
 * that change (any channel) and their count (-1: the model failed; 0:
 * none). */
static int64_t probe(esg_local *L, const float *x0, const float *y0, float ymax,
		     const int64_t *c, int64_t K, int nan, int64_t *mn, int64_t *mx)
{
	size_t n = (size_t)L->C * L->V;
	float *x = malloc(n * sizeof *x);
	if (!x)
		return -2;
	memcpy(x, x0, n * sizeof *x);
	int64_t hi[ESG_MAX_DIMS], idx[ESG_MAX_DIMS];
	for (int a = 0; a < L->nsp; a++)
		hi[a] = c[a] + K < L->dims[a] ? c[a] + K : L->dims[a];
	memcpy(idx, c, (size_t)L->nsp * sizeof *idx);
	for (;;) {
		size_t off = flat(L->nsp, L->dims, idx);
		for (int ch = 0; ch < L->C; ch++) {
			float *p = x + (size_t)ch * L->V + off;
			*p = nan ? NAN : *p + 1000.0f * (1.0f + fabsf(*p));
		}
		int a = L->nsp - 1;
		for (; a >= 0; a--) {
			if (++idx[a] < hi[a])
				break;
			idx[a] = c[a];
		}
		if (a < 0)
			break;
	}
	int64_t Cout = 0;
	float *y = run_full(L, x, 0, &Cout);
	free(x);
	if (!y)
		return -1;
	float tol = nan ? 0 : 1e-5f * ymax;
	int64_t count = 0, v[ESG_MAX_DIMS];
	for (size_t i = 0; i < L->V; i++) {
		int ch = 0;
		for (; ch < L->Cout; ch++) {
			float a = y[(size_t)ch * L->V + i], b = y0[(size_t)ch * L->V + i];
			if (!(fabsf(a - b) <= tol))
				break;
		}
		if (ch == L->Cout)
			continue;
		unflat(L->nsp, L->dims, i, v);
		for (int a = 0; a < L->nsp; a++) {
			if (!count || v[a] < mn[a])
				mn[a] = v[a];
			if (!count || v[a] > mx[a])
				mx[a] = v[a];
		}
		count++;
	}
	free(y);
	return count;
}

/* The NaN probe at the block [c, c + K), and the finite one when `finite`:
 * the union of their boxes.  1: found, 0: not local (L->info says why),
 * -1: error. */
static int probe_both(esg_local *L, const float *x0, const float *y0, float ymax, const int64_t *c,
		      int64_t K, int finite, int64_t *mn, int64_t *mx)
{
	int64_t mn2[ESG_MAX_DIMS], mx2[ESG_MAX_DIMS];
	int64_t n1 = probe(L, x0, y0, ymax, c, K, 1, mn, mx);
	if (n1 == -2)
		return esg_set_error("out of memory");
	if (n1 < 0) {
		off(L, "off: the NaN probe failed: %s", esg_error());
		return 0;
	}
	int64_t n2 = finite ? probe(L, x0, y0, ymax, c, K, 0, mn2, mx2) : 0;
	if (n2 == -2)
		return esg_set_error("out of memory");
	if (n2 < 0) {
		off(L, "off: the probe failed: %s", esg_error());
		return 0;
	}
	if (!n1 && !n2) {
		off(L, "off: changing an input voxel changed no output (no dependence to bound)", NULL);
		return 0;
	}
	for (int a = 0; a < L->nsp; a++) {
		if (!n1 || (n2 && mn2[a] < mn[a]))
			mn[a] = mn2[a];
		if (!n1 || (n2 && mx2[a] > mx[a]))
			mx[a] = mx2[a];
	}
	int64_t box = 1;
	int border = 0;
	for (int a = 0; a < L->nsp; a++) {
		box *= mx[a] - mn[a] + 1;
		border |= mn[a] == 0 || mx[a] == L->dims[a] - 1;
	}
	if ((size_t)(n1 > n2 ? n1 : n2) == L->V) {
		off(L, "off: one input voxel changes every output voxel (global pooling, normalisation "
		       "over the volume, attention, or a receptive field as large as the volume)", NULL);
		return 0;
	}
	if (border) {
		off(L, "off: the receptive field of the centre voxel reaches the volume's border "
		       "(too large for this size, or not bounded)", NULL);
		return 0;
	}
	(void)box;
	return 1;
}

/* Does the model on the input cropped at s (all axes, to the end) give the
 * whole-volume outputs away from the crop's start (margin m)?  1 / 0. */
static int shift_ok(esg_local *L, const float *x0, const float *y0, float ymax, int64_t s,
		    const int64_t *margin)
{
	int64_t lo[ESG_MAX_DIMS], hi[ESG_MAX_DIMS], cd[ESG_MAX_DIMS], shape[ESG_MAX_DIMS];
	size_t cv = 1;
	for (int a = 0; a < L->nsp; a++) {
		lo[a] = s;
		hi[a] = L->dims[a];
		cd[a] = hi[a] - lo[a];
		cv *= (size_t)cd[a];
	}
	float *x = malloc((size_t)L->C * cv * sizeof *x);
	if (!x)
		return -1;
	crop_copy(L->C, L->nsp, L->dims, x0, lo, hi, x);
	shape[0] = 1;
	shape[1] = L->C;
	memcpy(shape + 2, cd, (size_t)L->nsp * sizeof *cd);
	esg_tensor *out = NULL;
	int rc = esg_model_voxel_forward(L->model, x, L->nsp + 2, shape, 1, &out);
	free(x);
	if (rc)
		return 0; /* the model refuses the size: not this period */
	L->passes++;
	L->evaluations++;
	int ok = out->ndim == L->nsp + 2 && out->shape[1] == L->Cout;
	for (int a = 0; ok && a < L->nsp; a++)
		ok = out->shape[2 + a] == cd[a];
	const float *y = out->data;
	float tol = 1e-4f * ymax + 1e-6f;
	int64_t v[ESG_MAX_DIMS], w[ESG_MAX_DIMS];
	for (size_t i = 0; ok && i < cv; i++) {
		unflat(L->nsp, cd, i, v);
		int inside = 1;
		for (int a = 0; a < L->nsp; a++) {
			inside &= v[a] >= margin[a];
			w[a] = v[a] + s;
		}
		if (!inside)
			continue;
		size_t j = flat(L->nsp, L->dims, w);
		for (int ch = 0; ok && ch < L->Cout; ch++)
			ok = fabsf(y[(size_t)ch * cv + i] - y0[(size_t)ch * L->V + j]) <= tol;
	}
	esg_torch_tensor_free(out);
	return ok;
}

/* esg_local_open, probing on x0 shaped `shape`; the wrapper's mask must be
 * the volume's size, `volume` (spatial). */
static int local_open(esg_local *L, struct esg_model *m, int ndim, const int64_t *shape,
		      const float *x0, const int64_t *box, int max_batch, esg_local_fn fn, void *ctx,
		      const int64_t *volume)
{
	memset(L, 0, sizeof *L);
	L->model = m;
	L->fn = fn;
	L->ctx = ctx;
	L->max_batch = max_batch > 0 ? max_batch : 1;
	L->nsp = ndim - 2;
	if (L->nsp < 1) {
		off(L, "off: the input has no spatial axes", NULL);
		return 0;
	}
	L->C = (int)shape[1];
	L->V = 1;
	for (int a = 0; a < L->nsp; a++) {
		L->dims[a] = shape[2 + a];
		L->V *= (size_t)L->dims[a];
	}
	if (esg_model_amp(m) != ESG_AMP_OFF) {
		off(L, "off: --amp (per-voxel outputs are compared in float32)", NULL);
		return 0;
	}
	char kind[32];
	if (esg_model_voxel_score(m, kind, sizeof kind)) {
		off(L, "off: %s", esg_error());
		return 0;
	}
	if (!strcmp(kind, "fixed-mask")) {
		L->kind = ESG_LOCAL_FIXED_MASK;
	} else if (!strcmp(kind, "argmax")) {
		L->kind = ESG_LOCAL_ARGMAX;
	} else {
		off(L, "off: the wrapper's score is not a sum of per-voxel terms%s",
		    *kind ? "" : " (otsu: a threshold over the whole volume)");
		return 0;
	}
	if (L->kind == ESG_LOCAL_FIXED_MASK) {
		if (esg_model_buffer_get(m, "mask", &L->mask)) {
			off(L, "off: %s", esg_error());
			return 0;
		}
		int fits = L->mask->ndim == ndim;
		for (int a = 0; fits && a < L->nsp; a++)
			fits = L->mask->shape[2 + a] == volume[a];
		if (!fits) {
			off(L, "off: the wrapper's mask is not the input's size (a patch of the volume)", NULL);
			return 0;
		}
	}

	/* whole-volume outputs, then the probes at the centre */
	int64_t Cout = 0;
	float *y0 = run_full(L, x0, 1, &Cout);
	if (!y0) {
		off(L, "off: %s", esg_error());
		return 0;
	}
	L->Cout = (int)Cout;
	float ymax = 0;
	for (size_t i = 0; i < (size_t)Cout * L->V; i++)
		ymax = fabsf(y0[i]) > ymax ? fabsf(y0[i]) : ymax;
	int64_t c[ESG_MAX_DIMS], mn[ESG_MAX_DIMS], mx[ESG_MAX_DIMS], margin[ESG_MAX_DIMS];
	for (int a = 0; a < L->nsp; a++)
		c[a] = L->dims[a] / 2;
	int rc = probe_both(L, x0, y0, ymax, c, 1, 0, mn, mx);
	if (rc <= 0)
		goto done;
	/* nothing to gain when the smallest crop, a corner's, is the volume */
	int whole = 1;
	for (int a = 0; a < L->nsp; a++) {
		int64_t b = box ? box[a] : 1, lo = c[a] - mn[a], hi = mx[a] - c[a];
		whole &= b + hi + lo >= L->dims[a];   /* [0, b): inputs [0, b + hi + lo) */
	}
	if (whole) {
		off(L, "off: the crop of a region at the volume's corner is already the whole volume "
		       "at this size (receptive field too large for the gain)", NULL);
		rc = 0;
		goto done;
	}
	/* the shift period */
	rc = 0;
	for (int64_t s = 1; s <= MAX_ALIGN && !L->align; s *= 2) {
		int fits = 1;
		for (int a = 0; a < L->nsp; a++) {
			int64_t r = c[a] - mn[a] > mx[a] - c[a] ? c[a] - mn[a] : mx[a] - c[a];
			margin[a] = r + 2 * s; /* r: one phase; S - 1 more at most */
			fits &= s + margin[a] < L->dims[a];
		}
		if (!fits)
			break;
		int ok = shift_ok(L, x0, y0, ymax, s, margin);
		if (ok < 0) {
			rc = esg_set_error("out of memory");
			goto done;
		}
		if (ok)
			L->align = s;
	}
	if (!L->align) {
		off(L, "off: no shift of the input by 1, 2, 4 .. 64 voxels that fits the volume shifts "
		       "the outputs alike (not translation-equivariant at this size)", NULL);
		goto done;
	}
	/* every phase modulo the period, and the finite probe */
	if ((rc = probe_both(L, x0, y0, ymax, c, L->align, 1, mn, mx)) <= 0)
		goto done;
	rc = 0;
	char *p = L->info, *end = L->info + sizeof L->info;
	p += snprintf(p, (size_t)(end - p), "crop rf=");
	for (int a = 0; a < L->nsp; a++) {
		L->lo[a] = c[a] + L->align - 1 - mn[a];
		L->hi[a] = mx[a] - c[a];
		if (p < end)
			p += snprintf(p, (size_t)(end - p), "%s-%lld/+%lld", a ? "," : "",
				      (long long)L->lo[a], (long long)L->hi[a]);
	}
	if (p < end)
		snprintf(p, (size_t)(end - p), " align=%lld", (long long)L->align);
	L->on = 1;
	L->item = -1;
	L->y = y0;      /* item 0's outputs, for esg_local_item */
	y0 = NULL;
done:
	free(y0);
	return rc < 0 ? -1 : 0;
}

/* local_open on a crop of x0 at the volume's centre, 64 voxels a side,
 * then 128 ... until the model shows itself local or the crop is the
 * volume; what is found then holds for the whole volume (the model is
 * translation-equivariant by its shift period, checked on the crop).  grad:
 * one gradient call on that crop also measures what a value costs with
 * autograd (for tiles, whose first size a guess would put far off). */
static int open_on_crops(esg_local *L, struct esg_model *m, int ndim, const int64_t *shape,
			 const float *x0, const int64_t *box, int max_batch, esg_local_fn fn, void *ctx,
			 int grad)
{
	int nsp = ndim - 2;
	for (int64_t K = 64;; K *= 2) {
		int64_t cs[ESG_MAX_DIMS] = { 1, shape[1] }, lo[ESG_MAX_DIMS], hi[ESG_MAX_DIMS];
		size_t n = (size_t)shape[1];
		int whole = 1;
		for (int a = 0; a < nsp; a++) {
			int64_t d = shape[2 + a];
			cs[2 + a] = K < d ? K : d;
			lo[a] = (d - cs[2 + a]) / 2;
			hi[a] = lo[a] + cs[2 + a];
			n *= (size_t)cs[2 + a];
			whole &= cs[2 + a] == d;
		}
		if (whole && !grad)  /* the volume itself: item 0's outputs are kept */
			return local_open(L, m, ndim, shape, x0, box, max_batch, fn, ctx, shape + 2);
		float *xc = malloc(n * sizeof *xc), *g = grad ? malloc(n * sizeof *g) : NULL;
		float *w = grad ? malloc(n / (size_t)shape[1] * sizeof *w) : NULL;
		if (!xc || (grad && (!g || !w))) {
			free(xc);
			free(g);
			free(w);
			return esg_set_error("out of memory");
		}
		crop_copy((int)shape[1], nsp, shape + 2, x0, lo, hi, xc);
		int rc = local_open(L, m, ndim, cs, xc, box, max_batch, fn, ctx, shape + 2);
		if (!rc && L->on && grad) {
			double s;
			for (size_t i = 0; i < n / (size_t)shape[1]; i++)
				w[i] = 1;
			rc = esg_model_voxel_grad(m, xc, ndim, cs, 0, L->kind == ESG_LOCAL_ARGMAX, w, g, &s);
		}
		free(xc);
		free(g);
		free(w);
		if (rc)
			return -1;
		if (L->on || whole)
			break;
		esg_local_close(L);
	}
	if (!L->on)
		return 0;
	/* what was found on the crop holds for the volume; its outputs do not */
	free(L->y);
	L->y = NULL;
	L->V = 1;
	for (int a = 0; a < nsp; a++) {
		L->dims[a] = shape[2 + a];
		L->V *= (size_t)L->dims[a];
	}
	return 0;
}

int esg_local_open(esg_local *L, struct esg_model *m, int ndim, const int64_t *shape,
		   const float *x0, const int64_t *box, int max_batch, esg_local_fn fn, void *ctx)
{
	return open_on_crops(L, m, ndim, shape, x0, box, max_batch, fn, ctx, 0);
}

int esg_local_open_tiles(esg_local *L, struct esg_model *m, int ndim, const int64_t *shape,
			 const float *x0)
{
	return open_on_crops(L, m, ndim, shape, x0, NULL, 1, NULL, NULL, 1);
}

/* The per-voxel term of the score at voxel i of an output [Cout, n]. */
static double term(const esg_local *L, const float *y, size_t n, size_t i, size_t gi)
{
	int64_t t = L->target;
	if (L->kind == ESG_LOCAL_ARGMAX) {
		int best = 0;
		for (int ch = 1; ch < L->Cout; ch++)
			if (y[(size_t)ch * n + i] > y[(size_t)best * n + i])
				best = ch;
		return best == t ? (double)y[(size_t)t * n + i] : 0.0;
	}
	const esg_tensor *M = L->mask;
	size_t mi = M->shape[0] == 1 ? 0 : (size_t)L->item, mc = M->shape[1] == 1 ? 0 : (size_t)t;
	float w = ((const float *)M->data)[(mi * (size_t)M->shape[1] + mc) * L->V + gi];
	return (double)(y[(size_t)t * n + i] * w);
}

int esg_local_item(esg_local *L, const float *x, int64_t item, int64_t target)
{
	if (!L->on)
		return 0;
	if (target < 0 || target >= L->Cout) {
		off(L, "off: the target is not a channel of the per-voxel output", NULL);
		return 0;
	}
	if (L->kind == ESG_LOCAL_FIXED_MASK && L->mask->shape[0] != 1 && item >= L->mask->shape[0]) {
		off(L, "off: the wrapper's mask has fewer items than the record", NULL);
		return 0;
	}
	int64_t Cout = 0;
	int first = L->item < 0;
	L->x = x;
	L->item = item;
	L->target = target;
	if (!(first && item == 0 && L->y)) {   /* esg_local_open kept item 0's */
		free(L->y);
		if (!(L->y = run_full(L, x, 1, &Cout)))
			return -1;
	}
	if (!first)
		return 0;
	/* the declared decomposition against the wrapper's own score */
	double s = 0, sa = 0;
	for (size_t i = 0; i < L->V; i++) {
		double g = term(L, L->y, L->V, i, i);
		s += g;
		sa += fabs(g);
	}
	int64_t shape[ESG_MAX_DIMS] = { 1, L->C };
	memcpy(shape + 2, L->dims, (size_t)L->nsp * sizeof *shape);
	esg_tensor *out = NULL;
	if (esg_model_forward(L->model, x, L->nsp + 2, shape, &out))
		return -1;
	L->passes++;
	L->evaluations++;
	double f = out->ndim == 2 && target < out->shape[1] ? esg_tensor_get(out, target) : NAN;
	esg_torch_tensor_free(out);
	if (!(fabs(f - s) <= 1e-5 * sa + 1e-6)) {
		char why[96];
		snprintf(why, sizeof why, "%.9g vs %.9g", f, s);
		off(L, "off: the wrapper's score is not the sum of its per-voxel terms (%s)", why);
	}
	return 0;
}

/* The input crop [*s, *e) along axis a that computes the outputs [olo, ohi) */
static void crop_axis(const esg_local *L, int a, int64_t olo, int64_t ohi, int64_t *s, int64_t *e)
{
	int64_t d = L->dims[a], S = L->align;
	/* output v reads the inputs [v - hi, v + lo] */
	int64_t b = olo - L->hi[a] > 0 ? olo - L->hi[a] : 0;
	int64_t f = ohi + L->lo[a] < d ? ohi + L->lo[a] : d;
	b = b / S * S;
	f = b + (f - b + S - 1) / S * S;
	*s = b;
	*e = f < d ? f : d;
}

void esg_local_boxes(const esg_local *L, const int64_t *blo, const int64_t *bhi, int64_t *olo,
		     int64_t *ohi, int64_t *clo, int64_t *chi)
{
	for (int a = 0; a < L->nsp; a++) {
		int64_t d = L->dims[a];
		olo[a] = blo[a] - L->lo[a] > 0 ? blo[a] - L->lo[a] : 0;
		ohi[a] = bhi[a] + L->hi[a] < d ? bhi[a] + L->hi[a] : d;
		crop_axis(L, a, olo[a], ohi[a], &clo[a], &chi[a]);
	}
}

int esg_local_flush(esg_local *L)
{
	if (!L->used)
		return 0;
	int n = L->used, nsp = L->nsp;
	L->cshape[0] = n;
	esg_tensor *out = NULL;
	if (esg_model_voxel_forward(L->model, L->buf, nsp + 2, L->cshape, 1, &out))
		return -1;
	int ok = out->ndim == nsp + 2 && out->shape[0] == n && out->shape[1] == L->Cout;
	for (int a = 0; ok && a < nsp; a++)
		ok = out->shape[2 + a] == L->cshape[2 + a];
	if (!ok) {
		esg_torch_tensor_free(out);
		return esg_set_error("the per-voxel output of a crop is not the crop's size");
	}
	L->passes++;
	L->evaluations += n;
	L->used = 0;
	size_t cv = 1;
	for (int a = 0; a < nsp; a++)
		cv *= (size_t)L->cshape[2 + a];
	const float *ys = out->data;
	for (int b = 0; b < n; b++) {
		const float *y = ys + (size_t)b * L->Cout * cv;
		const int64_t *clo = L->clo + (size_t)b * nsp, *olo = L->olo + (size_t)b * nsp,
			      *ohi = L->ohi + (size_t)b * nsp;
		int64_t v[ESG_MAX_DIMS], w[ESG_MAX_DIMS], cd[ESG_MAX_DIMS];
		memcpy(cd, L->cshape + 2, (size_t)nsp * sizeof *cd);
		memcpy(v, olo, (size_t)nsp * sizeof *v);
		double delta = 0;
		for (;;) {
			for (int a = 0; a < nsp; a++)
				w[a] = v[a] - clo[a];
			size_t gi = flat(nsp, L->dims, v), ci = flat(nsp, cd, w);
			delta += term(L, y, cv, ci, gi) - term(L, L->y, L->V, gi, gi);
			int a = nsp - 1;
			for (; a >= 0; a--) {
				if (++v[a] < ohi[a])
					break;
				v[a] = olo[a];
			}
			if (a < 0)
				break;
		}
		L->fn(L->ctx, L->tags[b], delta);
	}
	esg_torch_tensor_free(out);
	return 0;
}

float *esg_local_slot(esg_local *L, const int64_t *olo, const int64_t *ohi, const int64_t *clo,
		      const int64_t *chi)
{
	int nsp = L->nsp, same = L->cshape[1] == L->C;
	for (int a = 0; same && a < nsp; a++)
		same = L->cshape[2 + a] == chi[a] - clo[a];
	if (!same) {
		if (esg_local_flush(L))
			return NULL;
		L->cshape[1] = L->C;
		L->cvals = (size_t)L->C;
		for (int a = 0; a < nsp; a++) {
			L->cshape[2 + a] = chi[a] - clo[a];
			L->cvals *= (size_t)L->cshape[2 + a];
		}
		L->cap = esg_model_batch_fit(L->model, 0, (int64_t)L->cvals, L->cvals * sizeof(float),
					     L->max_batch);
		if (L->cap < 1)
			L->cap = 1;
		if ((size_t)L->cap * L->cvals > L->bufvals) {
			free(L->buf);
			L->bufvals = (size_t)L->cap * L->cvals;
			if (!(L->buf = malloc(L->bufvals * sizeof *L->buf))) {
				L->bufvals = 0;
				esg_set_error("out of memory for a batch of %d crops", L->cap);
				return NULL;
			}
		}
		if (!L->tags) {
			L->tags = malloc((size_t)L->max_batch * sizeof *L->tags);
			L->clo = malloc((size_t)L->max_batch * nsp * sizeof *L->clo);
			L->olo = malloc((size_t)L->max_batch * nsp * sizeof *L->olo);
			L->ohi = malloc((size_t)L->max_batch * nsp * sizeof *L->ohi);
			if (!L->tags || !L->clo || !L->olo || !L->ohi) {
				esg_set_error("out of memory");
				return NULL;
			}
		}
	}
	int b = L->used;
	memcpy(L->clo + (size_t)b * nsp, clo, (size_t)nsp * sizeof *clo);
	memcpy(L->olo + (size_t)b * nsp, olo, (size_t)nsp * sizeof *olo);
	memcpy(L->ohi + (size_t)b * nsp, ohi, (size_t)nsp * sizeof *ohi);
	float *p = L->buf + (size_t)b * L->cvals;
	crop_copy(L->C, nsp, L->dims, L->x, clo, chi, p);
	return p;
}

int esg_local_commit(esg_local *L, int64_t tag)
{
	L->tags[L->used] = tag;
	if (++L->used >= L->cap)
		return esg_local_flush(L);
	return 0;
}

void esg_local_close(esg_local *L)
{
	esg_torch_tensor_free(L->mask);
	free(L->y);
	free(L->buf);
	free(L->tags);
	free(L->clo);
	free(L->olo);
	free(L->ohi);
	L->mask = NULL;
	L->y = L->buf = NULL;
	L->tags = L->clo = L->olo = L->ohi = NULL;
}

/* ---- tiles: one item's score and gradient, tile by tile ---------------- */

#define MAX_TILES_PER_AXIS 32

/* Tile k of n along axis a: the outputs it answers for [*olo, *ohi). */
static void tile_axis(const esg_local *L, int a, int64_t n, int64_t k, int64_t *olo, int64_t *ohi)
{
	*olo = L->dims[a] * k / n;
	*ohi = L->dims[a] * (k + 1) / n;
}

/* The grid (tiles per axis, n) whose crops hold at most max_values input
 * values each and the fewest in all: per axis the crops' largest and
 * summed sizes for each count, then every combination.  0: none fits. */
static int plan_tiles(const esg_local *L, int64_t max_values, int64_t *n, int64_t *crop_max)
{
	int nsp = L->nsp;
	int64_t big[ESG_MAX_DIMS][MAX_TILES_PER_AXIS + 1], sum[ESG_MAX_DIMS][MAX_TILES_PER_AXIS + 1];
	int64_t top[ESG_MAX_DIMS];
	for (int a = 0; a < nsp; a++) {
		top[a] = L->dims[a] < MAX_TILES_PER_AXIS ? L->dims[a] : MAX_TILES_PER_AXIS;
		for (int64_t t = 1; t <= top[a]; t++) {
			big[a][t] = sum[a][t] = 0;
			for (int64_t k = 0; k < t; k++) {
				int64_t olo, ohi, s, e;
				tile_axis(L, a, t, k, &olo, &ohi);
				crop_axis(L, a, olo, ohi, &s, &e);
				big[a][t] = e - s > big[a][t] ? e - s : big[a][t];
				sum[a][t] += e - s;
			}
		}
	}
	int64_t t[ESG_MAX_DIMS];
	double best = -1;
	for (int a = 0; a < nsp; a++)
		t[a] = 1;
	for (;;) {
		double one = L->C, all = 1;
		for (int a = 0; a < nsp; a++) {
			one *= (double)big[a][t[a]];
			all *= (double)sum[a][t[a]];
		}
		if (one <= (double)max_values && (best < 0 || all < best)) {
			best = all;
			for (int a = 0; a < nsp; a++) {
				n[a] = t[a];
				crop_max[a] = big[a][t[a]];
			}
		}
		int a = nsp - 1;
		for (; a >= 0; a--) {
			if (++t[a] <= top[a])
				break;
			t[a] = 1;
		}
		if (a < 0)
			break;
	}
	return best >= 0;
}

/* One tile's share of every channel's score: the per-voxel terms of the
 * outputs [olo, ohi) of the crop xc (at clo, spatial size cdims), added
 * into scores (L->target is each channel in turn). */
static int tile_scores(esg_local *L, const float *xc, const int64_t *cshape, const int64_t *cdims,
		       const int64_t *clo, const int64_t *olo, const int64_t *ohi, double *scores)
{
	int nsp = L->nsp;
	esg_tensor *out = NULL;
	if (esg_model_voxel_forward(L->model, xc, nsp + 2, cshape, 1, &out))
		return -1;
	const float *y = (const float *)out->data;
	size_t cn = 1;
	for (int a = 0; a < nsp; a++)
		cn *= (size_t)cdims[a];
	int64_t keep = L->target;
	for (size_t i = 0; i < cn; i++) {
		int64_t v[ESG_MAX_DIMS];
		unflat(nsp, cdims, i, v);
		int in = 1;
		for (int a = 0; a < nsp; a++) {
			v[a] += clo[a];
			in &= v[a] >= olo[a] && v[a] < ohi[a];
		}
		if (!in)
			continue;
		size_t gi = flat(nsp, L->dims, v);
		for (L->target = 0; L->target < L->Cout; L->target++)
			scores[L->target] += term(L, y, cn, i, gi);
	}
	L->target = keep;
	esg_torch_tensor_free(out);
	return 0;
}

/* The tiles of grid n (crops at most cmax), each scored over its outputs
 * alone: *total and, when grad, the gradients added into it; or, when
 * scores, every channel's score (without autograd) added into scores. */
static int run_tiles(esg_local *L, const float *x, const float *ref, int rule, int64_t target,
		     const float *mask, const int64_t *n, const int64_t *cmax, float *grad,
		     double *total, double *scores)
{
	int nsp = L->nsp, argmax = L->kind == ESG_LOCAL_ARGMAX;
	size_t cv = 1;
	for (int a = 0; a < nsp; a++)
		cv *= (size_t)cmax[a];
	float *xc = malloc((size_t)L->C * cv * sizeof *xc), *w = malloc(cv * sizeof *w);
	float *gc = grad ? malloc((size_t)L->C * cv * sizeof *gc) : NULL;
	float *rc_ = ref ? malloc((size_t)L->C * cv * sizeof *rc_) : NULL;
	if (!xc || !w || (grad && !gc) || (ref && !rc_)) {
		free(xc);
		free(w);
		free(gc);
		free(rc_);
		return esg_set_error("out of memory for a tile of %zu voxels", cv);
	}
	if (grad)
		memset(grad, 0, (size_t)L->C * L->V * sizeof *grad);
	if (scores)
		memset(scores, 0, (size_t)L->Cout * sizeof *scores);
	int64_t k[ESG_MAX_DIMS] = { 0 };
	*total = 0;
	int rc = 0;
	for (;;) {
		int64_t olo[ESG_MAX_DIMS], ohi[ESG_MAX_DIMS], clo[ESG_MAX_DIMS], chi[ESG_MAX_DIMS];
		int64_t cshape[ESG_MAX_DIMS] = { 1, L->C }, cdims[ESG_MAX_DIMS];
		size_t cn = 1;
		for (int a = 0; a < nsp; a++) {
			tile_axis(L, a, n[a], k[a], &olo[a], &ohi[a]);
			crop_axis(L, a, olo[a], ohi[a], &clo[a], &chi[a]);
			cdims[a] = cshape[2 + a] = chi[a] - clo[a];
			cn *= (size_t)cdims[a];
		}
		crop_copy(L->C, nsp, L->dims, x, clo, chi, xc);
		if (scores) {
			if ((rc = tile_scores(L, xc, cshape, cdims, clo, olo, ohi, scores)))
				break;
			goto next;
		}
		if (ref)
			crop_copy(L->C, nsp, L->dims, ref, clo, chi, rc_);
		/* the weights: the score's over the tile's outputs, 0 around them */
		for (size_t i = 0; i < cn; i++) {
			int64_t v[ESG_MAX_DIMS];
			unflat(nsp, cdims, i, v);
			int in = 1;
			for (int a = 0; a < nsp; a++) {
				v[a] += clo[a];
				in &= v[a] >= olo[a] && v[a] < ohi[a];
			}
			w[i] = !in ? 0.0f : mask ? mask[flat(nsp, L->dims, v)] : 1.0f;
		}
		double s = 0;
		rc = rule == ESG_RULE_PLAIN
			? esg_model_voxel_grad(L->model, xc, nsp + 2, cshape, target, argmax, w, gc, &s)
			: esg_model_mask_grad(L->model, (esg_backward_rule)rule, xc, rc_, nsp + 2, cshape,
					      target, w, gc, &s);
		if (rc)
			break;
		*total += s;
		if (grad)
			crop_move(L->C, nsp, L->dims, grad, clo, chi, gc, 1);
	next:
		L->passes++;
		L->evaluations++;
		int a = nsp - 1;
		for (; a >= 0; a--) {
			if (++k[a] < n[a])
				break;
			k[a] = 0;
		}
		if (a < 0)
			break;
	}
	free(xc);
	free(w);
	free(gc);
	free(rc_);
	return rc ? -1 : 0;
}

/* The grid for at most max_values input values per crop (then finer
 * while the budget refuses a tile), and run_tiles over it. */
static int tile_loop(esg_local *L, const float *x, const float *ref, int rule, int64_t target,
		     const float *mask, int64_t max_values, float *grad, double *score,
		     double *scores, int64_t *grid)
{
	int nsp = L->nsp;
	for (;;) {
		int64_t n[ESG_MAX_DIMS], cmax[ESG_MAX_DIMS];
		if (!plan_tiles(L, max_values > 0 ? max_values : INT64_MAX, n, cmax)) {
			double v = L->C;
			for (int a = 0; a < nsp; a++) {
				int64_t olo, ohi, s, e;
				int64_t t = L->dims[a] < MAX_TILES_PER_AXIS ? L->dims[a] : MAX_TILES_PER_AXIS;
				tile_axis(L, a, t, t / 2, &olo, &ohi);
				crop_axis(L, a, olo, ohi, &s, &e);
				v *= (double)(e - s);
			}
			return esg_set_error("even the smallest tile of the volume (%.0f input values with "
					     "its receptive field) does not fit the memory budget, which "
					     "leaves room for %lld now: give a larger --memory",
					     v, (long long)max_values);
		}
		(void)esg_torch_budget_refused();
		if (!run_tiles(L, x, ref, rule, target, mask, n, cmax, grad, score, scores)) {
			if (grid)
				memcpy(grid, n, (size_t)nsp * sizeof *grid);
			return 0;
		}
		if (!esg_torch_budget_refused())
			return -1;
		/* a tile cost more than measured so far (a first call under a
		 * backward rule): the next grid's crops are half as large */
		int64_t one = L->C;
		for (int a = 0; a < nsp; a++)
			one *= cmax[a];
		max_values = one / 2;
	}
}

/* limit, or what the budget leaves for crops that also take host_bytes
 * per input value in the caller's buffers, whichever is smaller */
static int64_t tile_values(const esg_local *L, int grad, double host_bytes, int64_t limit)
{
	int64_t max_values = esg_model_values_fit(L->model, grad, host_bytes);
	if (limit > 0 && (max_values <= 0 || limit < max_values))
		max_values = limit;
	return max_values;
}

int esg_local_tiled(esg_local *L, const float *x, const float *ref, int rule, int64_t item,
		    int64_t target, int64_t limit, float *grad, double *score, int64_t *grid)
{
	if (!L->on)
		return esg_set_error("internal: tiles of a model that is not local");
	if (target < 0 || target >= L->Cout)
		return esg_set_error("target %lld is not a channel of the per-voxel output (%d channels)",
				     (long long)target, L->Cout);
	if (rule != ESG_RULE_PLAIN && (L->kind != ESG_LOCAL_FIXED_MASK || !grad))
		return esg_set_error("internal: tiles under a backward rule need a fixed-mask wrapper");
	const float *mask = NULL;
	if (L->kind == ESG_LOCAL_FIXED_MASK) {
		const esg_tensor *M = L->mask;
		if (M->shape[0] != 1 && item >= M->shape[0])
			return esg_set_error("the wrapper's mask has fewer items than the record");
		size_t mi = M->shape[0] == 1 ? 0 : (size_t)item, mc = M->shape[1] == 1 ? 0 : (size_t)target;
		mask = (const float *)M->data + (mi * (size_t)M->shape[1] + mc) * L->V;
	}
	/* the caller's buffers per value of a crop: its input, gradient,
	 * weights and baseline */
	int64_t max_values = tile_values(L, grad != NULL, (3 + (ref != NULL)) * sizeof(float), limit);
	return tile_loop(L, x, ref, rule, target, mask, max_values, grad, score, NULL, grid);
}

int esg_local_tiled_scores(esg_local *L, const float *x, int64_t item, int64_t limit,
			   double *scores, int64_t *grid)
{
	if (!L->on)
		return esg_set_error("internal: tiles of a model that is not local");
	const esg_tensor *M = L->mask;
	if (M && M->shape[0] != 1 && item >= M->shape[0])
		return esg_set_error("the wrapper's mask has fewer items than the record");
	L->item = item;
	/* per input value: the crop, and the outputs the shim returns */
	int64_t max_values = tile_values(L, 0, (1.0 + (double)L->Cout / L->C) * sizeof(float), limit);
	double total;
	return tile_loop(L, x, NULL, ESG_RULE_PLAIN, 0, NULL, max_values, NULL, &total, scores, grid);
}

int64_t esg_local_grid_str(const esg_local *L, const int64_t *grid, char *buf, size_t n)
{
	int64_t count = 1;
	size_t len = 0;
	buf[0] = 0;
	for (int a = 0; a < L->nsp; a++) {
		count *= grid[a];
		if (len < n)
			len += (size_t)snprintf(buf + len, n - len, "%s%lld", a ? "x" : "", (long long)grid[a]);
	}
	return count;
}
