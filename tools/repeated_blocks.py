"""Blocks of six or more lines that occur more than once in the library and the benchmarks.

    python tools/repeated_blocks.py [--lines 6] [folders...]   # default: ewc_dqn envs bench

Lines are compared stripped, without blank lines, comments, imports and lines of brackets alone,
so a block copied at another indentation is found too. Exit status 1 when one is found.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIVIAL = {"", ")", "]", "}", "),", "],", "},", '"""', "else:", "try:", "finally:"}


def code_lines(path: Path) -> list[tuple[int, str]]:
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if text in TRIVIAL or text.startswith(("#", "import ", "from ")):
            continue
        out.append((number, text))
    return out


def repeated(folders: list[Path], size: int) -> dict[tuple[str, ...], list[tuple[Path, int]]]:
    seen: dict[tuple[str, ...], list[tuple[Path, int]]] = defaultdict(list)
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            lines = code_lines(path)
            for i in range(len(lines) - size + 1):
                block = tuple(text for _, text in lines[i : i + size])
                seen[block].append((path, lines[i][0]))
    return {b: places for b, places in seen.items() if len(places) > 1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=6)
    parser.add_argument("folders", nargs="*", default=["ewc_dqn", "envs", "bench"])
    args = parser.parse_args()
    found = repeated([ROOT / f for f in args.folders], args.lines)
    last: dict[tuple[Path, ...], tuple[int, ...]] = {}  # the previous window of each file set
    count = 0
    for block, places in sorted(found.items(), key=lambda kv: kv[1]):
        files = tuple(p for p, _ in places)
        lines = tuple(n for _, n in places)
        previous = last.get(files)
        last[files] = lines
        steps = [n - m for n, m in zip(lines, previous or lines, strict=True)]
        if previous is not None and all(0 < step <= 3 for step in steps):
            continue  # the next window of a block already reported
        count += 1
        where = ", ".join(f"{p.relative_to(ROOT)}:{n}" for p, n in places)
        print(f"{where}\n    {block[0]}")
    print(f"{count} repeated blocks of {args.lines}+ lines")
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())
