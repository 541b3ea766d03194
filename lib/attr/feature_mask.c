/* feature_mask.c - feature masks for ablation, permutation, Shapley value
 * sampling, LIME and KernelSHAP: voxels, grid blocks, SLIC supervoxels,
 * label volumes from files (declared in attr.h). */
#include "attr/attr.h"
#include "image/image.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void esg_fmask_spec_clear(esg_fmask_spec *s)
{
	free(s->path);
	free(s->tensor);
	free(s->spec);
	memset(s, 0, sizeof *s);
}

void esg_fmask_free(esg_fmask *m)
{
	free(m->id);
	free(m->start);
	free(m->elem);
	memset(m, 0, sizeof *m);
}

static int bad(const char *spec, const char *want)
{
	return esg_set_error("feature_mask '%s': want %s", spec, want);
}

int esg_fmask_parse(const char *spec, esg_fmask_spec *s)
{
	memset(s, 0, sizeof *s);
	if (!(s->spec = strdup(spec)))
		return esg_set_error("out of memory");
	char *end;
	if (strcmp(spec, "voxel") == 0) {
		s->kind = ESG_FM_VOXEL;
	} else if (strncmp(spec, "grid:", 5) == 0) {
		s->kind = ESG_FM_GRID;
		const char *p = spec + 5;
		for (;;) {
			errno = 0;
			long v = strtol(p, &end, 10);
			if (errno || end == p || v < 1 || v > 1L << 30 || s->nblock == ESG_MAX_DIMS)
				goto fail_grid;
			s->block[s->nblock++] = v;
			if (!*end)
				break;
			if (*end != ',')
				goto fail_grid;
			p = end + 1;
		}
	} else if (strncmp(spec, "slic:", 5) == 0) {
		s->kind = ESG_FM_SLIC;
		s->compactness = 0.1;
		errno = 0;
		long n = strtol(spec + 5, &end, 10);
		if (errno || end == spec + 5 || n < 1 || n > 1L << 24)
			goto fail_slic;
		s->n_segments = (int)n;
		if (*end == ',') {
			const char *p = end + 1;
			s->compactness = strtod(p, &end);
			if (end == p || !(s->compactness >= 0) || !isfinite(s->compactness))
				goto fail_slic;
		}
		if (*end)
			goto fail_slic;
	} else if (strncmp(spec, "file:", 5) == 0 && spec[5]) {
		s->kind = ESG_FM_FILE;
		const char *path = spec + 5, *colon = strrchr(path, ':');
		FILE *f = fopen(path, "rb");
		if (f) {
			fclose(f);
			colon = NULL;
		}
		if (colon && colon[1] && !strchr(colon, '/')) {
			s->path = strndup(path, (size_t)(colon - path));
			s->tensor = strdup(colon + 1);
		} else {
			s->path = strdup(path);
			s->tensor = strdup("mask");
		}
		if (!s->path || !s->tensor) {
			esg_fmask_spec_clear(s);
			return esg_set_error("out of memory");
		}
	} else {
		esg_fmask_spec_clear(s);
		return bad(spec, "voxel, grid:B[,B...], slic:N[,COMPACTNESS] or file:PATH[:TENSOR]");
	}
	return 0;
fail_grid:
	bad(spec, "grid:B or grid:B,B,B with block sizes >= 1 (voxels)");
	esg_fmask_spec_clear(s);
	return -1;
fail_slic:
	bad(spec, "slic:N[,COMPACTNESS] with N >= 1 supervoxels and COMPACTNESS >= 0");
	esg_fmask_spec_clear(s);
	return -1;
}

int esg_fmask_index(esg_fmask *m)
{
	free(m->start);
	free(m->elem);
	m->start = calloc((size_t)m->n + 1, sizeof *m->start);
	m->elem = malloc((m->numel ? m->numel : 1) * sizeof *m->elem);
	if (!m->start || !m->elem)
		return esg_set_error("out of memory");
	for (size_t e = 0; e < m->numel; e++)
		m->start[m->id[e] + 1]++;
	for (int64_t f = 0; f < m->n; f++)
		m->start[f + 1] += m->start[f];
	int64_t *pos = malloc(((size_t)m->n + 1) * sizeof *pos);
	if (!pos)
		return esg_set_error("out of memory");
	memcpy(pos, m->start, ((size_t)m->n + 1) * sizeof *pos);
	for (size_t e = 0; e < m->numel; e++)
		m->elem[pos[m->id[e]]++] = (int64_t)e;
	free(pos);
	return 0;
}

