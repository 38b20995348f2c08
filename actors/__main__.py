"""``python -m actors NAME``: run one actor process (the supervisor does this)."""

import importlib
import sys

from actors import ACTOR_NAMES as ACTORS


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in ACTORS:
        sys.exit(f"usage: python -m actors {{{'|'.join(ACTORS)}}}")
    importlib.import_module(f"actors.{sys.argv[1]}").main()


if __name__ == "__main__":
    main()
