"""The ImPartial losses: scribble cross-entropy, blind-spot reconstruction and optional smoothness.

The network's outputs hold, for each task in order, ``[K component logits | for each r in R: K mean maps]``
(``K = sum(task.ncomponents)``, ``R = task.rec_channels``). Component probabilities ``pi`` are the softmax of
the logits; a class's probability is the sum of its components' (background components last). A run with
``separation`` has one more output after the tasks': the logit of the cell-core probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import RunConfig, TaskConfig

LOG_FLOOR = 1e-20  # probabilities are clamped here before the log, as in the method
MEAN_EPS = 1e-8  # keeps a component's patch mean finite when its probability vanishes everywhere
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
CORE_TARGETS = 3  # target maps of the separation output: core, not core, gap


@dataclass
class TaskOutput:
    """One task's slice of the network output.

    Attributes:
        logits: (B, K, H, W) component logits.
        means: (B, R, K, H, W) per-pixel component mean maps for each reconstructed channel.
    """

    logits: torch.Tensor
    means: torch.Tensor


def split_outputs(output: torch.Tensor, tasks: list[TaskConfig]) -> list[TaskOutput]:
    """Split the tasks' (B, n_task_outputs, H, W) output into one :class:`TaskOutput` per task (views, no copies).

    Channels after the tasks' (the separation output) are left out.
    """
    expected = sum(task.n_outputs for task in tasks)
    if output.shape[1] < expected:
        raise ValueError(f"output has {output.shape[1]} channels, the tasks need {expected}")
    parts = torch.split(output[:, :expected], [task.n_outputs for task in tasks], dim=1)
    outputs = []
    for task, part in zip(tasks, parts, strict=True):
        k = task.n_components
        batch, _, height, width = part.shape
        means = part[:, k:].reshape(batch, len(task.rec_channels), k, height, width)
        outputs.append(TaskOutput(part[:, :k], means))
    return outputs


def class_probabilities(component_probs: torch.Tensor, ncomponents: list[int]) -> torch.Tensor:
    """Sum component probabilities per class.

    Args:
        component_probs: (B, K, H, W), softmax over K = sum(ncomponents).
        ncomponents: components per class, then per background (length n_classes + 1).

    Returns:
        (B, n_classes + 1, H, W), background last.
    """
    # Membership matrix (classes + 1, K): row c has ones at the components of class c.
    owner = torch.repeat_interleave(torch.arange(len(ncomponents)), torch.tensor(ncomponents))
    membership = (owner[None, :] == torch.arange(len(ncomponents))[:, None])
    membership = membership.to(device=component_probs.device, dtype=component_probs.dtype)
    return torch.einsum("ck,bkhw->bchw", membership, component_probs)


def scribble_loss(class_probs: torch.Tensor, scribbles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on scribbled pixels: (foreground term, background term).

    For class c and sample b, ``l_b = sum_p S_c(p) (-log max(P_c(p), 1e-20)) / max(sum_p S_c(p), 1)``;
    ``L_c = sum_b l_b / max(#samples with any S_c, 1)``, so a class scribbled nowhere in the batch gives 0.
    The foreground term is the mean of ``L_c`` over the foreground classes, the background term is ``L_bg``.

    Args:
        class_probs: (B, n_classes + 1, H, W) class probabilities, background last.
        scribbles: (B, n_classes + 1, H, W) float 0/1 scribble maps in the same order.
    """
    neg_log = -torch.log(class_probs.clamp_min(LOG_FLOOR))
    scribbled = scribbles.sum(dim=(2, 3))  # (B, classes + 1)
    per_sample = (scribbles * neg_log).sum(dim=(2, 3)) / scribbled.clamp_min(1)
    samples_with_class = (scribbled > 0).sum(dim=0).clamp_min(1)
    per_class = per_sample.sum(dim=0) / samples_with_class
    return per_class[:-1].mean(), per_class[-1]


