"""Shared-prefix attention (harness/prefix_attention.py) gives the scores of the expanded-cache path and of a plain
full-sequence pass: on tiny random Llama (grouped-query), Mistral, Qwen2, Qwen3 and Gemma-3 models, with padded
batches of rows of unequal length, hidden states asked for, and Gemma-3's local layers with a window shorter than
the prefix."""

from __future__ import annotations

import pytest
import torch

import harness.engine as engine_module
import harness.prefix_attention as prefix_module
from harness.engine import Engine, Request
from harness.errors import HarnessError
from tests.conftest import make_tiny_lm
from tests.test_engine import DEMOS, _reference

WINDOW = 6  # Gemma-3's and Mistral's sliding window here: shorter than the demo prefix and than most rows
SHAPE = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=8)


def _model(kind: str, vocab_size: int, device: torch.device | str = "cpu"):
    import transformers as tf

    common = dict(vocab_size=vocab_size, eos_token_id=0, pad_token_id=0, bos_token_id=None, **SHAPE)
    configs = {
        "llama": (tf.LlamaForCausalLM, tf.LlamaConfig(num_hidden_layers=2, **common)),
        "mistral": (tf.MistralForCausalLM, tf.MistralConfig(num_hidden_layers=2, sliding_window=WINDOW, **common)),
        "qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config(num_hidden_layers=2, **common)),
        "qwen3": (tf.Qwen3ForCausalLM, tf.Qwen3Config(num_hidden_layers=2, **common)),
        "gemma3": (
            tf.Gemma3ForCausalLM,
            tf.Gemma3TextConfig(
                num_hidden_layers=3,
                layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                sliding_window=WINDOW,
                query_pre_attn_scalar=12,  # scaling 12**-0.5, not head_dim**-0.5
                final_logit_softcapping=5.0,
                # transformers 5.24's Gemma-3 attention passes no softcap on (its eager attention ignores this too):
                # the shared path caps only what the model passes, so scores still equal the model's own pass
                attn_logit_softcapping=2.0,
                **common,
            ),
        ),
    }
    model_class, config = configs[kind]
    torch.manual_seed(1)
    model = model_class(config).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _requests() -> list[Request]:
    """One demo prefix, then rows of very different lengths (padded batches), multi-token choices."""
    tails = ["Is it?", "Paris is the capital of France, and the cat sat on the mat. Is it?", "Water flowed. Is it so?"]
    return [
        Request(DEMOS + f"{tail * (1 + i % 2)}\nAnswer:", [" True", " False", " Neither of these"])
        for i, tail in enumerate(tails * 2)
    ]


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_lm()[1]


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2", "qwen3", "gemma3"])
@pytest.mark.parametrize("batch_size", [None, 4])
def test_shared_prefix_matches_expanded_cache_and_full_sequence(tokenizer, device, monkeypatch, kind, batch_size):
    model = _model(kind, len(tokenizer), device)
    passes: list[int] = []
    use = engine_module.use_shared_prefix_attention

    def counted(decoder):
        passes.append(1)
        return use(decoder)

    monkeypatch.setattr(engine_module, "use_shared_prefix_attention", counted)
    requests = _requests()
    layers = list(range(model.config.num_hidden_layers + 1))
    expand = Engine(model, tokenizer, batch_size=batch_size, prefix_attention="expand")
    expanded = expand.score(requests, hidden_layers=layers)
    assert not passes
    assert Engine(model, tokenizer).prefix_attention == "expand"  # the default
    shared = Engine(model, tokenizer, batch_size=batch_size, prefix_attention="shared")
    got = shared.score(requests, hidden_layers=layers)
    assert passes  # the shared path ran
    assert model.config._attn_implementation == "sdpa"  # the model's own attention again after each pass
    prefix = len(shared._encode(DEMOS.rstrip()))
    assert prefix > 4 * WINDOW  # local layers see only the last keys of the prefix
    for request, a, b in zip(requests, expanded, got):
        reference = _reference(shared, model, request)
        assert b.logprobs == pytest.approx(reference, abs=1e-4)
        assert b.logprobs == pytest.approx(a.logprobs, abs=1e-5)
        assert max(range(3), key=b.logprobs.__getitem__) == max(range(3), key=reference.__getitem__)
        assert (b.first_token_ranks, b.top1_token_id) == (a.first_token_ranks, a.top1_token_id)
        for layer in layers:
            assert torch.allclose(b.hidden[layer], a.hidden[layer], atol=1e-5)
    # the rows are of unequal length, so the batches were padded
    assert shared.positions_computed > shared.tokens_computed


def _attention_reference(query, keys, values, scaling, window, softcap):
    """Eager attention of the new tokens over [prefix; new] keys: the last of them at positions length + t."""
    rows, heads, width, _ = query.shape
    group = heads // keys.shape[1]
    keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
    total = keys.shape[2]
    scores = query @ keys.transpose(-1, -2) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    q_pos = torch.arange(total - width, total)[:, None]
    k_pos = torch.arange(total)[None, :]
    visible = k_pos <= q_pos
    if window is not None:
        visible &= k_pos > q_pos - window
    weights = scores.masked_fill(~visible, -torch.inf).softmax(-1)
    return (weights @ values).transpose(1, 2)