int64_t esg_grid_labels(int nsp, const int64_t *dim, const int64_t *block, int32_t *label)
{
	int64_t nb[ESG_MAX_DIMS], total = 1, V = 1;
	for (int a = 0; a < nsp; a++) {
		nb[a] = (dim[a] + block[a] - 1) / block[a];
		total *= nb[a];
		V *= dim[a];
	}
	if (total > INT32_MAX)
		return esg_set_error("grid of %lld blocks is too many", (long long)total);
	int64_t idx[ESG_MAX_DIMS] = { 0 };
	for (int64_t v = 0; v < V; v++) {
		int64_t l = 0;
		for (int a = 0; a < nsp; a++)
			l = l * nb[a] + idx[a] / block[a];
		label[v] = (int32_t)l;
		for (int a = nsp - 1; a >= 0; a--) {
			if (++idx[a] < dim[a])
				break;
			idx[a] = 0;
		}
	}
	return total;
}

/* ---- SLIC ------------------------------------------------------------------ */

typedef struct seed {
	double p[3], v;
} seed;

int64_t esg_slic(const float *img, int nsp, const int64_t *dim0, int n_segments,
		 double compactness, int32_t *label)
{
	if (nsp < 1 || nsp > 3)
		return esg_set_error("slic: %d spatial axes (1 to 3 supported)", nsp);
	int64_t dim[3] = { 1, 1, 1 };
	for (int a = 0; a < nsp; a++)
		dim[3 - nsp + a] = dim0[a];
	int64_t V = dim[0] * dim[1] * dim[2];
	float lo = INFINITY, hi = -INFINITY;
	for (int64_t v = 0; v < V; v++) {
		lo = fminf(lo, img[v]);
		hi = fmaxf(hi, img[v]);
	}
	double scale = hi > lo ? 1.0 / ((double)hi - lo) : 0;
	int active = 0;
	for (int a = 0; a < 3; a++)
		active += dim[a] > 1;
	if (!active)
		active = 1;
	double S = pow((double)V / n_segments, 1.0 / active);
	if (S < 1)
		S = 1;
	int64_t ns[3], K = 1;
	double sp[3];
	for (int a = 0; a < 3; a++) {
		ns[a] = dim[a] > 1 ? (int64_t)llround(dim[a] / S) : 1;
		if (ns[a] < 1)
			ns[a] = 1;
		if (ns[a] > dim[a])
			ns[a] = dim[a];
		sp[a] = (double)dim[a] / ns[a];
		K *= ns[a];
	}
	seed *c = malloc((size_t)K * sizeof *c);
	double *acc = malloc((size_t)K * 5 * sizeof *acc);
	float *dist = malloc((size_t)V * sizeof *dist);
	if (!c || !acc || !dist) {
		free(c);
		free(acc);
		free(dist);
		return esg_set_error("out of memory for %lld supervoxels", (long long)K);
	}
	int64_t k = 0;
	for (int64_t i = 0; i < ns[0]; i++)
		for (int64_t j = 0; j < ns[1]; j++)
			for (int64_t l = 0; l < ns[2]; l++, k++) {
				c[k].p[0] = (i + 0.5) * sp[0] - 0.5;
				c[k].p[1] = (j + 0.5) * sp[1] - 0.5;
				c[k].p[2] = (l + 0.5) * sp[2] - 0.5;
				int64_t q[3];
				for (int a = 0; a < 3; a++)
					q[a] = (int64_t)llround(fmax(0, c[k].p[a]));
				c[k].v = (img[(q[0] * dim[1] + q[1]) * dim[2] + q[2]] - lo) * scale;
			}
	double wsp = compactness * compactness / (S * S);
	for (int it = 0; it < 10; it++) {
		for (int64_t v = 0; v < V; v++)
			dist[v] = INFINITY;
		for (k = 0; k < K; k++) {
			int64_t a0[3], a1[3];
			for (int a = 0; a < 3; a++) {
				a0[a] = (int64_t)floor(c[k].p[a] - 2 * sp[a]);
				a1[a] = (int64_t)ceil(c[k].p[a] + 2 * sp[a]);
				if (a0[a] < 0)
					a0[a] = 0;
				if (a1[a] > dim[a] - 1)
					a1[a] = dim[a] - 1;
			}
			for (int64_t i = a0[0]; i <= a1[0]; i++)
				for (int64_t j = a0[1]; j <= a1[1]; j++) {
					double d01 = (i - c[k].p[0]) * (i - c[k].p[0]) + (j - c[k].p[1]) * (j - c[k].p[1]);
					int64_t row = (i * dim[1] + j) * dim[2];
					for (int64_t l = a0[2]; l <= a1[2]; l++) {
						double dv = (img[row + l] - lo) * scale - c[k].v;
						double dl = l - c[k].p[2];
						double d = dv * dv + (d01 + dl * dl) * wsp;
						if (d < dist[row + l]) {
							dist[row + l] = (float)d;
							label[row + l] = (int32_t)k;
						}
					}
				}
		}
		memset(acc, 0, (size_t)K * 5 * sizeof *acc);
		for (int64_t i = 0, v = 0; i < dim[0]; i++)
			for (int64_t j = 0; j < dim[1]; j++)
				for (int64_t l = 0; l < dim[2]; l++, v++) {
					double *s = acc + (size_t)label[v] * 5;
					s[0] += i;
					s[1] += j;
					s[2] += l;
					s[3] += (img[v] - lo) * scale;
					s[4] += 1;
				}
		for (k = 0; k < K; k++) {
			double *s = acc + (size_t)k * 5;
			if (s[4] > 0) {
				c[k].p[0] = s[0] / s[4];
				c[k].p[1] = s[1] / s[4];
				c[k].p[2] = s[2] / s[4];
				c[k].v = s[3] / s[4];
			}
		}
	}
	/* renumber without gaps, in seed order */
	int32_t *map = (int32_t *)dist;  /* K <= V: reuse */
	for (k = 0; k < K; k++)
		map[k] = acc[(size_t)k * 5 + 4] > 0 ? 1 : 0;
	int32_t n = 0;
	for (k = 0; k < K; k++)
		map[k] = map[k] ? n++ : -1;
	for (int64_t v = 0; v < V; v++)
		label[v] = map[label[v]];
	free(c);
	free(acc);
	free(dist);
	return n;
}

