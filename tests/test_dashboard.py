"""The dashboard package: text from data shown as text, and ``nnaudit dashboard``'s server (real subprocesses)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from results_factory import make_results, write_run
from test_app import APP, TIMEOUT, plain

from reports.text import escape_markdown
from reports.views import format_value

ROOT = Path(__file__).resolve().parents[1]
IMG_MD = "![](http://host/x.png)"
IMG_HTML = "<img src=x onerror=alert(1)>"
INJECTIONS = (IMG_MD, IMG_HTML, "$x$ :red[red] **bold** [link](http://host/)")


@pytest.mark.parametrize("text", [*INJECTIONS, "plain text", "a\\b `c` 1.5 - 2", ""])
def test_escaped_markdown_renders_as_its_own_text(text: str) -> None:
    escaped = escape_markdown(text)
    assert plain(escaped) == " ".join(text.split())
    assert not re.search(r"[!-/:-@\[-`{-~]", re.sub(r"\\[!-/:-@\[-`{-~]", "", escaped))  # all escaped


def injected_results() -> dict[str, Any]:
    """A run whose title, class, group and feature names, section and table titles carry markup."""
    data = make_results(title=IMG_MD, with_error=True)
    manifest = data["manifest"]
    manifest["data"]["class_names"] = [IMG_MD, IMG_HTML, "ok"]
    manifest["data"]["feature_names"] = [IMG_MD, IMG_HTML, "f2", "f3"]
    manifest["data"]["sensitive"] = [IMG_HTML]
    sections = data["sections"]
    sections["performance"]["title"] = IMG_HTML
    sections["performance"]["tables"][0]["title"] = IMG_MD
    sections["performance"]["tables"][0]["description"] = IMG_HTML
    sections["performance"]["figures"][0]["title"] = IMG_MD
    sections["performance"]["notes"] = [IMG_HTML]
    sections["imbalance"]["findings"][0]["message"] = f"recall of class {IMG_MD} in group {IMG_HTML} is low"
    sections["fairness"]["error"]["message"] = f"group {IMG_MD} has a single value"
    return data


def _markdown_values(at: Any) -> list[str]:
    """Every string the page handed to an element that renders Markdown."""
    values = [e.value for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning",
                                   "info", "success") for e in getattr(at, kind)]
    values += [e.label for e in at.expander]
    values += [str(e.value) for e in at.metric] + [e.label for e in at.metric]
    values += [e.label for kind in ("selectbox", "multiselect", "checkbox", "radio", "text_input")
               for e in getattr(at, kind)]
    values += [str(option) for e in at.radio for option in e.options]  # radio options render Markdown
    return values


def _every_view(at: Any) -> list[str]:
    values = []
    for view in ("overview", "findings", "samples", "sections"):
        at.radio(key="run_view").set_value(view).run()
        assert not at.exception
        values += _markdown_values(at)
    return values


def _assert_all_escaped(values: list[str]) -> None:
    for value in values:
        assert not re.search(r"(?<!\\)(!\[|<img)", value), value


def test_strings_from_results_are_shown_as_text(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    write_run(tmp_path / "runs", "run", injected_results())
    monkeypatch.setattr(sys, "argv", ["app.py", str(tmp_path / "runs")])
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    values = _every_view(at)
    _assert_all_escaped(values)
    shown = " ".join(plain(v) for v in values)
    assert IMG_MD in plain(at.title[0].value)
    assert f"group {IMG_MD} has a single value" in shown  # the error, escaped, still reads as written
    assert any(IMG_HTML in plain(label) for label in (e.label for e in at.expander))
    assert not at.table  # st.table renders Markdown in its cells; the page uses dataframes


def test_explorer_shows_names_from_data_as_text(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                tabular_run: Path) -> None:
    """Class, group and feature names with markup, in a real run's explorer."""
    import json
    import shutil

    run = tmp_path / "runs" / "run"
    shutil.copytree(tabular_run, run)
    results = json.loads((run / "results.json").read_text())
    data = results["manifest"]["data"]
    data["class_names"] = [IMG_MD, IMG_HTML]
    data["feature_names"] = [IMG_MD, IMG_HTML, *data["feature_names"][2:]]
    (run / "results.json").write_text(json.dumps(results))
    samples_file = run / results["sections"]["performance"]["artifacts"]["outcomes"]
    with np.load(samples_file) as npz:
        arrays = dict(npz)
    arrays[f"extra/group/{IMG_HTML}"] = np.where(np.arange(len(arrays["sample_id"])) % 2 == 0, IMG_MD, "other")
    np.savez_compressed(samples_file, **arrays)
    at = _explorer(monkeypatch, run)
    assert not at.exception
    values = _markdown_values(at)
    _assert_all_escaped(values)
    labels = {m.label: plain(m.value) for m in at.metric}
    assert labels["True class"] in (IMG_MD, IMG_HTML)
    assert labels["Clean prediction"] in (IMG_MD, IMG_HTML)
    group = at.selectbox(key=f"explore_group_{IMG_HTML}")
    assert group.options == ["all", IMG_MD, "other"]  # selectbox options are plain text
    assert IMG_HTML in plain(group.label)
    group.set_value(IMG_MD).run()
    assert not at.exception
    _assert_all_escaped(_markdown_values(at))
    frame = next(f.value for f in at.dataframe if "feature" in f.value.columns)
    assert {IMG_MD, IMG_HTML} <= set(frame["feature"])


