#!/usr/bin/env python3
"""Time model calls of a TorchScript model in plain PyTorch.

The reference cost that esg-attr's methods are measured against.
Usage: pass_time.py MODEL SHAPE THREADS CALL...
       pass_time.py --replay MODEL SHAPE THREADS CALLxCOUNT...
SHAPE is one item, e.g. 1,1,64,64,64; each CALL is gB (forward+backward of
a batch of B items: score = output[:, -1] summed, gradient w.r.t. the input)
or fB (forward under no_grad).  Prints one line per CALL: "CALL seconds",
the median of 3 timed calls after 2 warm-up calls (the profiling executor
optimises on early runs) -- for a whole call, not per item: libtorch 1.13's
CPU 3D convolution is several times slower per item at batch 1 than at
batch 2 or more, so each batch size is timed as it is.
--replay makes the given calls once each, in order, in this fresh process
(as esg-attr does: the first calls pay the executor's profiling run,
oneDNN's primitive creation and first-touch page faults) and prints
"replay seconds", model load excluded.
"""
import statistics
import sys
import time

import torch


def call(model, x, grad):
    if grad:
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        torch.autograd.grad(out.reshape(out.shape[0], -1)[:, -1].sum(), xi)
    else:
        with torch.no_grad():
            model(x)


def main():
    replay = sys.argv[1] == "--replay"
    if replay:
        del sys.argv[1]
    model_path, shape, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch.jit.load(model_path).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    dims = [int(s) for s in shape.split(",")]
    if replay:
        calls = [(c[0] == "g", int(c[1:].split("x")[0]), int(c.split("x")[1])) for c in sys.argv[4:]]
        xs = [torch.randn([dims[0] * b] + dims[1:]) for _, b, _ in calls]
        t0 = time.perf_counter()
        for (grad, _, count), x in zip(calls, xs):
            for _ in range(count):
                call(model, x, grad)
        print("replay %.6f" % (time.perf_counter() - t0), flush=True)
        return
    for call_name in sys.argv[4:]:
        grad, batch = call_name[0] == "g", int(call_name[1:])
        x = torch.randn([dims[0] * batch] + dims[1:])

        def run():
            call(model, x, grad)

        run()
        run()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        print(call_name, "%.6f" % statistics.median(times), flush=True)


if __name__ == "__main__":
    main()
