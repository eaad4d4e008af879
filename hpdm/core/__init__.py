"""The diffusion model: noise schedule, v-prediction preconditioning, the HPDM denoiser, the loss,
the checkpoint layout (``hpdm.core.checkpoints``) and loading a trained model."""

from hpdm.core.levels import LevelScheduler
from hpdm.core.loss import diffusion_loss
from hpdm.core.model import HPDM, ContextCache
from hpdm.core.precond import Preconditioning, v_preconditioning, v_to_x0, x0_to_v
from hpdm.core.schedule import NoiseSchedule
from hpdm.core.pretrained import export_model, load_pretrained, read_saved_config

__all__ = [
    "HPDM",
    "ContextCache",
    "LevelScheduler",
    "NoiseSchedule",
    "Preconditioning",
    "diffusion_loss",
    "export_model",
    "load_pretrained",
    "read_saved_config",
    "v_preconditioning",
    "v_to_x0",
    "x0_to_v",
]
