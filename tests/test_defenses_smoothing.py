"""Randomized smoothing as the ``smoothing`` defense of the defenses section: metrics, certified <= empirical,
the section's certificates equal to ``attacks.smoothing.certify`` on the same rows and seed, black boxes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from attacks.defenses.section import DefensesSection
from attacks.section import RobustnessSection
from attacks.smoothing import certify
from audit.errors import ConfigError

ROBUST: dict[str, Any] = {"minimal_samples": 0, "red_flags": False, "steps": 10, "attacks": ["pgd"]}
RADII = [0.0, 0.1, 0.25, 0.5]
SMALL: dict[str, Any] = {"sigma": 0.12, "n0": 32, "n": 256, "alpha": 0.001, "radii": RADII, "steps": 5,
                         "eot_samples": 4, "n_eval": 64, "max_samples": 16}


def test_smoothing_through_the_section(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=30, seed=3)
    ctx.results["robustness"] = RobustnessSection(eps=[0.1], **ROBUST)(ctx)
    section = DefensesSection(defenses=["smoothing"], detection=False, defense_params={"smoothing": SMALL})
    section.validate(ctx)
    result = section(ctx)
    assert result.status == "ok", result.error
    m: dict[str, Any] = result.metrics
    certified = [m[f"defenses.smoothing.l2.radius={r:g}.certified_accuracy"] for r in RADII]
    empirical = [m[f"defenses.smoothing.l2.radius={r:g}.empirical_robust_accuracy"] for r in RADII]
    assert all(c <= e for c, e in zip(certified, empirical, strict=True)), (certified, empirical)
    assert certified[1] > 0.5 and empirical[-1] < empirical[0]  # something certified; the attack does work
    assert m["defenses.smoothing.sigma"] == 0.12 and 0 <= m["defenses.smoothing.abstain_rate"] < 0.5
    assert m["defenses.smoothing.certificate_violations"] == 0
    assert not [f for f in result.findings if f.code == "defenses.smoothing.certificate_broken"]
    # every metric has a declared direction; certified accuracy: higher is better
    assert set(result.directions) == set(m)
    assert result.directions["defenses.smoothing.l2.radius=0.1.certified_accuracy"] == "higher"
    assert result.directions["defenses.smoothing.abstain_rate"] == "lower"
    # the same certificates as calling certify directly on the rows the section used, with the run's seed
    with np.load(ctx.run_dir / result.artifacts["smoothing_sigma_0.12"]) as npz:
        saved = dict(npz)
    rows = saved["ids"]
    assert len(rows) == 16 and len(np.unique(rows)) == 16
    direct = certify(ctx.model, ctx.data.x[rows], ctx.data.y[rows], sigma=0.12, n0=32, n=256, alpha=0.001,
                     seed=ctx.seed, ids=rows)
    np.testing.assert_array_equal(saved["prediction"], direct.prediction)
    np.testing.assert_array_equal(saved["radius"], direct.radius)
    assert certified == direct.certified_accuracy(RADII)
    # one table and one line figure (certified and empirical against the radius)
    table = next(t for t in result.tables if t.name == "smoothing_sigma=0.12")
    assert [row[0] for row in table.rows] == RADII
    assert [row[1] for row in table.rows] == certified and [row[2] for row in table.rows] == empirical
    figure = next(f for f in result.figures if f["name"] == "smoothing_sigma=0.12")
    assert figure["kind"] == "line" and [s["y"] for s in figure["series"]] == [certified, empirical]


def test_broken_certificate_is_a_finding(digits_cnn: Any, digits_test: Any, make_context: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A radius formula three times too large must not pass silently: the attack breaks certified samples."""
    import attacks.smoothing as smoothing

    real = smoothing.certified_radius
    monkeypatch.setattr(smoothing, "certified_radius", lambda p, sigma: 3 * real(p, sigma))
    ctx = make_context(digits_cnn, digits_test, limit=30, seed=3)
    params = {**SMALL, "radii": [0.0, 0.25, 0.5, 0.75], "steps": 10, "eot_samples": 8}
    result = DefensesSection(defenses=["smoothing"], detection=False, defense_params={"smoothing": params})(ctx)
    assert result.status == "ok", result.error
    assert (result.metrics["defenses.smoothing.certificate_violations"] or 0) > 0
    found = [f for f in result.findings if f.code == "defenses.smoothing.certificate_broken"]
    assert len(found) == 1 and "bug" in found[0].message


def black_box(model: torch.nn.Module, classes: int) -> Any:
    from audit.model import Bounds, PredictFunctionAdapter, SelectOutput

    def predict(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(a, dtype=torch.float32)).numpy()

    return PredictFunctionAdapter(predict, SelectOutput(None, "logits", False), num_classes=classes,
                                  output_kind="logits", bounds=Bounds(0.0, 1.0), device=torch.device("cpu"),
                                  batch_size=256, source="box", sha256="0" * 64)


