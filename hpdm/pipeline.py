"""``HPDMPipeline``: load a trained HPDM, generate videos, save the model, in a few lines.

::

    pipe = hpdm.HPDMPipeline.from_pretrained("pretrained/quickstart")
    videos = pipe(labels=[0, 4], seed=0)           # uint8 [N, T, H, W, 3]
    hpdm.save_video(videos[0], "video.mp4")

``from_pretrained`` takes an export directory (``config.gin`` + ``model.safetensors``), a training
workdir (the newest readable checkpoint, EMA weights by default) or a Hugging Face Hub repo id
(``pip install "hpdm[hub]"``; with ``HF_HUB_OFFLINE=1`` only the local Hub cache is read). Loading
goes through ``hpdm.core.load_pretrained``, so it leaves the process's gin config as it was and
refuses a saved config that imports code from outside hpdm unless ``trust_config=True``.

The sampler settings saved with the model (``SamplingSteps``, ``OverlapSampler`` bindings in its
``config.gin``) are read once, at load, from the config ``load_pretrained`` returns, and kept by the
pipeline: they are its call's defaults, whatever gin holds later. ``hpdm-sample`` is a command line
around this object.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
import os
import re
import sys
from typing import Callable, Optional, Sequence, Union

import gin
import torch
from absl import logging
from safetensors.torch import save_file

from hpdm import __version__, gin_utils
from hpdm.core import HPDM, load_pretrained
from hpdm.core.checkpoints import EXPORT_WEIGHTS
from hpdm.progress import ProgressBar, RateEstimate, is_terminal
from hpdm.pyramid.tiles import TilePlan
from hpdm.samplers import SamplingSteps, OverlapSampler, sample_videos, sampling_steps_record

MODEL_CARD = "README.md"
HUB_FILES = (gin_utils.OPERATIVE_CONFIG, EXPORT_WEIGHTS, MODEL_CARD)
# "owner/name": what the Hub accepts. Anything else that is not a directory is a local path, and
# load_pretrained says what is missing there.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LOG_EVERY = 16  # steps between plain progress lines (each level's first and last step always log)


def default_device(device=None) -> torch.device:
    """``device``, or CUDA when available, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def register_configurables() -> None:
    """Import what a saved config may bind, so that its bindings are applied (not skipped)."""
    import hpdm.samplers  # noqa: F401  (SamplingSteps, OverlapSampler)
    import hpdm.trainers.distributed  # noqa: F401  (set_matmul_precision: the run's TF32 switch)

    try:
        import hpdm.trainers.text  # noqa: F401  (TextEncoder: the prompt path needs its bindings)
    except ImportError as err:
        logging.info("text encoder unavailable (%s)", err)


def resolve_model_dir(path_or_repo_id: str, revision: Optional[str] = None) -> str:
    """A local directory as it is; an ``owner/name`` that is not one, downloaded from (or found in
    the local cache of) the Hugging Face Hub: only the files of an export."""
    path = os.fspath(path_or_repo_id)
    if os.path.isdir(path) or not _REPO_ID.match(path):
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ImportError(
            f'{path!r} is not a local directory; loading it from the Hugging Face Hub needs huggingface_hub, '
            f'the "hub" extra: pip install "hpdm[hub]" ({err})'
        ) from err
    try:
        return snapshot_download(path, revision=revision, allow_patterns=list(HUB_FILES))
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, network: one message for all
        raise FileNotFoundError(
            f"{path!r} is neither a local directory nor a model the Hugging Face Hub resolves "
            f"(with HF_HUB_OFFLINE=1 only the local Hub cache is read): {err}"
        ) from err


def load_model(
    path: str, use_ema: bool = True, bindings: Sequence[str] = (), trust_config: Optional[bool] = None
) -> tuple[HPDM, gin_utils.SavedConfig]:
    """``hpdm.core.load_pretrained`` of ``path`` with what its config may bind imported first, and the
    caller's own ``bindings`` checked strictly (a typo fails here, not silently)."""
    register_configurables()
    model, config = load_pretrained(path, use_ema=use_ema, bindings=list(bindings), trust_config=trust_config)
    if bindings:
        # load_pretrained skips unknown bindings (the saved config names trainer parts); the
        # caller's own must not be skipped silently.
        with config.active():
            gin.parse_config(list(bindings), skip_unknown=False)
    return model, config


