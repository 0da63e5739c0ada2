"""The fuzz tests' shared machinery: seeds, case counts, timeouts, byte / text / value mutations and the property.

Every case is drawn from ``random.Random(case_seed)`` alone, with ``case_seed = CSPDET_FUZZ_SEED + i``: a failing
case names its seed, and ``CSPDET_FUZZ_SEED=<that seed> CSPDET_FUZZ_CASES=1 pytest <test file>::<test>`` replays
exactly it (case 0 of a run has the run's seed). ``CSPDET_FUZZ_CASES`` scales every family (default 300: a few
hundred cases in seconds); ``tests/conftest.py`` prints both in the pytest header and the totals at the end.

The property (:func:`check_outcome`): a case ends in a clean result, a counted skip with a warning, or a one-line
error of the project's own types (or a CLI exit code with one ``error:`` line) - never another exception type,
a traceback, a hang (:func:`time_limit`) or a crash (which would take the test process down with it).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import signal
import string
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

FUZZ_SEED = int(os.environ.get("CSPDET_FUZZ_SEED", "24024"))
FUZZ_CASES = int(os.environ.get("CSPDET_FUZZ_CASES", "300"))
CASE_TIMEOUT = float(os.environ.get("CSPDET_FUZZ_TIMEOUT", "20"))  # seconds; generous: a shared, loaded CPU


@dataclass
class FuzzStats:
    """What the fuzz tests of this session did (printed by tests/conftest.py's terminal summary)."""

    cases: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    slowest: dict[str, tuple[float, int]] = field(default_factory=dict)  # family -> (seconds, case seed)


STATS = FuzzStats()


def cases(family: str, share: float) -> list[int]:
    """The case seeds of one family: ``share`` x CSPDET_FUZZ_CASES of them (at least 1)."""
    n = max(1, round(FUZZ_CASES * share))
    return [FUZZ_SEED + i for i in range(n)]


class Hang(Exception):
    """A case that ran longer than CSPDET_FUZZ_TIMEOUT seconds."""


@contextlib.contextmanager
def time_limit(seconds: float = CASE_TIMEOUT) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (SIGALRM; Unix)."""

    def alarm(signum, frame):
        raise Hang(f"no answer after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def reproduce(test: str, seed: int) -> str:
    return f"case seed {seed}; replay: CSPDET_FUZZ_SEED={seed} CSPDET_FUZZ_CASES=1 pytest -n 0 {test}"


def run_family(family: str, test: str, seeds: list[int], case: Callable[[int], str], request: Any = None) -> None:
    """Run ``case(seed)`` for every seed under a time limit; ``case`` returns its outcome ("clean", "skipped",
    "error", ...) or raises AssertionError (a broken property). Any failure names the seed and how to replay it.
    With pytest's ``request``, a summary line rides on the test report to the terminal summary (also from an
    xdist worker, see tests/conftest.py)."""
    outcomes: dict[str, int] = {}
    tic, cpu = time.perf_counter(), time.process_time()
    for seed in seeds:
        start = time.perf_counter()
        try:
            with time_limit():
                outcome = case(seed)
        except Hang as err:
            raise AssertionError(f"{family}: hang ({err}); {reproduce(test, seed)}") from None
        except AssertionError as err:
            raise AssertionError(f"{family}: {err}; {reproduce(test, seed)}") from None
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - an unexpected exception type is exactly what we look for
            import traceback

            tb = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-6:])
            raise AssertionError(f"{family}: unexpected {type(err).__name__}: {err}\n{tb}\n"
                                 f"{reproduce(test, seed)}") from None
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        took = time.perf_counter() - start
        if took > STATS.slowest.get(family, (0.0, 0))[0]:
            STATS.slowest[family] = (took, seed)
    STATS.cases[family] = STATS.cases.get(family, 0) + len(seeds)
    STATS.outcomes[family] = outcomes
    STATS.seconds[family] = STATS.seconds.get(family, 0.0) + time.perf_counter() - tic
    STATS.cpu_seconds[family] = STATS.cpu_seconds.get(family, 0.0) + time.process_time() - cpu
    if request is not None:
        request.node.user_properties.append(("cspdet_fuzz", summary_line(family)))


def summary_line(family: str) -> str:
    took, seed = STATS.slowest.get(family, (0.0, FUZZ_SEED))
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(STATS.outcomes.get(family, {}).items()))
    return (f"{family:<14} {STATS.cases.get(family, 0):>5} cases from seed {FUZZ_SEED} in "
            f"{STATS.seconds.get(family, 0):5.1f} s, CPU {STATS.cpu_seconds.get(family, 0):4.1f} s ({outcomes}; "
            f"slowest: seed {seed}, {took:.2f} s)")


def one_line(text: str, where: str) -> str:
    """``text`` is a single non-empty line without a traceback; returns it."""
    text = str(text).strip()
    assert text, f"{where}: empty error message"
    assert "Traceback" not in text, f"{where}: traceback in the message: {text[:400]!r}"
    assert "\n" not in text, f"{where}: message of several lines: {text[:400]!r}"
    return text


def cli_outcome(code: int, out: str, err: str, where: str, ok_codes=(0,), error_codes=(1, 2)) -> str:
    """A CLI's answer: success, or an error exit with only one-line ``error`` messages on stderr."""
    assert "Traceback" not in err and "Traceback" not in out, f"{where}: traceback:\n{err[-1500:]}"
    if code in ok_codes:
        return "clean"
    assert code in error_codes, f"{where}: exit code {code}; stderr: {err[-600:]!r}"
    lines = [line for line in err.strip().splitlines() if "error" in line.lower()]
    assert lines, f"{where}: exit {code} without an error line; stderr: {err[-600:]!r}"
    return "error"


