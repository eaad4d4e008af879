"""Training (paper Sec. 4.6; Appendix C, Table 8): ``train(workdir=..., gin_files=...)`` runs a
config end to end; ``hpdm.trainers.loop.Trainer`` is the loop itself."""

from hpdm.trainers.command import train

__all__ = ["train"]
