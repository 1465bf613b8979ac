"""`selfloop report`: one self-contained HTML page per run. A real TINY loop (2 iterations,
control arm, MLflow on) runs once per module; the page's numbers are checked against the
run's files, and the page is opened in headless Chromium."""

from __future__ import annotations

import json
import logging
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from selfloop.cli import main
from selfloop.config import load_params, params_from_dict
from selfloop.loop import run
from selfloop.recording import Recorder
from selfloop.report import collect, write_report
from selfloop.report_html import render
from selfloop.workspace import Workspace
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
PLOTS = ("plot-accuracy", "plot-acceptance", "plot-diversity", "plot-mix", "plot-seconds")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
BENCH = {"command": "python benchmarks/run.py --fast", "threads": 2, "best_tokens_per_second": 43473,
         "tokens_per_second_by_batch": {"16": 5328, "2048": 43473},
         "seconds_by_samples": {"1000": {"total_s": 0.425}}}


class Page(HTMLParser):
    """Tables (by id: rows of cell texts, header first), images (their attributes), every id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict] = []
        self.ids: set[str] = set()
        self.title = ""
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data

    def rows(self, ident: str) -> list[dict[str, str]]:
        """A table's body rows as {header: cell}."""
        head, *body = self.tables[ident]
        return [dict(zip(head, r, strict=True)) for r in body]


def read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A project (a git root with benchmark results) holding a finished, MLflow-tracked TINY run."""
    project = tmp_path_factory.mktemp("report") / "project"
    (project / ".git").mkdir(parents=True)  # marks the project root (recording.project_root)
    (project / "benchmarks" / "results").mkdir(parents=True)
    (project / "benchmarks" / "results" / "generation.json").write_text(json.dumps(BENCH))
    workdir = project / "runs" / "t"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store goes to the project: project/mlflow.db
        params = load_params(ROOT / "params.yaml", [*TINY, "run.iterations=2", "track.mlflow=true",
                                                    f"run.workdir={workdir}"])
        run(params)
    return workdir


@pytest.fixture(scope="module")
def page(tracked_run) -> Page:
    return Page((tracked_run / "report.html").read_text())


def json_copy(src: Path, dst: Path) -> Path:
    """The run's JSON files only (what the report reads), without checkpoints."""
    for f in src.rglob("*.json"):
        if "model" not in f.relative_to(src).parts:
            (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst / f.relative_to(src))
    return dst


def test_finished_run_writes_and_attaches_its_report(tracked_run):
    from mlflow import MlflowClient

    assert (tracked_run / "report.html").stat().st_size > 10_000
    run_id = read(tracked_run / "mlflow.json")["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run.parents[1]}/mlflow.db")
    assert "report.html" in [a.path for a in client.list_artifacts(run_id)]


