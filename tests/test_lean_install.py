"""`pip install deskbot` without extras runs the desk and its model: no PyTorch, no transformers
(issue 28). A runtime-only venv in a temporary folder, the sandbox started from it, a message
classified; then all of it removed (bench/lean_install.py, which prints the figures)."""

from __future__ import annotations

from bench.lean_install import run


def test_the_runtime_install_runs_the_model_without_torch() -> None:
    figures = run()
    assert figures["training_packages_installed"] == []
    assert figures["model_line"].startswith("Model: intent ")
    assert "sentiment" in figures["model_line"] and "anger" in figures["model_line"]
    print(figures)  # shown with -s: install time, venv size, the page answering
