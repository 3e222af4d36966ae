"""lesionlens.progress: the progress line's numbers, and marks counted once per unit."""

from lesionlens import progress


def test_progress_line_numbers():
    assert (
        progress.progress_line(48, 780, 10.0) == "48/780 images (6 %), 4.8 images/s, ETA 2 min 32 s"
    )
    assert progress.progress_line(780, 780, 120.0) == "780/780 images (100 %), 6.5 images/s, done"
    assert progress.progress_line(0, 10, 3.0) == (
        "0/10 images (0 %), 0.0 images/s, ETA unknown (nothing done yet)"
    )
    # a unit retried under another key must not show more than the total
    assert progress.progress_line(12, 10, 2.0).startswith("10/10 images (100 %)")
    assert progress.progress_line(7200, 10000, 3600.0) == (
        "7200/10000 images (72 %), 2.0 images/s, ETA 23 min 20 s"
    )
    assert progress.progress_line(50, 100_000, 5.0) == (
        "50/100000 images (0 %), 10.0 images/s, ETA 2 h 46 min"
    )
    assert progress.progress_line(30, None, 6.0, "records") == (
        "30 records done, 5.0 records/s, 6 s elapsed"
    )


def test_marks_are_counted_once_per_unit(tmp_path):
    folder = str(tmp_path / "marks")
    assert progress.count_marks(folder) == 0  # no folder yet
    progress.mark(folder, "scored-images-0", 16)
    progress.mark(folder, "scored-images-0", 16)  # a retried batch: the same name
    progress.mark(folder, "read-1", 3)
    progress.mark(folder, "read-2", 0)  # nothing to count: no file
    assert progress.count_marks(folder) == 19
    assert sorted(p.name for p in (tmp_path / "marks").iterdir()) == [
        "read-1.3",
        "scored-images-0.16",
    ]
    progress.clear(folder)
    assert not (tmp_path / "marks").exists()


def test_reporter_logs_the_final_count(tmp_path):
    folder = str(tmp_path / "marks")
    lines: list[str] = []
    with progress.Reporter(folder, 20, every_s=0.05, emit=lines.append):
        progress.mark(folder, "a", 8)
        progress.mark(folder, "b", 12)
    assert lines[-1].startswith("20/20 images (100 %)") and lines[-1].endswith("done")