/* ---- label volumes from files ----------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Distinct values -> ids 0 .. n-1 in increasing order. */
static int64_t relabel(const float *v, size_t n, int32_t *id)
{
	double *u = malloc((n ? n : 1) * sizeof *u);
	if (!u)
		return esg_set_error("out of memory");
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(v[i])) {
			free(u);
			return esg_set_error("label %zu is not a finite number", i);
		}
		u[i] = v[i];
	}
	qsort(u, n, sizeof *u, cmp_double);
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || u[i] != u[m - 1])
			u[m++] = u[i];
	if (m > INT32_MAX) {
		free(u);
		return esg_set_error("too many labels");
	}
	for (size_t i = 0; i < n; i++) {
		size_t a = 0, b = m;
		double x = v[i];
		while (b - a > 1) {
			size_t h = (a + b) / 2;
			if (u[h] <= x)
				a = h;
			else
				b = h;
		}
		id[i] = (int32_t)a;
	}
	free(u);
	return (int64_t)m;
}

/* Load the label values: *vals (new), *nvals, and the trailing shape. */
static int load_labels(const esg_fmask_spec *s, const char *axes, float **vals, int *ndim,
		       int64_t *shape)
{
	FILE *f = fopen(s->path, "rb");
	if (!f)
		return esg_set_error("cannot open '%s': %s", s->path, strerror(errno));
	unsigned char magic[4] = { 0 };
	size_t got = fread(magic, 1, 4, f);
	if (got == 4 && magic[0] == 0x28 && magic[1] == 0xB5 && magic[2] == 0x2F && magic[3] == 0xFD) {
		rewind(f);
		esg_reader *rd = esg_reader_open(f, s->path);
		esg_record *r = NULL;
		int rc = rd ? esg_reader_next(rd, &r) : -1;
		esg_tensor *t = NULL;
		if (rc == 0)
			esg_set_error("'%s' holds no record", s->path);
		if (rc == 1 && (t = esg_record_get(r, s->tensor))) {
			*vals = esg_tensor_to_f32(t);
			*ndim = t->ndim;
			memcpy(shape, t->shape, sizeof t->shape);
		}
		int ok = t && *vals;
		esg_record_free(r);
		esg_reader_free(rd);
		fclose(f);
		return ok ? 0 : -1;
	}
	fclose(f);
	esg_load_opts o = { 0 };
	/* the record's spatial order: reversed ("kji", "ji") when it descends */
	o.reverse = axes && strlen(axes) > 1 && axes[0] > axes[1];
	esg_image *im = esg_load_image(s->path, &o);
	if (!im)
		return -1;
	*vals = im->data;
	im->data = NULL;
	*ndim = 2 + im->nsp;
	shape[0] = im->n;
	shape[1] = im->c;
	for (int a = 0; a < im->nsp; a++)
		shape[2 + a] = im->dim[a];
	esg_image_free(im);
	return 0;
}

