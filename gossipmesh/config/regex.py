"""Route regexes on RE2: matching time linear in the input, whatever the pattern.

Python's ``re`` backtracks: ``/(a+)+$`` against a 27-character path took 5.8 s of the agent's
one event loop (issue 13), long enough for its peers to declare it dead. RE2 compiles a pattern
to an automaton and never backtracks, so a match costs O(pattern x input) at worst. The price is
the features that need backtracking: backreferences (``\\1``) and lookaround (``(?=``, ``(?!``,
``(?<=``) are refused when the route is written, with RE2's reason, and so is a pattern whose
automaton would outgrow ``MAX_MEM_BYTES``. Everything else in the documented syntax (classes,
``\\d``, ``(?i)``, named groups, counted repetition up to 1000) behaves as in ``re``.
"""

from __future__ import annotations

from typing import Protocol

# RE2's default budget per compiled pattern; a 1,024-character pattern fits easily unless it
# nests counted repetitions, which is what the bound is for.
MAX_MEM_BYTES = 8 << 20


class Regex(Protocol):
    """A compiled route regex: the source and whole-string matching."""

    @property
    def pattern(self) -> str: ...

    def fullmatch(self, text: str) -> object | None: ...


class RegexError(ValueError):
    """RE2 cannot compile the pattern; the message says why."""


def compile_regex(pattern: str) -> Regex:
    """``pattern`` compiled by RE2 (raises ``RegexError`` with RE2's reason)."""
    # Imported on first use: most meshes route by prefix, and RE2 costs an agent 2.4 MiB.
    import re2

    options = re2.Options()
    options.log_errors = False  # the reason goes to the caller, not to stderr
    options.max_mem = MAX_MEM_BYTES
    try:
        compiled: Regex = re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0] if e.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(str(reason)) from None
    return compiled


__all__ = ["MAX_MEM_BYTES", "Regex", "RegexError", "compile_regex"]