def check_text_model(model) -> None:
    """Fail unless ``model`` takes text prompts (``HPDM.text_dim > 0``)."""
    if int(getattr(model, "text_dim", 0)) <= 0:
        kind = "class-conditional" if int(getattr(model, "num_classes", 0)) > 0 else "unconditional"
        raise ValueError(f"prompts given, but the model is {kind} (text_dim=0): give class labels, or neither")


def build_text_encoder(bindings: dict):
    """The run's T5 ``TextEncoder`` from its gin ``bindings``, with errors that say what to fix."""
    from hpdm.trainers.text import TextEncoder

    try:
        return TextEncoder(**bindings)
    except ImportError:
        raise  # names the extra to install already
    except Exception as err:  # noqa: BLE001 - gin.REQUIRED or a missing local checkpoint
        raise ValueError(
            "cannot build the text encoder of this model: the config must bind TextEncoder.name_or_path "
            f"to a local T5 directory or a cached hub name (set HF_HUB_OFFLINE=1 offline): {err}"
        ) from err


def encode_prompts(model, prompts: Sequence[str], encoder) -> dict:
    """Per-video text conditioning (``"text"``, ``"text_mask"``) of ``prompts`` by ``encoder``."""
    from hpdm.trainers.text import check_text_width

    check_text_width(encoder, int(model.text_dim), trained=True)
    text, mask = encoder(list(prompts))
    return {"text": text, "text_mask": mask}


@dataclasses.dataclass(frozen=True)
class SamplerDefaults:
    """The sampler settings of a model's config: what a pipeline call uses unless told otherwise."""

    level_schedule: SamplingSteps
    overlap: str
    tile_batch_size: int
    offload_cache: bool
    guidance_scale: float = 1.0  # no gin setting: classifier-free guidance is off unless asked for

    @classmethod
    def from_config(cls, config: gin_utils.SavedConfig) -> "SamplerDefaults":
        """The settings bound in a model's config (``load_pretrained``'s), defaults where it binds none."""
        with config.active():
            sampler = OverlapSampler()
            return cls(SamplingSteps(), sampler.overlap, sampler.tile_batch_size, sampler.offload_cache)

    def schedule(self, num_steps: Optional[Sequence[int]], num_levels: int) -> SamplingSteps:
        """The saved schedule, with ``num_steps`` (one count per level) in place of its step counts."""
        if num_steps is None:
            return self.level_schedule
        steps = [int(n) for n in num_steps]
        if len(steps) != num_levels or min(steps) < 1:
            raise ValueError(f"num_steps needs one count >= 1 per pyramid level ({num_levels}), got {list(num_steps)}")
        schedule = copy.copy(self.level_schedule)
        schedule.num_steps = steps
        return schedule


