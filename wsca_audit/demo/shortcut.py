"""Induced-shortcut benchmark on real images: scikit-learn's bundled handwritten digits.

A small CNN learns "digit >= 5" from 8x8 digit images. A label-correlated acquisition
artefact (a bright 2x2 patch in the top-left corner, away from the strokes: a stand-in
for a scanner's burnt-in marker) is added to the training images with probability
``bias`` when the label is 1 and ``1 - bias`` when it is 0, so ``bias=0.5`` leaves it
uninformative and ``bias=1.0`` makes it a perfect shortcut. The audit data carry the
artefact at a fixed ``eval_bias`` (0.8): metadata and label are correlated there too,
which is the confounded setting where the paper's raw cosine misleads.

Needs scikit-learn (``pip install wsca-audit[demo]``); nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

PATCH = (slice(0, 2), slice(0, 2))


def load_digits_images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, 1, 8, 8) in [0, 1], binary labels (digit >= 5) and the digit itself."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    return x, (d.target >= 5).astype(np.int64), d.target.astype(np.int64)


def artefact_flags(labels: np.ndarray, bias: float, rng: np.random.Generator) -> np.ndarray:
    """1 where the artefact is present: equals the label with probability ``bias``."""
    agree = rng.random(len(labels)) < bias
    return np.where(agree, labels, 1 - labels).astype(np.int64)


def add_artefact(images, flags):
    """Burn the patch into the images where ``flags`` is 1 (numpy or torch, copied)."""
    out = images.clone() if isinstance(images, torch.Tensor) else images.copy()
    sel = flags.astype(bool) if isinstance(flags, np.ndarray) else flags.bool()
    out[sel, :, PATCH[0], PATCH[1]] = 1.0
    return out


def roi_masks(images: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """The clinically relevant region of each digit: its stroke pixels (N, 8, 8) bool."""
    return images[:, 0] > threshold


class SmallCNN(nn.Module):
    """Two conv layers, a 32-d embedding and a two-logit linear head (``head``)."""

    def __init__(self, embedding_dim: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, embedding_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(embedding_dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_cnn(
    images: np.ndarray, labels: np.ndarray, *, epochs: int = 30, seed: int = 0, lr: float = 3e-3
) -> SmallCNN:
    """Train :class:`SmallCNN` with Adam (deterministic on CPU for a given seed)."""
    torch.manual_seed(seed)
    return train_classifier(SmallCNN(), images, labels, epochs=epochs, seed=seed, lr=lr)


def train_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 30,
    seed: int = 0,
    lr: float = 3e-3,
) -> nn.Module:
    """Train any two-logit classifier with Adam, mini-batches of 64 in a seeded order;
    returns it in eval mode (seed the model's initialisation before building it)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    x = torch.as_tensor(images)
    y = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@dataclass
class ShortcutSplit:
    """One induced-shortcut data set: training and audit images with their metadata."""

    train_x: np.ndarray
    train_y: np.ndarray
    eval_x: np.ndarray  # artefact at eval_bias (confounded audit data)
    eval_y: np.ndarray
    eval_flags: np.ndarray
    eval_digit: np.ndarray
    clean_x: np.ndarray  # the same eval images without any artefact
    free_x: np.ndarray  # artefact independent of the label (shortcut-free test data)


def make_split(
    bias: float, eval_bias: float = 0.8, seed: int = 0, train_frac: float = 0.6
) -> ShortcutSplit:
    """Split the digits, then add the artefact at ``bias`` (train) and ``eval_bias`` (audit).

    The split and the audit artefacts depend on ``seed`` only, so models trained at
    different biases are audited on identical data.
    """
    x, y, digit = load_digits_images()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_train = int(train_frac * len(y))
    tr, ev = order[:n_train], order[n_train:]
    eval_flags = artefact_flags(y[ev], eval_bias, rng)
    free_flags = artefact_flags(y[ev], 0.5, rng)
    train_flags = artefact_flags(y[tr], bias, np.random.default_rng([seed, int(bias * 1000)]))
    return ShortcutSplit(
        train_x=add_artefact(x[tr], train_flags),
        train_y=y[tr],
        eval_x=add_artefact(x[ev], eval_flags),
        eval_y=y[ev],
        eval_flags=eval_flags,
        eval_digit=digit[ev],
        clean_x=x[ev],
        free_x=add_artefact(x[ev], free_flags),
    )


@torch.no_grad()
def counterfactual_effect(model: nn.Module, clean_x: np.ndarray) -> float:
    """Mean change of the primary logit contrast when the artefact is added, in logit-sd units."""
    x = torch.as_tensor(clean_x)
    with_a = model(add_artefact(x, torch.ones(len(x))))
    without = model(x)
    contrast = lambda z: z[:, 1] - z[:, 0]  # noqa: E731
    sd = contrast(without).std().clamp_min(1e-12)
    return float((contrast(with_a) - contrast(without)).mean() / sd)
