"""MkDocs hook: adds pages that are generated, never written by hand.

- ``reference/cli.md`` from the CLI's option declarations (:mod:`edgekit.cli.reference`);
- ``benchmarks.md``: the repository's BENCHMARKS.md, its links to raw JSON files shown as
  paths (the JSON files are not part of the site);
- for the pages other contributors own (``your-model.md``, ``onnx-models.md``,
  ``hardware.md``, ``contract.md``), a short stand-in page when the file is not in ``docs/``
  yet, so links and the nav resolve under ``mkdocs build --strict`` before those pages land.
"""
import re
from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[2]

OWNED_ELSEWHERE = {
    "your-model.md": "Your model",
    "onnx-models.md": "ONNX models",
    "hardware.md": "Hardware",
    "contract.md": "The contract",
}


def on_files(files, config):
    from edgekit.cli.reference import markdown
    files.append(File.generated(config, "reference/cli.md", content=markdown()))
    bench = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
    bench = re.sub(r"\[([^\]]*)\]\((benchmarks/[^)]*)\)", r"`\2`", bench)
    files.append(File.generated(config, "benchmarks.md", content=bench))
    for name, title in OWNED_ELSEWHERE.items():
        if files.get_file_from_path(name) is None:
            files.append(File.generated(config, name, content=(
                "# {}\n\nThis page is written separately and is not part of this build yet.\n"
                .format(title))))
    return files
