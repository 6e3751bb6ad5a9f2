"""The README's Python examples run as written: every block that needs neither a GPU, a process
group nor names the README leaves to the reader (a model, a loader) is executed, in order, in one
namespace, as a reader pasting them into one session would."""
import re

import pytest

from source_tree import source_path

# What marks a block this test cannot run here: CUDA tensors, torch.distributed, and the names the
# README leaves to the reader's program.
NEEDS = ('device="cuda"', "dist.", "fully_shard", "loader", "loss_fn")


def _blocks():
    text = source_path("README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_python_examples_run():
    pytest.importorskip("torch")
    blocks = _blocks()
    runnable = [b for b in blocks if not any(n in b for n in NEEDS)]
    assert len(runnable) >= 8, "the README's examples went missing"
    namespace = {}
    for block in runnable:
        try:
            exec(compile(block, "README.md", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - name the block that failed
            pytest.fail(f"README example failed ({type(e).__name__}: {e}):\n{block}")
