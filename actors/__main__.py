"""``python -m actors NAME``: run one actor process (the supervisor does this)."""

import importlib
import sys

from protocol.names import ACTOR_NAMES


def actor_class(name: str) -> type:
    """The class an actor module defines: ``actors.tts`` -> ``Tts``."""
    return getattr(importlib.import_module(f"actors.{name}"), name.capitalize())


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in ACTOR_NAMES:
        sys.exit(f"usage: python -m actors {{{'|'.join(ACTOR_NAMES)}}}")
    from actors.runtime import ProcessContext, setup_logging

    name = sys.argv[1]
    setup_logging(name)
    ctx = ProcessContext(name)
    try:
        actor = actor_class(name)(ctx)
        if ctx.spare and not ctx.wait_as_spare(actor):
            return
        actor.run()
    finally:
        ctx.close()


if __name__ == "__main__":
    main()