def test_black_box_needs_empirical_false_and_several_sigmas_are_named(digits_cnn: Any, digits_test: Any,
                                                                      make_context: Any) -> None:
    ctx = make_context(black_box(digits_cnn, 10), digits_test.subset(np.arange(40)))
    with pytest.raises(ConfigError) as err:
        DefensesSection(defenses=["smoothing"], defense_params={"smoothing": SMALL}).validate(ctx)
    assert err.value.key == "sections.defenses.defense_params.smoothing.empirical"
    assert "EOT" in err.value.message and "empirical: false" in err.value.message
    params = {**SMALL, "empirical": False, "sigma": [0.12, 0.25], "max_samples": 8}
    section = DefensesSection(defenses=["smoothing"], detection=False, defense_params={"smoothing": params})
    section.validate(ctx)
    reported: list[str] = []
    original = ctx.progress

    def recording(iterable: Any, *, desc: str, **kwargs: Any) -> Any:
        reported.append(desc)
        return original(iterable, desc=desc, **kwargs)

    ctx.progress = recording
    result = section(ctx)  # no robustness section: certification alone still runs
    assert reported[0] == "smoothing chunks" and sum(d.startswith("certify (sigma=") for d in reported) == 2
    assert result.status == "ok", result.error
    m: dict[str, Any] = result.metrics
    for sigma in (0.12, 0.25):
        for r in RADII:
            assert 0 <= m[f"defenses.smoothing.sigma={sigma:g}.l2.radius={r:g}.certified_accuracy"] <= 1
        assert f"defenses.smoothing.sigma={sigma:g}.abstain_rate" in m
    assert not any("empirical" in k for k in m) and set(result.directions) == set(m)
    # certification on the black box equals certification on the torch model (same draws, scores only)
    with np.load(ctx.run_dir / result.artifacts["smoothing_sigma_0.25"]) as npz:
        saved = dict(npz)
    white = make_context(digits_cnn, digits_test.subset(np.arange(40))).model
    direct = certify(white, ctx.data.x[saved["ids"]], ctx.data.y[saved["ids"]], sigma=0.25, n0=32, n=256,
                     alpha=0.001, seed=ctx.seed, ids=saved["ids"])
    np.testing.assert_array_equal(saved["prediction"], direct.prediction)
    np.testing.assert_array_equal(saved["radius"], direct.radius)
    assert [m[f"defenses.smoothing.sigma=0.25.l2.radius={r:g}.certified_accuracy"] for r in RADII] == \
        direct.certified_accuracy(RADII)


def test_smoothing_chunks_equal_one_pass_and_resume_keeps_them(digits_cnn: Any, digits_test: Any,
                                                               make_context: Any) -> None:
    """Certification in chunks of 4 rows (a multiple of attack_batch) gives the one-chunk certificates and
    empirical outcomes exactly; a second run under the same fingerprint keeps every chunk file."""
    params = {**SMALL, "attack_batch": 4, "sigma": [0.12, 0.25]}
    runs = {}
    for name, size in (("one", 64), ("four", 4)):
        ctx = make_context(digits_cnn, digits_test, limit=30, seed=3)
        ctx.run_dir = ctx.run_dir.parent / name
        ctx.fingerprints["defenses"] = "fp"
        section = DefensesSection(defenses=["smoothing"], detection=False,
                                  defense_params={"smoothing": {**params, "chunk_size": size}})
        runs[name] = (section(ctx), ctx)
    (one, ctx1), (four, ctx4) = runs["one"], runs["four"]
    assert one.status == four.status == "ok", (one.error, four.error)
    assert four.metrics == one.metrics and four.tables == one.tables and four.findings == one.findings
    assert 0 < one.metrics["defenses.smoothing.sigma=0.12.l2.radius=0.1.certified_accuracy"] < 1
    for sigma in ("0.12", "0.25"):
        with np.load(ctx1.run_dir / one.artifacts[f"smoothing_sigma_{sigma}"]) as a, \
                np.load(ctx4.run_dir / four.artifacts[f"smoothing_sigma_{sigma}"]) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    folder = ctx4.run_dir / "artifacts/defenses/chunks/smoothing"
    assert sorted(p.name for p in folder.glob("*.npz")) == ["0.npz", "1.npz", "2.npz", "3.npz"]
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    again = DefensesSection(defenses=["smoothing"], detection=False,
                            defense_params={"smoothing": {**params, "chunk_size": 4}})(ctx4)
    assert again.metrics == four.metrics
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")} == stamps
    assert "4 of 4 chunks kept from the interrupted run (artifacts/defenses/chunks/smoothing/)" in again.notes


def test_bad_smoothing_parameters_name_the_key(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=20)
    with pytest.raises(ConfigError) as err:
        DefensesSection(defenses=["smoothing"], defense_params={"smoothing": {"sigma": [0.25, -1]}}).validate(ctx)
    assert err.value.key == "sections.defenses.defense_params.smoothing" and "sigma" in err.value.message
    with pytest.raises(ConfigError) as err:
        DefensesSection(defenses=["smoothing"], defense_params={"smoothing": {"nn": 5}}).validate(ctx)
    assert err.value.key == "sections.defenses.defense_params.smoothing.nn"
