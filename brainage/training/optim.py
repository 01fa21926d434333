"""Optimiser, weight-decay groups and learning-rate schedule of `BrainAgeModule`.

Weight decay is applied by parameter ROLE, with one allow-rule (our choice, the usual ViT practice after Loshchilov &
Hutter, "Decoupled weight decay regularization", ICLR 2019). A parameter is decayed iff

1. it is the ``weight`` of a ``torch.nn.Linear`` or ``torch.nn.Conv1d/2d/3d`` (patch embedding, attention, dense MLP,
   read-out and head, SFCN convolutions), or
2. the module that owns it names it in its class attribute ``decayed_parameters`` (brainage's raw weight stacks:
   the per-expert ``w1``/``w2`` of the expert banks and the softmax router's gate ``weight``).

Everything else gets no decay: biases (also the 2-D per-expert ``b1``/``b2``), norms, position embeddings, the CLS
token, spectra (ERMoE ``log_s``, EMoE ``log_lambda``), temperatures and masks, and orthonormal bases (ERMoE ``U``,
``V``; EMoE ``Q``): the QR retraction after each step undoes decay on a basis. A new module with a genuine weight
matrix stored as a raw ``nn.Parameter`` opts in by listing it in ``decayed_parameters``; an unknown parameter is
never decayed by accident. A listed name that is not a parameter of its module is an error.

Optimisers: "adamw" (default; decoupled decay) or "sgd" with momentum (Peng et al. 2021 trained SFCN with SGD; the
decay is then the classic L2 term of ``torch.optim.SGD``). Schedule for both: linear warm-up for ``warmup_epochs``,
then cosine decay to ``min_lr_ratio * lr``, stepped per optimizer step.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["DECAYED_LAYERS", "decay_groups", "build_optimizer", "warmup_cosine"]

DECAYED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _decayed(module: nn.Module) -> tuple[str, ...]:
    """Names of `module`'s own parameters that rule 1 or 2 decays."""
    names = ("weight",) if isinstance(module, DECAYED_LAYERS) else ()
    declared = tuple(getattr(type(module), "decayed_parameters", ()))
    unknown = [n for n in declared if n not in module._parameters]
    if unknown:
        raise ValueError(f"{type(module).__name__}.decayed_parameters lists {unknown}, which are not parameters of "
                         f"the module; found {sorted(module._parameters)}")
    return names + declared


def decay_groups(net: nn.Module) -> tuple[list[str], list[str]]:
    """(names decayed, names not decayed) of the trainable parameters of `net`, in `named_parameters` order."""
    decayed = {f"{prefix}.{name}" if prefix else name
               for prefix, module in net.named_modules() for name in _decayed(module)}
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    return [n for n in names if n in decayed], [n for n in names if n not in decayed]


def build_optimizer(net: nn.Module, optimizer: Literal["adamw", "sgd"], lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """The optimiser over two named groups: "decay" (weight matrices) and "no_decay" (everything else)."""
    params = dict(net.named_parameters())
    decay, no_decay = decay_groups(net)
    groups = [{"name": "decay", "params": [params[n] for n in decay], "param_names": decay,
               "weight_decay": weight_decay},
              {"name": "no_decay", "params": [params[n] for n in no_decay], "param_names": no_decay,
               "weight_decay": 0.0}]
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer={optimizer!r}; expected 'adamw' or 'sgd'")


def warmup_cosine(total_steps: int, warmup_steps: int, min_lr_ratio: float):
    """LR multiplier per step: linear warm-up over `warmup_steps`, then cosine from 1 to `min_lr_ratio`."""

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return schedule
