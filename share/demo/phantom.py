#!/usr/bin/python3
"""Synthetic TOF-MR-angiogram-like phantoms with a known vessel mask.

Deterministic by seed: the same --seed and --size (or --shape) give the
same files (same numpy version).  A phantom is a brain-like ellipsoid of
smooth, medium intensity tissue with a dark outside, branching vessel trees
(tubes whose radius shrinks at every branching, bright in proportion to
their size, as slow flow in small vessels saturates in TOF), a smooth
multiplicative bias field and Rician noise.  The ground truth is the set of
voxels whose centre lies inside a tube.

3D (default) writes NIfTI-1 .nii.gz: an int16 image (intensity x 1000) and a
uint8 mask sharing one RAS+ affine with 0.6 x 0.6 x 0.7 mm voxels centred on
the origin.  --dim 2 makes a 64x64-style 2D angiogram (a MIP-like picture of a
planar tree); --aneurysm adds a saccular aneurysm (a bright round bulge on the
side of a vessel) and --out-aneurysm writes its own mask: the 2D classifier
demo (share/demo/train_classifier2d.py) learns aneurysm vs. normal from these.

--size N makes an N^3 cube (N^2 in 2D).  --shape X,Y,Z (or H,W, which sets
--dim 2) makes any box, e.g. a full-size TOF slab: vessel radii, the
aneurysm and the tissue texture scale with the smallest axis (lengths are
written for 64 voxels: radius x min/64), lengths along the vessels (branch
spacing, taper) with the geometric mean so the trees span the brain, the
brain's surface wobble with each axis.  For a cube both are the edge, so
--shape N,N,N is exactly --size N.  At 480,640,163 trunks are ~4.5-6 voxels
in radius and the finest branches ~0.55 (one voxel across); it takes about
a minute and 2-3.5 GB of memory (float64 work volumes).  The voxel size in
the header stays 0.6 x 0.6 x 0.7 mm whatever the shape.

  phantom.py --seed 1000 --size 64 --out-image img.nii.gz --out-mask vessels.nii.gz
  phantom.py --dim 2 --aneurysm --seed 7 --out-image a.npy --out-png a.png
  phantom.py --seed 7 --shape 480,640,163 --out-image big.nii.gz --out-mask big_vessels.nii.gz
"""
import argparse
import struct
import sys
import zlib

import numpy as np
from scipy import ndimage

SPACING = (0.6, 0.6, 0.7)  # mm, i, j, k: in-plane finer than slices, like TOF


def affine_for(shape, spacing=SPACING):
	"""RAS+ voxel->world affine with the volume centred on the origin."""
	a = np.diag(list(spacing) + [1.0])
	a[:3, 3] = [-(n - 1) * s / 2.0 for n, s in zip(shape, spacing)]
	return a


def _unit(v):
	return v / np.linalg.norm(v)


def _perturb(d, rng, angle):
	"""Turn unit vector d by a random angle of about `angle` radians."""
	n = d + rng.normal(0.0, angle, size=d.shape)
	return _unit(n)


def _branch_dir(d, rng, lo, hi):
	"""A unit vector making an angle in [lo, hi] radians with d."""
	for _ in range(20):
		r = _unit(rng.normal(size=d.shape))
		r = _unit(r - np.dot(r, d) * d)  # orthogonal component
		if np.all(np.isfinite(r)):
			break
	a = rng.uniform(lo, hi)
	return _unit(np.cos(a) * d + np.sin(a) * r)


def length_scales(shape):
	"""(thick, long) in voxels, both the edge for a cube.  Lengths in the
	script are written for a 64-voxel cube and scale by these / 64.  thick,
	the smallest axis, sizes vessel radii (so a thin slab gets trunks a few
	voxels thick whatever its in-plane size) and tissue texture; long, the
	geometric mean of the axes, sizes lengths along the vessels (branch
	spacing, taper) so the trees span the whole brain, not a corner."""
	thick = float(min(shape))
	if max(shape) == min(shape):
		return thick, thick  # exactly, not a cube root's rounding
	return thick, float(np.prod(shape, dtype=float)) ** (1.0 / len(shape))


