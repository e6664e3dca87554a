"""Memory per rank for training under FSDP2 (`dp_shard`) and tensor + sequence parallel (`tp`).

State: parameters, gradients and AdamW's two moments are sharded over dp_shard * tp ranks, with the
bytes per parameter of a `Precision`. Activations follow the bookkeeping of Korthikanti et al. 2022
("Reducing Activation Recomputation in Large Transformer Models", section 4): count every tensor the
backward pass keeps, per transformer layer, in bytes. `korthikanti_layer_bytes` is their Table 2 for
the GPT block; `activation_items` applies the same bookkeeping to the LLaMA block (RMSNorm, rotary,
GQA, SwiGLU, no dropout) with kernels that save the minimum (a fused RMSNorm keeps its input and 1/rms;
rotary keeps nothing; a flash kernel keeps q, k, v, its output and the log-sum-exp), as a compiled block
does (`parallel.compile=true`), or with `kernels='eager'` what model/llama.py keeps without compile (fp32
copies in RMSNorm). Both are checked exactly against autograd in tests/plan.

Not counted: the CUDA context and NCCL buffers (about 1-3 GiB), allocator fragmentation and the
data loader. `fits` leaves 10% of the device free for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs

GIB = float(2**30)
HEADROOM = 0.9  # share of device memory an estimate may use and still "fit"
# The trainer's names (`parallel.activation_checkpointing`), plus Korthikanti's attention-core variant.
CHECKPOINTING = ("none", "selective-attn", "selective", "full")
CHECKPOINTING_HELP = {
    "none": "keep every activation",
    "selective-attn": "recompute the attention core (Korthikanti et al. 2022 section 5); a flash kernel already does",
    "selective": "keep matmul and attention outputs, recompute norms, rotary, SiLU and products "
                 "(LLaMA 2.4; the trainer's parallel.activation_checkpointing=selective)",
    "full": "keep only each layer's input, recompute the layer in backward",
}
KERNELS = ("fused", "eager")


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter of each kind of state, and of activations / gathered weights (`compute_bytes`)."""

    name: str
    param_bytes: float
    master_bytes: float  # a separate fp32 copy when the stored parameters are low precision
    grad_bytes: float
    optim_bytes: float  # AdamW exp_avg + exp_avg_sq together
    compute_bytes: float

    @property
    def state_bytes(self) -> float:
        return self.param_bytes + self.master_bytes + self.grad_bytes + self.optim_bytes


PRECISIONS: dict[str, Precision] = {
    # FSDP2 MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32): fp32 shards are the master copy,
    # gathered to bf16 for compute; fp32 gradients (torchtitan's and our GPU default). 16 bytes/param.
    "bf16-mixed": Precision("bf16-mixed", 4, 0, 4, 8, 2),
    "fp32": Precision("fp32", 4, 0, 4, 8, 4),
    # Megatron-style: bf16 parameters plus an fp32 master copy and fp32 gradients. 18 bytes/param.
    "bf16-master": Precision("bf16-master", 2, 4, 4, 8, 2),
    # Everything in bf16, AdamW moments included. 8 bytes/param.
    "bf16-pure": Precision("bf16-pure", 2, 0, 2, 4, 2),
}


