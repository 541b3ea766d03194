# esg-wrap --reduce fixed-mask: score of class c = sum of channel c of the
# (activated) output over a mask fixed when the wrapper was made (buffer
# "mask", [1 or N, 1 or C, spatial...]: the one-hot argmax of the model's
# prediction on an input, or a user ROI shared by all classes).  The objective
# is then smooth in the input: the recommended target for attribution.
# A model returning [N, C] passes through.
def forward(self, x: Tensor) -> Tensor:
    y = self.activation(self.model.forward(x))
    if y.dim() == 2:
        return y
    return (y * self.mask).flatten(2).sum(2)
