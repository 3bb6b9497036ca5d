"""The README's walkthroughs are executed, so the README cannot rot.

Every ```bash block between "## Walkthroughs" and the next top-level section
runs, in order, in one bash session, inside a temporary directory that holds
a copy of ``examples/``.  When a ```text or ```json block follows a bash block
(before the next bash block), it must equal that block's stdout, except for
wall-clock timestamps (``closed_at``, ``detected_at`` …), which are masked.

``python tests/test_readme.py --update`` rewrites those output blocks from a
real run; review the diff before committing it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
# Event timestamps in the examples are whole seconds; a microsecond fraction
# that is not .000000 is a wall-clock time, different on every run.
README_NOW = "2026-12-01T12:00:00.123456Z"
VOLATILE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(?!000000)\d{6}Z")


def walkthrough_blocks(text: str) -> list[tuple[str, tuple[int, int] | None]]:
    """(bash source, span of its expected-output block or None), in README order."""
    start = text.index("## Walkthroughs")
    end = text.index("\n## ", start + 5)
    fences = [(m.group(1), m.group(2), m.span(2)) for m in FENCE.finditer(text, start, end)]
    blocks = []
    for index, (lang, body, _span) in enumerate(fences):
        if lang != "bash":
            continue
        expected = None
        if index + 1 < len(fences) and fences[index + 1][0] in ("text", "json"):
            expected = fences[index + 1][2]
        blocks.append((body, expected))
    return blocks


def run_walkthroughs(workdir: Path, blocks: list[str]) -> list[str]:
    shutil.copytree(ROOT / "examples", workdir / "examples")
    marker = "@@usagebox-readme-block@@"
    script = "set -euo pipefail\n" + "".join(f"{body}\necho {marker}\n" for body in blocks)
    env = {k: v for k, v in os.environ.items() if k not in ("USAGEBOX_DB", "COLUMNS")}
    env["NO_COLOR"] = "1"
    # A fixed "now" (with a microsecond fraction, so the times it stamps are masked like wall-clock
    # ones) keeps the walkthroughs' answers the same on any date: the future-timestamp check and
    # month-to-date windows read the clock.
    env["USAGEBOX_NOW"] = README_NOW
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"README walkthrough failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    outputs = result.stdout.split(marker + "\n")
    assert len(outputs) == len(blocks) + 1, "a walkthrough block printed the marker itself"
    return outputs[:-1]


def mask(text: str) -> str:
    return VOLATILE.sub("<now>", text).rstrip()


def test_readme_walkthroughs_print_what_the_readme_shows(tmp_path):
    text = README.read_text(encoding="utf-8")
    blocks = walkthrough_blocks(text)
    assert len(blocks) >= 10
    outputs = run_walkthroughs(tmp_path, [body for body, _ in blocks])
    for (body, span), output in zip(blocks, outputs):
        if span is None:
            continue
        expected = text[span[0]:span[1]]
        assert mask(output) == mask(expected), f"README block\n{body}\nprinted:\n{output}"


def update() -> None:
    import tempfile

    text = README.read_text(encoding="utf-8")
    blocks = walkthrough_blocks(text)
    with tempfile.TemporaryDirectory() as tmp:
        outputs = run_walkthroughs(Path(tmp), [body for body, _ in blocks])
    for (body, span), output in sorted(zip(blocks, outputs), key=lambda item: -(item[0][1] or (0, 0))[0]):
        if span is not None:
            text = text[:span[0]] + output.rstrip("\n") + "\n" + text[span[1]:]
    README.write_text(text, encoding="utf-8")


if __name__ == "__main__" and "--update" in sys.argv:
    update()
