"""Frozen T5 text encoder with an on-disk cache of caption embeddings (paper Sec. 4.6; Table 8).

The text-to-video models condition on T5 (T5-11B in the paper, width 1024) token embeddings; the
model's ``HPDM.text_dim`` must be the encoder's width (``check_text_width``, at set-up). The encoder is
frozen, so a caption's embedding never changes during training: each caption is encoded once and
stored in ``cache_dir`` as a small safetensors file keyed by a hash of (encoder id, max_length,
caption). The files are written atomically (temporary name, then rename), so several data-parallel
ranks may share one cache directory.

Offline use: a local directory is loaded with ``local_files_only=True``; a hub name is resolved
from the local Hugging Face cache only when ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``)
is set. Nothing is downloaded in that mode.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import gin
import torch
from safetensors.torch import load_file, save_file


def missing_text_extra(err: ImportError) -> ImportError:
    """``err`` naming the extra that installs what the text encoder needs (transformers; sentencepiece
    for T5 tokenizers that ship only a ``spiece.model``)."""
    return ImportError(f'{err}\nThe text encoder needs the "text" extra: pip install "hpdm[text]"')


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@gin.configurable
class TextEncoder:
    """Caption list -> (embeddings ``[B, S, D]`` float32, mask ``[B, S]`` bool).

    Args:
        name_or_path: a local directory holding a T5 (encoder) checkpoint and its tokenizer, or a
            hub name such as ``google/t5-v1_1-xxl`` (resolved offline from the HF cache when
            ``HF_HUB_OFFLINE=1``).
        max_length: captions are truncated to this many tokens.
        cache_dir: where caption embeddings are cached (None: in-memory only).
        device: where the encoder runs (None: CUDA if available).
        dtype: encoder weights' dtype (the cached embeddings are float32).
    """

    def __init__(
        self,
        name_or_path: str = gin.REQUIRED,
        max_length: int = 128,
        cache_dir: str | None = None,
        device: str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        try:
            from transformers import AutoTokenizer, T5EncoderModel
        except ImportError as err:
            raise missing_text_extra(err) from err

        local = os.path.isdir(name_or_path)
        local_only = local or _offline()
        self.model_id = os.path.abspath(name_or_path) if local else name_or_path
        self.max_length = int(max_length)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_only)
        except ImportError as err:  # transformers names the missing backend (sentencepiece)
            raise missing_text_extra(err) from err
        self.encoder = T5EncoderModel.from_pretrained(name_or_path, local_files_only=local_only, dtype=dtype)
        self.encoder.eval().requires_grad_(False).to(self.device)
        self.dim = int(self.encoder.config.d_model)
        self.cache_dir = cache_dir
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
        self._memory: dict[str, torch.Tensor] = {}
        self.num_encoded = 0  # captions that went through the encoder (for tests and logging)

    def key(self, caption: str) -> str:
        h = hashlib.sha256(f"{self.model_id}\x00{self.max_length}\x00{caption}".encode("utf-8"))
        return h.hexdigest()

    def _cache_path(self, key: str) -> str:
        return os.path.join(self.cache_dir, key[:2], key + ".safetensors")

    def _lookup(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            return self._memory[key]
        if self.cache_dir:
            path = self._cache_path(key)
            if os.path.isfile(path):
                try:
                    emb = load_file(path)["embedding"]
                except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
                    return None
                self._memory[key] = emb
                return emb
        return None

    def _store(self, key: str, emb: torch.Tensor) -> None:
        self._memory[key] = emb
        if not self.cache_dir:
            return
        path = self._cache_path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        os.close(fd)
        try:
            save_file({"embedding": emb.contiguous()}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @torch.no_grad()
    def _encode(self, captions: list[str]) -> list[torch.Tensor]:
        tok = self.tokenizer(
            captions, max_length=self.max_length, truncation=True, padding=True, return_tensors="pt"
        )
        ids = tok["input_ids"].to(self.device)
        mask = tok["attention_mask"].to(self.device)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu()
        lengths = mask.sum(1).tolist()
        self.num_encoded += len(captions)
        # Store only the real tokens; padding is rebuilt per batch.
        return [hidden[i, : int(n)].clone() for i, n in enumerate(lengths)]

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        keys = [self.key(c) for c in captions]
        found = {k: self._lookup(k) for k in set(keys)}
        todo = sorted({c for c, k in zip(captions, keys) if found[k] is None})
        if todo:
            for caption, emb in zip(todo, self._encode(todo)):
                found[self.key(caption)] = emb
                self._store(self.key(caption), emb)
        embs = [found[k] for k in keys]
        seq = max(1, max(e.shape[0] for e in embs))
        out = torch.zeros(len(embs), seq, self.dim)
        mask = torch.zeros(len(embs), seq, dtype=torch.bool)
        for i, e in enumerate(embs):
            out[i, : e.shape[0]] = e
            mask[i, : e.shape[0]] = True
        return out, mask


def check_text_width(encoder, text_dim: int, trained: bool = False) -> None:
    """Fail when the model's ``HPDM.text_dim`` is not the width of ``encoder``'s embeddings.

    The text embedder's input projection is ``text_dim`` wide (Sec. 4.6): a T5 of another width
    fails at the first captioned batch or prompt, or, past a checkpoint, cannot be used at all.
    ``trained``: the model's weights exist already, so the encoder has to change, not the model.
    """
    width = getattr(encoder, "dim", None)
    if width is None or int(width) == int(text_dim):
        return
    name = getattr(encoder, "model_id", type(encoder).__name__)
    if trained:
        fix = f"bind TextEncoder.name_or_path to the T5 the model was trained with (width {text_dim})"
    else:
        fix = (
            f"set HPDM.text_dim = {width}, or bind TextEncoder.name_or_path (T5_MODEL) to a T5 of width {text_dim}"
        )
    raise ValueError(
        f"the text encoder {name} produces {width}-wide embeddings but the model has HPDM.text_dim = "
        f"{text_dim}: {fix}"
    )


def make_tiny_t5(path: str, d_model: int = 32, seed: int = 0) -> str:
    """Save a tiny randomly initialised T5 encoder and a ``ByT5Tokenizer`` (no vocabulary file) in ``path``.

    It runs the same code path as a real T5 (``TextEncoder(path)``), for smoke tests and the
    text-to-video quickstart on machines without downloaded weights. Its embeddings carry no
    meaning beyond telling different captions apart.
    """
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=384, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2, num_heads=4)
    os.makedirs(path, exist_ok=True)
    T5EncoderModel(config).save_pretrained(path)
    ByT5Tokenizer().save_pretrained(path)
    return path


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m hpdm.trainers.text OUTPUT_DIR   (writes a tiny random T5 + ByT5 tokenizer)")
    print(make_tiny_t5(sys.argv[1]))