# -- nnaudit dashboard: a real server process --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                found.append(local.rsplit(":", 1)[0])
    return found


def _wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nnaudit dashboard exited with {proc.returncode}: {proc.communicate()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the dashboard did not answer on port {port} within {timeout} s")


def _inotify_fds(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd) == "anon_inode:inotify"
        except OSError:
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the server process")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_dashboard_serves_on_localhost_and_stops_with_its_command(tmp_path: Path, signum: int) -> None:
    """``nnaudit dashboard``: 127.0.0.1 only, no file watcher, and SIGTERM/SIGINT (even SIGKILL) to nnaudit stop
    the server it started."""
    runs = tmp_path / "runs"
    write_run(runs, "run", make_results())
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "dashboard", str(runs), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        _wait_healthy(port, proc)
        (server,) = _children(proc.pid)
        assert _listening(port) == ["0100007F"]  # 127.0.0.1, and nothing on other interfaces
        assert _inotify_fds(server) == 0  # no file watcher (it watched all of site-packages)
        proc.send_signal(signum)
        code = proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server), "the Streamlit server outlived nnaudit dashboard"
        _, stderr = proc.communicate()
        if signum == signal.SIGKILL:  # no handler runs: the kernel's parent-death signal stops the server (Linux)
            assert code == -signal.SIGKILL
        else:
            assert code == 128 + signum
            assert f"stopped by {signal.Signals(signum).name}" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_distribution_installs_no_top_level_app(tmp_path: Path) -> None:
    """The wheel carries the dashboard inside ``reports`` (with its script) and no module named ``app``."""
    import shutil
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("audit", "attacks", "explain", "reports"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "app.py", source / "app.py")  # present in the tree, as in a checkout
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           str(source), "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        top_level = archive.read(next(n for n in names if n.endswith("top_level.txt"))).decode().split()
    assert sorted(top_level) == ["attacks", "audit", "explain", "reports"]
    assert "app.py" not in names
    assert {"reports/dashboard/page.py", "reports/dashboard/script/nnaudit_dashboard.py"} <= names


# -- the explorer's per-sample records, from real audit runs ----------------------------------


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> Path:
    from dashboard_helpers import audit_run

    return audit_run(tmp_path_factory.mktemp("runs") / "digits", digits_cnn, kind="image")


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory: pytest.TempPathFactory, cancer_mlp: Any) -> Path:
    from dashboard_helpers import audit_run

    return audit_run(tmp_path_factory.mktemp("runs") / "cancer", cancer_mlp, kind="tabular")


