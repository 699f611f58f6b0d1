"""The PyTorch port of the persona models and recipes; what production training runs (MPS, CUDA, CPU)."""
