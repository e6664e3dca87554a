"""Carbon: the papers' formula, Llama 2 Table 2, LLaMA Table 15, the manifest record, the CLI."""

import json

import pytest

from llamaforge import carbon
from llamaforge.errors import UserError

TABLE2_PAPER = {"Llama 2 7B": 31.22, "Llama 2 13B": 62.44, "Llama 2 34B": 153.90, "Llama 2 70B": 291.42}


def test_formula_by_hand():
    e = carbon.estimate(184_320, 400)
    assert e.mwh == pytest.approx(184_320 * 0.4 * 1.1 / 1000)
    assert e.tco2eq == pytest.approx(31.2238, abs=1e-4)
    e2 = carbon.estimate(10, 700, pue=1.2, kg_per_kwh=0.5)
    assert e2.tco2eq == pytest.approx(10 * 0.7 * 1.2 / 1000 * 0.5)


def test_llama2_table2_to_a_hundredth():
    rows = carbon.table_rows("llama2")
    assert [r["model"] for r in rows] == list(TABLE2_PAPER)
    for r in rows:
        assert abs(r["tco2eq"] - TABLE2_PAPER[r["model"]]) < 0.01, r
    by = {r["model"]: r["tco2eq"] for r in rows}
    # The paper truncates: the formula gives 62.4476 and 153.9074.
    assert by["Llama 2 13B"] == pytest.approx(62.4476, abs=1e-4)
    assert by["Llama 2 34B"] == pytest.approx(153.9074, abs=1e-4)
    assert sum(by.values()) == pytest.approx(539.0, abs=0.01)
    assert sum(r["gpu_hours"] for r in rows) == 3_311_616


def test_llama1_table15_rounds_to_the_paper():
    for r in carbon.table_rows("llama1"):
        assert round(r["tco2eq"]) == r["paper_tco2eq"], r


def test_cli_table_prints_formula_and_paper(capsys):
    assert carbon.main(["--table", "llama2"]) == 0
    out = capsys.readouterr().out
    for s in ("31.22", "62.45", "62.44", "153.91", "153.90", "291.42", "539.00", "3,311,616", "truncates"):
        assert s in out, s


def test_cli_single_and_json(capsys):
    assert carbon.main(["--gpu-hours", "184320", "--power-w", "400"]) == 0
    assert "31.2238 tCO2eq" in capsys.readouterr().out
    assert carbon.main(["--gpu-hours", "1000", "--device", "h100", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["power_w"] == 700 and d["tco2eq"] == pytest.approx(1000 * 0.7 * 1.1 / 1000 * 0.385)
    assert carbon.main(["--core-hours", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["power_w"] == carbon.CPU_W_PER_CORE


def test_cli_errors():
    with pytest.raises(UserError, match="--power-w"):
        carbon.main(["--gpu-hours", "10"])
    with pytest.raises(UserError, match="--gpu-hours"):
        carbon.main([])
    with pytest.raises(UserError, match="unknown device"):
        carbon.main(["--gpu-hours", "10", "--device", "tpu9"])
    with pytest.raises(UserError, match=">= 0"):
        carbon.estimate(-1, 400)


def test_device_table_and_names():
    assert carbon.device_power_w("a100") == 400
    assert carbon.device_power_w("H100") == 700
    assert carbon.device_power_w("h200") == 700
    assert carbon.device_power_w("v100") == 300
    assert carbon.device_power_w("cpu", cores=4) == 4 * carbon.CPU_W_PER_CORE
    assert carbon.device_kind("NVIDIA H100 80GB HBM3") == "h100"
    assert carbon.device_kind("NVIDIA A100-SXM4-80GB") == "a100"
    assert carbon.device_power_w("NVIDIA H100 PCIe") == 350
    assert carbon.device_power_w("NVIDIA A100 80GB PCIe") == 300


def test_run_record_for_manifests():
    r = carbon.run_record(3600.0, "h100", 8)
    assert r["device_hours"] == pytest.approx(8.0)
    assert r["energy_mwh"] == pytest.approx(8 * 0.7 * 1.1 / 1000)
    assert r["tco2eq"] == pytest.approx(r["energy_mwh"] * 0.385)
    assert r["kg_co2eq"] == pytest.approx(r["tco2eq"] * 1000)
    assert not r["power_assumed"] and r["unit"] == "gpu"
    cpu = carbon.run_record(1800.0, "cpu", 2)
    assert cpu["unit"] == "core" and cpu["device_hours"] == pytest.approx(1.0) and cpu["power_w"] == 10.0
    odd = carbon.run_record(3600.0, "NVIDIA L4", 1)
    assert odd["power_assumed"] and odd["power_w"] == 400.0
    detected = carbon.run_record(36.0)  # this machine: CPU cores (or the GPUs of the job)
    assert detected["count"] >= 1 and detected["device_hours"] > 0
    json.dumps(detected)  # manifests are JSON


def test_training_mfu_peaks_come_from_the_planner_table():
    """One GPU table serves `plan` and the Trainer's MFU; CUDA device names map onto it."""
    from llamaforge.plan_compute import GPUS
    from llamaforge.train.metrics import gpu_peak

    assert gpu_peak("NVIDIA H100 80GB HBM3", "bf16") == (989e12, "table: h100 bf16")
    assert gpu_peak("NVIDIA H100 PCIe", "fp32")[0] == 378e12
    assert gpu_peak("NVIDIA A100-SXM4-80GB", "fp32")[0] == GPUS["a100"].peak_bf16 / 2  # TF32 is half of bf16
    assert gpu_peak("Tesla V100-SXM2-32GB", "fp32")[0] == 15.7e12  # no TF32 on Volta
    peak, src = gpu_peak("NVIDIA L4", "bf16")
    assert peak == GPUS["a100"].peak_bf16 and "assumed A100" in src
