# esg-wrap --reduce fixed-mask: score of class c = sum of channel c of the
# (activated) output over a mask fixed when the wrapper was made (buffer
# "mask", [1 or N, 1 or C, spatial...]: the one-hot argmax of the model's
# prediction on an input, or a user ROI shared by all classes).  The objective
# is then smooth in the input: the recommended target for attribution.
# A model returning [N, C] passes through.
# .float(): under mixed precision (esg-attr --amp) the model may return bf16 /
# fp16; activation and sums run in float32 (a no-op for a float32 output).
def forward(self, x: Tensor) -> Tensor:
    y = self.activation(self.model.forward(x).float())
    if y.dim() == 2:
        return y
    return (y * self.mask).flatten(2).sum(2)
