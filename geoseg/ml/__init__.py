"""Models: the architecture registry and checkpoints, inference, losses, training and evaluation."""
