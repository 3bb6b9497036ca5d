"""Regenerate the shell completion scripts in completions/: ``python -m usagebox_cli.cli.completions``."""

from pathlib import Path

from usagebox_cli.cli import completion_script

TARGETS = {"bash": "usagebox.bash", "zsh": "_usagebox", "fish": "usagebox.fish"}

if __name__ == "__main__":
    folder = Path(__file__).resolve().parents[2] / "completions"
    for shell, name in TARGETS.items():
        (folder / name).write_text(completion_script(shell), encoding="utf-8")
        print(f"wrote completions/{name}")
