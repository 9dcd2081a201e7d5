"""The text-encoding module: a pretrained language model of any kind (CLIP/BERT encoders, T5, chat-template decoder
LLMs) turned into tokens, word embeddings, contextual embeddings, pooled vectors and the weighted / negative /
long-prompt conditioning each diffusers family takes.

``encoding`` (``TextEncoding``, the facade the engine uses), ``conditioning`` (``Conditioning``, ``TokenReport``,
``TokenMap``), ``families`` (one adapter per encoder kind, ``adapter_for``), ``encoders`` (tokenizer + model pairs and
how their hidden states are read), ``weights`` (``::`` combination), ``cache`` (the encoding cache).
"""

from worker.text.cache import CacheInfo
from worker.text.conditioning import Conditioning, KwargNames, TokenMap, TokenReport, TokenSpan
from worker.text.encoding import TextEncoding
from worker.text.families import POOLINGS, SUPPORTED, Pooling

__all__ = [
    "POOLINGS",
    "SUPPORTED",
    "CacheInfo",
    "Conditioning",
    "KwargNames",
    "Pooling",
    "TextEncoding",
    "TokenMap",
    "TokenReport",
    "TokenSpan",
]
