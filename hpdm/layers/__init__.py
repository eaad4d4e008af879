"""Reusable layers with no diffusion or pyramid-training knowledge; plain constructors, gin optional."""

from hpdm.layers.attention import MLP, Attention
from hpdm.layers.conditioning import ClassEmbedding, NoiseLevelEmbedding, TextEmbedding
from hpdm.layers.fusion import ContextFuser, sample_context
from hpdm.layers.rin import RINBlock
from hpdm.layers.tokenizer import Detokenizer, LocalTokenMixing, PositionEmbedding3D, Tokenizer, token_grid

__all__ = [
    "Attention",
    "ClassEmbedding",
    "ContextFuser",
    "Detokenizer",
    "LocalTokenMixing",
    "MLP",
    "NoiseLevelEmbedding",
    "PositionEmbedding3D",
    "RINBlock",
    "TextEmbedding",
    "Tokenizer",
    "sample_context",
    "token_grid",
]
