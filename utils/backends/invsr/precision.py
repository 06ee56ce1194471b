"""InvSR's runtime and dtype policy: the config's ``runtime``/``precision`` resolved for this machine.

``auto``: OpenVINO on every CPU (bfloat16 where its plugin lists BF16: 0.29-0.41× torch float32's time
per stage on an AVX512-BF16 EPYC; float32 elsewhere: 0.63-0.80× with AVX-512, level with torch with
AVX2 only), torch float16 on CUDA (the reference), torch float32 on MPS (utils/runtimes/policy.py).
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from utils.backends.base import backend_choice
from utils.runtimes.policy import Choice


def runtime_choice(cfg: DictConfig) -> Choice:
    """How InvSR runs for ``cfg``; BackendUnavailable for a combination that cannot run here."""
    return backend_choice("invsr", cfg)


def torch_dtype(choice: Choice) -> torch.dtype:
    """The dtype of the tensors the sampler hands the models: OpenVINO takes float32 and computes in
    its own precision inside."""
    return torch.float32 if choice.runtime == "openvino" else getattr(torch, choice.precision)