def test_page_numbers_match_the_run_files(tracked_run, page):
    text = (tracked_run / "report.html").read_text()
    assert "http://" not in text and "https://" not in text
    info = dict(r for r in page.tables["run-info"])
    assert info["iterations done"] == "2 of 2" and info["status"] == "finished"
    assert info["domain"] == "countdown" and info["MLflow run"] == read(tracked_run / "mlflow.json")["run_id"]

    accuracy = {(r["generation"], r["arm"]): r for r in page.rows("table-accuracy")}
    assert set(accuracy) == {("0", "base"), ("1", "loop"), ("1", "control"), ("2", "loop"), ("2", "control")}
    base = read(tracked_run / "gen_000" / "eval.json")["levels"]
    m2 = read(tracked_run / "gen_002" / "metrics.json")
    c1 = read(tracked_run / "control" / "gen_001" / "metrics.json")
    k = m2["eval"]["3"]["k"]
    for lv in ("3", "4", "5"):
        assert accuracy[("0", "base")][f"L{lv} greedy"] == f"{base[lv]['greedy_acc']:.1%}"
        assert accuracy[("2", "loop")][f"L{lv} greedy"] == f"{m2['eval'][lv]['greedy_acc']:.1%}"
        assert accuracy[("2", "loop")][f"L{lv} pass@{k}"] == f"{m2['eval'][lv]['pass_at_k']:.1%}"
        assert accuracy[("1", "control")][f"L{lv} greedy"] == f"{c1['eval'][lv]['greedy_acc']:.1%}"

    acc2 = page.rows("table-acceptance")[1]
    assert acc2["generation"] == "2"
    assert acc2["acceptance"] == f"{m2['verify']['acceptance_rate']:.1%}"
    assert (acc2["accepted"], acc2["pool"]) == (str(m2["curate"]["accepted"]), str(m2["curate"]["pool"]))
    mix2 = page.rows("table-mix")[1]
    assert mix2["reference share"] == f"{m2['curate']['reference_share']:.1%}"
    by_level = m2["curate"]["reference_share_by_level"]  # the levels this small run's mix drew
    assert by_level
    for lv, share in by_level.items():
        assert mix2[f"reference share at level {lv}"] == f"{share:.1%}"

    samples = m2["diversity"]["3"]["samples"]
    div = {(r["generation"], r["level"], r["set"]): r for r in page.rows("table-diversity")}
    assert div[("2", "3", "samples")]["n-gram Vendi"] == f"{samples['vendi_ngram']:.3f}"
    assert div[("2", "3", "samples")]["template entropy"] == f"{samples['template_entropy']:.3f}"
    assert "embedding Vendi" not in page.tables["table-diversity"][0]  # measure.embeddings=false
    probe = m2["diversity"]["3"]["probe"]
    assert div[("2", "3", "probe")]["n"] == str(probe["n"])
    assert div[("2", "3", "probe")]["well-formed share"] == f"{probe['well_formed_share']:.3f}"

    monitor = [r for r in page.rows("table-monitor") if r["generation"] == "2"]
    decisions = read(tracked_run / "gen_002" / "monitor.json")["decisions"]
    assert [r["action"] for r in monitor] == ([d["action"] for d in decisions] or ["none"])
    signals = read(tracked_run / "gen_002" / "monitor.json")["signals"]
    assert page.rows("table-signals")[1]["vendi_samples"] == f"{signals['vendi_samples']:.3f}"

    secs = {(r["arm"], r["generation"]): r for r in page.rows("table-seconds")}
    assert secs[("loop", "2")]["train"] == f"{m2['seconds']['train']:.1f}"
    assert secs[("control", "1")]["train"] == f"{c1['seconds']['train']:.1f}"


def test_page_has_plots_and_benchmarks(tracked_run, page):
    assert page.title == "selfloop report: t"
    memory = any(read(f).get("memory") for f in tracked_run.rglob("gen_*/metrics.json"))
    assert {*PLOTS, *(["plot-memory"] if memory else [])} <= {img.get("id") for img in page.images}
    assert ("table-memory" in page.tables) == memory
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,") and img.get("alt"), img.get("id")
    bench = dict(r for r in page.tables["table-bench-generation"])
    assert bench["best_tokens_per_second"] == "43473" and "command" not in bench
    by_batch = page.rows("table-bench-generation-tokens-per-second-by-batch")
    assert by_batch == [{"key": "16", "value": "5328"}, {"key": "2048", "value": "43473"}]
    assert page.rows("table-bench-generation-seconds-by-samples") == [{"key": "1000", "total_s": "0.425"}]


def test_bench_command_is_shown(tracked_run):
    text = (tracked_run / "report.html").read_text()
    assert "Produced by <code>python benchmarks/run.py --fast</code>" in text


def test_monitor_decisions_are_rows(tracked_run):
    data = collect(tracked_run)
    data["loop"][1]["monitor"] = [{"action": "raise_temperature", "signal": "vendi_samples", "value": 30.5,
                                   "threshold": 38.1234, "reason": "sample diversity fell below 70%"}]
    rows = [r for r in Page(render(data)).rows("table-monitor") if r["generation"] == "2"]
    assert rows == [{"generation": "2", "action": "raise_temperature", "signal": "vendi_samples",
                     "value": "30.500", "threshold": "38.123", "reason": "sample diversity fell below 70%"}]