class SamplingProgress:
    """``sample_videos`` progress: a bar with ETA on a terminal, log lines with ETA elsewhere.

    Counted in tile steps (one tile of one video through one sampler step), so that a level weighs
    by its tiles: level 0 is one tile, the last level hundreds.
    """

    def __init__(self, total: int, batch_size: int, stream=None):
        self.total, self.batch_size, self.done = int(total), int(batch_size), 0
        self.stream = sys.stderr if stream is None else stream
        self.bar = ProgressBar(total, "sampling", "tile steps", self.stream) if is_terminal(self.stream) else None
        self.estimate = RateEstimate(total)

    def __call__(self, info: dict) -> None:
        first, num = info["first_video"], info["num_videos"]
        last = min(first + self.batch_size, num)
        self.done += info["tiles"] * (last - first)
        step = info["step"] + 1
        where = f"videos {first + 1}-{last}/{num} | level {info['level'] + 1}/{info['num_levels']} | step {step}/{info['num_steps']}"
        if self.bar is not None:
            self.bar.update(self.done, where)
        elif step in (1, info["num_steps"]) or step % LOG_EVERY == 0:
            summary = self.estimate.summary(self.done, "tile steps")
            logging.info(
                "%s | %d tiles/step | %d tile evaluations%s",
                where, info["tiles"], info["tile_evaluations"], f" | {summary}" if summary else "",
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _per_video(values, num_videos: Optional[int], name: str) -> list:
    """``values`` (one, or one per video) as a list of ``num_videos`` entries (default: as many as given)."""
    if isinstance(values, (str, numbers.Integral)) or getattr(values, "ndim", 1) == 0:  # one for all
        values = [values]
    values = list(values)
    if num_videos is None or len(values) == num_videos:
        return values
    if len(values) == 1:
        return values * num_videos
    raise ValueError(f"got {len(values)} {name} for num_videos={num_videos}: give one, or one per video")


class HPDMPipeline:
    """A trained HPDM with its sampler settings: call it for videos, ``save_pretrained`` to share it.

    Attributes:
      model: the ``hpdm.core.HPDM`` (eval mode, on ``device``).
      defaults: ``SamplerDefaults`` of the model's config.
      device: where sampling runs.
    """

    def __init__(
        self,
        model: HPDM,
        defaults: SamplerDefaults,
        device=None,
        text_bindings: Optional[dict] = None,
        config: str = "",
    ):
        self.device = default_device(device)
        self.model = model.to(self.device).eval()
        self.defaults = defaults
        self.config = config  # the run's config.gin text, written back by save_pretrained
        self._text_bindings = text_bindings
        self._text_encoder = None

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str,
        device=None,
        *,
        use_ema: bool = True,
        bindings: Sequence[str] = (),
        trust_config: Optional[bool] = None,
        revision: Optional[str] = None,
    ) -> "HPDMPipeline":
        """Load an export directory, a training workdir or a Hub repo id (see the module docstring).

        Args:
          device: torch device (default: CUDA if available, else the CPU).
          use_ema: a workdir's EMA weights (an export holds only those).
          bindings: gin bindings applied over the saved config, e.g. ``"SamplingSteps.base_steps=64"``.
          trust_config: load a saved config that imports modules from outside hpdm (runs their
            code); None follows ``hpdm.gin_utils.set_config_trust``, else refuses.
          revision: Hub branch, tag or commit.
        """
        from hpdm.trainers.distributed import set_matmul_precision

        path = resolve_model_dir(path_or_repo_id, revision)
        model, config = load_model(path, use_ema, bindings, trust_config)
        device = default_device(device)
        config.call(set_matmul_precision, device)  # the run's config may turn TF32 off (process-wide)
        # The export is written from the file as saved (load_pretrained's text has its includes
        # pinned to this machine's gin tree).
        with open(os.path.join(path, gin_utils.OPERATIVE_CONFIG), encoding="utf-8") as f:
            text = f.read()
        if bindings:
            text += "\n# Bindings given when the model was loaded:\n" + "\n".join(bindings) + "\n"
        return cls(model, SamplerDefaults.from_config(config), device, _text_bindings(model, config), text)

    def to(self, device) -> "HPDMPipeline":
        """Move the model (and later sampling) to ``device``; returns the pipeline."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @property
    def num_levels(self) -> int:
        return self.model.pyramid.num_levels

    @torch.no_grad()
    def __call__(
        self,
        labels=None,
        prompts: Union[str, Sequence[str], None] = None,
        *,
        num_videos: Optional[int] = None,
        seed: int = 0,
        num_steps: Optional[Sequence[int]] = None,
        guidance_scale: Optional[float] = None,
        overlap: Optional[str] = None,
        progress: Union[bool, Callable[[dict], None]] = True,
        batch_size: int = 8,
        cached: bool = True,
        tile_batch_size: Optional[int] = None,
        offload_cache: Optional[bool] = None,
        autoguidance=None,
    ) -> torch.Tensor:
        """Generate videos; returns ``uint8 [N, T, H, W, 3]`` (channels last, on the CPU).

        Args:
          labels: class ids, one per video (or one for all); a class-conditional model given none
            draws one per video from the seed.
          prompts: text prompts, one per video (or one for all), for a text-to-video model.
          num_videos: N when neither labels nor prompts say it (default 1).
          seed: video ``i`` depends only on the seed, ``i`` and its conditioning, not on the batch
            size (its noise and label are the same; batched kernels may round a few values apart).
          num_steps: sampler steps per pyramid level, e.g. ``[128, 16, 8]``; None: the config's.
          guidance_scale: classifier-free guidance (1: none); None: 1.
          overlap: axes with 50% tile overlap, a subset of "fhw" ("" for none); None: the config's.
          progress: True: a bar on a terminal, log lines otherwise; False: silent; or a callable
            receiving ``sample_videos``'s progress dicts.
          batch_size: videos generated together.
          cached, tile_batch_size, offload_cache, autoguidance: see ``hpdm.samplers.sample_videos``.
        """
        if labels is not None and prompts is not None:
            raise ValueError("give labels or prompts, not both")
        labels = None if labels is None else _per_video(labels, num_videos, "labels")
        prompts = None if prompts is None else _per_video(prompts, num_videos, "prompts")
        count = len(labels or prompts or []) or (1 if num_videos is None else int(num_videos))
        if count < 1:
            raise ValueError(f"num_videos must be >= 1, got {count}")
        cond = None if prompts is None else self.encode(prompts)
        schedule, guidance_scale, overlap = self._resolve(num_steps, guidance_scale, overlap)
        report = self._progress(progress, count, batch_size, schedule, overlap)
        try:
            return sample_videos(
                self.model,
                count,
                seed,
                cond=cond,
                labels=labels,
                guidance_scale=guidance_scale,
                overlap=overlap,
                cached=cached,
                level_schedule=schedule,
                tile_batch_size=self.defaults.tile_batch_size if tile_batch_size is None else tile_batch_size,
                offload_cache=self.defaults.offload_cache if offload_cache is None else offload_cache,
                batch_size=batch_size,
                device=self.device,
                progress=report,
                autoguidance=autoguidance,
            )
        finally:
            if isinstance(report, SamplingProgress):
                report.close()

    def _resolve(self, num_steps, guidance_scale, overlap) -> tuple[SamplingSteps, float, str]:
        """A call's schedule, guidance scale and overlap: the arguments, else the model's defaults."""
        schedule = self.defaults.schedule(num_steps, self.num_levels)
        guidance = self.defaults.guidance_scale if guidance_scale is None else float(guidance_scale)
        return schedule, guidance, self.defaults.overlap if overlap is None else overlap

    def sampler_settings(
        self, num_steps: Optional[Sequence[int]] = None, guidance_scale: Optional[float] = None, overlap: Optional[str] = None
    ) -> dict:
        """What a call with these arguments samples with, as plain JSON values: per-level steppers and
        steps, overlap and guidance (``hpdm-sample`` records it next to its videos)."""
        schedule, guidance, overlap = self._resolve(num_steps, guidance_scale, overlap)
        return {"levels": sampling_steps_record(schedule, self.num_levels), "overlap": overlap, "guidance_scale": guidance}

    def encode(self, prompts: Sequence[str]) -> dict:
        """Text conditioning of ``prompts`` by the run's text encoder (built on first use)."""
        check_text_model(self.model)
        if self._text_encoder is None:
            self._text_encoder = build_text_encoder(self._text_bindings or {})
        return encode_prompts(self.model, prompts, self._text_encoder)

    def _progress(self, progress, count: int, batch_size: int, schedule: SamplingSteps, overlap: str):
        """The ``sample_videos`` progress callback that ``progress`` asks for (None: silent)."""
        if callable(progress):
            return progress
        if not progress:
            return None
        pyramid = self.model.pyramid
        per_video = sum(
            schedule.level(level).num_steps * len(TilePlan.build(pyramid, level, overlap))
            for level in range(pyramid.num_levels)
        )
        return SamplingProgress(per_video * count, batch_size)

    def save_pretrained(self, output_dir: str) -> str:
        """Write an export: ``config.gin``, ``model.safetensors`` (the weights in use) and a model card
        ``README.md``; ``from_pretrained(output_dir)`` (or the Hub repo it is uploaded to) loads it."""
        os.makedirs(output_dir, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        _write_atomic(os.path.join(output_dir, EXPORT_WEIGHTS), lambda tmp: save_file(state, tmp))
        for name, text in ((gin_utils.OPERATIVE_CONFIG, self.config), (MODEL_CARD, self.model_card())):
            _write_atomic(os.path.join(output_dir, name), lambda tmp, text=text: _write_text(tmp, text))
        return output_dir

    def model_card(self) -> str:
        """The export's ``README.md``: what the model is, its sampler defaults and how to load it."""
        return model_card(self.model, self.defaults, self._text_bindings)


def _text_bindings(model, config: gin_utils.SavedConfig) -> Optional[dict]:
    """The ``TextEncoder`` bindings of a text model's config (the encoder is built on first use)."""
    if int(getattr(model, "text_dim", 0)) <= 0:
        return None
    with config.active():
        try:
            return gin.get_bindings("TextEncoder")
        except ValueError:  # TextEncoder not registered: prompts will say what is missing
            return {}


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _write_atomic(path: str, write: Callable[[str], None]) -> None:
    """``write`` a temporary file, then rename it: a reader never sees half a file."""
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)


