"""Hot per-frame (Cython, ``frame``) and per-audio-hop (Numba, ``audio``) kernels.

Each kernel has a slow NumPy reference beside it (``*_reference``) that the tests compare
against. Importing this package imports neither Numba nor the compiled extension.
"""