def grow_trees(shape, inside, rng, roots, min_r=0.55, max_points=6000, scale=None):
	"""Centre-line points (N x ndim) and radii (voxels).

	Each vessel walks in small steps with a slowly wandering direction, its
	radius tapering; it branches now and then into a thinner child (Murray-
	like ratio 0.6-0.8) and stops when too thin (min_r voxels) or when it
	leaves `inside`.  scale: lengths relative to a 64-voxel volume
	(default shape[0] / 64).
	"""
	pts, rad = [], []
	if scale is None:
		scale = shape[0] / 64.0
	stack = list(roots)
	while stack and len(pts) < max_points:
		p, d, r = stack.pop()
		p = np.array(p, float)
		d = _unit(np.array(d, float))
		length = 0.0
		next_branch = rng.uniform(6, 14) * scale
		for _ in range(2 * max(shape)):  # a root may start outside: walk in
			idx = tuple(np.clip(np.round(p).astype(int), 0, np.array(shape) - 1))
			if inside[idx]:
				break
			p = p + 0.5 * d
		while r >= min_r and len(pts) < max_points:
			idx = tuple(np.clip(np.round(p).astype(int), 0, np.array(shape) - 1))
			if np.any(p < 0) or np.any(p > np.array(shape) - 1) or not inside[idx]:
				break
			pts.append(p.copy())
			rad.append(r)
			step = 0.5
			p = p + step * d
			d = _perturb(d, rng, 0.08)
			r *= 1.0 - 0.004 / scale
			length += step
			if length >= next_branch:
				child_r = r * rng.uniform(0.6, 0.8)
				if child_r >= min_r:
					stack.append((p.copy(), _branch_dir(d, rng, 0.5, 1.2), child_r))
				r *= rng.uniform(0.85, 0.95)  # the parent loses some flow too
				d = _branch_dir(d, rng, 0.1, 0.35)
				length = 0.0
				next_branch = rng.uniform(6, 14) * scale
	if not pts:
		return np.zeros((0, len(shape))), np.zeros(0)
	return np.array(pts), np.array(rad)


def rasterise(shape, pts, rad, spacing):
	"""Signed distance (mm) to the tube surface (min over points, clipped)
	and the radius of the nearest tube, by stamping a small box per point."""
	sdf = np.full(shape, 10.0, np.float32)
	near_r = np.zeros(shape, np.float32)
	sp = np.array(spacing, float)
	hi = np.array(shape)
	for p, r in zip(pts, rad):
		ext = np.ceil((r + 1.5) / sp).astype(int)
		lo_i = np.maximum(np.floor(p).astype(int) - ext, 0)
		hi_i = np.minimum(np.floor(p).astype(int) + ext + 2, hi)
		if np.any(hi_i <= lo_i):
			continue
		sl = tuple(slice(a, b) for a, b in zip(lo_i, hi_i))
		grids = np.ogrid[sl]
		d2 = 0.0
		for ax, g in enumerate(grids):
			d2 = d2 + ((g - p[ax]) * sp[ax]) ** 2
		s = (np.sqrt(d2) - r).astype(np.float32)
		box = sdf[sl]
		better = s < box
		box[better] = s[better]
		near_r[sl][better] = r
	return sdf, near_r


def smooth_field(shape, rng, sigma):
	f = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
	return f / (f.std() + 1e-12)


def bias_field(shape, rng, strength=0.2):
	"""Smooth multiplicative field, a low-order polynomial in the coordinates."""
	axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij", sparse=True)
	log_b = sum(rng.uniform(-1, 1) * a for a in axes)
	log_b = log_b + sum(rng.uniform(-0.5, 0.5) * a * a for a in axes)
	log_b = log_b * strength / (np.abs(log_b).max() + 1e-12)
	return np.exp(log_b)


def _roots(shape, rng, n, scale):
	"""Trunks enter through the inferior part (low last index in 3D, high
	first index in 2D) near the middle and head up, like carotids/basilar.
	Positions follow each axis; radii follow scale (thick / 64)."""
	nd = len(shape)
	c = np.array(shape, float) / 2.0
	out = []
	for i in range(n):
		p = c.copy()
		d = np.zeros(nd)
		if nd == 3:
			p[0] += (i - (n - 1) / 2.0) * shape[0] * 0.18 + rng.normal(0, 1.5)
			p[1] += rng.normal(0, shape[1] * 0.08)
			p[2] = shape[2] * 0.18
			d[2] = 1.0
			d[0] = rng.normal(0, 0.25)
			d[1] = rng.normal(0, 0.25)
			r = rng.uniform(1.7, 2.3) * scale
		else:
			p[1] += (i - (n - 1) / 2.0) * shape[1] * 0.25 + rng.normal(0, 1.5)
			p[0] = shape[0] * 0.95
			d[0] = -1.0
			d[1] = rng.normal(0, 0.2)
			r = rng.uniform(1.4, 1.9) * scale
		out.append((p, d, r))
	return out


