"""Carbon footprint of training with the papers' formula (LLaMA section 6, Llama 2 section 2.2.1, Table 2).

    MWh     = device-hours * power (W) / 1000 * PUE / 1000
    tCO2eq  = MWh * carbon intensity (kg/kWh, which is also t/MWh)

with PUE 1.1 and 0.385 kg CO2eq/kWh (the US national average) as in both papers. Training runs
call `run_record(...)` on rank 0 and store the dict in their manifest (key `compute`); the table of
nominal device powers below is what they use unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from llamaforge.errors import UserError

PUE = 1.1
KG_PER_KWH = 0.385

# Nominal board power (TDP) in watts, the figure the papers multiply by (Llama 2 used 400 W for A100-80GB,
# 350 W for the 34B run). SXM parts, and the PCIe cards, which are lower.
DEVICE_POWER_W: dict[str, float] = {
    "a100": 400.0,
    "h100": 700.0,
    "h200": 700.0,
    "v100": 300.0,
    "a100-pcie": 300.0,
    "h100-pcie": 350.0,
}
# A CPU is counted per core in use: server CPUs draw 4-7 W of TDP per core (EPYC 7763: 280 W / 64 cores;
# Xeon 8380: 270 W / 40), and Green Algorithms (Lannelongue et al. 2021) uses about 12 W per core for
# typical cores. We take 10 W per core, a round figure between them that also covers some memory power.
CPU_W_PER_CORE = 10.0

# Llama 2 Table 2: (model, GPU-hours, power W, tCO2eq as printed in the paper).
LLAMA2_TABLE2: list[tuple[str, float, float, float]] = [
    ("Llama 2 7B", 184_320, 400, 31.22),
    ("Llama 2 13B", 368_640, 400, 62.44),
    ("Llama 2 34B", 1_038_336, 350, 153.90),
    ("Llama 2 70B", 1_720_320, 400, 291.42),
]
LLAMA2_TOTAL_PAPER = 539.0
# LLaMA (1) Table 15 (same data center, 400 W A100-80GB): (model, GPU-hours, power W, tCO2eq as printed).
LLAMA1_TABLE15: list[tuple[str, float, float, float]] = [
    ("LLaMA 7B", 82_432, 400, 14),
    ("LLaMA 13B", 135_168, 400, 23),
    ("LLaMA 33B", 530_432, 400, 90),
    ("LLaMA 65B", 1_022_362, 400, 173),
]


@dataclass(frozen=True)
class CarbonEstimate:
    device_hours: float
    power_w: float
    pue: float
    kg_per_kwh: float
    mwh: float
    tco2eq: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def estimate(device_hours: float, power_w: float, pue: float = PUE, kg_per_kwh: float = KG_PER_KWH
             ) -> CarbonEstimate:
    """Energy (MWh) and emissions (tCO2eq) of `device_hours` at `power_w` watts each (the papers' formula)."""
    for name, v in (("device_hours", device_hours), ("power_w", power_w), ("pue", pue), ("kg_per_kwh", kg_per_kwh)):
        if v < 0:
            raise UserError(f"carbon: {name} must be >= 0, got {v}")
    mwh = device_hours * power_w / 1000.0 * pue / 1000.0
    return CarbonEstimate(device_hours, power_w, pue, kg_per_kwh, mwh, mwh * kg_per_kwh)


def device_kind(name: str) -> str:
    """Map a device name (a table key, 'cpu', or a CUDA name like 'NVIDIA H100 80GB HBM3') to a table key."""
    low = name.lower()
    if low in DEVICE_POWER_W or low == "cpu":
        return low
    for key in DEVICE_POWER_W:
        if key in low:
            return f"{key}-pcie" if "pcie" in low and f"{key}-pcie" in DEVICE_POWER_W else key
    return low


def device_power_w(device: str, cores: int = 1) -> float:
    """Nominal watts of one device (a GPU), or of `cores` CPU cores when device is 'cpu'."""
    kind = device_kind(device)
    if kind == "cpu":
        return CPU_W_PER_CORE * cores
    if kind not in DEVICE_POWER_W:
        raise UserError(f"unknown device {device!r}: known {', '.join([*DEVICE_POWER_W, 'cpu'])}; "
                        "give the power in watts instead (--power-w)")
    return DEVICE_POWER_W[kind]


def detect_device() -> tuple[str, str, int]:
    """(table key, full name, count) of what this process trains on: CUDA GPUs of the job, or CPU cores.

    The GPU count is the job's world size (WORLD_SIZE, set by torchrun; 1 otherwise), one GPU per rank.
    """
    import torch  # imported here so `llamaforge carbon` stays instant

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return device_kind(name), name, int(os.environ.get("WORLD_SIZE", "1"))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return "cpu", "cpu", cores


def run_record(wall_time_s: float, device: str | None = None, count: int | None = None, *,
               power_w: float | None = None, pue: float = PUE, kg_per_kwh: float = KG_PER_KWH) -> dict[str, Any]:
    """Device-hours and carbon of a finished run, for its manifest (`write_manifest(..., compute=record)`).

    `count` is the number of GPUs of the whole job (call on rank 0 with the world size), or of CPU cores
    when device is 'cpu'; both are detected when None. `power_w` overrides the nominal power of one device
    (of one core for a CPU). An unknown GPU is counted at 400 W and marked `power_assumed`.
    """
    if device is None:
        kind, name, detected = detect_device()
    else:
        kind, name, detected = device_kind(device), device, 1
    count = detected if count is None else count
    assumed = False
    if power_w is None:
        if kind == "cpu" or kind in DEVICE_POWER_W:
            power_w = device_power_w(kind)
        else:
            power_w, assumed = 400.0, True
    hours = wall_time_s / 3600.0 * count
    est = estimate(hours, power_w, pue, kg_per_kwh)
    unit = "core" if kind == "cpu" else "gpu"
    return {
        "device": kind, "device_name": name, "unit": unit, "count": count, "wall_time_s": wall_time_s,
        "device_hours": hours, "power_w": power_w, "power_assumed": assumed, "pue": pue,
        "kg_per_kwh": kg_per_kwh, "energy_mwh": est.mwh, "tco2eq": est.tco2eq, "kg_co2eq": est.tco2eq * 1000,
        "formula": "MWh = device_hours * power_w/1000 * pue / 1000; tCO2eq = MWh * kg_per_kwh (LLaMA 6, Llama 2 2.2.1)",
    }


def table_rows(which: str, pue: float = PUE, kg_per_kwh: float = KG_PER_KWH) -> list[dict[str, Any]]:
    """Rows of Llama 2 Table 2 ('llama2') or LLaMA Table 15 ('llama1') recomputed with the formula."""
    src = {"llama2": LLAMA2_TABLE2, "llama1": LLAMA1_TABLE15}.get(which)
    if src is None:
        raise UserError(f"carbon --table: unknown table {which!r}; choose llama2, llama1 or devices")
    rows = []
    for model, hours, watts, paper in src:
        e = estimate(hours, watts, pue, kg_per_kwh)
        rows.append({"model": model, "gpu_hours": hours, "power_w": watts, "mwh": e.mwh, "tco2eq": e.tco2eq,
                     "paper_tco2eq": paper})
    return rows


def _print_table(which: str, rows: list[dict[str, Any]]) -> None:
    cite = {"llama2": "Llama 2 Table 2", "llama1": "LLaMA Table 15"}[which]
    print(f"{cite}, recomputed: MWh = GPU-hours * W/1000 * PUE / 1000, tCO2eq = MWh * kg/kWh")
    head = f"{'model':<12} {'GPU-hours':>11} {'power W':>8} {'MWh':>9} {'tCO2eq':>9} {'paper':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<12} {r['gpu_hours']:>11,.0f} {r['power_w']:>8.0f} {r['mwh']:>9.2f} "
              f"{r['tco2eq']:>9.2f} {r['paper_tco2eq']:>8.2f}")
    tot_h = sum(r["gpu_hours"] for r in rows)
    tot_mwh = sum(r["mwh"] for r in rows)
    tot_t = sum(r["tco2eq"] for r in rows)
    paper_tot = f"{LLAMA2_TOTAL_PAPER:>8.2f}" if which == "llama2" else f"{'-':>8}"
    print(f"{'total':<12} {tot_h:>11,.0f} {'':>8} {tot_mwh:>9.2f} {tot_t:>9.2f} {paper_tot}")
    if which == "llama2":
        print("note: the paper truncates instead of rounding (13B: formula 62.4476, printed 62.44; "
              "34B: 153.9074, printed 153.90).")
    else:
        print("note: the paper prints whole tonnes.")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="llamaforge carbon", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Carbon footprint of training with the papers' formula: "
                    "MWh = device-hours * W/1000 * PUE / 1000; tCO2eq = MWh * kg CO2eq per kWh.",
        epilog="examples:\n"
               "  llamaforge carbon --gpu-hours 184320 --power-w 400        # Llama 2 7B: 31.22 tCO2eq\n"
               "  llamaforge carbon --gpu-hours 1000 --device h100 --pue 1.2\n"
               "  llamaforge carbon --core-hours 48 --device cpu\n"
               "  llamaforge carbon --table llama2                          # Llama 2 Table 2\n"
               "  llamaforge carbon --table devices                         # nominal powers used")
    p.add_argument("--gpu-hours", type=float, help="device-hours of the run (GPU-hours; core-hours for a CPU)")
    p.add_argument("--core-hours", type=float, help="CPU core-hours (same as --gpu-hours with --device cpu)")
    p.add_argument("--power-w", type=float, help="watts of one device (or one CPU core)")
    p.add_argument("--device", help=f"take the power from the table: {', '.join([*DEVICE_POWER_W, 'cpu'])}")
    p.add_argument("--pue", type=float, default=PUE, help="power usage effectiveness (default 1.1)")
    p.add_argument("--kg-per-kwh", type=float, default=KG_PER_KWH,
                   help="carbon intensity in kg CO2eq per kWh (default 0.385, US average)")
    p.add_argument("--table", choices=["llama2", "llama1", "devices"], help="print a paper's table")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    a = p.parse_args(argv)

    if a.table == "devices":
        rows = {**DEVICE_POWER_W, "cpu (per core)": CPU_W_PER_CORE}
        if a.json:
            print(json.dumps(rows, indent=2))
        else:
            for k, v in rows.items():
                print(f"{k:<16} {v:>6.0f} W")
        return 0
    if a.table:
        rows = table_rows(a.table, a.pue, a.kg_per_kwh)
        if a.json:
            print(json.dumps({"table": a.table, "rows": rows,
                              "total_tco2eq": sum(r["tco2eq"] for r in rows)}, indent=2))
        else:
            _print_table(a.table, rows)
        return 0

    hours = a.gpu_hours if a.gpu_hours is not None else a.core_hours
    if hours is None:
        raise UserError("carbon: give --gpu-hours H (or --core-hours H) with --power-w W or --device NAME, "
                        "or --table llama2; see --help")
    if a.core_hours is not None and a.device is None and a.power_w is None:
        a.device = "cpu"
    if a.power_w is None:
        if a.device is None:
            raise UserError("carbon: give --power-w W (watts of one device) or --device NAME "
                            f"({', '.join([*DEVICE_POWER_W, 'cpu'])})")
        a.power_w = device_power_w(a.device)
    e = estimate(hours, a.power_w, a.pue, a.kg_per_kwh)
    if a.json:
        print(json.dumps(e.as_dict(), indent=2))
    else:
        print(f"device-hours {e.device_hours:,.1f} at {e.power_w:.0f} W, PUE {e.pue}, {e.kg_per_kwh} kg/kWh")
        print(f"energy  {e.mwh:.4f} MWh")
        print(f"carbon  {e.tco2eq:.4f} tCO2eq ({e.tco2eq * 1000:.2f} kg)")
    return 0
