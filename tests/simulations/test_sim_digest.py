"""A result's core digest names the code that ran: comments and docstrings do not move it."""

from __future__ import annotations

from pathlib import Path

import gossipmesh.swim.node
from simulations.scenarios import code_digest, core_digest

SAMPLE = '''"""Module docstring."""

LIMIT = 64  # a bound


class Node:
    """Class docstring."""

    size: int
    """Attribute docstring."""

    def step(self, now_ms: int) -> int:
        """Method docstring."""
        # why we add one
        return now_ms + 1
'''


def test_comment_and_docstring_edits_keep_the_digest() -> None:
    edited = (
        SAMPLE.replace("Module docstring.", "A better module docstring,\non two lines.")
        .replace('"""Method docstring."""', '"""Says the truth now."""\n\n')
        .replace("# why we add one", "# the reason, corrected\n        # and a second comment")
        .replace("# a bound", "")
        .replace('    """Attribute docstring."""\n', "")
    )
    assert edited != SAMPLE
    assert code_digest(edited) == code_digest(SAMPLE)


def test_a_code_change_alters_the_digest() -> None:
    assert code_digest(SAMPLE.replace("LIMIT = 64", "LIMIT = 65")) != code_digest(SAMPLE)
    assert code_digest(SAMPLE.replace("now_ms + 1", "now_ms - 1")) != code_digest(SAMPLE)
    # A function whose only statement is its docstring still differs from one that does work.
    bare = SAMPLE.replace("        # why we add one\n        return now_ms + 1\n", "")
    assert code_digest(bare) != code_digest(SAMPLE)


def test_the_real_core_digest_ignores_its_docstrings() -> None:
    source = Path(gossipmesh.swim.node.__file__).read_text(encoding="utf-8")
    assert '"""' in source
    reworded = source.replace("Theory of operation", "How it works (reworded)", 1)
    assert reworded != source
    assert code_digest(reworded) == code_digest(source)
    assert code_digest(source.replace("return out", "return out[:]", 1)) != code_digest(source)
    assert len(core_digest()) == 12
