/* volume.c - tensors as volumes in NIfTI voxel order (esg_vol), the bridge
 * from a record's tensor and esg.axes / esg.affine to the NIfTI writer and to
 * the renderer. */
#include "image/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Parse esg.axes into perm[t] = NIfTI axis (0 = i, 1 = j, 2 = k) of tensor
 * spatial axis t.  A 2D tensor may name any two ("ij", "ik", "kj", ...). */
static int parse_axes(const char *axes, int ns, int perm[3])
{
	char buf[4] = "ijk";
	int seen = 0;
	if (!axes) {
		buf[ns] = 0;
	} else if (strlen(axes) == 3 && ns == 2) { /* "ijk" / "kji": drop k */
		int m = 0;
		for (int t = 0; t < 3; t++)
			if (axes[t] != 'k') {
				if (m == 2)
					goto bad;
				buf[m++] = axes[t];
			}
		buf[m] = 0;
	} else if (strlen(axes) == (size_t)ns) {
		memcpy(buf, axes, (size_t)ns + 1);
	} else {
		goto bad;
	}
	if ((int)strlen(buf) != ns)
		goto bad;
	for (int t = 0; t < ns; t++) {
		int a = buf[t] - 'i';
		if (a < 0 || a > 2 || (seen & (1 << a)))
			goto bad;
		seen |= 1 << a;
		perm[t] = a;
	}
	return 0;
bad:
	return esg_set_error("esg.axes '%s' does not fit a tensor with %d spatial axes",
			     axes ? axes : "", ns);
}

int esg_vol_from_tensor(const esg_tensor *t, const char *axes, esg_vol *out)
{
	memset(out, 0, sizeof *out);
	int lead = t->ndim >= 4 ? 2 : 0;
	int ns = t->ndim - lead;
	char shp[128];
	esg_shape_str(t->ndim, t->shape, shp, sizeof shp);
	if (t->ndim < 2 || t->ndim > 5)
		return esg_set_error("tensor '%s' has shape %s; need [N, C, i, j, k], [N, C, H, W] "
				     "or a bare 2D/3D array", t->name, shp);
	for (int d = 0; d < t->ndim; d++)
		if (t->shape[d] <= 0)
			return esg_set_error("tensor '%s' has an empty axis (shape %s)", t->name, shp);
	int perm[3] = { 0, 1, 2 };
	if (parse_axes(axes, ns, perm) < 0)
		return -1;
	out->n = lead ? t->shape[0] : 1;
	out->c = lead ? t->shape[1] : 1;
	out->spatial = ns;
	out->dim[0] = out->dim[1] = out->dim[2] = 1;
	int64_t ts[3] = { 1, 1, 1 };
	for (int d = 0; d < ns; d++) {
		out->dim[perm[d]] = t->shape[lead + d];
		ts[d] = t->shape[lead + d];
	}
	out->axis_h = perm[0];
	out->axis_w = perm[1];
	float *src = esg_tensor_to_f32(t);
	if (!src)
		return -1;
	int64_t vox = out->dim[0] * out->dim[1] * out->dim[2];
	int64_t frames = out->n * out->c;
	out->data = malloc((size_t)(vox * frames) * sizeof(float));
	if (!out->data) {
		free(src);
		return esg_set_error("out of memory for tensor '%s'", t->name);
	}
	/* NIfTI stride of each tensor spatial axis */
	int64_t nst[3] = { 1, out->dim[0], out->dim[0] * out->dim[1] }, st[3] = { 0, 0, 0 };
	for (int d = 0; d < ns; d++)
		st[d] = nst[perm[d]];
	const float *s = src;
	for (int64_t f = 0; f < frames; f++) {
		float *dst = out->data + f * vox;
		for (int64_t a = 0; a < ts[0]; a++)
			for (int64_t b = 0; b < ts[1]; b++)
				for (int64_t c = 0; c < ts[2]; c++)
					dst[a * st[0] + b * st[1] + c * st[2]] = *s++;
	}
	free(src);
	return 0;
}

void esg_vol_free(esg_vol *v)
{
	if (v) {
		free(v->data);
		v->data = NULL;
	}
}

int esg_vol_frame(const esg_vol *v, int64_t item, int channel, esg_vol *out)
{
	if (item < 0 || item >= v->n)
		return esg_set_error("batch item %lld out of range (tensor has %lld)",
				     (long long)item, (long long)v->n);
	if (channel >= v->c)
		return esg_set_error("channel %d out of range (tensor has %lld)", channel,
				     (long long)v->c);
	*out = *v;
	out->n = out->c = 1;
	int64_t vox = v->dim[0] * v->dim[1] * v->dim[2];
	out->data = calloc((size_t)vox, sizeof(float));
	if (!out->data)
		return esg_set_error("out of memory");
	int64_t c0 = channel >= 0 ? channel : 0, c1 = channel >= 0 ? channel + 1 : v->c;
	for (int64_t c = c0; c < c1; c++) {
		const float *s = v->data + (item * v->c + c) * vox;
		for (int64_t x = 0; x < vox; x++)
			out->data[x] += s[x];
	}
	if (channel == ESG_CH_MEAN && v->c > 1)
		for (int64_t x = 0; x < vox; x++)
			out->data[x] /= (float)v->c;
	return 0;
}

int esg_vol_affine(const esg_record *r, const esg_vol *v, double aff[16])
{
	int a = esg_meta_get_affine(r, aff);
	if (a <= 0)
		return a;
	memset(aff, 0, 16 * sizeof *aff);
	aff[0] = aff[5] = aff[10] = aff[15] = 1;
	double sp[3];
	int n = esg_meta_get_doubles(r, "esg.spacing", sp, 3);
	if (n != v->spatial)
		return 2;
	/* spacing is in tensor order; put each on its voxel axis */
	if (v->spatial == 2) {
		aff[5 * v->axis_h] = sp[0];
		aff[5 * v->axis_w] = sp[1];
	} else {
		const char *ax = esg_meta_get(r, "esg.axes");
		for (int d = 0; d < 3; d++) {
			int a2 = ax && strlen(ax) == 3 ? ax[d] - 'i' : d;
			if (a2 >= 0 && a2 < 3 && sp[d] > 0)
				aff[5 * a2] = sp[d];
		}
	}
	return 1;
}

void esg_affine_voxel_sizes(const double aff[16], double size[3])
{
	for (int a = 0; a < 3; a++)
		size[a] = sqrt(aff[a] * aff[a] + aff[4 + a] * aff[4 + a] + aff[8 + a] * aff[8 + a]);
}

