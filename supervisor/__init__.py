"""The supervisor (arbiter, control endpoint, timeline proxy) and the command-line tools."""