# ------------------------------------------------------------------------------------------- mutations

JUNK_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, -(2**63), 10**40, 0.5, -1e308, 1e308, float("nan"), float("inf"),
    float("-inf"), "", "x", "0", "1e999", "nan", "\x00", "../../../../etc/passwd", "/etc/passwd", "ü" * 3,
    [], [1], [1, 2, 3, 4], ["a", "b"], [None] * 4, [[1, 2], [3, 4]], {}, {"a": 1}, {"id": 1},
]


def junk_value(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.7:
        return copy.deepcopy(rng.choice(JUNK_VALUES))  # a fresh object: a shared one could end up inside itself
    if r < 0.8:
        return rng.uniform(-1e4, 1e4)
    if r < 0.9:
        return rng.randint(-5, 200)
    return "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 20)))


def mutate_tree(obj: Any, rng: random.Random, n: int = 1) -> Any:
    """``n`` random edits of a json-like tree: a value replaced by junk, a key deleted, a list entry duplicated or
    dropped, a container emptied, a number pushed out of range."""
    for _ in range(n):
        paths = list(_paths(obj))
        if not paths:
            return junk_value(rng)
        path = rng.choice(paths)
        if not path:  # the root itself
            obj = junk_value(rng) if rng.random() < 0.5 else obj
            continue
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = rng.random()
        if op < 0.45:
            parent[key] = junk_value(rng)
        elif op < 0.6 and isinstance(parent, dict):
            del parent[key]
        elif op < 0.75 and isinstance(parent, list):
            parent.insert(key, json.loads(json.dumps(parent[key])))  # a duplicate entry
        elif op < 0.85 and isinstance(parent, list):
            del parent[key]
        elif isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = rng.choice([-1, 0, -parent[key], parent[key] * 1e6, 1e30, parent[key] + 0.5])
        else:
            parent[key] = junk_value(rng)
    return obj


def _paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One damage to a file's bytes: truncated, emptied, bytes flipped, junk inserted or appended, or replaced by
    random bytes."""
    op = rng.randrange(7)
    if op == 0 or not data:
        return data[:rng.randrange(len(data) + 1)] if data else b""
    if op == 1:
        return b""
    if op == 2:
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if op == 3:
        k = rng.randrange(len(data) + 1)
        return data[:k] + rng.randbytes(rng.randint(1, 64)) + data[k:]
    if op == 4:
        return data + rng.randbytes(rng.randint(1, 64))
    if op == 5:
        return rng.randbytes(rng.randint(1, 256))
    return data[: len(data) // 2]


def mutate_text(text: str, rng: random.Random) -> str:
    """A textual damage: truncation, a line dropped / duplicated / swapped for junk, characters replaced."""
    lines = text.splitlines()
    op = rng.randrange(5)
    if op == 0:
        return text[:rng.randrange(len(text) + 1)]
    if op == 1 and lines:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    elif op == 2 and lines:
        del lines[rng.randrange(len(lines))]
    elif op == 3 and lines:
        lines[rng.randrange(len(lines))] = "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 40)))
    else:
        chars = list(text)
        for _ in range(rng.randint(1, 5)):
            if chars:
                chars[rng.randrange(len(chars))] = rng.choice(string.printable + "\x00ü")
        return "".join(chars)
    return "\n".join(lines) + "\n"