def _res(res) -> str:
    return "x".join(str(int(r)) for r in res)


def _conditioning(model, text_bindings: Optional[dict]) -> tuple[str, str]:
    """(description, example call arguments) of the model's conditioning."""
    if int(model.text_dim) > 0:
        encoder = (text_bindings or {}).get("name_or_path", "unbound")
        return (
            f"text (T5 embeddings of width {int(model.text_dim)}; encoder `TextEncoder.name_or_path = {encoder!r}`, "
            'needs `pip install "hpdm[text]"`)',
            'prompts=["a red car"], seed=0',
        )
    if int(model.num_classes) > 0:
        return f"class labels 0-{int(model.num_classes) - 1} ({int(model.num_classes)} classes)", "labels=[0], seed=0"
    return "none (unconditional)", "num_videos=1, seed=0"


def model_card(model: HPDM, defaults: SamplerDefaults, text_bindings: Optional[dict] = None) -> str:
    """Markdown model card of an export (with Hub metadata), from the model and its sampler settings."""
    pyramid = model.pyramid
    conditioning, call = _conditioning(model, text_bindings)
    params = sum(p.numel() for p in model.parameters())
    rows = [
        f"| {level} | {_res(res)} | {steps.stepper} | {steps.num_steps} |"
        for level, res in enumerate(pyramid.resolutions)
        for steps in [defaults.level_schedule.level(level)]
    ]
    return "\n".join(
        [
            "---",
            "library_name: hpdm",
            "tags:",
            "- video-generation",
            "- diffusion",
            "---",
            "",
            "# HPDM video model",
            "",
            "A Hierarchical Patch Diffusion Model (Skorokhodov et al., CVPR 2024), exported by "
            f"hpdm {__version__}: `{gin_utils.OPERATIVE_CONFIG}` (the gin config) and "
            f"`{EXPORT_WEIGHTS}` (the weights).",
            "",
            "| | |",
            "|---|---|",
            f"| pyramid | {' -> '.join(_res(r) for r in pyramid.resolutions)} (T x H x W, patches {_res(pyramid.patch_res)}) |",
            f"| parameters | {params:,} |",
            f"| conditioning | {conditioning} |",
            f"| channels | {int(model.channels)} |",
            "",
            "## Sampler defaults",
            "",
            "| level | resolution | stepper | steps |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Tile overlap `{defaults.overlap!r}` (50% on the axes named: f, h, w), classifier-free guidance "
            f"scale {defaults.guidance_scale:g}, {defaults.tile_batch_size} tiles per model call. A call's "
            "`num_steps`, `overlap` and `guidance_scale` override them.",
            "",
            "## Use",
            "",
            "```python",
            "import hpdm",
            'pipe = hpdm.HPDMPipeline.from_pretrained("THIS_DIRECTORY_OR_HUB_REPO_ID")',
            f"videos = pipe({call})  # uint8 [N, T, H, W, 3]",
            'hpdm.save_video(videos[0], "video.mp4")',
            "```",
            "",
            "or `hpdm-sample --workdir=THIS_DIRECTORY --output_dir=out --num_videos=4`. A Hub repo id "
            'needs `pip install "hpdm[hub]"`.',
            "",
        ]
    )
