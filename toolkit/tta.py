"""Test-time augmentation: the deterministic views of a batch, in one fixed order (cbtool toolkit/tta.py).

This file is copied verbatim into generated submission `model.py` files (numpy only), so the view order that
predict() averages over is defined here once. The identity view always comes first: `validate-preprocessing`
compares the first captured call of every batch with training's preprocessing.
"""

import numpy as np

# Mode -> number of views; "none" = the identity only, "flip" = + horizontal flip, "d4" = the 8 symmetries of
# the square (flips x 90-degree rotations).
TTA_VIEWS = {"none": 1, "flip": 2, "d4": 8}
IDENTITY_VIEW = 0


def tta_views(batch, mode):
    """The views of a float32 (n, S, S, 3) batch for TTA `mode`, as contiguous arrays; the identity view first."""
    if mode not in TTA_VIEWS:
        raise ValueError("TTA mode must be one of %s, found %r" % (sorted(TTA_VIEWS), mode))
    if mode == "none":
        return [batch]
    if mode == "flip":
        return [batch, np.ascontiguousarray(batch[:, :, ::-1])]
    views = []
    for flipped in (batch, batch[:, :, ::-1]):
        for k in range(4):
            views.append(np.rot90(flipped, k, axes=(1, 2)))
    return [np.ascontiguousarray(v) for v in views]
