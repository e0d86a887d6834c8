"""Job progress from ComfyUI's node and step messages."""

from __future__ import annotations

from formy_async.worker.progress import ProgressTracker

GRAPH = {
    "1": {"class_type": "CheckpointLoaderSimple"},
    "2": {"class_type": "KSampler"},
    "3": {"class_type": "VAEDecode"},
    "4": {"class_type": "SaveImage"},
}


def test_progress_rises_with_sampler_steps() -> None:
    tracker = ProgressTracker(GRAPH)
    tracker.executing("1")
    seen = [tracker.step("2", step, 20) for step in range(1, 21)]
    assert seen == sorted(seen)
    assert seen[-1] > seen[0] + 50


def test_progress_never_goes_down() -> None:
    tracker = ProgressTracker(GRAPH)
    high = tracker.step("2", 19, 20)
    assert tracker.executing("1") >= high


def test_progress_stays_below_100_until_done() -> None:
    tracker = ProgressTracker(GRAPH)
    for node in GRAPH:
        tracker.executing(node)
    assert tracker.step("4", 1, 1) == 99


def test_cached_nodes_count_as_finished() -> None:
    tracker = ProgressTracker(GRAPH)
    assert tracker.cached(["1", "2"]) > 70
