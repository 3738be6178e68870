"""The numeric layer: sparsity patterns, the CHOLMOD factor cache and the Takahashi kernels.

Nothing below this folder imports PyTensor; Ops, backends, distributions and inference
all call these host functions.
"""
