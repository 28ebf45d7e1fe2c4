"""Neural network models of the MaggotUBA backend (these submodules import torch)."""
