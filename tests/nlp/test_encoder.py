"""The encoder's two backends give the same features, so the heads work on either."""

from __future__ import annotations

import numpy as np
import pytest

from nlp.encoder import Encoder, EncoderError

pytestmark = pytest.mark.model

TEXTS = [
    "hi",
    "My order #A17 never arrived and nobody answers my emails",
    "I was charged twice for the same subscription this month, please refund one of them",
    "",
]


def test_onnx_runtime_matches_pytorch() -> None:
    onnx = Encoder.load(backend="onnx")
    torch = Encoder.load(backend="torch")
    a, b = onnx.encode(TEXTS, batch_size=3), torch.encode(TEXTS, batch_size=3)
    assert onnx.backend == "onnx" and torch.backend == "torch"
    assert a.shape == b.shape == (4, 768) == (len(TEXTS), onnx.width)
    assert np.abs(a - b).max() < 1e-4
    # Each layer's part is unit length; the sentence embedding is the last layer's.
    assert np.allclose(np.linalg.norm(a[:, :384], axis=1), 1, atol=1e-4)
    assert np.allclose(onnx.sentence(a), a[:, 384:])


def test_features_do_not_depend_on_the_batch() -> None:
    enc = Encoder.load()
    together = enc.encode(TEXTS)
    alone = np.vstack([enc.encode([t]) for t in TEXTS])
    assert np.abs(together - alone).max() < 1e-4  # padding must not leak into the pooling


def test_a_bad_backend_or_folder_is_named(tmp_path: object) -> None:
    with pytest.raises(EncoderError, match="DESK_INFERENCE must be 'onnx' or 'torch'"):
        Encoder.load(backend="tpu")
    with pytest.raises(EncoderError, match="not a Hugging Face encoder folder"):
        Encoder.load(str(tmp_path))
