"""How fast `tagging-backend view` opens a large file: server-side time of each request the page
makes before it is usable, against reading the tracking file alone (the baseline, same run),
and optionally the time until the page is ready in headless Chromium.

The data: a simulated trx.mat (no tagger run needed) with its ground truth as the "prediction"
and a probabilities sidecar of the right size (random, seeded).

    python benchmarks/webapp_benchmark.py --larvae 150 --duration 300 [--browser]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from taggingbackends.cli import write_simulation
from taggingbackends.data.labels import Labels
from taggingbackends.formats import load
from taggingbackends.simulate import SimulationConfig, simulate
from taggingbackends.webapp.session import Session


def make_data(directory: Path, larvae: int, duration: float, seed: int) -> None:
    write_simulation(simulate(SimulationConfig(n_larvae=larvae, duration=duration, seed=seed)), directory, "trxmat")
    labels = Labels.load(directory / "groundtruth.label")
    labels.tracking = [directory / "trx.mat"]
    labels.dump(directory / "predicted.label")
    rng = np.random.default_rng(seed)
    larva_id = np.concatenate([[larva] * len(track) for larva, track in labels.tracks.items()])
    t = np.concatenate([track.t for track in labels.tracks.values()])
    p = rng.dirichlet(np.ones(len(labels.names)), size=t.size).astype(np.float32)
    with h5py.File(directory / "predicted.probabilities.h5", "w") as f:
        f["larva_id"], f["t"], f["probabilities"] = larva_id.astype(np.int32), t, p
        f.attrs["labels"] = labels.names
        f.attrs["run_id"] = labels.run_id


def timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def server_side(directory: Path) -> dict:
    baseline, run = timed(lambda: load(directory / "trx.mat"))
    opened, session = timed(lambda: Session.open(directory / "predicted.label"))
    figures = {"read trx.mat (baseline)": (baseline, None), "open session": (opened, None)}
    first = int(session.run.larva_ids[0])
    t0 = float(session.run.t.min())
    for name, call in [("GET /api/session", session.summary), ("GET /api/ethogram", session.ethogram),
                       ("GET /api/review", session.review_queue),
                       ("GET /api/frames (5 s)", lambda: session.frames(t0, t0 + 5)),
                       ("GET /api/larva (one)", lambda: session.larva_detail(first))]:
        seconds, answer = timed(lambda: json.dumps(call()))
        figures[name] = (seconds, len(answer))
    figures["steps"] = run.n_steps
    figures["larvae"] = run.n_tracks
    return figures


def browser_ready(directory: Path) -> float:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from taggingbackends.webapp.server import Server

    server = Server(Session.open(directory / "predicted.label")).start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        start = time.perf_counter()
        driver.get(server.url)
        driver.execute_async_script("const done = arguments[0]; window.app.ready.then(() => done(true))")
        return time.perf_counter() - start
    finally:
        driver.quit()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--larvae", type=int, default=150)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_data(directory, args.larvae, args.duration, args.seed)
        figures = server_side(directory)
        steps, larvae = figures.pop("steps"), figures.pop("larvae")
        print(f"{larvae} larvae, {steps} steps ({(directory / 'trx.mat').stat().st_size / 1e6:.1f} MB trx.mat)")
        baseline = figures["read trx.mat (baseline)"][0]
        for name, (seconds, size) in figures.items():
            extra = f"  {size / 1e3:8.1f} kB" if size else ""
            print(f"  {name:26s} {seconds:7.3f} s  ({seconds / baseline:5.2f}x baseline){extra}")
        ready = sum(seconds for name, (seconds, _) in figures.items()
                    if name not in ("read trx.mat (baseline)", "GET /api/larva (one)"))
        print(f"  {'server time to first frame':26s} {ready:7.3f} s  ({ready / baseline:5.2f}x baseline)")
        if args.browser:
            print(f"  {'browser: page ready':26s} {browser_ready(directory):7.3f} s  (from the page request, "
                  "session already open)")


if __name__ == "__main__":
    main()
