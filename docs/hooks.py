"""MkDocs hooks: the site's home page is README.md, and the notebooks are pages of the site.

README.md stays the one introduction (its links point into docs/ for readers of the
repository; in the site they are made relative to it).  The teaching notebooks stay in the
repository's notebooks/ folder, where users open them; they are added to the site's files
before mkdocs-jupyter converts them (without executing them: the test suite does that).
"""

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
#: Files outside docs/ that README.md links to and the site serves as they are.
LINKED_FILES = ("LICENSE", "CITATION.cff")


@event_priority(100)   # before mkdocs-jupyter's on_files, which picks up every .ipynb file
def on_files(files, config):
    home = (ROOT / "README.md").read_text(encoding="utf-8").replace("](docs/", "](")
    files.append(File.generated(config, "index.md", content=home))
    for name in LINKED_FILES:
        files.append(File.generated(config, name, abs_src_path=str(ROOT / name)))
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(File(f"notebooks/{path.name}", src_dir=str(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files
