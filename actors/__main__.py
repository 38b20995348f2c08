"""``python -m actors NAME``: run one actor process (the supervisor does this)."""

import importlib
import sys

from actors import ACTOR_NAMES, SERVICE_NAMES

ACTORS = ACTOR_NAMES + SERVICE_NAMES


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in ACTORS:
        sys.exit(f"usage: python -m actors {{{'|'.join(ACTORS)}}}")
    from actors.runtime import run_actor

    name = sys.argv[1]
    run_actor(name, importlib.import_module(f"actors.{name}").run)


if __name__ == "__main__":
    main()
