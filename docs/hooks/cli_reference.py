"""MkDocs hook: adds pages that are generated, never written by hand.

- ``reference/cli.md`` from the CLI's option declarations (:mod:`edgekit.cli.reference`);
- for the pages other contributors own (``your-model.md``, ``onnx-models.md``,
  ``hardware.md``, ``contract.md``), a short stand-in page when the file is not in ``docs/``
  yet, so links and the nav resolve under ``mkdocs build --strict`` before those pages land.
"""
from mkdocs.structure.files import File

OWNED_ELSEWHERE = {
    "your-model.md": "Your model",
    "onnx-models.md": "ONNX models",
    "hardware.md": "Hardware",
    "contract.md": "The contract",
}


def on_files(files, config):
    from edgekit.cli.reference import markdown
    files.append(File.generated(config, "reference/cli.md", content=markdown()))
    for name, title in OWNED_ELSEWHERE.items():
        if files.get_file_from_path(name) is None:
            files.append(File.generated(config, name, content=(
                "# {}\n\nThis page is written separately and is not part of this build yet.\n"
                .format(title))))
    return files
