"""Makes mlp.pt: a tiny TorchScript MLP, 64 inputs -> 256 (ReLU) -> 10
outputs, with fixed weights (seed 0). Run with Debian's python3-torch:
    /usr/bin/python3 samples/torch/make_model.py samples/torch/mlp.pt
"""
import sys

import torch


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(64, 256)
        self.out = torch.nn.Linear(256, 10)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


torch.manual_seed(0)
model = torch.jit.script(MLP().eval())
model.save(sys.argv[1] if len(sys.argv) > 1 else "mlp.pt")
