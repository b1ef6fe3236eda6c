"""``nnaudit plan``: the model evaluations counted from a config equal, row for row, what the sections then send
through the network (a forward hook counts them, forward-only and forward+backward apart), on a tiny config of the
sections whose work does not stop early; and the command prints a plan, and ``run --estimate`` stores it beside the
measured times. Timing is not tested (it depends on the machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from audit.cli_plan_counts import Setting, count
from audit.config import parse_config
from audit.results import load_results
from audit.runner import build_plugins

SECTIONS: dict[str, Any] = {
    "performance": {},
    "defenses": {"defenses": ["smoothing"], "detection": False, "defense_params": {"smoothing": {
        "sigma": [0.12, 0.25], "n0": 32, "n": 300, "radii": [0.0, 0.1, 0.25], "steps": 3, "eot_samples": 2,
        "n_eval": 40, "max_samples": 10, "attack_batch": 4, "batch": 200, "chunk_size": 4}}},
    "corruptions": {"corruptions": ["gaussian_noise", "fog", "jpeg_compression"], "severities": [1, 3],
                    "max_samples": 20, "chunk_size": 8},
}


class RowCounter:
    """Rows through the network, split by whether autograd records them (a backward pass follows)."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.rows = {False: 0, True: 0}
        self.handle = network.register_forward_hook(self.hook)

    def hook(self, _module: Any, inputs: Any, output: Any) -> None:
        self.rows[bool(torch.is_grad_enabled() and output.requires_grad)] += int(inputs[0].shape[0])

    def reset(self) -> dict[bool, int]:
        counted, self.rows = self.rows, {False: 0, True: 0}
        return counted


def test_counted_evaluations_equal_what_the_sections_evaluate(make_context: Any, digits_cnn: Any,
                                                              digits_test: Any) -> None:
    config = parse_config({"model": {"factory": "audit.zoo:digits_cnn"}, "data": {"source": "digits"},
                           "sections": SECTIONS})
    plugins = build_plugins(config)
    ctx = make_context(digits_cnn, digits_test, limit=40, seed=3, batch_size=16)
    ctx.fingerprints.update({p.section: "fp" for p in plugins})
    setting = Setting(n=ctx.data.n_samples, batch_size=ctx.batch_size, modality=ctx.data.modality,
                      input_shape=tuple(ctx.data.input_shape), has_gradients=True, data=ctx.data)
    counts, clean = count(plugins, config, setting)
    counter = RowCounter(ctx.model.network)
    ctx.clean_predictions()
    assert counter.reset() == {False: clean.rows(False), True: 0} == {False: 40, True: 0}
    for plugin, counted in zip(plugins, counts, strict=True):
        plugin.validate(ctx)
        counter.reset()
        result = plugin(ctx)
        assert result.status == "ok", result.error
        seen = counter.reset()
        assert seen == {False: counted.rows(False), True: counted.rows(True)}, plugin.section
    by = {c.section: c for c in counts}
    # smoothing: (n0 + n) x 10 samples x 2 sigmas, two attacked radii x 3 steps x 10 samples x 2 draws, 3 votes x 40
    assert by["defenses"].rows(True) == 2 * 2 * 3 * 10 * 2
    assert by["defenses"].rows(False) == 2 * (10 * 332 + 3 * 10 * 40)
    assert by["corruptions"].rows(False) == 3 * 2 * 20 + 3 + 1  # and the image grid: 3 corruptions + the clean one
    assert by["performance"].rows(False) == by["performance"].rows(True) == 0  # it reads the shared clean pass


def test_plan_command_and_run_estimate(tmp_path: Path, digits_cnn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from audit.cli import main

    torch.save(digits_cnn.state_dict(), tmp_path / "cnn.pt")
    config = {"seed": 1, "device": "cpu", "report": False,
              "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": "cnn.pt"},
              "data": {"source": "digits", "limit": 40},
              "sections": {"performance": {}, "robustness": {"eps": [0.1], "attacks": ["pgd"], "steps": 5,
                                                             "minimal_norm": [], "red_flags": False, "gallery_size": 0},
                           "corruptions": SECTIONS["corruptions"]}}
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    assert main(["plan", str(path)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["section", "forward", "rows", "fwd+bwd", "rows", "estimate"]
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines()[1:5]}
    assert rows["corruptions"][:2] == ["124", "0"] and rows["clean"][:2] == ["40", "0"]
    assert "on this CPU" in printed
    assert not (tmp_path / "run").exists()
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--estimate"]) == 0
    printed = capsys.readouterr().out
    assert "measured / estimate" in printed
    estimate = load_results(tmp_path / "run")["manifest"]["estimate"]  # validated: the schema holds the estimate
    for name in ("robustness", "corruptions"):
        entry = estimate["sections"][name]
        assert entry["seconds"] > 0 and entry["measured_seconds"] > 0
    assert estimate["sections"]["corruptions"]["forward_rows"] == 124
    assert 0 < estimate["attack_active_share"] <= 1
