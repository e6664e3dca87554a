"""Text and Markdown rendering of the planner's sections (compute, memory, scaling, PPO)."""

from __future__ import annotations

from typing import Any

from llamaforge.model.args import ModelArgs
from llamaforge.plan_compute import GPU
from llamaforge.plan_memory import (
    CHECKPOINTING_HELP,
    GIB,
    HEADROOM,
    MemoryEstimate,
    korthikanti_layer_bytes,
    korthikanti_output_bytes,
)


def si(x: float, unit: str = "") -> str:
    """1.23B, 4.5T ... for counts."""
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.4g}{suf}{unit}" if x / div < 1000 else f"{x / div:.0f}{suf}{unit}"
    return f"{x:.4g}{unit}"


def table(headers: list[str], rows: list[list[Any]], md: bool = False) -> list[str]:
    cells = [[str(c) for c in r] for r in rows]
    if md:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return out + ["| " + " | ".join(r) + " |" for r in cells]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    out = [line, "-" * len(line)]
    for r in cells:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return out


def compute_lines(preset: str, p: dict[str, Any], assumed: str | None = None, md: bool = False) -> list[str]:
    g = p["gpu"]
    rows = [
        ["parameters", f"{si(p['preset_params'])} ({si(p['params_no_embedding'])} without the input embedding: N)"],
        ["FLOPs per token", f"6N: {p['flops_per_token_6n'] / 1e9:.1f} GFLOP; 6N + attention (12*L*d*T): "
                            f"{p['flops_per_token_attn'] / 1e9:.1f} GFLOP"],
        ["training FLOPs", f"6N: {p['train_flops_6n']:.3g}; 6N + attention: {p['train_flops_attn']:.3g}"],
        ["throughput", f"{p['tokens_per_gpu_s']:,.0f} tokens/s/GPU{' (' + assumed + ')' if assumed else ''}; "
                       f"{p['cluster_tokens_per_s']:,.0f} tokens/s on {p['gpus']} GPUs"],
        ["MFU", f"{100 * p['mfu_6n']:.1f}% counting 6N (LLaMA's count); {100 * p['mfu_attn']:.1f}% counting "
                f"6N + attention (PaLM, torchtitan)"],
        ["time", f"{p['days']:.1f} days, {p['gpu_hours']:,.0f} GPU-hours"],
        ["carbon", f"{p['energy_mwh']:.1f} MWh, {p['tco2eq']:.1f} tCO2eq ({g['power_w']:.0f} W, PUE 1.1, "
                   "0.385 kg/kWh)"],
    ]
    if "scaling" in p:
        s = p["scaling"]
        rows.append(["scaling fit", f"L(N, D) = {s['loss']:.4f}; compute-optimal for the same 6ND: "
                                    f"{si(s['optimal_params'])} params on {si(s['optimal_tokens'])} tokens "
                                    f"(L = {s['optimal_loss']:.4f})"])
    title = (f"{preset} on {p['gpus']} x {g['name']} ({g['peak_bf16'] / 1e12:.0f} TFLOP/s bf16 peak), "
             f"{p['tokens']:.3g} tokens, sequence {p['seq_len']}")
    if md:
        return [f"**{title}**", "", *table(["", ""], rows, md=True)]
    return [title, *(f"  {k:<16} {v}" for k, v in rows)]


def memory_lines(preset: str, args: ModelArgs, ests: list[MemoryEstimate], gpu: GPU, md: bool = False) -> list[str]:
    cfg = ests[0].config
    title = (f"memory per rank: {preset}, dp_shard {cfg['dp_shard']} x tp {cfg['tp']}"
             f"{' (sequence parallel)' if cfg['sequence_parallel'] else ''}, micro batch {cfg['micro_batch']} x "
             f"{cfg['seq_len']} tokens, {cfg['precision']} state, {cfg['attention']} attention, "
             f"{cfg['kernels']} kernels (GiB)")
    fit_head = f"fits {gpu.key} ({gpu.memory_gib:.0f} GiB x {HEADROOM:.0%})"
    rows = []
    for e in ests:
        rows.append([e.config["checkpointing"], f"{(e.params + e.master) / GIB:.2f}", f"{e.grads / GIB:.2f}",
                     f"{e.optimizer / GIB:.2f}", f"{e.activations / GIB:.2f}", f"{e.transient / GIB:.2f}",
                     f"{e.total_gib:.2f}", "yes" if e.fits(gpu.memory_gib) else "NO"])
    heads = ["checkpointing", "params", "grads", "optimizer", "activations", "transient", "total", fit_head]
    s, b, h, a, t = cfg["seq_len"], cfg["micro_batch"], args.dim, args.n_heads, cfg["tp"]
    sp = cfg["sequence_parallel"]
    out_b = korthikanti_output_bytes(s, b, h, args.vocab_size, t)
    paper = {m: (korthikanti_layer_bytes(s, b, h, a, t, sp, m) * args.n_layers + out_b) / GIB
             for m in ("none", "selective", "full")}
    note = ("cross-check, Korthikanti et al. 2022 Table 2 for a GPT block of this width (16-bit, dropout, "
            f"eager attention, 4h MLP): activations none {paper['none']:.2f}, selective (attention core) "
            f"{paper['selective']:.2f}, "
            f"full {paper['full']:.2f} GiB")
    modes = [f"{m}: {CHECKPOINTING_HELP[m]}" for m in dict.fromkeys(e.config["checkpointing"] for e in ests)]
    if md:
        return [f"**{title}**", "", *table(heads, rows, md=True), "", f"- {note}"]
    return [title, *("  " + r for r in table(heads, rows)), *(f"  {m}" for m in modes), f"  {note}"]