def make_phantom(seed, size=64, dim=3, aneurysm=False, noise=0.05, shape=None):
	"""Return (image float32 in ~[0, 1.3], vessel mask uint8, aneurysm mask
	uint8 or None, spacing).  Deterministic for (seed, shape, aneurysm).
	shape (a 2- or 3-tuple) overrides size and dim; without it the volume
	is a size^dim cube.  A cube given as shape is the same phantom."""
	rng = np.random.default_rng(seed)
	shape = (size,) * dim if shape is None else tuple(int(n) for n in shape)
	dim = len(shape)
	thick, long = length_scales(shape)  # both == size for a cube
	scale = thick / 64.0
	spacing = SPACING if dim == 3 else (0.6, 0.6)
	sp = np.array(spacing)
	# Brain: an ellipsoid with a wobbly surface (the wobble's smoothness
	# follows each axis, as the ellipsoid does).
	axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij", sparse=True)
	radii = rng.uniform(0.78, 0.92, size=dim)
	q = np.sqrt(sum((a / r) ** 2 for a, r in zip(axes, radii)))
	del axes
	q += 0.04 * smooth_field(shape, rng, tuple(n / 10.0 for n in shape))
	brain = q < 1.0
	inside = q < 0.97
	del q
	# Tissue: medium intensity with smooth grey/white-like variation.
	tissue = 0.32 + 0.035 * smooth_field(shape, rng, thick / 16.0)
	tissue += 0.02 * smooth_field(shape, rng, thick / 40.0)
	# Vessels: radii by thick, lengths along them by long.  The point budget
	# grows with the volume in units of thick^dim (6000 for any cube).
	n_roots = int(rng.integers(3, 6)) if dim == 3 else int(rng.integers(2, 4))
	budget = int(round(6000 * (float(np.prod(shape, dtype=float)) / thick ** dim)))
	pts, rad = grow_trees(shape, inside, rng, _roots(shape, rng, n_roots, scale),
			      max_points=budget, scale=long / 64.0)
	rad_mm = rad * sp.mean()
	sdf, near_r = rasterise(shape, pts, rad_mm, spacing)
	vessel = (sdf <= 0) & brain
	# Partial volume: fraction of the voxel inside the tube (ramp over ~1 voxel).
	frac = np.clip(0.5 - sdf / sp.mean(), 0.0, 1.0)
	frac[~brain] = 0.0
	bright = 0.62 + 0.38 * np.clip(near_r / 1.2, 0.0, 1.0)  # near_r in mm
	img = tissue * (1.0 - frac) + bright * frac
	del tissue, sdf, near_r, frac, bright  # big volumes: free what is done
	an_mask = None
	if aneurysm and len(pts):
		# A saccular bulge beside a medium-sized vessel point.
		hi = np.array(shape, float)
		cand = np.nonzero((rad > 0.9 * scale) & np.all(pts > hi * 0.2, axis=1)
				  & np.all(pts < hi * 0.8, axis=1))[0]
		if len(cand) == 0:
			cand = np.arange(len(pts))
		i = int(rng.choice(cand))
		side = _unit(rng.normal(size=dim))
		ra = rng.uniform(2.2, 3.6) * scale  # voxels
		centre = pts[i] + side * (rad[i] + ra * 0.6)
		g = np.ogrid[tuple(slice(0, n) for n in shape)]
		d2 = sum(((gg - c) * s) ** 2 for gg, c, s in zip(g, centre, sp))
		sdf_a = np.sqrt(d2) - ra * sp.mean()
		fa = np.clip(0.5 - sdf_a / sp.mean(), 0.0, 1.0) * brain
		img = img * (1.0 - fa) + 1.05 * fa
		an_mask = ((sdf_a <= 0) & brain).astype(np.uint8)
	# Outside the brain: dark, a little structure.
	outside = 0.04 + 0.01 * smooth_field(shape, rng, 3.0)
	img = np.where(brain, img, outside)
	del outside
	# Gentle edge so the brain boundary is not a perfect step.
	img = ndimage.gaussian_filter(img, 0.4)
	img = img * bias_field(shape, rng)
	# Rician noise: magnitude of a complex signal with Gaussian noise.
	n1 = rng.normal(0.0, noise, size=shape)
	n2 = rng.normal(0.0, noise, size=shape)
	img = np.sqrt((img + n1) ** 2 + n2 ** 2)
	return img.astype(np.float32), vessel.astype(np.uint8), an_mask, spacing


def to_int16(img):
	return np.clip(np.round(img * 1000.0), 0, 32767).astype(np.int16)


