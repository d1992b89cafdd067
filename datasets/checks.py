"""Checks on feature rows shared by the writers (extraction) and the readers (torch datasets).

A row holding NaN or Inf is never written: extraction records it as a failure of that video
and stream (``errors.jsonl``, error type :class:`NonFiniteRowsError`); readers refuse such
rows in stores written by other tools, naming the video and stream, before they reach a model
(where they surfaced as "index out of bounds" deep in the post-processing).
"""

from __future__ import annotations

import numpy as np

__all__ = ["NonFiniteRowsError", "check_finite_rows"]


class NonFiniteRowsError(ValueError):
    """Feature rows hold NaN or Inf; the message names the video and the stream."""


def check_finite_rows(rows: np.ndarray, *, video_id: str, stream: str, source: str | None = None) -> np.ndarray:
    """Return ``rows`` (``T x ...``) when every value is finite.

    Args:
        rows: one video's rows of one stream.
        video_id / stream: named in the error.
        source: where the rows come from (a store directory, a video file), named first.

    Raises:
        NonFiniteRowsError: how many rows hold NaN / Inf and the first one.
    """
    values = np.asarray(rows)
    if values.dtype.kind not in "fc" or values.size == 0:
        return rows
    finite = np.isfinite(values).reshape(values.shape[0], -1).all(axis=1) if values.ndim else np.isfinite(values)
    if np.all(finite):
        return rows
    bad = np.flatnonzero(~np.atleast_1d(finite))
    where = f"{source}: " if source else ""
    raise NonFiniteRowsError(
        f"{where}video {video_id!r}, stream {stream!r}: {bad.size} of {values.shape[0]} rows "
        f"hold NaN or Inf (first: row {int(bad[0])}); such rows are never written by avel "
        f"extract: re-extract the video or drop it"
    )
