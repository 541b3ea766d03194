/* nifti.c - NIfTI-1 / NIfTI-2 (.nii, .nii.gz, .hdr/.img) through libnifti2.
 *
 * Values are those of nibabel's get_fdata(): stored values times scl_slope
 * plus scl_inter (computed in double, unless the slope is 0 or not finite,
 * or the type is RGB), then float32.  Axes i, j, k (dim[1..3]); the 4th
 * dimension becomes channels or records. */
#include "image/format.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <nifti2_io.h>

static const char *dt_name(int dt)
{
	const char *s = nifti_datatype_string(dt);
	return s ? s : "unknown";
}

/* Components per voxel (RGB types), 0 for types we cannot convert. */
static int dt_components(int dt)
{
	switch (dt) {
	case DT_UINT8: case DT_INT8: case DT_INT16: case DT_UINT16:
	case DT_INT32: case DT_UINT32: case DT_INT64: case DT_UINT64:
	case DT_FLOAT32: case DT_FLOAT64:
		return 1;
	case DT_RGB24: return 3;
	case DT_RGBA32: return 4;
	default: return 0;
	}
}

#define CONVERT(T) do { \
	const T *s = (const T *)src; \
	for (int64_t v = 0; v < nvox; v++) \
		for (int c = 0; c < comps; c++) \
			dst[c * nvox + v] = scaled ? (float)((double)s[v * comps + c] * slope + inter) \
						   : (float)s[v * comps + c]; \
	} while (0)

/* One volume of nvox voxels (comps interleaved) -> comps planar float blocks. */
static void convert_volume(const void *src, int dt, int64_t nvox, int comps,
			   int scaled, double slope, double inter, float *dst)
{
	switch (dt) {
	case DT_UINT8: case DT_RGB24: case DT_RGBA32: CONVERT(uint8_t); break;
	case DT_INT8: CONVERT(int8_t); break;
	case DT_INT16: CONVERT(int16_t); break;
	case DT_UINT16: CONVERT(uint16_t); break;
	case DT_INT32: CONVERT(int32_t); break;
	case DT_UINT32: CONVERT(uint32_t); break;
	case DT_INT64: CONVERT(int64_t); break;
	case DT_UINT64: CONVERT(uint64_t); break;
	case DT_FLOAT32: CONVERT(float); break;
	case DT_FLOAT64: CONVERT(double); break;
	}
}

/* sform, else qform, else the pixdim diagonal (documented choice). */
static void pick_affine(const nifti_image *nim, double A[16])
{
	const nifti_dmat44 *m = nim->sform_code > 0 ? &nim->sto_xyz :
				nim->qform_code > 0 ? &nim->qto_xyz : NULL;
	memset(A, 0, 16 * sizeof *A);
	if (m) {
		for (int r = 0; r < 4; r++)
			for (int c = 0; c < 4; c++)
				A[r * 4 + c] = m->m[r][c];
		return;
	}
	for (int a = 0; a < 3; a++)
		A[a * 5] = nim->pixdim[a + 1] > 0 ? nim->pixdim[a + 1] : 1.0;
	A[15] = 1;
}

static int check_header(const nifti_image *nim, const char *path, int *nsp, int64_t *nt)
{
	int nd = (int)nim->dim[0];
	if (nd < 1 || nd > 7)
		return esg_set_error("'%s': bad NIfTI dim[0] = %d", path, nd);
	for (int a = 1; a <= nd; a++)
		if (nim->dim[a] < 1)
			return esg_set_error("'%s': bad NIfTI dim[%d] = %lld", path, a,
					     (long long)nim->dim[a]);
	for (int a = 5; a <= nd; a++)
		if (nim->dim[a] > 1)
			return esg_set_error("'%s': %dD NIfTI images are not supported "
					     "(dim[%d] = %lld; at most 4 dimensions)", path, nd, a,
					     (long long)nim->dim[a]);
	if (!dt_components(nim->datatype))
		return esg_set_error("'%s': unsupported NIfTI datatype %s (%d)", path,
				     dt_name(nim->datatype), nim->datatype);
	*nsp = nd < 3 ? nd : 3;
	*nt = nd >= 4 ? nim->dim[4] : 1;
	return 0;
}

