"""A tiny model and dataset that follow mlkit's batch contract, for fast tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mlkit.train import TrainConfig

TEXT_DIM = 8
N_CLASSES = 3


class TinyModel(nn.Module):
    """``backbone`` sees the image, ``head`` the image features plus the text."""

    def __init__(self, hidden: int = 6, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, hidden), nn.ReLU())
        self.head = nn.Sequential(
            nn.LayerNorm(hidden + TEXT_DIM),
            nn.Dropout(0.2),
            nn.Linear(hidden + TEXT_DIM, n_classes),
        )

    def forward(self, image, text, has_text):
        text = text * has_text.unsqueeze(1).to(text.dtype)
        features = torch.cat([self.backbone(image), text], dim=1)
        return {"logits": self.head(features)}


class TinyData(Dataset):
    """Random images and texts whose class is readable from the text."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.image = torch.randn(n, 3, 2, 2, generator=g)
        self.text = torch.randn(n, TEXT_DIM, generator=g)
        self.has_text = torch.ones(n, dtype=torch.bool)
        self.target = self.text[:, :N_CLASSES].argmax(dim=1)

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.image[i],
            "text": self.text[i],
            "has_text": self.has_text[i],
            "target": self.target[i],
        }


def make_model(seed: int = 0, **kwargs) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel(**kwargs)


def make_loaders(config: TrainConfig, n_train: int = 64, n_val: int = 32):
    """Train loader shuffled by its own seeded generator; val in order."""
    train = DataLoader(
        TinyData(n_train, seed=1),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    val = DataLoader(TinyData(n_val, seed=2), batch_size=config.batch_size)
    return train, val
