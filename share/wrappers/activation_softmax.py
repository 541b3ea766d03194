# esg-wrap --activation softmax: class probabilities (softmax over the channel axis).
def activation(self, y: Tensor) -> Tensor:
    return torch.softmax(y, dim=1)
