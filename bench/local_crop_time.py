#!/usr/bin/env python3
"""The model cost behind bench/local.md: one forward pass of the shipped
U-Net (plain PyTorch, batch 1, 2 threads, median of warm calls, random
input) on the whole 256x256x128 volume (what local=off pays per window) and
on the crops local=auto evaluates (an interior 16^3 window's 112^3, the full
run's mean 100x100x88).

Usage: /usr/bin/python3 bench/local_crop_time.py
"""
import os
import time

import torch

torch.set_num_threads(2)
m = torch.jit.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "share/models/unet3d.pt"))


def t(shape, n):
    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        m(x)
        ts = []
        for _ in range(n):
            a = time.time()
            m(x)
            ts.append(time.time() - a)
    ts.sort()
    return ts[len(ts) // 2]


full = t((256, 256, 128), 2)
inner = t((112, 112, 112), 3)
mix = t((100, 100, 88), 3)
print("full 256x256x128 %.2f s; interior crop 112^3 %.2f s (%.1fx); mean-size crop 100x100x88 %.2f s (%.1fx)"
      % (full, inner, full / inner, mix, full / mix))
