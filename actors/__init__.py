"""The five actor processes: parser, tts, stitcher, driver, player.

Each module defines one actor class (``Parser``, ``Tts``, ``Stitcher``, ``Driver``,
``Player``) whose ``run()`` is that actor's one loop; ``python -m actors NAME`` starts
it in a process. The supervisor launches all five and wires them through the config's
endpoints. ``actors.testing`` drives a class in-process for unit tests.
"""

import os

# onnxruntime >= 1.2x ships OneDS telemetry that writes events into a SQLite file under
# ~/.cache/Microsoft and would upload them: disk writes on the synthesis path and network
# egress nobody declared. Off for every Personas process (found by the Breathing Room scene).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
