"""Memory per rank: state bytes, the Korthikanti formulas, and the activation count against real autograd."""

import functools

import pytest
import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs
from llamaforge.plan_memory import (
    GIB,
    activation_items,
    korthikanti_layer_bytes,
    korthikanti_output_bytes,
    training_memory,
)

L7, L70 = ModelArgs.from_name("llama2-7b"), ModelArgs.from_name("llama2-70b")


@pytest.mark.parametrize("dp,tp", [(1, 1), (8, 1), (8, 8), (64, 1), (2, 4)])
def test_fp32_adamw_state_is_16_bytes_per_param_split_by_dp_and_tp(dp, tp):
    e = training_memory(L70, dp_shard=dp, tp=tp, precision="fp32")
    n = L70.num_params()
    assert e.params + e.master + e.grads + e.optimizer == pytest.approx(16 * n / (dp * tp))
    assert e.optimizer == pytest.approx(8 * n / (dp * tp))


def test_other_precisions():
    n = L7.num_params()
    assert training_memory(L7, precision="bf16-mixed").state == pytest.approx(16 * n)
    assert training_memory(L7, precision="bf16-master").state == pytest.approx(18 * n)
    assert training_memory(L7, precision="bf16-pure").state == pytest.approx(8 * n)
    frozen = training_memory(L7, dp_shard=4, trainable=False)
    assert frozen.total == pytest.approx(2 * n / 4)


def test_activations_do_not_shard_with_fsdp_but_do_with_tp():
    a1 = training_memory(L70, dp_shard=1, tp=1).activations
    assert training_memory(L70, dp_shard=64, tp=1).activations == pytest.approx(a1)
    a8 = training_memory(L70, dp_shard=8, tp=8).activations
    assert a8 < a1 / 2.5  # gathered linear inputs stay whole under DTensor
    a8r = training_memory(L70, dp_shard=8, tp=8, regather=True).activations
    assert a8r == pytest.approx(a1 / 8, rel=0.02)  # Megatron's layout: everything split by t
    assert training_memory(L70, tp=8, sp=False).activations > a8
    assert training_memory(L7, micro_batch=2).activations == pytest.approx(2 * training_memory(L7).activations)


def test_checkpointing_order():
    m = {k: training_memory(L7, dp_shard=8, checkpointing=k).activations
         for k in ("none", "selective-attn", "selective", "full")}
    assert m["full"] < m["selective"] < m["none"]
    assert m["selective-attn"] == m["none"]  # a flash kernel already recomputes the attention core
    eager = {k: training_memory(L7, checkpointing=k, attention="eager").activations
             for k in ("none", "selective-attn")}
    s, a, L = 4096, 32, 32
    assert eager["none"] - eager["selective-attn"] == pytest.approx(L * a * s * s * 2)  # the softmax output, bf16
    # without compile the model keeps more for none, the same once the block is checkpointed
    k = {c: {mode: training_memory(L70, checkpointing=mode, kernels=c).activations for mode in ("none", "selective")}
         for c in ("fused", "eager")}
    assert k["eager"]["none"] > 1.1 * k["fused"]["none"]  # fp32 RMSNorm copies
    assert k["eager"]["selective"] == pytest.approx(k["fused"]["selective"], rel=0.01)  # the final norm differs
    # full keeps one input per layer (2sbh) plus the loss's tensors
    assert m["full"] < 2 * GIB


def test_korthikanti_table2():
    s, b, h, a = 2048, 1, 12288, 96
    sbh = s * b * h
    assert korthikanti_layer_bytes(s, b, h, a) == sbh * (34 + 5 * a * s / h)
    assert korthikanti_layer_bytes(s, b, h, a, t=8) == pytest.approx(sbh * (10 + 24 / 8 + 5 * a * s / (h * 8)))
    assert korthikanti_layer_bytes(s, b, h, a, t=8, sp=True) == pytest.approx(sbh * (34 / 8 + 5 * a * s / (h * 8)))
    assert korthikanti_layer_bytes(s, b, h, a, t=8, recompute="selective") == pytest.approx(sbh * (10 + 24 / 8))
    assert korthikanti_layer_bytes(s, b, h, a, t=8, sp=True, recompute="selective") == pytest.approx(sbh * 34 / 8)
    assert korthikanti_layer_bytes(s, b, h, a, recompute="full") == 2 * sbh
    assert korthikanti_output_bytes(s, b, h, 51200, 8) == pytest.approx(4 * sbh / 8 * (1 + 51200 / h))


def test_fits_and_errors():
    assert training_memory(L7, dp_shard=8, checkpointing="none").fits(80)
    assert not training_memory(L70, dp_shard=8, checkpointing="full").fits(80)  # 138 GB of state alone
    assert training_memory(L70, dp_shard=8, tp=8, checkpointing="selective").fits(80)
    with pytest.raises(UserError, match="n_kv_heads"):
        training_memory(L70, tp=16)
    with pytest.raises(UserError, match="checkpointing"):
        training_memory(L7, checkpointing="some")


