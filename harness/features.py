"""Hidden-state features for probes, cached on disk so a rerun does no forward pass.

A file per (model, task, template, split, pooling) under `<cache>/features/`, named with a digest of the
rendered texts, so a changed template, example set or data file never reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from harness.engine import Engine, Request, causal_pairs
from harness.filenames import slug
from harness.models import cache_dir


class FeatureCache:
    """Default folder: $HARNESS_FEATURES_DIR, else `features/` in the harness cache."""

    def __init__(self, root: Path | None = None):
        env = os.environ.get("HARNESS_FEATURES_DIR")
        self.root = root or (Path(env) if env else cache_dir() / "features")

    def path(self, model: str, task: str, template: str, split: str, pooling: str, texts: list[str]) -> Path:
        digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]
        return self.root / slug(model) / slug(task) / f"{slug(template)}-{split}-{pooling}-{digest}.safetensors"

    def load(self, path: Path) -> np.ndarray | None:
        if not path.is_file():
            return None
        try:
            return load_file(str(path))["features"]
        except Exception:  # a torn or foreign file: recompute it
            return None

    def save(self, path: Path, features: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # its own per process: the ranks of a job share the cache
        save_file({"features": np.ascontiguousarray(features, dtype=np.float32)}, str(tmp))
        tmp.replace(path)  # atomic: a reader sees the whole file or none


def n_states(model) -> int:
    """Hidden states per position: the embeddings plus one per layer."""
    return model.config.get_text_config().num_hidden_layers + 1


def last_token_features(engine: Engine, texts: list[str], choices: list[str]) -> np.ndarray:
    """(examples, states, width): every layer's state at the last token of each text, in one scoring pass."""
    layers = list(range(n_states(engine.model)))
    scored = engine.score([Request(t, choices) for t in texts], hidden_layers=layers)
    return np.stack([np.stack([s.hidden[layer].numpy() for layer in layers]) for s in scored])


def completion_features(engine: Engine, texts: list[str]) -> np.ndarray:
    """(texts, states, width): every layer's state at the last token of each whole text (a prompt completed with
    one of its answers: CCS's statements). The engine keeps the states at a request's answer slot, the last token
    of its context: each text is a context, and its one continuation (a newline) is scored and not used."""
    return last_token_features(engine, texts, ["\n"])


@torch.no_grad()
def mean_pooled_features(engine: Engine, texts: list[str], batch_size: int = 8) -> np.ndarray:
    """(examples, states, width): every layer's states averaged over the tokens of each text."""
    out = []
    for start in range(0, len(texts), batch_size):
        ids_list = [engine.tokenizer.encode(t) for t in texts[start : start + batch_size]]
        width = max(len(i) for i in ids_list)
        ids = torch.full((len(ids_list), width), engine.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids_list), width))
        for b, i in enumerate(ids_list):
            ids[b, : len(i)] = torch.tensor(i)
            mask[b, : len(i)] = 1
        states = engine.decoder(
            input_ids=ids.to(engine.device), attention_mask=mask.long().to(engine.device), output_hidden_states=True
        ).hidden_states
        lengths = [len(i) for i in ids_list]
        engine._count(sum(lengths), ids.numel(), sum(causal_pairs(0, n) for n in lengths))
        m = mask.to(engine.device)[:, None, :, None]
        # one device: the layers of a model placed across devices (--device-map) give their states where they ran
        stacked = torch.stack([s.to(engine.device) for s in states], dim=1).float()  # (batch, states, tokens, width)
        out.append(((stacked * m).sum(2) / m.sum(2)).cpu().numpy())
    return np.concatenate(out)
