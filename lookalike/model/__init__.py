"""The model and its training: photo decoding, backbones and weights, the head, losses, the exported runtime."""