static int build_file(const esg_fmask_spec *s, int nd, const int64_t *dims, const char *axes,
		      esg_fmask *out)
{
	float *v = NULL;
	int tnd = 0;
	int64_t tsh[ESG_MAX_DIMS];
	if (load_labels(s, axes, &v, &tnd, tsh))
		return esg_prefix_error("feature_mask '%s'", s->spec);
	int nsp = nd - 1;
	int64_t C = dims[0], V = 1, lead = 1;
	for (int a = 1; a < nd; a++)
		V *= dims[a];
	int okshape = tnd >= nsp;
	for (int a = 0; okshape && a < nsp; a++)
		okshape = tsh[tnd - nsp + a] == dims[1 + a];
	for (int a = 0; okshape && a < tnd - nsp; a++)
		lead *= tsh[a];
	if (!okshape || (lead != 1 && lead != C)) {
		char ts[128], is[128];
		esg_shape_str(tnd, tsh, ts, sizeof ts);
		esg_shape_str(nd, dims, is, sizeof is);
		free(v);
		return esg_set_error("feature_mask '%s': label volume %s does not fit an item %s "
				     "(want the spatial shape, or C channels of it)", s->spec, ts, is);
	}
	size_t n = (size_t)(lead * V);
	int32_t *lab = malloc(n * sizeof *lab);
	if (!lab) {
		free(v);
		return esg_set_error("out of memory");
	}
	int64_t nl = relabel(v, n, lab);
	free(v);
	if (nl < 0) {
		free(lab);
		return esg_prefix_error("feature_mask '%s'", s->spec);
	}
	for (int64_t c = 0; c < C; c++)
		for (int64_t i = 0; i < V; i++)
			out->id[c * V + i] = lab[(lead == 1 ? 0 : c * V) + i];
	free(lab);
	out->n = nl;
	return 0;
}

int esg_fmask_build(const esg_fmask_spec *s, const float *x, int nd, const int64_t *dims,
		    const char *axes, esg_fmask *out)
{
	memset(out, 0, sizeof *out);
	int nsp = nd - 1;
	int64_t C = dims[0], V = 1;
	for (int a = 1; a < nd; a++)
		V *= dims[a];
	out->numel = (size_t)(C * V);
	if (out->numel > INT32_MAX)
		return esg_set_error("item of %zu elements is too large for a feature mask", out->numel);
	out->id = malloc((out->numel ? out->numel : 1) * sizeof *out->id);
	int32_t *lab = malloc((size_t)(V ? V : 1) * sizeof *lab);
	float *mean = NULL;
	int64_t n = -1;
	if (!out->id || !lab) {
		esg_set_error("out of memory");
		goto fail;
	}
	switch (s->kind) {
	case ESG_FM_VOXEL:
		for (size_t e = 0; e < out->numel; e++)
			out->id[e] = (int32_t)e;
		out->n = (int64_t)out->numel;
		break;
	case ESG_FM_GRID: {
		int64_t b[ESG_MAX_DIMS];
		if (nsp < 1) {
			esg_set_error("feature_mask '%s': the image has no spatial axes", s->spec);
			goto fail;
		}
		if (s->nblock != 1 && s->nblock != nsp) {
			esg_set_error("feature_mask '%s': %d block sizes for %d spatial axes",
				      s->spec, s->nblock, nsp);
			goto fail;
		}
		for (int a = 0; a < nsp; a++)
			b[a] = s->block[s->nblock == 1 ? 0 : a];
		if ((n = esg_grid_labels(nsp, dims + 1, b, lab)) < 0)
			goto fail;
		break;
	}
	case ESG_FM_SLIC:
		if (nsp < 1 || nsp > 3) {
			esg_set_error("feature_mask '%s': SLIC needs 1 to 3 spatial axes, the item has %d",
				      s->spec, nsp);
			goto fail;
		}
		if (!(mean = calloc((size_t)V, sizeof *mean))) {
			esg_set_error("out of memory");
			goto fail;
		}
		for (int64_t c = 0; c < C; c++)
			for (int64_t i = 0; i < V; i++)
				mean[i] += x[c * V + i] / (float)C;
		if ((n = esg_slic(mean, nsp, dims + 1, s->n_segments, s->compactness, lab)) < 0)
			goto fail;
		break;
	case ESG_FM_FILE:
		if (build_file(s, nd, dims, axes, out))
			goto fail;
		break;
	}
	if (n >= 0) {
		for (int64_t c = 0; c < C; c++)
			memcpy(out->id + c * V, lab, (size_t)V * sizeof *lab);
		out->n = n;
	}
	free(lab);
	free(mean);
	if (esg_fmask_index(out)) {
		esg_fmask_free(out);
		return -1;
	}
	return 0;
fail:
	free(lab);
	free(mean);
	esg_fmask_free(out);
	return -1;
}
