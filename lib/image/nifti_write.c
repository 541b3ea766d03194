/* nifti_write.c - float32 NIfTI-1 output (.nii or .nii.gz).
 *
 * The header is filled here and written with zlib, so every write error
 * (a full disk included) is reported; libnifti only converts the affine to
 * its quaternion form. */
#include "image/image.h"

#include <errno.h>
#include <math.h>
#include <nifti2_io.h>
#include <string.h>
#include <zlib.h>

/* The quaternion form of aff, and whether it reproduces aff (no shear). */
static int affine_quatern(const double *aff, nifti_1_header *h)
{
	nifti_dmat44 m;
	for (int r = 0; r < 4; r++)
		for (int c = 0; c < 4; c++)
			m.m[r][c] = aff[4 * r + c];
	double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
	nifti_dmat44_to_quatern(m, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
	nifti_dmat44 back = nifti_quatern_to_dmat44(qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac);
	double err = 0, scale = 0;
	for (int r = 0; r < 3; r++)
		for (int c = 0; c < 3; c++) {
			err = fmax(err, fabs(back.m[r][c] - m.m[r][c]));
			scale = fmax(scale, fabs(m.m[r][c]));
		}
	h->quatern_b = (float)qb, h->quatern_c = (float)qc, h->quatern_d = (float)qd;
	h->qoffset_x = (float)qx, h->qoffset_y = (float)qy, h->qoffset_z = (float)qz;
	h->pixdim[0] = (float)qfac;
	return err <= 1e-5 * (scale > 0 ? scale : 1);
}

int esg_nifti_write(const char *path, const char *name, const esg_vol *v, const double *aff,
		    int qform_code, int sform_code, const char *descrip)
{
	if (!name)
		name = path;
	int64_t frames = v->n * v->c;
	int64_t dims[4] = { v->dim[0], v->dim[1], v->dim[2], frames };
	for (int d = 0; d < 4; d++)
		if (dims[d] < 1 || dims[d] > 32767)
			return esg_set_error("'%s': dimension %d (%lld) does not fit NIfTI-1", name, d + 1,
					     (long long)dims[d]);
	nifti_1_header h;
	memset(&h, 0, sizeof h);
	h.sizeof_hdr = 348;
	h.dim[0] = frames > 1 ? 4 : 3;
	for (int d = 0; d < 4; d++)
		h.dim[d + 1] = (short)dims[d];
	for (int d = 5; d < 8; d++)
		h.dim[d] = 1;
	h.datatype = NIFTI_TYPE_FLOAT32;
	h.bitpix = 32;
	for (int d = 0; d < 8; d++)
		h.pixdim[d] = 1;
	h.vox_offset = 352;
	h.scl_slope = 1;
	h.xyzt_units = NIFTI_UNITS_MM | NIFTI_UNITS_SEC;
	if (descrip)
		snprintf(h.descrip, sizeof h.descrip, "%s", descrip);
	memcpy(h.magic, "n+1", 4);
	if (aff) {
		double size[3];
		esg_affine_voxel_sizes(aff, size);
		int rigid = affine_quatern(aff, &h);
		for (int d = 0; d < 3; d++)
			h.pixdim[d + 1] = (float)size[d];
		h.qform_code = (short)(rigid ? qform_code : 0);
		h.sform_code = (short)sform_code;
		for (int c = 0; c < 4; c++) {
			h.srow_x[c] = (float)aff[c];
			h.srow_y[c] = (float)aff[4 + c];
			h.srow_z[c] = (float)aff[8 + c];
		}
	}
	size_t len = strlen(path);
	int gz = len > 3 && strcmp(path + len - 3, ".gz") == 0;
	errno = 0;
	gzFile f = gzopen(path, gz ? "wb6" : "wbT");
	if (!f)
		return esg_set_error("cannot create '%s': %s", name, strerror(errno ? errno : EIO));
	static const char ext[4] = { 0, 0, 0, 0 };
	int ok = gzwrite(f, &h, sizeof h) == (int)sizeof h && gzwrite(f, ext, 4) == 4;
	/* in chunks: gzwrite takes an unsigned count */
	size_t total = (size_t)(dims[0] * dims[1] * dims[2] * frames) * sizeof(float);
	const char *p = (const char *)v->data;
	for (size_t off = 0; ok && off < total;) {
		unsigned n = total - off > (1u << 30) ? (1u << 30) : (unsigned)(total - off);
		ok = gzwrite(f, p + off, n) == (int)n;
		off += n;
	}
	int err = 0;
	const char *zmsg = ok ? NULL : gzerror(f, &err);
	char msg[128];
	snprintf(msg, sizeof msg, "%s", zmsg && err != Z_ERRNO ? zmsg : strerror(errno ? errno : EIO));
	errno = 0;
	if (gzclose(f) != Z_OK && ok) {
		ok = 0;
		snprintf(msg, sizeof msg, "%s", strerror(errno ? errno : EIO));
	}
	if (!ok)
		return esg_set_error("cannot write '%s': %s", name, msg);
	return 0;
}