@pytest.mark.parametrize("run_fixture", ["image_run", "tabular_run"])
def test_saved_samples_agree_with_the_reported_metrics(request: pytest.FixtureRequest, run_fixture: str) -> None:
    """The explorer's records reproduce the run's own numbers: accuracy, robust accuracy, and each adversarial
    input's saved probabilities say fooled exactly where the robustness section counted the sample as not robust."""
    import numpy as np

    from audit.results import load_results
    from reports.dashboard.samples import load_samples

    run = request.getfixturevalue(run_fixture)
    results = load_results(run)
    metrics = {k: v for s in results["sections"].values() for k, v in s["metrics"].items()}
    samples = load_samples(run, results)
    assert samples.n == 120 and samples.proba.shape == (120, len(samples.class_names))
    assert np.allclose(samples.proba.sum(axis=1), 1.0, atol=1e-5)
    assert (samples.pred == samples.y).mean() == pytest.approx(metrics["performance.accuracy"], abs=1e-12)
    (adv,) = samples.adversarial.values()
    assert (adv.norm, adv.eps, len(adv.rows)) == ("linf", 0.1, 60)
    assert adv.robust.mean() == pytest.approx(metrics["robustness.worst_case.linf.eps=0.1.robust_accuracy"])
    assert adv.proba is not None
    clean_ok = samples.pred[adv.rows] == samples.y[adv.rows]
    still_right = adv.proba.argmax(axis=1) == samples.y[adv.rows]
    assert np.array_equal(still_right[clean_ok], adv.robust[clean_ok])
    assert not adv.robust[~clean_ok].any()
    assert np.abs(adv.x_adv - samples.x[adv.rows]).max() <= 0.1 + 1e-6
    assert set(samples.attributions) == {"saliency", "ig"}
    for attribution in samples.attributions.values():
        assert attribution.values.shape == (8, *samples.x.shape[1:])
        assert set(attribution.rows.tolist()) <= set(range(120))


def _samples(run: Path) -> Any:
    from audit.results import load_results
    from reports.dashboard.samples import load_samples

    return load_samples(run, load_results(run))


def _explorer(monkeypatch: pytest.MonkeyPatch, run: Path) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app.py", str(run.parent)])
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["view"] = "samples"
    return at.run()


def test_explorer_shows_a_sample_clean_attacked_and_explained(monkeypatch: pytest.MonkeyPatch,
                                                              image_run: Path) -> None:
    from audit.results import load_results
    from reports.dashboard.samples import load_samples

    samples = load_samples(image_run, load_results(image_run))
    at = _explorer(monkeypatch, image_run)
    assert not at.exception
    assert at.radio(key="run_view").value == "samples"
    assert at.checkbox(key="explore_explained").value  # explained samples first: their attributions exist
    options = at.selectbox(key="explore_sample").options
    adv = samples.adversarial["linf:0.1"]
    explained = sorted(int(r) for r in samples.attributions["ig"].rows)
    expected = [r for r in explained if r in adv.rows] + [r for r in explained if r not in adv.rows]
    assert [int(o.split(" ")[0][1:]) for o in options] == expected  # attacked first
    # clean input, adversarial input and perturbation (where the row was attacked), one image per method
    row = expected[0]
    attacked = adv.position(row) is not None
    assert len(at.image) == (3 if attacked else 1) + 2
    if not attacked:
        assert any("not attacked" in plain(i.value) for i in at.info)
    labels = {m.label: m.value for m in at.metric}
    assert plain(labels["True class"]) == samples.class_names[samples.y[row]]
    assert plain(labels["Clean prediction"]) == samples.class_names[samples.pred[row]]
    confidence = f"confidence {100 * samples.proba[row].max():.1f}%"
    assert any(plain(c.value) == confidence for c in at.caption)
    # filters: fooled only -> every listed sample was fooled at the chosen eps
    at.checkbox(key="explore_explained").uncheck().run()
    at.selectbox(key="explore_fooled").set_value("fooled").run()
    assert not at.exception
    fooled = samples.fooled("linf:0.1")
    listed = [int(o.split(" ")[0][1:]) for o in at.selectbox(key="explore_sample").options]
    assert listed == [int(r) for r in np.flatnonzero(fooled == 1)]
    assert all(o.endswith("· fooled") for o in at.selectbox(key="explore_sample").options)


