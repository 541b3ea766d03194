#!/usr/bin/env python3
"""Time model calls of a TorchScript model in plain PyTorch.

The reference cost that esg-attr's methods are measured against.
Usage: pass_time.py MODEL SHAPE THREADS CALL...
SHAPE is one item, e.g. 1,1,64,64,64; each CALL is gB (forward+backward of
a batch of B items: score = output[:, -1] summed, gradient w.r.t. the input)
or fB (forward under no_grad).  Prints one line per CALL: "CALL seconds",
the median of 3 timed calls after 2 warm-up calls (the profiling executor
optimises on early runs) -- for a whole call, not per item: libtorch 1.13's
CPU 3D convolution is several times slower per item at batch 1 than at
batch 2 or more, so each batch size is timed as it is.
"""
import statistics
import sys
import time

import torch


def main():
    model_path, shape, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch.jit.load(model_path).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    dims = [int(s) for s in shape.split(",")]
    for call in sys.argv[4:]:
        grad, batch = call[0] == "g", int(call[1:])
        x = torch.randn([dims[0] * batch] + dims[1:])

        def run():
            if grad:
                xi = x.clone().requires_grad_(True)
                out = model(xi)
                torch.autograd.grad(out.reshape(out.shape[0], -1)[:, -1].sum(), xi)
            else:
                with torch.no_grad():
                    model(x)

        run()
        run()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        print(call, "%.6f" % statistics.median(times), flush=True)


if __name__ == "__main__":
    main()