def save_nifti(path, data, spacing):
	import nibabel as nib
	aff = affine_for(data.shape, spacing) if data.ndim == 3 else \
		affine_for(data.shape + (1,), tuple(spacing) + (0.6,))
	img = nib.Nifti1Image(data, aff)
	img.header.set_xyzt_units("mm")
	img.set_sform(aff, code=1)  # scanner
	img.set_qform(aff, code=1)
	img.header.set_data_dtype(data.dtype)
	nib.save(img, path)


def write_png(path, a8):
	"""8-bit greyscale PNG with zlib only (no PIL here).  Row 0 is the top."""
	h, w = a8.shape
	raw = b"".join(b"\0" + a8[r].tobytes() for r in range(h))

	def chunk(t, d):
		c = struct.pack(">I", len(d)) + t + d
		return c + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
	data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
	data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
	with open(path, "wb") as f:
		f.write(data)


def save_any(path, data, spacing, is_mask):
	if path.endswith(".png"):
		if data.ndim != 2:
			sys.exit("phantom.py: error: %s: PNG needs --dim 2" % path)
		scaled = data * 255.0 if is_mask else data / 1.3 * 255.0
		write_png(path, np.clip(np.round(scaled), 0, 255).astype(np.uint8))
	elif path.endswith(".npy"):
		np.save(path, data if is_mask else data.astype(np.float32))
	elif path.endswith(".nii") or path.endswith(".nii.gz"):
		save_nifti(path, data if is_mask else to_int16(data), spacing)
	else:
		sys.exit("phantom.py: error: %s: want .nii, .nii.gz, .npy or .png" % path)


def parse_shape(text):
	try:
		shape = tuple(int(t) for t in text.split(","))
	except ValueError:
		raise argparse.ArgumentTypeError("want X,Y,Z or H,W (integers), not %r" % text)
	if len(shape) not in (2, 3):
		raise argparse.ArgumentTypeError("want 3 (X,Y,Z) or 2 (H,W) sizes, not %r" % text)
	return shape


def main():
	ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
				     epilog=__doc__.split("\n\n", 1)[1],
				     formatter_class=argparse.RawDescriptionHelpFormatter)
	ap.add_argument("--seed", type=int, required=True)
	g = ap.add_mutually_exclusive_group()
	g.add_argument("--size", type=int, default=64, help="edge of a cube (or square), default 64")
	g.add_argument("--shape", type=parse_shape, metavar="X,Y,Z|H,W",
		       help="any box instead of a cube: 3 sizes for 3D, 2 for 2D (sets --dim); "
		       "vessel radii and texture scale with the smallest axis, branch lengths "
		       "with the geometric mean")
	ap.add_argument("--dim", type=int, choices=(2, 3), help="2 or 3 (default 3, or from --shape)")
	ap.add_argument("--noise", type=float, default=0.05, help="Rician sigma (tissue ~0.32)")
	ap.add_argument("--aneurysm", action="store_true", help="add a saccular aneurysm")
	ap.add_argument("--out-image", help=".nii.gz (int16, x1000), .npy (float32) or .png (2D, 8-bit, x255/1.3)")
	ap.add_argument("--out-mask", help="vessel mask, uint8 (.png: 0/255)")
	ap.add_argument("--out-aneurysm", help="aneurysm mask, uint8 (needs --aneurysm)")
	ap.add_argument("--out-png", help="2D only: 8-bit PNG of the image")
	a = ap.parse_args()
	if a.size < 16:
		ap.error("--size must be at least 16")
	if a.shape is not None:
		if min(a.shape) < 16:
			ap.error("--shape: every size must be at least 16")
		if a.dim is not None and a.dim != len(a.shape):
			ap.error("--dim %d does not match --shape with %d sizes" % (a.dim, len(a.shape)))
		a.dim = len(a.shape)
	elif a.dim is None:
		a.dim = 3
	if a.out_aneurysm and not a.aneurysm:
		ap.error("--out-aneurysm needs --aneurysm")
	if a.out_png and a.dim != 2:
		ap.error("--out-png needs --dim 2")
	img, mask, an, spacing = make_phantom(a.seed, a.size, a.dim, a.aneurysm, a.noise, a.shape)
	if a.out_image:
		save_any(a.out_image, img, spacing, False)
	if a.out_mask:
		save_any(a.out_mask, mask, spacing, True)
	if a.out_aneurysm:
		save_any(a.out_aneurysm, an, spacing, True)
	if a.out_png:
		save_any(a.out_png, img, spacing, False)


if __name__ == "__main__":
	main()
