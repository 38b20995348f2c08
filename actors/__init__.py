"""The five actor processes: parser, tts, stitcher, driver, player.

Each module's ``run(ctx)`` is that actor's one loop; ``python -m actors NAME`` starts
it. The supervisor launches all five and wires them through the config's endpoints.
"""

ACTOR_NAMES = ("parser", "tts", "stitcher", "driver", "player")
