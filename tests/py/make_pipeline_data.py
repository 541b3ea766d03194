"""Tiny inputs for the pipeline tests: two 16^3 NIfTI volumes with vessel-like
masks, and a small untrained 3D U-Net (segmentation output [N, 2, D, H, W]),
traced.  Usage: make_pipeline_data.py OUTDIR"""
import os
import sys

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from make_models import UNet  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    affine = np.diag([0.6, 0.6, 0.7, 1.0])
    for k in (1, 2):
        mask = np.zeros((16, 16, 16), np.uint8)
        mask[4:12, 7 + k - 1:9 + k - 1, 6:10] = 1  # a short "vessel"
        image = (100 + 20 * rng.standard_normal(mask.shape) + 200 * mask).astype(np.int16)
        nib.save(nib.Nifti1Image(image, affine), os.path.join(out, "vol%d_image.nii.gz" % k))
        nib.save(nib.Nifti1Image(mask, affine), os.path.join(out, "vol%d_vessels.nii.gz" % k))
    torch.manual_seed(0)
    net = UNet(base=2).eval()
    torch.jit.trace(net, torch.randn(1, 1, 16, 16, 16)).save(os.path.join(out, "unet.pt"))


if __name__ == "__main__":
    main()
