"""benchmark.py --runtimes: which rows it measures here, and that it rewrites only its own section."""
from __future__ import annotations

from utils.evaluation import runtime_benchmark
from utils.runtimes import ov_core


def test_rows_are_what_can_run_here_float32_references_first(monkeypatch):
    monkeypatch.setattr(ov_core, "capabilities", lambda: ("BF16", "FP32"))
    rows = runtime_benchmark.variants("realesrgan")
    assert rows[:2] == [("ncnn", "float32"), ("torch", "float32")]
    assert {("openvino", "float32"), ("openvino", "bfloat16")} <= set(rows)
    assert ("openvino", "float16") not in rows and ("torch", "float16") not in rows  # not on this CPU
    monkeypatch.setattr(ov_core, "capabilities", lambda: ("FP32",))
    assert ("openvino", "bfloat16") not in runtime_benchmark.variants("realesrgan")
    assert runtime_benchmark.variants("bicubic") == [("torch", "float32")]


def test_the_runtimes_section_replaces_only_itself(tmp_path):
    doc = tmp_path / "benchmarks.md"
    other = "## Runtimes and precisions on another CPU\n\nits table\n\n"  # same start, another section
    doc.write_text("# Benchmarks\n\nintro\n\n" + other + "## Runtimes and precisions\n\nold table\n\n## Tiling\n\nkept\n")
    runtime_benchmark.replace_section(doc, "## Runtimes and precisions\n\nnew table\n")
    assert doc.read_text() == ("# Benchmarks\n\nintro\n\n" + other +
                               "## Runtimes and precisions\n\nnew table\n\n## Tiling\n\nkept\n")
    runtime_benchmark.replace_section(tmp_path / "new.md", "## Runtimes and precisions\n\nt\n")
    assert (tmp_path / "new.md").read_text().strip() == "## Runtimes and precisions\n\nt"
