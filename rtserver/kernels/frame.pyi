"""Type stub of the compiled ``rtserver.kernels.frame`` extension (see frame.pyx)."""

import numpy as np
import numpy.typing as npt

def crop_resize_normalize(
    plane: npt.NDArray[np.uint8],
    boxes: npt.ArrayLike,
    out: npt.NDArray[np.float32],
    margin: float = 10.0,
) -> None:
    """Face crops (N, S, S) float32 in [-1, 1] of a (H, W) uint8 luma plane, into ``out``."""

def downscale(plane: npt.NDArray[np.uint8], out: npt.NDArray[np.uint8]) -> None:
    """Exact-area downscale of a (H, W) uint8 plane into ``out`` (H2 <= H, W2 <= W)."""