class _Layer(torch.nn.Module):
    layer_idx = 0


@pytest.mark.parametrize(("window", "softcap", "kept"), [(None, None, 40), (7, 3.0, 6), (50, None, 40), (7, None, 40)])
def test_attention_function_matches_eager(monkeypatch, window, softcap, kept):
    """The function alone, against eager attention over the concatenated keys: grouped heads, a sliding window
    shorter or longer than the prefix (a window cache keeping only its last `kept` positions), score softcapping,
    and rows taken a few at a time (a small score budget)."""
    monkeypatch.setattr(prefix_module, "MAX_SCORES", 3000)
    torch.manual_seed(0)
    rows, heads, kv_heads, width, dim, length = 5, 6, 2, 9, 8, 40
    query = torch.randn(rows, heads, width, dim)
    prefix_k, prefix_v = torch.randn(1, kv_heads, length, dim), torch.randn(1, kv_heads, length, dim)
    new_k, new_v = torch.randn(rows, kv_heads, width, dim), torch.randn(rows, kv_heads, width, dim)
    prefix = prefix_module.SharedPrefix(length, [(prefix_k[:, :, -kept:], prefix_v[:, :, -kept:])])
    out, _ = prefix_module.shared_prefix_attention(
        _Layer(), query, new_k, new_v, None, scaling=0.3, sliding_window=window, softcap=softcap, harness_prefix=prefix
    )
    keys = torch.cat([prefix_k.expand(rows, -1, -1, -1), new_k], dim=2)
    values = torch.cat([prefix_v.expand(rows, -1, -1, -1), new_v], dim=2)
    want = _attention_reference(query, keys, values, 0.3, window, softcap)
    assert out.shape == (rows, width, heads, dim)
    assert torch.allclose(out, want, atol=1e-5)


def test_other_models_and_caches_take_the_expand_path(tiny_lm):
    """A model type not checked here (GPT-2) and a cache that is not plain tensors keep today's path."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tiny, tokenizer = tiny_lm
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4)
    gpt2 = GPT2LMHeadModel(config).eval().to(tiny.device)
    engine = Engine(gpt2, tokenizer, prefix_attention="shared")
    assert engine.prefix_attention == "shared" and not engine._shared_prefix
    request = _requests()[1]
    assert engine.score([request])[0].logprobs == pytest.approx(_reference(engine, gpt2, request), abs=1e-4)
    assert prefix_module.shared_prefix(object(), 10) is None


def test_mode_from_the_environment(tiny_lm, monkeypatch):
    model, tokenizer = tiny_lm
    monkeypatch.setenv("HARNESS_PREFIX_ATTENTION", "expand")
    assert not Engine(model, tokenizer)._shared_prefix
    monkeypatch.setenv("HARNESS_PREFIX_ATTENTION", "Shared ")
    assert Engine(model, tokenizer)._shared_prefix
    monkeypatch.setenv("HARNESS_PREFIX_ATTENTION", "cascade")
    with pytest.raises(HarnessError, match=r"^\$HARNESS_PREFIX_ATTENTION must be shared or expand, not 'cascade'$"):
        Engine(model, tokenizer)


def test_attention_function_in_bfloat16():
    """A half-precision model's queries: the output keeps their dtype and stays near float32 attention."""
    torch.manual_seed(0)
    query = torch.randn(3, 4, 5, 8)
    prefix_k, prefix_v = torch.randn(1, 2, 20, 8), torch.randn(1, 2, 20, 8)
    new_k, new_v = torch.randn(3, 2, 5, 8), torch.randn(3, 2, 5, 8)
    prefix = prefix_module.SharedPrefix(20, [(prefix_k.bfloat16(), prefix_v.bfloat16())])
    out, _ = prefix_module.shared_prefix_attention(
        _Layer(), query.bfloat16(), new_k.bfloat16(), new_v.bfloat16(), None, scaling=0.35, harness_prefix=prefix
    )
    keys = torch.cat([prefix_k.expand(3, -1, -1, -1), new_k], dim=2)
    values = torch.cat([prefix_v.expand(3, -1, -1, -1), new_v], dim=2)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), _attention_reference(query, keys, values, 0.35, None, None), atol=3e-2)


def test_a_bad_mode_stops_eval_before_the_model_loads(capsys, monkeypatch, tmp_path):
    from tests.test_misuse import assert_one_line, run_cli

    monkeypatch.setenv("HARNESS_PREFIX_ATTENTION", "cascade")
    args = ["eval", "--model", str(tmp_path / "no-model"), "--tasks", "rte", "--methods", "prompt"]
    code, _, err = run_cli([*args, "--out", str(tmp_path / "out")], capsys, monkeypatch)
    assert_one_line(code, err, "$HARNESS_PREFIX_ATTENTION", "must be shared or expand, not 'cascade'")
