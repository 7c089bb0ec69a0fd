"""``make ui-check``: look at rle's runs in the real MLflow web UI and save screenshots.

Fills a temporary SQLite store (``RLE_PROJECT_ROOT`` = a temporary folder) with

* one training run (``workload=distilgpt2_tiny``, a few steps),
* a 2-child sweep (Hydra multirun, ``workload=synthetic workload.intensity=0.3,0.8``),
* one evaluation run (``python -m rle.evaluate`` over those runs),

starts ``mlflow ui`` on it (127.0.0.1, a free port), opens it in headless Chromium (the system
``chromium`` through Playwright's ``executable_path``; installed with ``apt-get`` when missing
and running as root) and saves into ``--out`` (default ``docs/screenshots``):

``run_list.png`` (the experiment's runs, the sweep expanded), ``run_charts.png`` (the training
run's model-metric charts), ``system_metrics.png`` (its System metrics tab), ``run_overview.png``
(its params and tags), ``compare.png`` (the sweep children compared), ``artifacts.png`` (the sweep
parent's response curve) and ``evaluation_artifacts.png`` (the evaluation's ``report.md``).

Checks on the way (exit 1 with the reason): each job succeeds, the server answers ``/health``
within ``--timeout-s``, and the run list shows both children's distinct names. Not part of the
default CI (it needs Chromium and takes about two minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

TRAIN = [
    "workload=distilgpt2_tiny",
    "trainer.accelerator=cpu",
    "trainer.max_steps=60",  # a few seconds: the System metrics tab draws lines over time
    "trainer.enable_progress_bar=false",
    "data.block_size=32",
    "data.batch_size=2",
    "data.tokenizer_vocab_size=300",
    "telemetry.sample_hz=10",
]
SWEEP = [
    "-m",
    "workload=synthetic",
    "workload.intensity=0.3,0.8",
    "workload.period_s=0.1",
    "workload.workers=1",
    "trainer.accelerator=cpu",
    "trainer.max_steps=20",
    "trainer.enable_progress_bar=false",
    "telemetry.sample_hz=5",
]
EVALUATE = [
    "evaluation.correlation.resample_hz=5",
    "evaluation.correlation.max_lag_s=1",
    "evaluation.correlation.min_points=5",
    "evaluation.correlation.n_permutations=99",
]
CHILD_NAMES = ("synthetic intensity=0.3", "synthetic intensity=0.8")


def _run(args: list[str], env: dict[str, str], what: str, timeout_s: float) -> None:
    print(f"ui-check: {what} ...", flush=True)  # noqa: T201
    out = subprocess.run(
        args,
        env=env,
        cwd=env["RLE_PROJECT_ROOT"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(f"ui-check: {what} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _mlflow_ui(store: Path, timeout_s: float) -> Iterator[str]:
    """``mlflow ui`` on the store, in its own process group; yields its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (store / "mlflow_ui.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"  # nothing outside this machine is reached
    proc = subprocess.Popen(
        [
            str(Path(PY).with_name("mlflow")),
            "ui",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--default-artifact-root",
            (store / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"ui-check: mlflow ui did not answer on {url}; see {store}/mlflow_ui.log")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)
        log.close()


def chromium_path() -> str:
    """The system Chromium, installed from Debian's package when missing (as root)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() != 0:
        sys.exit("ui-check: no chromium on PATH; install it: sudo apt-get install chromium")
    print("ui-check: installing Debian's chromium ...", flush=True)  # noqa: T201
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=900
    )
    found = shutil.which("chromium")
    if not found:
        sys.exit("ui-check: apt-get installed chromium but it is not on PATH")
    return found


_UI_SETTINGS = """
(() => {
  const set = (k, v) => { if (localStorage.getItem(k) === null) localStorage.setItem(k, v); };
  set("mlflow.workflowType_v1", '"machine_learning"');
  set("mlflow.assistant.panelOpen_v1", "false");
  set("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
  set("mlflow.detectIssues.guidanceShown_v1", "true");
  set("MLflowLocalStorage-1.1-ExperimentView-EXPERIMENT-expandRows", "true");
})();
"""
"""Run before every page: MLflow UI settings (localStorage) for plain model-training screenshots."""
_EXPAND = 'button[data-component-id$="runnamecellrenderer.tsx_46"]'
"""The run list's expander of a parent run (MLflow 3.17's component id)."""


def _expand_and_widen(page: Any, timeout_ms: int) -> None:
    """Expand the sweep parent's row and widen the Run Name column so names show whole."""
    page.locator(_EXPAND).first.click(timeout=timeout_ms)
    header = page.locator('.ag-header-cell[col-id="attributes.`Run Name`"]').first
    with contextlib.suppress(Exception):  # a narrower column is still a usable screenshot
        box = header.bounding_box(timeout=5000)
        if box is not None:  # drag the column's right edge (AG Grid's resize handle)
            x, y = box["x"] + box["width"] - 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 100, y, steps=5)
            page.mouse.move(x + 200, y, steps=5)
            page.mouse.up()


def _shoot(
    page: Any,
    url: str,
    out: Path,
    text: str | None,
    timeout_ms: int,
    wait_for: list[str] | None = None,
    before: Callable[[], Any] | None = None,
    then: list[str] | None = None,
    height: int | None = None,
) -> None:
    """Open ``url``, wait (bounded) until ``text`` and every ``wait_for`` text show, screenshot.

    ``before`` (e.g. a click) runs once those show, then the ``then`` texts are waited for;
    ``height`` crops the screenshot to the top of the page.

    Raises:
        SystemExit: Naming the text that did not show within ``timeout_ms`` (a screenshot of
            what did is saved as ``<name>.failed.png``).
    """
    page.goto(url, timeout=timeout_ms)  # no "networkidle": the UI polls (auto-refresh)

    def show(texts: list[str]) -> None:
        for t in texts:
            try:
                page.get_by_text(t, exact=False).first.wait_for(state="visible", timeout=timeout_ms)
            except Exception:  # noqa: BLE001 (Playwright's TimeoutError)
                failed = out.with_suffix(".failed.png")
                page.screenshot(path=str(failed))
                sys.exit(f"ui-check: {t!r} did not show on {url} (see {failed})")

    show([*([text] if text else []), *(wait_for or [])])
    if before is not None:
        before()
        show(then or [])
    page.wait_for_timeout(1500)  # charts animate in
    clip = None if height is None else {"x": 0, "y": 0, "width": 1600, "height": height}
    page.screenshot(path=str(out), clip=clip)
    if height is not None:  # the committed one: 64 colours keep it small and readable
        from PIL import Image

        with Image.open(out) as image:
            small = image.convert("RGB").quantize(colors=64)
        small.save(out, optimize=True)
    print(f"ui-check: {out}", flush=True)  # noqa: T201


def _screenshots(url: str, store: Path, out: Path, timeout_s: float) -> None:
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rle")
    if exp is None:
        sys.exit("ui-check: no experiment 'rle' in the store")
    runs = client.search_runs([exp.experiment_id])
    role = {r.info.run_id: r.data.tags.get("rle.role", "training") for r in runs}
    training = next(r for r in runs if role[r.info.run_id] == "training")
    parent = next(r for r in runs if role[r.info.run_id] == "sweep_parent")
    children = [r for r in runs if role[r.info.run_id] == "sweep_child"]
    evaluation = next((r for r in runs if role[r.info.run_id] == "evaluation"), None)
    if evaluation is None:  # the evaluation may log into its own experiment
        found = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            filter_string="tags.`rle.role` = 'evaluation'",
        )
        evaluation = found[0] if found else None
    names = sorted(c.info.run_name for c in children)
    if names != sorted(CHILD_NAMES):
        sys.exit(f"ui-check: sweep children are named {names}, expected {sorted(CHILD_NAMES)}")

    e = exp.experiment_id
    ms = int(timeout_s * 1000)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        # MLflow 3's UI opens in its GenAI view with an assistant panel and a guidance popover;
        # the settings it keeps in localStorage select the model-training view without them.
        context.add_init_script(_UI_SETTINGS.replace("EXPERIMENT", e))
        page = context.new_page()
        page.set_default_timeout(ms)
        # the run list, with the sweep's children expanded (the "+" beside the parent's name)
        _shoot(
            page,
            f"{url}/#/experiments/{e}/runs?workflowType=machine_learning",
            out / "run_list.png",
            training.info.run_name,
            ms,
            wait_for=[parent.info.run_name],
            before=lambda: _expand_and_widen(page, ms),
            then=list(CHILD_NAMES),
            height=460,  # the rows, not the empty page below them (a small PNG for the README)
        )
        run = f"{url}/#/experiments/{e}/runs/{training.info.run_id}"
        _shoot(page, run, out / "run_overview.png", "Parameters", ms, ["torch.version"])
        _shoot(page, f"{run}/model-metrics", out / "run_charts.png", "train/loss", ms)
        _shoot(page, f"{run}/system-metrics", out / "system_metrics.png", None, ms)
        ids = ",".join(f'"{c.info.run_id}"' for c in children)
        _shoot(
            page,
            f'{url}/#/compare-runs?runs=[{ids}]&experiments=["{e}"]',
            out / "compare.png",
            CHILD_NAMES[0],
            ms,
        )
        _shoot(
            page,
            f"{url}/#/experiments/{e}/runs/{parent.info.run_id}/artifacts/"
            "response_curve/response_curve.png",
            out / "artifacts.png",
            "response_curve.png",
            ms,
        )
        if evaluation is not None:
            _shoot(
                page,
                f"{url}/#/experiments/{evaluation.info.experiment_id}/runs/"
                f"{evaluation.info.run_id}/artifacts/report.md",
                out / "evaluation_artifacts.png",
                "report.md",
                ms,
            )
        browser.close()


def main() -> None:
    """Fill a temporary store, start ``mlflow ui`` on it and save the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per page / server start")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument(
        "--reuse", type=Path, default=None, help="a store kept by --keep: screenshots only"
    )
    args = parser.parse_args()
    chromium_path()  # fail (or install) before spending minutes on runs
    if args.reuse is not None:
        store = args.reuse.resolve() / "mlruns"
        with _mlflow_ui(store, args.timeout_s) as url:
            _screenshots(url, store, args.out.resolve(), args.timeout_s)
        return
    tmp = Path(tempfile.mkdtemp(prefix="rle-ui-check-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(RLE_PROJECT_ROOT=str(tmp), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    try:
        _run([PY, "-m", "rle.train", *TRAIN], env, "training run", 600)
        _run([PY, "-m", "rle.train", *SWEEP], env, "2-child sweep", 600)
        _run([PY, "-m", "rle.evaluate", *EVALUATE], env, "evaluation", 600)
        store = tmp / "mlruns"
        with _mlflow_ui(store, args.timeout_s) as url:
            _screenshots(url, store, args.out.resolve(), args.timeout_s)
    finally:
        if args.keep:
            print(f"ui-check: store kept in {tmp}", flush=True)  # noqa: T201
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
