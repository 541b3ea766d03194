# esg-wrap --activation sigmoid: per-channel probabilities.
def activation(self, y: Tensor) -> Tensor:
    return torch.sigmoid(y)