# -- the activation count against what autograd really keeps ------------------------------------------

class _RMSNorm(torch.autograd.Function):
    """A fused-style RMSNorm: keeps its input and 1/rms only (as compiled kernels do)."""

    @staticmethod
    def forward(ctx, x, w):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
        ctx.save_for_backward(x, r, w)
        return x * r * w

    @staticmethod
    def backward(ctx, g):  # not exercised: only the forward's saved tensors are measured
        return None, None


def _block(x, p, n_heads, n_kv):
    b, s, d = x.shape
    hd = d // n_heads
    h = _RMSNorm.apply(x, p["n1"])
    q = F.linear(h, p["wq"]).view(b, s, n_heads, hd).transpose(1, 2)
    k = F.linear(h, p["wk"]).view(b, s, n_kv, hd).transpose(1, 2)
    v = F.linear(h, p["wv"]).view(b, s, n_kv, hd).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=n_kv != n_heads)
    x = x + F.linear(o.transpose(1, 2).reshape(b, s, d), p["wo"])
    h = _RMSNorm.apply(x, p["n2"])
    return x + F.linear(F.silu(F.linear(h, p["w1"])) * F.linear(h, p["w3"]), p["w2"])


class _Track(TorchDispatchMode):
    """Remembers every storage an op creates; after the forward, the live ones are what backward keeps."""

    def __init__(self):
        super().__init__()
        self.refs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                self.refs.append((StorageWeakRef(st), st.nbytes(), st.data_ptr()))
        return out


_SAVE = {torch.ops.aten.mm.default, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default}


def _policy(ctx, func, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if func in _SAVE else CheckpointPolicy.PREFER_RECOMPUTE


@pytest.mark.parametrize("n_kv", [8, 2])
@pytest.mark.parametrize("mode", ["none", "selective", "full"])
def test_fused_activation_count_matches_autograd(mode, n_kv):
    args = ModelArgs(dim=128, n_layers=1, n_heads=8, n_kv_heads=n_kv, vocab_size=256, multiple_of=32)
    d, f, kv = args.dim, args.hidden_dim, n_kv * args.head_dim
    torch.manual_seed(0)
    shapes = dict(n1=(d,), n2=(d,), wq=(d, d), wk=(kv, d), wv=(kv, d), wo=(d, d), w1=(f, d), w3=(f, d), w2=(d, f))
    p = {k: torch.randn(*s, requires_grad=True) for k, s in shapes.items()}
    x = torch.randn(2, 64, d, requires_grad=True) * 1.0
    fn = functools.partial(_block, p=p, n_heads=8, n_kv=n_kv)
    track = _Track()
    with track:
        if mode == "none":
            y = fn(x)
        elif mode == "full":
            y = checkpoint(fn, x, use_reentrant=False)
        else:
            ctx = functools.partial(create_selective_checkpoint_contexts, _policy)
            y = checkpoint(fn, x, use_reentrant=False, context_fn=ctx)
    skip = {t.untyped_storage().data_ptr() for t in p.values()} | {y.untyped_storage().data_ptr()}
    live = {}
    for ref, nbytes, ptr in track.refs:
        if not ref.expired() and ptr not in skip:
            live[ref.cdata] = nbytes
    measured = sum(live.values()) + x.untyped_storage().nbytes()  # x: the layer input, made outside
    items = activation_items(args, seq_len=64, micro_batch=2, compute_bytes=4)
    expected = sum(b for _, b, modes in items if mode in modes)
    assert measured == expected


@pytest.mark.parametrize("dtype,precision", [(torch.float32, "fp32"), (torch.bfloat16, "bf16-mixed")])
@pytest.mark.parametrize("n_kv", [8, 2])
@pytest.mark.parametrize("mode", ["none", "selective", "full"])
def test_eager_estimate_matches_our_model(mode, n_kv, dtype, precision):
    """The whole model/llama.Transformer with the trainer's checkpointing and a cross-entropy loss."""
    from llamaforge.model.llama import Transformer
    from llamaforge.train.parallel import apply_ac

    args = ModelArgs(dim=128, n_layers=2, n_heads=8, n_kv_heads=n_kv, vocab_size=512, multiple_of=32,
                     max_seq_len=64)
    torch.manual_seed(0)
    model = Transformer(args)
    model.init_weights()
    model.to(dtype)
    apply_ac(model, mode)
    tokens = torch.randint(0, args.vocab_size, (2, 64))
    track = _Track()
    with track:
        logits = model(tokens)
        loss = F.cross_entropy(logits.float().view(-1, args.vocab_size), tokens.view(-1))
    del logits
    skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), loss]}
    live = {}
    for ref, nbytes, ptr in track.refs:
        if not ref.expired() and ptr not in skip:
            live[ref.cdata] = nbytes
    est = training_memory(args, seq_len=64, micro_batch=2, checkpointing=mode, precision=precision, kernels="eager")
    assert sum(live.values()) == pytest.approx(est.activations, abs=8)  # nll_loss keeps a 4-byte scalar too