def get_precision(p: str | Precision) -> Precision:
    if isinstance(p, Precision):
        return p
    if p not in PRECISIONS:
        raise UserError(f"unknown precision {p!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[p]


def korthikanti_layer_bytes(s: int, b: int, h: int, a: int, t: int = 1, sp: bool = False,
                            recompute: str = "none") -> float:
    """Activation bytes of one GPT layer, Korthikanti et al. 2022 Table 2 (16-bit activations, dropout).

    none: sbh(34 + 5as/h); tensor parallel: sbh(10 + 24/t + 5as/(ht)); tensor + sequence parallel:
    sbh(34/t + 5as/(ht)); selective recomputation drops the 5as/h attention-core term; full
    recomputation keeps sbh*2 (the layer input; we divide it by t under sequence parallel).
    """
    sbh = s * b * h
    if recompute == "full":
        return 2.0 * sbh / (t if sp else 1)
    core = 5.0 * a * s / h if recompute == "none" else 0.0
    if t == 1:
        return sbh * (34.0 + core)
    if sp:
        return sbh * (34.0 / t + core / t)
    return sbh * (10.0 + 24.0 / t + core / t)


def korthikanti_output_bytes(s: int, b: int, h: int, v: int, t: int = 1) -> float:
    """Final norm, output projection and fp32 cross-entropy: 4sbh/t * (1 + v/h) (Korthikanti et al. 4.3)."""
    return 4.0 * s * b * h / t * (1.0 + v / h)


def _norm_items(name: str, h: int, c: float, seq: int, kernels: str, modes: frozenset[str]
                ) -> list[tuple[str, float, frozenset[str]]]:
    """What an RMSNorm keeps per token. Fused: its input and 1/rms. Eager (model/llama.py without compile):
    the fp32 copy of its input (the input itself in fp32), 1/rms, and the normalised tensor before the weight."""
    if kernels == "fused":
        return [(f"{name} input", h * c / seq, modes), (f"{name} 1/rms (fp32)", 4.0 / seq, modes)]
    return [(f"{name} input in fp32 (eager)", h * 4.0 / seq, modes), (f"{name} 1/rms (fp32)", 4.0 / seq, modes),
            (f"{name} output before the weight (eager)", h * c / seq, modes)]


def activation_items(args: ModelArgs, seq_len: int, micro_batch: int, tp: int = 1, sp: bool = True,
                     attention: str = "flash", compute_bytes: float = 2, regather: bool = False,
                     kernels: str = "fused") -> list[tuple[str, float, frozenset[str]]]:
    """Per-layer activation tensors of the LLaMA block on one rank: (name, bytes, checkpointing modes keeping it).

    Sequence-parallel tensors (norm inputs, the layer input) are split by tp when `sp`; head- and
    hidden-sharded ones always are. A column-parallel linear's all-gathered input stays whole unless
    `regather` (Megatron re-gathers it in backward; DTensor keeps it). A row-parallel matmul's output is
    a whole partial sum before its reduce-scatter. `kernels='fused'` is a compiled block (minimal saves);
    'eager' is model/llama.py as written (fp32 RMSNorm copies; GQA inside SDPA, so k and v are not repeated).
    """
    if attention not in ("flash", "eager"):
        raise UserError(f"attention must be flash or eager, got {attention!r}")
    if kernels not in KERNELS:
        raise UserError(f"kernels must be fused or eager, got {kernels!r}")
    h, f = args.dim, args.hidden_dim
    hkv = args.n_kv_heads * args.head_dim
    tokens = seq_len * micro_batch
    c = compute_bytes
    seq = tp if sp else 1
    gath = tp if (sp and regather) else 1
    na = frozenset({"none", "selective-attn"})
    nas = frozenset({"none", "selective-attn", "selective"})
    sel = frozenset({"selective"})
    if kernels == "fused":
        items = [("layer input (attention norm input)", h * c / seq, frozenset(CHECKPOINTING)),
                 ("attention norm 1/rms (fp32)", 4.0 / seq, na)]
    else:
        items = [("layer input (checkpoint input)", h * c / seq, frozenset({"selective", "full"})),
                 *_norm_items("attention norm", h, c, seq, kernels, na)]
    items += [("wq/wk/wv input (gathered)", h * c / gath, na), ("q", h * c / tp, nas)]
    items += [("k, v", 2 * hkv * c / tp, nas)]  # GQA inside SDPA (enable_gqa): k, v are not repeated
    items += [
        ("attention output (wo input)", h * c / tp, nas),
        ("wo output (whole before its reduce-scatter)", h * c, sel),
        *_norm_items("ffn norm", h, c, seq, kernels, na),
        ("w1/w3 input (gathered)", h * c / gath, na),
        ("w1, w3 outputs", 2 * f * c / tp, nas),
        ("silu output, w2 input", 2 * f * c / tp, na),
        ("w2 output (whole before its reduce-scatter)", h * c, sel),
    ]
    if attention == "flash":
        items.append(("attention log-sum-exp (fp32)", args.n_heads * 4.0 / tp, nas))
    else:  # the softmax output, a*s per token: the s^2 term that Korthikanti's selective recomputation removes
        items.append(("attention probabilities (s x s)", args.n_heads * seq_len * c / tp, frozenset({"none"})))
    return [(name, per_token * tokens, modes) for name, per_token, modes in items]


def output_items(args: ModelArgs, seq_len: int, micro_batch: int, tp: int = 1, sp: bool = True,
                 compute_bytes: float = 2, regather: bool = False, kernels: str = "fused"
                 ) -> list[tuple[str, float]]:
    """Final norm, head input, the fp32 log-softmax of the loss (vocabulary split by tp: loss parallel) and
    the int64 token ids the embedding and the loss keep."""
    tokens = seq_len * micro_batch
    seq = tp if sp else 1
    gath = tp if (sp and regather) else 1
    h, v, c = args.dim, args.vocab_size, compute_bytes
    norm = [(name, b * tokens) for name, b, _ in _norm_items("final norm", h, c, seq, kernels, frozenset())]
    return [*norm, ("output head input", tokens * h * c / gath), ("log-softmax (fp32)", tokens * v * 4.0 / tp),
            ("token ids (int64)", tokens * 8.0)]


@dataclass
class MemoryEstimate:
    """Bytes per rank. `total` = params + master + grads + optimizer + activations + transient."""

    params: float
    master: float
    grads: float
    optimizer: float
    activations: float
    transient: float
    config: dict[str, Any] = field(default_factory=dict)
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def state(self) -> float:
        return self.params + self.master + self.grads + self.optimizer

    @property
    def total(self) -> float:
        return self.state + self.activations + self.transient

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    def fits(self, memory_gib: float) -> bool:
        return self.total <= HEADROOM * memory_gib * GIB

    def as_dict(self) -> dict[str, Any]:
        keys = ("params", "master", "grads", "optimizer", "activations", "transient", "state", "total")
        return {"config": self.config, **{f"{k}_gib": getattr(self, k) / GIB for k in keys},
                "activation_breakdown_gib": {k: val / GIB for k, val in self.breakdown.items()}}


def check_parallel(args: ModelArgs, dp_shard: int, tp: int) -> None:
    if dp_shard < 1 or tp < 1:
        raise UserError(f"parallel degrees must be >= 1 (dp_shard {dp_shard}, tp {tp})")
    if args.n_heads % tp or args.n_kv_heads % tp:
        raise UserError(f"tp {tp} must divide n_heads {args.n_heads} and n_kv_heads {args.n_kv_heads}; "
                        "choose a tp that divides both")


def block_params(args: ModelArgs) -> int:
    """Parameters of one transformer block."""
    return (args.num_params(include_embedding=False) - args.dim - args.vocab_size * args.dim) // args.n_layers


def training_memory(args: ModelArgs, *, dp_shard: int = 1, tp: int = 1, seq_len: int | None = None,
                    micro_batch: int = 1, checkpointing: str = "none", precision: str | Precision = "bf16-mixed",
                    sp: bool = True, attention: str = "flash", regather: bool = False, kernels: str = "fused",
                    trainable: bool = True) -> MemoryEstimate:
    """Memory per rank for training `args` (or, with trainable=False, for holding it frozen in compute dtype).

    Transient terms: under FSDP (dp_shard > 1) two gathered blocks (current and prefetched) plus one
    block's unsharded gradient (compute dtype and its fp32 reduce copy); then the larger of the logits
    at the end of the forward (compute dtype + fp32 copy) and one layer recomputed in backward.
    """
    check_parallel(args, dp_shard, tp)
    if checkpointing not in CHECKPOINTING:
        raise UserError(f"checkpointing must be one of {', '.join(CHECKPOINTING)}, got {checkpointing!r}")
    prec = get_precision(precision)
    seq_len = seq_len or args.max_seq_len
    n = args.num_params() / (dp_shard * tp)
    c = prec.compute_bytes
    cfg = {"params": args.num_params(), "dp_shard": dp_shard, "tp": tp, "seq_len": seq_len,
           "micro_batch": micro_batch, "checkpointing": checkpointing, "precision": prec.name,
           "sequence_parallel": sp and tp > 1, "attention": attention, "kernels": kernels, "trainable": trainable}
    if not trainable:
        return MemoryEstimate(n * c, 0, 0, 0, 0, 0, cfg)
    items = activation_items(args, seq_len, micro_batch, tp, sp, attention, c, regather, kernels)
    per_layer = sum(b for _, b, modes in items if checkpointing in modes)
    full_layer = sum(b for _, b, modes in items if "none" in modes)
    outputs = output_items(args, seq_len, micro_batch, tp, sp, c, regather, kernels)
    breakdown = {name: b * args.n_layers for name, b, modes in items if checkpointing in modes}
    breakdown.update(dict(outputs))
    activations = per_layer * args.n_layers + sum(b for _, b in outputs)

    big = max(block_params(args), args.vocab_size * args.dim) / tp
    fsdp = big * (2 * c + c + 4) if dp_shard > 1 else 0.0
    recompute = full_layer - per_layer if checkpointing in ("full", "selective") else 0.0
    logits = seq_len * micro_batch * args.vocab_size * (c + 4) / tp
    transient = fsdp + max(logits, recompute)
    return MemoryEstimate(n * prec.param_bytes, n * prec.master_bytes, n * prec.grad_bytes, n * prec.optim_bytes,
                          activations, transient, cfg, breakdown)


def kv_cache_bytes(args: ModelArgs, tokens: int, tp: int = 1, compute_bytes: float = 2) -> float:
    """KV cache of `tokens` positions on one rank: 2 (k, v) * layers * kv width / tp * bytes."""
    return 2.0 * args.n_layers * args.n_kv_heads * args.head_dim / tp * compute_bytes * tokens

