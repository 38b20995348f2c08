"""Client tooling: everything that drives or watches a running Personas from outside, the
way a user's program would. The runtime (actors, gateway, supervisor's arbiter) never
imports this package.

- ``session``: a whole system as a `personas-supervisor up` subprocess, with a timeline
  subscriber and a feeder
- ``feeder``: tokens to the ingress; ``timeline``: the timeline recorder; ``capture``: what
  the player presented; ``analysis``: figures read off a timeline; ``interrupts``: barge-in
  at random points; ``resources``: CPU/RSS sampling; ``ports``: private-port configs
- ``replay``: regenerate a session from its timeline; ``views``: the chart and the live view
- ``pipecat_service``: Personas as a Pipecat frame processor (needs the ``pipecat`` extra;
  nothing imports it unless asked)

The control endpoint's clients are in ``protocol.control_endpoint``: the web gateway, which
is runtime, needs the asyncio one.
"""
