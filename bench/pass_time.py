#!/usr/bin/env python3
"""Time one forward+backward pass of a TorchScript model in plain PyTorch.

The reference cost that esg-attr's methods are measured against: median
seconds of `score = model(x)[0, target]; grad(score, x)` for one input item,
with the same thread count.  Usage: pass_time.py MODEL SHAPE THREADS [BATCH [REPEATS]]
where SHAPE is one item, e.g. 1,1,64,64,64.  The items run BATCH at a time
(default 1) and the time is per item: libtorch 1.13's CPU 3D convolution is
several times slower per item at batch 1 than at batch 2 or more, so a
method that batches its evaluations is compared with batched passes.
Prints: fwd_bwd_seconds_per_item fwd_seconds_per_item
"""
import statistics
import sys
import time

import torch


def main():
    model_path, shape, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch.jit.load(model_path).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    dims = [int(s) for s in shape.split(",")]
    x = torch.randn([dims[0] * batch] + dims[1:])

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        torch.autograd.grad(out.reshape(out.shape[0], -1)[:, -1].sum(), xi)  # one score per item

    def fwd():
        with torch.no_grad():
            model(x)

    res = []
    for fn in (fwd_bwd, fwd):
        fn()  # warm-up: the profiling executor optimises on early runs
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        res.append(statistics.median(times) / batch)
    print("%.6f %.6f" % tuple(res))


if __name__ == "__main__":
    main()
