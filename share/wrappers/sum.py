# Shared by the reduce wrappers: the sum of z [N, C, spatial...] over its
# voxels, per item and class, as float64.  A score summed over millions of
# voxels in float32 rounds away the change one voxel makes (at 5e7 its last
# bit is worth 4), which perturbation methods measure.  Rows along the last
# axis are summed in float32 (a few hundred values: exact to ~1e-7 of the
# row), the rows in float64, so no float64 copy of the volume is made.
def voxel_sum(self, z: Tensor) -> Tensor:
    r = z.sum(-1).double()
    if r.dim() > 2:
        r = r.flatten(2).sum(2)
    return r