def test_explorer_tabular_feature_table(monkeypatch: pytest.MonkeyPatch, tabular_run: Path) -> None:
    at = _explorer(monkeypatch, tabular_run)
    assert not at.exception
    first = int(at.selectbox(key="explore_sample").options[0].split(" ")[0][1:])
    assert first in set(_samples(tabular_run).adversarial["linf:0.1"].rows.tolist())
    frame = next(f.value for f in at.dataframe if "feature" in f.value.columns)
    assert list(frame.columns) == ["feature", "clean", "adversarial", "change", "saliency", "ig"]
    assert len(frame) == 30
    magnitude = frame[["saliency", "ig"]].abs().max(axis=1)
    assert list(magnitude) == sorted(magnitude, reverse=True)  # largest attribution first
    assert (frame["change"].abs() <= 0.1 + 1e-6).all()


# -- verdict, headline, findings ------------------------------------------------------------------


def _run_app(monkeypatch: pytest.MonkeyPatch, root: Path, view: str | None = None) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app.py", str(root)])
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if view:
        at.query_params["view"] = view
    return at.run()


@pytest.mark.parametrize(("rule", "expected"), [
    ("performance.accuracy >= 0.95", "Verdict: FAIL · 1 failing check(s) · 1 high finding is not gated"),
    ("performance.accuracy >= 0.5", "Verdict: PASS · 1 high finding is not gated"),
])
def test_verdict_from_the_runs_own_policy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rule: str,
                                         expected: str) -> None:
    """A ``gate:`` block in the run's config is judged by audit.decide, the verdict first on the page."""
    data = make_results(with_error=False)
    data["manifest"]["config"]["gate"] = {"rules": [rule]}
    write_run(tmp_path / "runs", "run", data)
    at = _run_app(monkeypatch, tmp_path / "runs")
    assert not at.exception
    if expected.startswith("Verdict: FAIL"):
        assert [plain(e.value) for e in at.error] == [expected]
        failing = next(f.value for f in at.dataframe if "check" in f.value.columns)
        assert list(failing["check"]) == [rule] and list(failing["value"]) == [format_value(0.9)]
    else:
        # the toy run's high robustness finding is outside the policy: a warning, not a green PASS
        assert expected in [plain(w.value) for w in at.warning] and not at.error and not at.success


def test_headline_cards_come_from_the_reports_headline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One source for the report's and the dashboard's headline: every card shows headline_view's text."""
    from results_factory import review_results, write_review_run

    from reports.headline import headline_view, verdict_view

    write_review_run(tmp_path / "runs")
    at = _run_app(monkeypatch, tmp_path / "runs")
    assert not at.exception
    data = review_results()
    head = headline_view(data)
    cards = {m.label: m.value for m in at.metric}
    expected = {c["label"]: c["text"] for c in head["cards"]}
    expected.update({f"Robust acc. {r['norm']} eps {r['eps']}": r["text"] for r in head["robustness"]})
    expected["Worst fairness disparity"] = head["disparity"]["text"]
    expected["Findings"] = str(sum(head["finding_counts"].values()))
    assert {plain(k): v for k, v in cards.items()} == expected
    assert len(head["robustness"]) == 2 and head["reliability"]["reliable"]
    captions = [plain(c.value) for c in at.caption]
    assert captions.count("reliable") == 2
    assert any(head["disparity"]["interval_text"] in c and head["disparity"]["grouping"] in c for c in captions)
    assert any(head["faithful"]["text"] in plain(m.value) for m in at.markdown)
    judged = verdict_view(data)
    assert judged["status"] == "fail" and judged["failing"]
    assert [plain(e.value) for e in at.error] == [f"Verdict: {judged['label']} · {len(judged['failing'])} failing "
                                                  "check(s)" + (f" · {judged['ungated_text']}" if judged["ungated"]
                                                                else "")]