def scaling_lines(s: dict[str, Any], md: bool = False) -> list[str]:
    law = s["law"]
    out = [f"Chinchilla fit ({law['source']}): L = {law['E']} + {law['A']}/N^{law['alpha']} + "
           f"{law['B']}/D^{law['beta']}; training 6ND FLOPs, inference 2N FLOPs per token",
           f"target: loss {s['target_loss']:.4f}, reached compute-optimally by {si(s['optimal_params'])} params on "
           f"{si(s['optimal_tokens'])} tokens ({s['budget_flops']:.3g} FLOPs); no model under "
           f"{si(s['min_params'])} params reaches it",
           f"smaller models trained longer to the same loss, with {s['inference_tokens']:.3g} inference tokens:"]
    opt_total = s["optimal"]["total_flops"]
    rows = [[si(r["params"]), si(r["tokens"]), f"{r['tokens_per_param']:.0f}", f"{r['train_flops']:.3g}",
             f"{r['inference_flops']:.3g}", f"{r['total_flops']:.3g}", f"{r['total_flops'] / opt_total:.2f}"]
            for r in s["rows"]]
    heads = ["params", "tokens", "tokens/param", "train FLOPs", "inference FLOPs", "total FLOPs", "total vs optimal"]
    b = s["best"]
    best = (f"cheapest in total: {si(b['params'])} params on {si(b['tokens'])} tokens "
            f"({b['tokens_per_param']:.0f} tokens/param), {b['total_flops']:.3g} FLOPs, "
            f"{100 * b['saving_vs_optimal']:.1f}% less than the compute-optimal model")
    if md:
        return [f"- {out[0]}", f"- {out[1]}", f"- {out[2]}", "", *table(heads, rows, md=True), "", f"- {best}"]
    return out + ["  " + r for r in table(heads, rows)] + [best]


def positions_lines(rows: list[dict[str, Any]], md: bool = False) -> list[str]:
    heads = ["preset", "N", "tokens", "tokens/param", "6ND FLOPs", "fitted loss", "compute-optimal N, D", "its loss"]
    body = [[r["preset"], si(r["params"]), si(r["tokens"]), f"{r['tokens_per_param']:.0f}", f"{r['flops']:.3g}",
             f"{r['loss']:.4f}", f"{si(r['optimal_params'])}, {si(r['optimal_tokens'])}", f"{r['optimal_loss']:.4f}"]
            for r in rows]
    title = "where the released models sit on the Chinchilla fit (N without the input embedding)"
    return [f"**{title}**" if md else title, *([""] if md else []), *table(heads, body, md=md)]


def ppo_lines(preset: str, r: dict[str, Any], md: bool = False) -> list[str]:
    c = r["config"]
    title = (f"PPO memory per rank: {preset}, dp_shard {c['dp_shard']} x tp {c['tp']}, sequences of {c['seq_len']} "
             f"tokens, micro batch {c['micro_batch']}, {c['checkpointing']} checkpointing, {c['precision']} (GiB)")
    mrows = [[m["model"], "yes" if m["trainable"] else "frozen", si(m["params"]), f"{m['resident_gib']:.2f}",
              f"{m['grads_gib']:.2f}"] for m in r["models"]]
    mt = table(["model", "trains", "params", "resident", "gradients (training phase)"], mrows, md=md)
    prow = []
    for name, ph in r["phases"].items():
        parts = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in ph.items() if k != "total")
        prow.append([name, parts, f"{ph['total']:.2f}"])
    pt = table(["phase", "parts", "total"], prow, md=md)
    gen = r["generation"]
    gline = (f"generation: {gen['prompts_per_rank']} prompts per rank, KV cache {gen['kv_cache_per_sequence_gib']:.2f} "
             f"GiB per sequence; {gen['gen_batch']} rollouts at once"
             + (f" ({gen['rounds']} round{'s' if gen['rounds'] > 1 else ''})" if gen["rounds"]
               else " (the gathered policy does not fit)"))
    peak = f"peak: {r['peak_phase']} phase, {r['peak_gib']:.2f} GiB"
    if "fits" in r:
        peak += f"; fits {r['gpu_memory_gib']:.0f} GiB x {HEADROOM:.0%}: {'yes' if r['fits'] else 'NO'}"
    if md:
        return [f"**{title}**", "", *mt, "", *pt, "", f"- {gline}", f"- {peak}"]
    return [title, *("  " + x for x in mt), *("  " + x for x in pt), f"  {gline}", f"  {peak}"]
