"""``python -m gateway``: run the web gateway process (the supervisor does this)."""

from actors.runtime import ProcessContext, setup_logging

from .server import NAME, Gateway


def main() -> None:
    setup_logging(NAME)
    ctx = ProcessContext(NAME)
    try:
        Gateway(ctx).run()
    finally:
        ctx.close()


if __name__ == "__main__":
    main()