def test_dashboard_shows_the_verdict_of_a_run_made_with_policy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               digits_cnn: Any) -> None:
    """``nnaudit run --policy`` stores the verdict in results.json; the dashboard shows that verdict and its check,
    also once the policy is gone from the config (the stored record is then the only source)."""
    import json

    import torch
    import yaml

    from audit.cli import main
    from audit.results import load_results

    weights = tmp_path / "cnn.pt"
    torch.save(digits_cnn.state_dict(), weights)
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": str(weights)},
        "data": {"source": "digits", "limit": 60}, "device": "cpu", "sections": {"performance": {}}}))
    policy = tmp_path / "strict.yaml"
    policy.write_text(yaml.safe_dump({"rules": ["performance.accuracy >= 1.01"]}))
    run = tmp_path / "runs" / "strict"
    assert main(["run", str(config), "--out", str(run), "--policy", str(policy), "--no-report"]) == 0
    stored = load_results(run)
    assert stored["verdict"]["status"] == "fail"
    accuracy = stored["sections"]["performance"]["metrics"]["performance.accuracy"]

    def check(at: Any) -> None:
        assert not at.exception
        assert [plain(e.value) for e in at.error] == ["Verdict: FAIL · 1 failing check(s)"]
        failing = next(f.value for f in at.dataframe if "check" in f.value.columns)
        assert list(failing["check"]) == ["performance.accuracy >= 1.01"]
        assert list(failing["value"]) == [format_value(accuracy)] and list(failing["status"]) == ["fail"]

    check(_run_app(monkeypatch, tmp_path / "runs"))
    stored["manifest"]["config"].pop("gate")  # the stored verdict alone
    (run / "results.json").write_text(json.dumps(stored))
    check(_run_app(monkeypatch, tmp_path / "runs"))


def test_findings_view_filters_by_severity_and_section(monkeypatch: pytest.MonkeyPatch, runs_dir: Path) -> None:
    at = _run_app(monkeypatch, runs_dir, view="findings")
    assert not at.exception

    def shown() -> list[tuple[str, str]]:
        frame = next(f.value for f in at.dataframe if "severity" in f.value.columns)
        return list(zip(frame["severity"], frame["section"], strict=True))

    assert shown() == [("HIGH", "robustness"), ("MEDIUM", "imbalance"), ("LOW", "imbalance")]  # info hidden first
    at.multiselect(key="findings_severity").set_value(["info", "low"]).run()
    assert shown() == [("LOW", "imbalance"), ("INFO", "performance")]
    at.multiselect(key="findings_section").set_value(["imbalance"]).run()
    assert shown() == [("LOW", "imbalance")]
    at.text_input(key="findings_text").input("nothing like this").run()
    assert not any("severity" in f.value.columns for f in at.dataframe)
    assert any("0 of 4 findings" in plain(c.value) for c in at.caption)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    write_run(tmp_path / "runs", "run", make_results(with_error=False))
    return tmp_path / "runs"


def test_explorer_images() -> None:
    """Inputs min-max scaled to [0, 1]; attributions signed (red +, blue -, white 0); small images scaled up."""
    from reports.dashboard.samples import attribution_image, to_image, upscale

    gray = to_image(np.array([[[0.0, 2.0], [4.0, 8.0]]]))  # (1, 2, 2), values outside [0, 1]
    assert np.allclose(gray, [[0.0, 0.25], [0.5, 1.0]])
    rgb = to_image(np.stack([np.zeros((2, 2)), np.ones((2, 2)), np.full((2, 2), 2.0)]))
    assert rgb.shape == (2, 2, 3) and np.allclose(rgb[0, 0], [0.0, 0.5, 1.0])
    colours = attribution_image(np.array([[2.0, -1.0, 0.0]]))
    assert np.allclose(colours[0], [[1, 0, 0], [0.5, 0.5, 1], [1, 1, 1]])  # scaled by the largest magnitude
    assert np.allclose(attribution_image(np.zeros((2, 2))), 1.0)
    big = upscale(np.arange(4.0).reshape(2, 2), min_side=64)
    assert big.shape == (64, 64) and big[31, 31] == 0.0 and big[32, 32] == 3.0