def reconstruction_loss(component_probs: torch.Tensor, means: torch.Tensor, target: torch.Tensor,
                        mask: torch.Tensor, kind: str = "gaussian") -> torch.Tensor:
    """Negative log-likelihood of the clean values at the blind spots ("quantized imputation").

    Each component gets one mean per patch and channel, ``mu_{k,r} = sum_p m_{k,r}(p) pi_k(p) / sum_p pi_k(p)``.
    ``"gaussian"`` (the method's): unit-variance Gaussian at ``xhat_r = sum_k pi_k mu_{k,r}``.
    ``"mixture"``: the true mixture likelihood ``sum_k pi_k N(x; mu_{k,r}, 1)`` (log-sum-exp).
    The NLL is averaged over the masked pixels of each sample and channel, then over channels and the batch;
    a sample and channel without masked pixels contributes 0.

    Args:
        component_probs: (B, K, H, W).
        means: (B, R, K, H, W) mean maps.
        target: (B, R, H, W) clean values of the reconstructed channels.
        mask: (B, R, H, W) bool, True at blind spots; only these pixels count.
        kind: ``"gaussian"`` or ``"mixture"``.
    """
    pi = component_probs.unsqueeze(1)  # (B, 1, K, H, W), shared by all channels
    patch_means = (means * pi).sum(dim=(3, 4)) / (pi.sum(dim=(3, 4)) + MEAN_EPS)  # (B, R, K)
    patch_means = patch_means[..., None, None]
    if kind == "gaussian":
        estimate = (pi * patch_means).sum(dim=2)  # xhat (B, R, H, W)
        nll = 0.5 * (target - estimate).square() + HALF_LOG_2PI
    elif kind == "mixture":
        log_joint = torch.log(pi.clamp_min(LOG_FLOOR)) - 0.5 * (target.unsqueeze(2) - patch_means).square()
        nll = HALF_LOG_2PI - torch.logsumexp(log_joint, dim=2)
    else:
        raise ValueError(f"unknown reconstruction loss '{kind}' (choose gaussian or mixture)")
    weights = mask.to(nll.dtype)
    per_channel = (nll * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp_min(1)  # (B, R)
    return per_channel.mean()


def separation_loss(core_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Balanced binary cross-entropy of the cell-core output on the pixels the scribbles decide.

    Three sides, each the mean over its pixels (pooled over the batch): core pixels score ``-log sigmoid(z)``,
    not-core pixels and gap pixels ``-log(1 - sigmoid(z))``. The loss is the mean over the sides that have pixels
    in the batch (0 when none has), so the few gap pixels between touching cells weigh as much as a side.

    Args:
        core_logits: (B, H, W) logits z of the cell-core probability.
        targets: (B, 3, H, W) float 0/1: core, not core, gap (see impartial.separation.core_targets).
    """
    sides = []
    for target, sign in zip(targets.unbind(dim=1), (-1.0, 1.0, 1.0), strict=True):
        # -log sigmoid(z) = softplus(-z) and -log(1 - sigmoid(z)) = softplus(z), stable for any z
        count = target.sum()
        if count > 0:
            sides.append((torch.nn.functional.softplus(sign * core_logits) * target).sum() / count)
    if not sides:
        return core_logits.new_zeros(())
    return torch.stack(sides).mean()


def gap_loss(background: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the background on the gaps of touching cells: ``-log max(P_bg, 1e-20)`` averaged over the
    gap pixels of the batch (0 when there are none).

    The background term averages over all background strokes, where the gaps are a few pixels among many; on
    their own they weigh as a term, so the probability learns to dip where touching cells meet.

    Args:
        background: (B, H, W) background probability of the first task (the whole cell's).
        gaps: (B, H, W) float 0/1, the gap pixels (see impartial.separation.gap_strokes).
    """
    count = gaps.sum()
    if count == 0:
        return gaps.new_zeros(())
    return (-torch.log(background.clamp_min(LOG_FLOOR)) * gaps).sum() / count


def smoothness_loss(component_probs: torch.Tensor) -> torch.Tensor:
    """Total variation of (B, K, H, W) probabilities: half the sum of mean |vertical| and |horizontal| steps."""
    vertical = (component_probs[:, :, 1:] - component_probs[:, :, :-1]).abs().mean()
    horizontal = (component_probs[..., 1:] - component_probs[..., :-1]).abs().mean()
    return 0.5 * (vertical + horizontal)


def total_loss(output: torch.Tensor, x_clean: torch.Tensor, blind_mask: torch.Tensor, scribbles: torch.Tensor,
               config: RunConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted training loss, each part averaged over tasks.

    Args:
        output: (B, n_outputs, H, W) network output.
        x_clean: (B, C, H, W) the uncorrupted patch.
        blind_mask: (B, C, H, W) bool, True at blind spots.
        scribbles: (B, S, H, W) float 0/1 in the method's layout (per task: classes, then background), followed,
            when ``config.separation`` is on, by the three cell-core target maps (core, not core, gap), then, when
            ``config.train.wgap`` > 0, by the map of the gaps of touching cells (see :func:`gap_loss`).
        config: supplies the tasks, the weights and ``train.rec_loss``.

    Returns:
        (total, parts) with parts ``fore``, ``back``, ``rec``, ``reg``, ``sep`` (0 without separation), ``gap``
        (0 without its weight), ``scribble`` (weighted fore + back) and ``total``, all scalar tensors; only the
        returned ``total`` carries the gradient.
    """
    weights = config.train
    n_scribbles = config.n_scribble_channels
    n_core = CORE_TARGETS * int(config.separation)
    expected = n_scribbles + n_core + int(weights.wgap > 0)
    if scribbles.shape[1] != expected:
        raise ValueError(f"scribbles have {scribbles.shape[1]} channels, expected {expected}")
    task_scribbles = _split_scribbles(scribbles[:, :n_scribbles], config.tasks)
    per_task, class_probs = zip(*(_task_losses(task_output, task, x_clean, blind_mask, maps, weights.rec_loss)
                                  for task_output, task, maps in zip(split_outputs(output, config.tasks), config.tasks,
                                                                     task_scribbles, strict=True)), strict=True)
    parts = {name: torch.stack([losses[name] for losses in per_task]).mean() for name in per_task[0]}
    parts["sep"] = (separation_loss(output[:, config.n_task_outputs], scribbles[:, n_scribbles:n_scribbles + n_core])
                    if config.separation else output.new_zeros(()))
    parts["gap"] = (gap_loss(class_probs[0][:, -1], scribbles[:, -1]) if weights.wgap > 0
                    else output.new_zeros(()))
    parts["scribble"] = weights.wfore * parts["fore"] + weights.wback * parts["back"]
    total = (parts["scribble"] + weights.wrec * parts["rec"] + weights.wreg * parts["reg"]
             + weights.wsep * parts["sep"] + weights.wgap * parts["gap"])
    parts["total"] = total
    # The parts are for logging: detached, so turning them into floats neither warns nor keeps the graph.
    return total, {name: value.detach() for name, value in parts.items()}


def _split_scribbles(scribbles: torch.Tensor, tasks: list[TaskConfig]) -> tuple[torch.Tensor, ...]:
    """(B, S, H, W) -> per task (B, n_classes + 1, H, W)."""
    return torch.split(scribbles, [task.n_scribble_channels for task in tasks], dim=1)


def _task_losses(task_output: TaskOutput, task: TaskConfig, x_clean: torch.Tensor, blind_mask: torch.Tensor,
                 scribbles: torch.Tensor, rec_kind: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Unweighted fore, back, rec and reg terms of one task, and its (B, n_classes + 1, H, W) class
    probabilities (the gap term reuses the first task's)."""
    pi = torch.softmax(task_output.logits, dim=1)
    class_probs = class_probabilities(pi, task.ncomponents)
    fore, back = scribble_loss(class_probs, scribbles)
    channels = list(task.rec_channels)
    rec = reconstruction_loss(pi, task_output.means, x_clean[:, channels], blind_mask[:, channels], rec_kind)
    return {"fore": fore, "back": back, "rec": rec, "reg": smoothness_loss(pi)}, class_probs