def test_single_draw_template_entropy_of_an_older_version_is_marked(tracked_run):
    """A run resumed across the change that averaged the fixed-size template entropy over
    draws holds both kinds; the older ones are marked, and only then is the note there."""
    data = collect(tracked_run)
    div = data["loop"][1]["diversity"]["3"]
    div["probe_well_formed"] = {**div["probe_well_formed"], "template_entropy": 4.25, "vendi_ngram_sd": 0.1}
    div["probe_well_formed"].pop("template_entropy_sd", None)
    div["accepted_equal_n"] = {**div.get("accepted_equal_n", {}), "template_entropy": 3.5,
                               "vendi_ngram_sd": 0.1, "template_entropy_sd": 0.02}
    text = render(data)
    rows = {(r["generation"], r["level"], r["set"]): r for r in Page(text).rows("table-diversity")}
    assert rows[("2", "3", "probe_well_formed")]["template entropy"] == "4.250 *"
    assert rows[("2", "3", "accepted_equal_n")]["template entropy"] == "3.500"
    assert "not comparable with the means" in text
    assert "not comparable with the means" not in render(collect(tracked_run))


def test_partial_run_without_measurements(tracked_run, tmp_path):
    """A generation without metrics.json is skipped; a run with measure off has no diversity."""
    run_dir = json_copy(tracked_run, tmp_path / "partial")
    (run_dir / "gen_002" / "metrics.json").unlink()
    (run_dir / "results.json").unlink()
    m1 = read(run_dir / "gen_001" / "metrics.json")
    m1.pop("diversity")
    m1.pop("memory", None)
    (run_dir / "gen_001" / "metrics.json").write_text(json.dumps(m1))
    p = Page(write_report(run_dir).read_text())
    info = dict(r for r in p.tables["run-info"])
    assert info["iterations done"] == "1 of 2" and info["status"].startswith("running or interrupted")
    assert [r["arm"] for r in p.rows("table-accuracy") if r["generation"] == "2"] == ["control"]
    assert "table-diversity" not in p.tables and "plot-diversity" not in p.ids
    assert "No diversity measured" in (run_dir / "report.html").read_text()


def test_cli_report(tracked_run, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(tracked_run), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}" in said and "attached it to MLflow run" in said
    assert Page(out.read_text()).title == "selfloop report: t"
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no selfloop run" in capsys.readouterr().err


def test_report_failure_only_warns(tracked_run, tmp_path, monkeypatch, caplog):
    run_dir = json_copy(tracked_run, tmp_path / "copy")
    params = params_from_dict({**read(run_dir / "params.json"),
                               "track": {**read(run_dir / "params.json")["track"], "mlflow": False}})

    def broken(*args, **kwargs):
        raise RuntimeError("no plots today")

    monkeypatch.setattr("selfloop.report.write_report", broken)
    with caplog.at_level(logging.WARNING, logger="selfloop"):
        Recorder(params, Workspace(run_dir)).close(read(run_dir / "results.json"), 2)
    assert "report was not written (RuntimeError: no plots today)" in caplog.text
    assert not (run_dir / "report.html").exists()


def test_page_in_headless_chromium(tracked_run, tmp_path):
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} missing: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1024", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        driver.get((tracked_run / "report.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({id: i.id, complete: i.complete, "
            "width: i.naturalWidth, alt: i.alt, data: i.src.startsWith('data:image/png;base64,')}))")
        plots = driver.execute_script(
            "return arguments[0].map(id => { const e = document.getElementById(id); "
            "return e ? e.tagName : null; })", list(PLOTS))
        assert driver.title == "selfloop report: t"
    finally:
        driver.quit()
    assert images and all(i["complete"] and i["width"] > 0 and i["alt"] and i["data"] for i in images), images
    assert plots == ["IMG"] * len(PLOTS)
