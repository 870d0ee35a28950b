"""Regenerate tests/golden/mini/ after a reviewed change of numbers: `make golden`."""

import shutil
import tempfile
from pathlib import Path

from pipeline.runner import run

GOLDEN = Path(__file__).parent / "mini"
CONFIG = Path(__file__).parent.parent / "data" / "mini" / "mini.yaml"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = run(CONFIG, out_dir=Path(tmp) / "mini")
        GOLDEN.mkdir(exist_ok=True)
        for name in result.results:
            shutil.copy(Path(tmp) / "mini" / f"{name}.csv", GOLDEN / f"{name}.csv")
            print(f"wrote {GOLDEN / f'{name}.csv'}")


if __name__ == "__main__":
    main()
