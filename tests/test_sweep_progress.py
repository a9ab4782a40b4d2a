"""The sweep's progress line: its rate never turns negative when resumed runs rewind to their checkpoints."""
import io
import types

from minisparse.sweep_progress import SweepProgress


def test_a_sweep_whose_runs_rewind_on_resume_reports_the_frames_it_gains(monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr("minisparse.sweep_progress.time", types.SimpleNamespace(monotonic=lambda: now[0]))
    stream = io.StringIO()
    progress = SweepProgress(total_frames=10_000, start_frames=3_000, stream=stream, live=False, every=0.0)
    counts = {"done": 1, "running": 1, "failed": 0, "queued": 2}
    now[0] = 10.0
    progress.update(counts, 2_500)  # the resumed run went back 500 frames to its checkpoint
    now[0] = 20.0
    progress.update(counts, 4_500)  # 2,000 frames gained in the 10 s since
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("sweep: 1 done, 1 running, 0 failed, 2 queued; frames 4500/10000 (45%) 200 frames/s")
    assert "ETA 0:00:27" in lines[-1]  # 5,500 frames left at 200 frames/s
    assert all("-" not in line.split("frames/s")[0] for line in lines)
