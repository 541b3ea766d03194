"""esg_rng - the PRNG of lib/attr/attr.h, transcribed for the Python references.

xoshiro256** seeded through splitmix64 from (seed, record, stream), so a
reference can replay every random draw of esg-attr exactly:
  k = seed ^ (record * 0xD1B54A32D192ED03) ^ (stream * 0x8CB92BA72F3D8DD7)
  uniform = (next() >> 11) * 2^-53; normal = Box-Muller on two uniforms.
"""
import math

M64 = (1 << 64) - 1


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Rng:
    def __init__(self, seed, record, stream):
        k = (seed ^ (record * 0xD1B54A32D192ED03) ^ (stream * 0x8CB92BA72F3D8DD7)) & M64
        self.s = []
        for _ in range(4):
            k = (k + 0x9E3779B97F4A7C15) & M64
            z = k
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))

    def next(self):
        s = self.s
        out = (_rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return out

    def uniform(self):
        return (self.next() >> 11) * 2.0 ** -53

    def normal(self):
        u1 = self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)

    def noise(self, shape, sd):
        """float32(sd * z) per element, C order, as a torch tensor."""
        import numpy as np
        import torch
        n = int(np.prod(shape))
        return torch.tensor(np.array([sd * self.normal() for _ in range(n)], dtype=np.float32).reshape(shape))

    def below(self, n):
        return min(int(self.uniform() * n), n - 1)

    def perm(self, n):
        """Fisher-Yates from the top, as lib/attr/perturb/perturb.c."""
        p = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            p[i], p[j] = p[j], p[i]
        return p