static esg_image *from_nifti(const nifti_image *nim, const char *path, const esg_load_opts *o)
{
	int nsp;
	int64_t nt;
	if (check_header(nim, path, &nsp, &nt) < 0)
		return NULL;
	int comps = dt_components(nim->datatype);
	double slope = nim->scl_slope, inter = nim->scl_inter;
	int scaled = comps == 1 && isfinite(slope) && slope != 0;
	if (scaled && !isfinite(inter))
		inter = 0;
	if (scaled && slope == 1 && inter == 0)
		scaled = 0;

	esg_image *im = calloc(1, sizeof *im);
	if (!im) {
		esg_set_error("out of memory");
		return NULL;
	}
	im->nsp = nsp;
	for (int a = 0; a < nsp; a++) {
		im->dim[a] = nim->dim[a + 1];
		double s = fabs(nim->pixdim[a + 1]);
		im->spacing[a] = s > 0 && isfinite(s) ? s : 1.0;
		im->axes[a] = (char)('i' + a);
	}
	im->axes[nsp] = 0;
	pick_affine(nim, im->affine);
	int as_rec = o && o->volumes_as_records;
	im->n = as_rec ? nt : 1;
	im->c = as_rec ? comps : nt * comps;

	int64_t nvox = esg_image_voxels(im);
	size_t total = (size_t)(nvox * nt * comps);
	im->data = malloc(total * sizeof(float));
	float *tmp = malloc((size_t)(nvox * comps) * sizeof(float));
	if (!im->data || !tmp) {
		free(tmp);
		esg_image_free(im);
		esg_set_error("'%s': out of memory (%lld voxels)", path, (long long)(nvox * nt));
		return NULL;
	}
	/* file order is i fastest: each block is C order [k][j][i], i.e. "kji" */
	int64_t rdims[ESG_MAX_SPATIAL];
	for (int a = 0; a < nsp; a++)
		rdims[a] = im->dim[nsp - 1 - a];
	int reverse = o && o->reverse;
	for (int64_t t = 0; t < nt; t++) {
		const char *src = (const char *)nim->data + (size_t)(t * nvox) * nim->nbyper;
		convert_volume(src, nim->datatype, nvox, comps, scaled, slope, inter, tmp);
		for (int c = 0; c < comps; c++) {
			float *dst = im->data + (t * comps + c) * nvox;
			if (reverse)
				memcpy(dst, tmp + c * nvox, (size_t)nvox * sizeof(float));
			else
				esg_reverse_axes_f32(tmp + c * nvox, dst, nsp, rdims);
		}
	}
	free(tmp);
	if (reverse) {
		for (int a = 0; a < nsp; a++) {
			im->dim[a] = rdims[a];
			im->axes[a] = (char)('i' + nsp - 1 - a);
		}
		for (int a = 0, z = nsp - 1; a < z; a++, z--) {
			double s = im->spacing[a];
			im->spacing[a] = im->spacing[z];
			im->spacing[z] = s;
		}
	}
	return im;
}

static esg_image *load_nifti(const char *path, const esg_load_opts *o)
{
	nifti_set_debug_level(0); /* libnifti would print to stderr */
	nifti_image *nim = nifti_image_read(path, 0);
	if (!nim) {
		esg_set_error("'%s': not a readable NIfTI file (bad or truncated header)", path);
		return NULL;
	}
	int nsp;
	int64_t nt;
	if (check_header(nim, path, &nsp, &nt) < 0) {
		nifti_image_free(nim);
		return NULL;
	}
	if (nifti_image_load(nim) < 0 || !nim->data) {
		nifti_image_free(nim);
		esg_set_error("'%s': cannot read the NIfTI voxel data (truncated or corrupt file?)",
			      path);
		return NULL;
	}
	esg_image *im = from_nifti(nim, path, o);
	nifti_image_free(nim);
	return im;
}

static int ends_with(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);
	return n >= m && strcasecmp(s + n - m, suf) == 0;
}

/* NIfTI and Analyze files are known by name, then by their first bytes. */
static int sniff_nifti(const unsigned char *b, size_t got, const char *path)
{
	int named = ends_with(path, ".nii") || ends_with(path, ".nii.gz") ||
		    ends_with(path, ".hdr") || ends_with(path, ".hdr.gz");
	if (ends_with(path, ".img") || ends_with(path, ".img.gz"))
		return 1; /* raw data: libnifti reads the .hdr beside it */
	if (got >= 2 && b[0] == 0x1f && b[1] == 0x8b)
		return named;
	/* sizeof_hdr: 348 (NIfTI-1 / Analyze) or 540 (NIfTI-2), either endian */
	if (got >= 4) {
		uint32_t le = b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24;
		uint32_t be = b[3] | b[2] << 8 | b[1] << 16 | (uint32_t)b[0] << 24;
		if (le == 348 || be == 348 || le == 540 || be == 540)
			return named;
	}
	return 0;
}

const esg_image_format esg_format_nifti = { ESG_FMT_NIFTI, sniff_nifti, load_nifti };
